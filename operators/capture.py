"""``neural_avatar.capture_dataset``: progress, cancel and reporting around
:class:`..lab.capture.CaptureJob` (the capture itself lives in the lab)."""
from __future__ import annotations

import bpy

from .. import classes_registrar
from ..blender import rig
from ..errors import DatasetError, NeuralAvatarError
from ..lab.capture import CaptureJob, _pick_body


_ENGINE_PROP = {"CYCLES": "CYCLES", "EEVEE": "EEVEE", "BLENDER_WORKBENCH": "BLENDER_WORKBENCH"}


class NEURAL_AVATAR_OT_capture_dataset(bpy.types.Operator):
    """Render a training dataset of the selected body (randomized poses and cameras)"""

    bl_idname = "neural_avatar.capture_dataset"
    bl_label = "Capture Dataset"
    bl_options = {"REGISTER"}

    _timer = None
    _job = None

    def _make_job(self, context):
        s = context.scene.neural_avatar
        path = s.capture_dir
        if path.startswith("//") and not bpy.data.filepath:
            raise DatasetError("The dataset folder is relative to the .blend file: save the file first "
                               "or choose an absolute folder.")
        out = bpy.path.abspath(path)
        return CaptureJob(context, _pick_body(context), out, int(s.capture_frames), int(s.capture_res),
                          _ENGINE_PROP.get(s.capture_engine, s.capture_engine), int(s.capture_seed))

    def execute(self, context):
        if not rig.deps_ok(self, "numpy", feature="Capture"):
            return {"CANCELLED"}
        try:
            job = self._make_job(context)
        except NeuralAvatarError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        if bpy.app.background or context.window_manager.windows[:] == [] or context.window is None:
            try:
                while not job.finished:
                    job.step()
            except NeuralAvatarError as e:
                job.cleanup()
                self.report({"ERROR"}, str(e))
                return {"CANCELLED"}
            except Exception:
                job.cleanup()
                raise
            self.report({"INFO"}, f"Captured {job.N} frames into {job.out_dir}")
            return {"FINISHED"}
        self._job = job
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.05, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, job.N)
        return {"RUNNING_MODAL"}

    def invoke(self, context, event):
        return self.execute(context)

    def _finish(self, context, cancelled_msg=None, error=None):
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        if self._job is not None:
            self._job.cleanup()
        if error:
            self.report({"ERROR"}, error)
            return {"CANCELLED"}
        if cancelled_msg:
            self.report({"WARNING"}, cancelled_msg)
            return {"CANCELLED"}
        self.report({"INFO"}, f"Captured {self._job.N} frames into {self._job.out_dir}")
        return {"FINISHED"}

    def modal(self, context, event):
        job = self._job
        if event.type == "ESC":
            return self._finish(context, cancelled_msg=f"Capture cancelled after {job.i} of {job.N} frames; "
                                                       "run it again with the same settings to resume.")
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            info = job.step()
        except NeuralAvatarError as e:
            return self._finish(context, error=str(e))
        except Exception as e:  # noqa: BLE001 - never leave the modal handler running
            return self._finish(context, error=f"Capture failed: {e}")
        context.window_manager.progress_update(info["done"])
        if context.area is not None:
            context.area.header_text_set(None)
        if job.finished:
            return self._finish(context)
        return {"RUNNING_MODAL"}


CLASSES = (NEURAL_AVATAR_OT_capture_dataset,)


register, unregister = classes_registrar(CLASSES)


