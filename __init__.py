"""Neural Avatar — a Blender extension whose render engine paints SMPL-family bodies
through trained neural networks.

This file stays thin and imports no bpy at module level, so the pure packages
(``body``, ``motion``, ``neural``) and the command line (``python -m neural_avatar``)
work without Blender. Blender calls :func:`register` / :func:`unregister`, which
forward to the three Blender-facing packages in a fixed order (properties first,
since operators and the engine read them).
"""

__version__ = "0.1.0"

# Registration order: ui (PropertyGroups, preferences, panels) → operators → engine.
_BLENDER_PACKAGES = ("ui", "operators", "engine")


def register():
    import importlib

    for name in _BLENDER_PACKAGES:
        importlib.import_module(f".{name}", __name__).register()


def unregister():
    import importlib

    for name in reversed(_BLENDER_PACKAGES):
        importlib.import_module(f".{name}", __name__).unregister()
