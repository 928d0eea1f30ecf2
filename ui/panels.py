"""Panels: a "Neural Avatar" sidebar tab in the 3D viewport (bodies, shape, avatar) and, for the
NEURAL_AVATAR engine only, panels in Render Properties and the sidebar."""

import bpy

from .. import classes_registrar

ENGINE_ID = "NEURAL_AVATAR"


def _body(context):
    from ..blender import rig

    return rig.find_body(context)


def _draw_missing_dependencies(layout, context) -> bool:
    """The *Dependencies missing* box (with the installer) when a package is missing."""
    from . import preferences

    if not preferences.missing_now() and not preferences.INSTALL["running"]:
        return False
    preferences.draw_dependencies(layout, context, compact=True)
    return True


def _labelled(layout, data, prop, text=None):
    """A label above a full-width field: long names are not cut off at the sidebar's width."""
    col = layout.column(align=True)
    col.label(text=text or data.bl_rna.properties[prop].name)
    col.prop(data, prop, text="")


class NEURAL_AVATAR_PT_body(bpy.types.Panel):
    bl_label = "Body"
    bl_idname = "NEURAL_AVATAR_PT_body"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Neural Avatar"

    def draw(self, context):
        layout = self.layout
        _draw_missing_dependencies(layout, context)
        row = layout.row(align=True)
        row.operator("neural_avatar.add_body", icon="OUTLINER_OB_ARMATURE")
        arm = _body(context)
        if arm is None:
            layout.label(text="Select a body to edit it.")
            return
        s = arm.neural_avatar
        col = layout.column(align=True)
        col.label(text=arm.name, icon="ARMATURE_DATA")
        col.label(text=f"{s.model_id or s.model_type} ({s.gender.lower()})")
        if _has_correctives(arm):
            layout.prop(s, "auto_correctives")
        layout.operator("neural_avatar.import_motion", icon="ANIM")
        layout.operator("neural_avatar.reset_pose", icon="ARMATURE_DATA")


def _has_correctives(arm) -> bool:
    """Whether the body's model has pose correctives (the embedded default body has none)."""
    s = arm.neural_avatar
    if s.model_type == "DEFAULT" or s.model_id.startswith("default-"):
        return False
    return True


class NEURAL_AVATAR_PT_shape(bpy.types.Panel):
    bl_label = "Shape"
    bl_idname = "NEURAL_AVATAR_PT_shape"
    bl_parent_id = "NEURAL_AVATAR_PT_body"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Neural Avatar"

    @classmethod
    def poll(cls, context):
        return _body(context) is not None

    def draw(self, context):
        layout = self.layout
        s = _body(context).neural_avatar
        from .properties import beta_label

        row = layout.row(align=True)
        row.operator("neural_avatar.randomize_shape", text="Random", icon="RNDCURVE")
        row.operator("neural_avatar.reset_shape", text="Reset", icon="LOOP_BACK")
        col = layout.column(align=True)
        for i in range(s.num_betas):
            col.prop(s, "betas", index=i, text=beta_label(i), slider=True)


class NEURAL_AVATAR_PT_avatar(bpy.types.Panel):
    bl_label = "Neural Avatar"
    bl_idname = "NEURAL_AVATAR_PT_avatar"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Neural Avatar"

    @classmethod
    def poll(cls, context):
        return context.engine == ENGINE_ID and _body(context) is not None

    def draw(self, context):
        layout = self.layout
        s = _body(context).neural_avatar
        _labelled(layout, s, "avatar")
        if not s.avatar:
            layout.label(text="Shipped default avatar", icon="INFO")
            _labelled(layout, context.scene.neural_avatar, "mode")
        else:
            from .properties import MODE_ITEMS, bundle_summary

            mode_id, identities = bundle_summary(s.avatar)
            mode = next((name for ident, name, _ in MODE_ITEMS if ident == mode_id), "")
            layout.label(text=f"Mode: {mode}" if mode else "Mode: unreadable bundle",
                         icon="INFO" if mode else "ERROR")
            if identities:  # a multi-identity bundle: which person this body shows (ANR try-on)
                _labelled(layout, s, "identity_menu")
            if mode_id == "PIXEL_ALIGNED":
                _labelled(layout, s, "source_views")
        if not s.avatar and context.scene.neural_avatar.mode == "PIXEL_ALIGNED":
            _labelled(layout, s, "source_views")
        sc = context.scene.neural_avatar
        col = layout.column(align=True)
        col.label(text="New Person (no training)", icon="COMMUNITY")
        _labelled(col, sc, "views_dir")
        col.prop(sc, "views_count")
        col.operator("neural_avatar.avatar_from_views", icon="OUTLINER_OB_CAMERA")
        _labelled(col, sc, "image_dir")
        col.prop(sc, "image_frame")
        _labelled(col, sc, "image_name")
        col.operator("neural_avatar.avatar_from_image", icon="IMAGE_DATA")


class _RenderPanel:
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "render"
    COMPAT_ENGINES = {ENGINE_ID}

    @classmethod
    def poll(cls, context):
        return context.engine == ENGINE_ID


class NEURAL_AVATAR_PT_render(_RenderPanel, bpy.types.Panel):
    bl_label = "Neural Avatar"
    bl_idname = "NEURAL_AVATAR_PT_render"

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        s = context.scene.neural_avatar
        _draw_missing_dependencies(layout, context)
        layout.prop(s, "mode")
        layout.prop(s, "device")
        layout.prop(s, "precision")
        layout.prop(s, "viewport_scale")
        layout.prop(context.scene.render, "film_transparent")
        from ..engine import state

        if state.LAST_ERROR:
            box = layout.box()
            box.label(text="Last error:", icon="ERROR")
            for line in state.LAST_ERROR.splitlines()[:4]:
                box.label(text=line)


class NEURAL_AVATAR_PT_render_passes(_RenderPanel, bpy.types.Panel):
    bl_label = "Passes"
    bl_idname = "NEURAL_AVATAR_PT_render_passes"
    bl_parent_id = "NEURAL_AVATAR_PT_render"

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        s = context.scene.neural_avatar
        col = layout.column(heading="Neural", align=True)
        col.prop(s, "pass_input", text="Input")
        col.prop(s, "pass_mask", text="Mask")
        col.prop(s, "pass_depth", text="Depth")


CLASSES = (NEURAL_AVATAR_PT_body, NEURAL_AVATAR_PT_shape, NEURAL_AVATAR_PT_avatar,
           NEURAL_AVATAR_PT_render, NEURAL_AVATAR_PT_render_passes)


class NEURAL_AVATAR_PT_training(bpy.types.Panel):
    bl_label = "Capture & Training"
    bl_idname = "NEURAL_AVATAR_PT_training"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Neural Avatar"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        s = context.scene.neural_avatar
        col = layout.column(align=True)
        col.label(text="Capture", icon="CAMERA_DATA")
        col.operator("neural_avatar.add_demo_subject", icon="MOD_CLOTH")
        _labelled(col, s, "capture_dir")
        col.prop(s, "capture_frames")
        col.prop(s, "capture_res")
        _labelled(col, s, "capture_engine", "Ground Truth Renderer")
        col.prop(s, "capture_seed")
        col.operator("neural_avatar.capture_dataset", icon="RENDER_ANIMATION")
        col = layout.column(align=True)
        col.label(text="Training", icon="NODETREE")
        _labelled(col, s, "train_mode")
        _labelled(col, s, "train_data")
        _labelled(col, s, "train_out")
        col.prop(s, "train_steps")
        col.prop(s, "train_res")
        if s.train_running:
            col.progress(factor=s.train_progress, text=s.train_status or "Training…") if hasattr(
                col, "progress") else col.label(text=s.train_status)
            col.operator("neural_avatar.cancel_training", icon="CANCEL")
        else:
            col.operator("neural_avatar.train", icon="PLAY")
            if s.train_status:
                col.label(text=s.train_status)
            col = layout.column(align=True)
            col.label(text="New Person (renderer frozen)", icon="COMMUNITY")
            _labelled(col, s, "fit_name")
            col.prop(s, "fit_frames")
            col.operator("neural_avatar.fit_identity", icon="ADD")


CLASSES = CLASSES + (NEURAL_AVATAR_PT_training,)


register, unregister = classes_registrar(CLASSES)
