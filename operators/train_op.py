"""Training from inside Blender: ``neural_avatar.train`` launches ``neural.train`` in a
background *process* (never Blender's main thread), shows step/loss/ETA in the UI, can be
cancelled (SIGTERM → the trainer writes a checkpoint and stops), and loads the finished
bundle onto the selected body. Also ``neural_avatar.add_demo_subject``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import bpy

from .. import classes_registrar

from ..errors import NeuralAvatarError
from ..blender import rig

_JOB = {"proc": None, "lines": [], "lock": threading.Lock(), "result": None}


def package_dir() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def trainer_command(data: str, out: str, mode: str, steps: int, res: int, device: str = "AUTO",
                    resume: bool = False, python: str | None = None, extra_args=()) -> list[str]:
    """A command line that runs the trainer with this package, whatever its import name in
    Blender (``bl_ext.<repo>.neural_avatar``): the package folder's parent goes on sys.path and
    the folder is imported as ``neural_avatar`` (the extension id)."""
    pkg = package_dir()
    parent, name = os.path.dirname(pkg), os.path.basename(pkg)
    args = ["--data", data, "--mode", mode, "--out", out, "--steps", str(steps), "--res", str(res),
            "--device", device]
    if resume:
        args.append("--resume")
    args += list(extra_args)
    extra = []
    try:  # packages installed by "Install Dependencies" live outside Blender's own site-packages
        from ..ui.preferences import deps_target

        if os.path.isdir(deps_target()):
            extra.append(deps_target())
    except Exception:  # noqa: BLE001 - outside Blender there is no such folder
        pass
    # Our package first; installed dependencies after the interpreter's own (as in Blender).
    code = ("import sys, importlib; sys.path[:0] = %r; sys.path += %r; "
            "sys.exit(importlib.import_module(%r + '.cli.train').main(%r))") % ([parent], extra, name, args)
    if python is None:
        from ..common.deps import python_executable

        python = python_executable()
    return [python, "-c", code]


def _reader(proc):
    for line in proc.stdout:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        with _JOB["lock"]:
            _JOB["lines"].append(ev)


class _TrainJob:
    """What Train Avatar and Fit Identity share: a `train` process, progress, cancel, result."""

    _timer = None

    @classmethod
    def poll(cls, context):
        return _JOB["proc"] is None or _JOB["proc"].poll() is not None

    def _start(self, context):
        from ..common import deps

        deps.require("numpy", "torch", "safetensors", "pytorch_msssim", feature="Training")
        s = context.scene.neural_avatar
        data = bpy.path.abspath(s.train_data)
        out = bpy.path.abspath(s.train_out)
        if not os.path.isfile(os.path.join(data, "dataset.json")):
            raise NeuralAvatarError(f"No dataset at {data} (dataset.json missing). Capture one first "
                                    "(Neural Avatar → Capture) or point Dataset at a converted capture.")
        os.makedirs(out, exist_ok=True)
        resume = os.path.exists(os.path.join(out, "last.ckpt"))
        from ..ui.preferences import get_prefs

        prefs = get_prefs(context)
        device = s.device if s.device != "PREFERENCES" else (prefs.device if prefs else "AUTO")
        mode, steps, extra = self._what(context, s)
        cmd = trainer_command(data, out, mode, steps, s.train_res, device, resume, extra_args=extra)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        reader = threading.Thread(target=_reader, args=(proc,), daemon=True)
        _JOB.update(proc=proc, lines=[], result=None, out=out, mode=mode, reader=reader, identity=self._identity(s))
        reader.start()
        s.train_running = True
        s.train_progress = 0.0
        s.train_status = "Starting…" + (" (resuming)" if resume else "")

    def _what(self, context, s):
        """(mode, steps, extra train flags) of the run."""
        return s.train_mode, s.train_steps, []

    def _identity(self, s):
        return ""

    def execute(self, context):  # background mode / scripts: run to the end
        try:
            self._start(context)
        except NeuralAvatarError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        _JOB["proc"].wait()
        return self._finish(context)

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        try:
            self._start(context)
        except NeuralAvatarError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.5, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        _pump(context)
        if _JOB["proc"].poll() is None:
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        _JOB["proc"].wait()
        return self._finish(context)

    def _finish(self, context):
        _JOB["reader"].join(timeout=10)  # the last lines (done/error) are read before judging
        _pump(context)
        s = context.scene.neural_avatar
        s.train_running = False
        rc = _JOB["proc"].returncode
        result = _JOB["result"] or {}
        if result.get("event") == "done":
            bundle = result.get("bundle") or os.path.join(_JOB["out"], "avatar.safetensors")
            arm = rig.find_body(context)
            if arm is not None:
                arm.neural_avatar.avatar = bundle
                arm.neural_avatar.identity = _JOB.get("identity") or ""
            s.train_status = f"Done: {os.path.basename(bundle)}"
            self.report({"INFO"}, f"Training finished; avatar {bundle}" + (f" set on {arm.name}" if arm else ""))
            return {"FINISHED"}
        if result.get("event") == "cancelled":
            s.train_status = "Cancelled (checkpoint kept; Train again resumes)"
            self.report({"WARNING"}, s.train_status)
            return {"CANCELLED"}
        msg = result.get("message") or f"Training failed (exit code {rc})."
        s.train_status = msg[:200]
        self.report({"ERROR"}, msg)
        return {"CANCELLED"}


class NEURAL_AVATAR_OT_train(_TrainJob, bpy.types.Operator):
    """Train an avatar of the Train Mode on a captured dataset, in a background process"""

    bl_idname = "neural_avatar.train"
    bl_label = "Train Avatar"
    bl_options = {"REGISTER"}


class NEURAL_AVATAR_OT_fit_identity(_TrainJob, bpy.types.Operator):
    """Add a new person to the selected body's avatar: fit their neural texture (ANR) or
    appearance (HVS) on the Dataset with the avatar's renderer frozen, in a background process;
    the body then shows the new identity"""

    bl_idname = "neural_avatar.fit_identity"
    bl_label = "Fit Identity"
    bl_options = {"REGISTER"}

    def _what(self, context, s):
        from ..common.guards import safe_name
        from ..neural.bundle import read_bundle_meta

        arm = rig.find_body(context)
        if arm is None or not arm.neural_avatar.avatar:
            raise NeuralAvatarError("Select a body whose Avatar is a trained NEURAL_TEXTURE or GAUSSIAN_BONES "
                                    "bundle: Fit Identity keeps its renderer and adds a person.")
        bundle = bpy.path.abspath(arm.neural_avatar.avatar)
        mode = read_bundle_meta(bundle)["mode"]
        if mode == "VERTEX_PROJECTION":
            raise NeuralAvatarError("SMPLpix avatars have nothing to fit for a new person (their input is the "
                                    "person's baked vertex colours).")
        safe_name(s.fit_name, "The new identity's name")
        return mode, max(1, min(s.train_steps, 300)), [
            "--init", bundle, "--fit-identity", s.fit_name, "--frames-limit", str(s.fit_frames), "--no-gan",
            "--val-every", "0"]

    def _identity(self, s):
        return s.fit_name


def _pump(context):
    s = context.scene.neural_avatar
    with _JOB["lock"]:
        events, _JOB["lines"] = _JOB["lines"], []
    for ev in events:
        kind = ev.get("event")
        if kind == "progress":
            steps = max(1, int(ev.get("steps") or s.train_steps))
            s.train_progress = min(1.0, ev.get("step", 0) / steps)
            eta = ev.get("eta_s")
            s.train_status = (f"step {ev.get('step')}/{steps}  loss {ev.get('loss', float('nan')):.4f}"
                              + (f"  ETA {eta / 60:.1f} min" if eta is not None else ""))
        elif kind in ("done", "cancelled", "error"):
            _JOB["result"] = ev


class NEURAL_AVATAR_OT_cancel_training(bpy.types.Operator):
    """Stop the running training (a checkpoint is written; training again resumes)"""

    bl_idname = "neural_avatar.cancel_training"
    bl_label = "Cancel Training"

    @classmethod
    def poll(cls, context):
        return _JOB["proc"] is not None and _JOB["proc"].poll() is None

    def execute(self, context):
        _JOB["proc"].terminate()
        context.scene.neural_avatar.train_status = "Cancelling…"
        return {"FINISHED"}


class NEURAL_AVATAR_OT_add_demo_subject(bpy.types.Operator):
    """Dress the selected body (or a new default body) as the built-in demo subject: outfit,
    hair and skirt — the character whose Cycles render a capture uses as ground truth"""

    bl_idname = "neural_avatar.add_demo_subject"
    bl_label = "Add Demo Subject"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        from ..lab.subject import build_demo_subject

        if not rig.deps_ok(self, "numpy", feature="Add Demo Subject"):
            return {"CANCELLED"}
        arm = rig.find_body(context)
        if arm is not None and arm.neural_avatar.model_type != "DEFAULT":
            self.report({"ERROR"}, "The demo outfit fits the default body; select a default body or nothing.")
            return {"CANCELLED"}
        try:
            res = build_demo_subject(context, body_arm=arm)
        except NeuralAvatarError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        context.view_layer.objects.active = res["armature"]
        return {"FINISHED"}


CLASSES = (NEURAL_AVATAR_OT_train, NEURAL_AVATAR_OT_fit_identity, NEURAL_AVATAR_OT_cancel_training,
           NEURAL_AVATAR_OT_add_demo_subject)


_register_classes, _unregister_classes = classes_registrar(CLASSES)


def register():
    _register_classes()


def unregister():
    proc = _JOB.get("proc")
    if proc is not None and proc.poll() is None:
        proc.terminate()
    _unregister_classes()
