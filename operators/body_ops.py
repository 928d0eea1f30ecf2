"""Operators that add bodies and edit their shape."""
import bpy

from .. import classes_registrar
from ..common.deps import np
from bpy.props import EnumProperty, FloatProperty, IntProperty, StringProperty

from ..errors import NeuralAvatarError
from ..ui.properties import GENDER_ITEMS, MODEL_ITEMS
from ..blender import rig
from ..blender.rig import deps_ok


class NEURAL_AVATAR_OT_add_body(bpy.types.Operator):
    """Add an SMPL-family body: armature rig + skinned mesh with shape sliders"""

    bl_idname = "neural_avatar.add_body"
    bl_label = "Add Body"
    bl_options = {"REGISTER", "UNDO"}

    model: EnumProperty(name="Model", items=MODEL_ITEMS, default="DEFAULT")
    gender: EnumProperty(name="Gender", items=GENDER_ITEMS, default="NEUTRAL")
    filepath: StringProperty(name="Model File", subtype="FILE_PATH", default="",
                             description="Explicit model file (default: looked up in the preferences' folder)")
    name: StringProperty(name="Name", default="Body")

    def execute(self, context):
        if not deps_ok(self, "numpy", feature="Add Body"):
            return {"CANCELLED"}
        if context.mode != "OBJECT":
            bpy.ops.object.mode_set(mode="OBJECT")
        try:
            model = rig.resolve_model(self.model, self.gender, self.filepath)
            arm = rig.create_body(context, model, name=self.name, model_type=self.model,
                                  gender=self.gender, model_file=self.filepath)
        except NeuralAvatarError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        arm.location = context.scene.cursor.location
        for o in context.selected_objects:
            o.select_set(False)
        arm.select_set(True)
        context.view_layer.objects.active = arm
        self.report({"INFO"}, f"Added {arm.name} ({model.model_id}, {model.num_verts} vertices)")
        return {"FINISHED"}


class _BodyOperator:
    @classmethod
    def poll(cls, context):
        return rig.find_body(context) is not None


class NEURAL_AVATAR_OT_randomize_shape(_BodyOperator, bpy.types.Operator):
    """Draw random shape coefficients (betas ~ N(0, σ²)) for the selected body"""

    bl_idname = "neural_avatar.randomize_shape"
    bl_label = "Randomize Shape"
    bl_options = {"REGISTER", "UNDO"}

    sigma: FloatProperty(name="Spread", default=1.0, min=0.0, max=3.0)
    seed: IntProperty(name="Seed", default=0, description="0: a new random shape each time")

    def execute(self, context):
        if not deps_ok(self, "numpy", feature="Randomize Shape"):
            return {"CANCELLED"}
        arm = rig.find_body(context)
        s = arm.neural_avatar
        rng = np.random.default_rng(self.seed or None)
        betas = np.zeros(len(s.betas))
        betas[: s.num_betas] = rng.normal(0.0, self.sigma, s.num_betas)
        s.betas = betas.tolist()  # one update → one rest-shape rebuild
        return {"FINISHED"}


class NEURAL_AVATAR_OT_reset_shape(_BodyOperator, bpy.types.Operator):
    """Reset the selected body's shape coefficients to the mean shape"""

    bl_idname = "neural_avatar.reset_shape"
    bl_label = "Reset Shape"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        arm = rig.find_body(context)
        arm.neural_avatar.betas = [0.0] * len(arm.neural_avatar.betas)
        return {"FINISHED"}


class NEURAL_AVATAR_OT_reset_pose(_BodyOperator, bpy.types.Operator):
    """Put the selected body back in its rest pose"""

    bl_idname = "neural_avatar.reset_pose"
    bl_label = "Reset Pose"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        arm = rig.find_body(context)
        for pb in arm.pose.bones:
            pb.rotation_quaternion = (1, 0, 0, 0)
            pb.location = (0, 0, 0)
        rig.update_correctives(arm, force=True)
        return {"FINISHED"}


CLASSES = (NEURAL_AVATAR_OT_add_body, NEURAL_AVATAR_OT_randomize_shape, NEURAL_AVATAR_OT_reset_shape,
           NEURAL_AVATAR_OT_reset_pose)


register, unregister = classes_registrar(CLASSES)
