"""The NEURAL_AVATAR render engine (bpy). The engine class is a thin shell; the work is in
:mod:`.final` (F12/animation), :mod:`.viewport` (Rendered shading) and :mod:`.scene_io`."""
from . import cache, render_engine, viewport


def register():
    render_engine.register()


def unregister():
    from .. import unregister_in_order

    unregister_in_order([viewport.release_all, render_engine.unregister, cache.clear])
