"""The NEURAL_AVATAR RenderEngine: a thin shell forwarding to module functions."""
import bpy

from .. import classes_registrar, register_in_order, unregister_in_order
from . import final, viewport


class NeuralAvatarRenderEngine(bpy.types.RenderEngine):
    bl_idname = "NEURAL_AVATAR"
    bl_label = "Neural Avatar"
    bl_use_preview = False
    bl_use_postprocess = True
    bl_use_gpu_context = False
    bl_use_eevee_viewport = False
    bl_use_shading_nodes_custom = False

    def render(self, depsgraph):
        final.render_frame(self, depsgraph)

    def update_render_passes(self, scene=None, renderlayer=None):
        final.update_render_passes(self, scene, renderlayer)

    def view_update(self, context, depsgraph):
        viewport.view_update(self, context, depsgraph)

    def view_draw(self, context, depsgraph):
        viewport.view_draw(self, context, depsgraph)

    def __del__(self):
        # Called when Blender frees the engine (viewport closed, render done).
        try:
            viewport.release(self)
        except Exception:  # noqa: BLE001
            pass


def _compatible_panels():
    """Standard panels that make sense for this engine (output, dimensions, camera, …)."""
    from bl_ui import properties_output, properties_render  # noqa: F401

    names = []
    for name in dir(bpy.types):
        cls = getattr(bpy.types, name, None)
        engines = getattr(cls, "COMPAT_ENGINES", None)
        if isinstance(engines, set) and "BLENDER_WORKBENCH" in engines and name.startswith(
                ("DATA_PT_camera", "DATA_PT_lens", "RENDER_PT_format", "RENDER_PT_frame", "RENDER_PT_film",
                 "RENDER_PT_color_management", "VIEWLAYER_PT_layer", "WORLD_PT_context_world",
                 "DATA_PT_context_camera", "OBJECT_PT")):
            names.append(name)
    return names


_ADDED = []


def _add_compat():
    for name in _compatible_panels():
        cls = getattr(bpy.types, name)
        if "NEURAL_AVATAR" not in cls.COMPAT_ENGINES:
            cls.COMPAT_ENGINES.add("NEURAL_AVATAR")
            _ADDED.append(cls)


def _remove_compat():
    for cls in _ADDED:
        cls.COMPAT_ENGINES.discard("NEURAL_AVATAR")
    _ADDED.clear()


_register_class, _unregister_class = classes_registrar((NeuralAvatarRenderEngine,))


def register():
    register_in_order([(_register_class, _unregister_class), (_add_compat, _remove_compat)])


def unregister():
    unregister_in_order([_remove_compat, _unregister_class])
