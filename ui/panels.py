"""Panels: a "Neural Avatar" sidebar tab in the 3D viewport (bodies, shape, avatar) and, for the
NEURAL_AVATAR engine only, panels in Render Properties and the sidebar."""
import bpy

ENGINE_ID = "NEURAL_AVATAR"


def _body(context):
    from ..operators import rig

    return rig.find_body(context)


class NEURAL_AVATAR_PT_body(bpy.types.Panel):
    bl_label = "Body"
    bl_idname = "NEURAL_AVATAR_PT_body"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Neural Avatar"

    def draw(self, context):
        layout = self.layout
        row = layout.row(align=True)
        row.operator("neural_avatar.add_body", icon="OUTLINER_OB_ARMATURE")
        arm = _body(context)
        if arm is None:
            layout.label(text="Select a body to edit its shape.")
            return
        s = arm.neural_avatar
        col = layout.column(align=True)
        col.label(text=f"{arm.name}: {s.model_id or s.model_type} ({s.gender.lower()})")
        layout.prop(s, "auto_correctives")
        layout.operator("neural_avatar.import_motion", icon="ANIM") if hasattr(
            bpy.types, "NEURAL_AVATAR_OT_import_motion") else None
        layout.operator("neural_avatar.reset_pose", icon="ARMATURE_DATA")


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
        row = layout.row(align=True)
        row.operator("neural_avatar.randomize_shape", icon="RNDCURVE")
        row.operator("neural_avatar.reset_shape", icon="LOOP_BACK")
        col = layout.column(align=True)
        for i in range(s.num_betas):
            col.prop(s, "betas", index=i, text=f"β{i}", slider=True)


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
        layout.prop(s, "avatar")
        if not s.avatar:
            layout.label(text="Using the shipped default avatar.", icon="INFO")
        layout.prop(context.scene.neural_avatar, "mode")


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
        layout.prop(s, "pass_input")
        layout.prop(s, "pass_mask")
        layout.prop(s, "pass_depth")


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
        col.prop(s, "capture_dir")
        row = col.row(align=True)
        row.prop(s, "capture_frames")
        row.prop(s, "capture_res")
        col.prop(s, "capture_engine")
        col.prop(s, "capture_seed")
        col.operator("neural_avatar.capture_dataset", icon="RENDER_ANIMATION")
        col = layout.column(align=True)
        col.label(text="Training", icon="NODETREE")
        col.prop(s, "mode")
        col.prop(s, "train_data")
        col.prop(s, "train_out")
        row = col.row(align=True)
        row.prop(s, "train_steps")
        row.prop(s, "train_res")
        if s.train_running:
            col.progress(factor=s.train_progress, text=s.train_status or "Training…") if hasattr(
                col, "progress") else col.label(text=s.train_status)
            col.operator("neural_avatar.cancel_training", icon="CANCEL")
        else:
            col.operator("neural_avatar.train", icon="PLAY")
            if s.train_status:
                col.label(text=s.train_status)


CLASSES = CLASSES + (NEURAL_AVATAR_PT_training,)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
