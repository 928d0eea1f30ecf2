"""``neural_avatar.import_motion``: the file browser and options; the work is
:func:`..blender.motion_import.import_motions` (all or nothing)."""
from __future__ import annotations

import os

import bpy
from bpy.props import BoolProperty, CollectionProperty, FloatProperty, StringProperty

from .. import classes_registrar
from ..blender import rig
from ..blender.motion_import import STATS, import_motions
from ..errors import NeuralAvatarError


class NEURAL_AVATAR_OT_import_motion(bpy.types.Operator):
    """Import AMASS / SMPL motion files (.npz) onto the selected body, resampled by time"""

    bl_idname = "neural_avatar.import_motion"
    bl_label = "Import Motion"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(subtype="FILE_PATH")
    directory: StringProperty(subtype="DIR_PATH")
    files: CollectionProperty(type=bpy.types.OperatorFileListElement)
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})
    target_fps: FloatProperty(name="Target FPS", default=0.0, min=0.0, max=1000.0,
                              description="Resample to this rate (by time, slerp); 0 keeps the file's own rate")
    set_scene_fps: BoolProperty(name="Set Scene FPS", default=True)
    apply_betas: BoolProperty(name="Apply Betas", default=False,
                              description="Use the file's body shape when the body model matches")

    @classmethod
    def poll(cls, context):
        return context.mode in {"OBJECT", "POSE"}

    def invoke(self, context, event):
        # Open in the .blend's folder with an empty file name (unset, Blender fills in the .blend's name).
        if not self.filepath:
            self.filepath = (os.path.dirname(bpy.data.filepath) + os.sep) if bpy.data.filepath else ""
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def _paths(self):
        if self.files and self.directory:
            return [os.path.join(self.directory, f.name) for f in self.files if f.name]
        return [bpy.path.abspath(self.filepath)] if self.filepath else []

    def execute(self, context):
        if not rig.deps_ok(self, "numpy", feature="Import Motion"):
            return {"CANCELLED"}
        arm = rig.find_body(context)
        try:
            if arm is None:
                raise NeuralAvatarError("Select a Neural Avatar body (its armature or mesh) to import motion onto.")
            acts = import_motions(context, arm, self._paths(), self.target_fps, self.set_scene_fps,
                                  self.apply_betas)
        except NeuralAvatarError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Imported {len(acts)} motion(s): {', '.join(a.name for a in acts)} "
                              f"in {STATS['last_import_s'] * 1e3:.0f} ms")
        return {"FINISHED"}


CLASSES = (NEURAL_AVATAR_OT_import_motion,)


register, unregister = classes_registrar(CLASSES)
