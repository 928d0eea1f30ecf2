"""Neural Avatar — a Blender extension whose render engine paints SMPL-family bodies
through trained neural networks.

This file stays thin and imports no bpy at module level, so the pure packages
(``body``, ``motion``, ``neural``) and the command line (``python -m neural_avatar``)
work without Blender. Blender calls :func:`register` / :func:`unregister`, which
forward to the three Blender-facing packages in a fixed order (properties first,
since operators and the engine read them).

Registering imports only what Blender ships (bpy; not even numpy): torch, smplx and the
rest are imported when a feature first needs them (:mod:`.deps`). Registration is all or
nothing: a failure half-way undoes what was registered, so the next enable starts clean.
"""

__version__ = "0.1.0"

# Registration order: ui (PropertyGroups, preferences, panels) → blender (the body layer's
# handlers) → operators → engine.
_BLENDER_PACKAGES = ("ui", "blender", "operators", "engine")


def register_in_order(steps) -> None:
    """Run ``(register, unregister)`` pairs in order; if one raises, undo the ones done
    (newest first) and re-raise. Each step must itself be all or nothing."""
    done = []
    try:
        for reg, unreg in steps:
            reg()
            done.append(unreg)
    except BaseException:
        for unreg in reversed(done):
            try:
                unreg()
            except Exception:  # noqa: BLE001 - undo as much as possible, report the first error
                import traceback

                traceback.print_exc()
        raise


def unregister_in_order(unregs) -> None:
    """Run every unregister even if one fails; re-raise the first failure at the end."""
    first = None
    for unreg in unregs:
        try:
            unreg()
        except Exception as e:  # noqa: BLE001
            first = first or e
    if first is not None:
        raise first


def classes_registrar(classes):
    """Like ``bpy.utils.register_classes_factory``, but all or nothing: a class that fails to
    register unregisters those before it; unregister skips classes that are not registered."""

    def register():
        import bpy

        register_in_order([(lambda c=c: bpy.utils.register_class(c),
                            lambda c=c: bpy.utils.unregister_class(c)) for c in classes])

    def unregister():
        import bpy

        unregister_in_order([lambda c=c: bpy.utils.unregister_class(c) for c in reversed(classes)
                             if getattr(c, "is_registered", True)])

    return register, unregister


def modules_registrar(modules_fn):
    """``register``/``unregister`` for a package whose modules (``modules_fn()``, in order)
    each have their own."""

    def register():
        register_in_order([(m.register, m.unregister) for m in modules_fn()])

    def unregister():
        unregister_in_order([m.unregister for m in reversed(modules_fn())])

    return register, unregister


def _packages():
    import importlib

    return [importlib.import_module(f".{name}", __name__) for name in _BLENDER_PACKAGES]


register, unregister = modules_registrar(_packages)
