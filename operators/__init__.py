"""Blender operators (``neural_avatar.<verb>``): thin shells that check, report and call the
body layer (:mod:`..blender`) or the lab (:mod:`..lab`)."""
import importlib

from .. import modules_registrar

# Modules with register()/unregister(), in registration order. Modules written by later
# issues are added here as they land.
_MODULE_NAMES = ("body_ops", "import_motion", "capture", "train_op", "new_people")


def _modules():
    return [importlib.import_module(f".{n}", __name__) for n in _MODULE_NAMES]


register, unregister = modules_registrar(_modules)
