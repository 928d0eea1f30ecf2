"""``neural_avatar.import_motion``: AMASS / SMPL motion onto the selected body.

Exact by construction: every bone's local frame is the model frame (see :mod:`.rig`), so a
file's axis-angle vector goes on the bone as ``Quaternion(v/|v|, |v|)``; the armature object
gets the identity transform (model frame = AMASS world = Blender world) and the pelvis bone's
location is ``trans`` — so the pelvis lands at ``trans + R_root·J_pelvis(β)`` exactly as smplx
computes with ``global_orient = root_orient, transl = trans``. Resampling is by time
(:func:`..motion.resample`), quaternions are kept sign-continuous, keys are written in bulk.
"""
from __future__ import annotations

import math
import os
import time

import bpy

from ..common.deps import np

from ..common.deps import lazy

motion_lib = lazy("..motion", __package__)
from ..errors import MotionFileError, NeuralAvatarError
from . import keyframes, rig

STATS = {"last_import_s": 0.0, "last_frames": 0}


def import_motions(context, arm_obj, paths: list[str], target_fps: float = 0.0, set_scene_fps: bool = True,
                   apply_betas: bool = False) -> list:
    """Load every file first (all or nothing), then key one action per file. Returns the actions."""
    if arm_obj is None or arm_obj.type != "ARMATURE" or not arm_obj.neural_avatar.is_body:
        raise NeuralAvatarError("Select a Neural Avatar body (its armature or mesh) to import motion onto.")
    if not paths:
        raise MotionFileError("No motion file given.")
    if target_fps < 0 or not np.isfinite(target_fps):
        raise MotionFileError(f"Target frame rate must be positive (or 0 for the file's own rate), got {target_fps}.")
    t0 = time.perf_counter()
    model = rig.model_for(arm_obj)
    names = [n for n in model.joint_names if n in arm_obj.pose.bones]
    num_joints = len(model.joint_names)
    loaded = []
    for p in paths:
        m = motion_lib.load_motion(p)
        fps = target_fps or m.fps
        if abs(fps - m.fps) > 1e-9:
            m = motion_lib.resample(m, fps)
        loaded.append((p, m, fps))
    if apply_betas and loaded[0][1].betas is not None:
        _check_betas_model(arm_obj, loaded[0][1])  # before anything changes
        if not np.all(np.isfinite(loaded[0][1].betas)):
            raise MotionFileError(f"The betas in {os.path.basename(loaded[0][0])} are not finite numbers.")
    scene = context.scene
    if set_scene_fps:
        fps_int, fps_base = _scene_rate(loaded[0][2])  # refused here, before anything changes
    # Everything below changes the scene: on any failure it is put back as it was.
    saved = _snapshot(scene, arm_obj)
    frame_start = scene.frame_start
    actions = []
    try:
        for p, m, fps in loaded:
            quats = motion_lib.to_rig_quaternions(m, num_joints)  # (N,J,4) continuous
            name = os.path.splitext(os.path.basename(p))[0]
            act = keyframes.write_rig_keys(arm_obj, name, frame_start, list(model.joint_names), quats,
                                           root_bone=model.joint_names[0], root_loc=np.asarray(m.trans))
            act.use_fake_user = True
            actions.append((act, m, fps))
        _apply_import(context, scene, arm_obj, model, actions, frame_start, set_scene_fps, apply_betas,
                      fps_int if set_scene_fps else 0, fps_base if set_scene_fps else 1.0)
    except BaseException as e:
        for act, _, _ in actions:
            if act.name in bpy.data.actions:
                bpy.data.actions.remove(act)
        _restore(scene, arm_obj, saved)
        if isinstance(e, (NeuralAvatarError, KeyboardInterrupt)):
            raise
        raise NeuralAvatarError(f"Importing the motion failed and the scene was left unchanged: "
                                f"{type(e).__name__}: {e}") from e
    STATS["last_import_s"] = time.perf_counter() - t0
    STATS["last_frames"] = sum(m.num_frames for _, m, _ in actions)
    return [a for a, _, _ in actions]


def _scene_rate(fps: float) -> tuple:
    """``(render.fps, render.fps_base)`` for ``fps``, checked against Blender's own limits."""
    rna = bpy.types.RenderSettings.bl_rna.properties
    fps_int = max(1, int(round(fps)))
    fps_base = fps_int / fps
    lo, hi = rna["fps"].hard_min, rna["fps"].hard_max
    blo, bhi = rna["fps_base"].hard_min, rna["fps_base"].hard_max
    if not (lo <= fps_int <= hi and blo <= fps_base <= bhi):
        raise MotionFileError(f"Blender's scenes hold frame rates of {lo}–{hi} fps; {fps:g} fps is outside that. "
                              "Import with a Target FPS in that range.")
    return fps_int, fps_base


def _snapshot(scene, arm_obj) -> dict:
    ad = arm_obj.animation_data
    return {"fps": scene.render.fps, "fps_base": scene.render.fps_base, "frame_end": scene.frame_end,
            "frame_current": scene.frame_current, "had_anim": ad is not None,
            "action": ad.action if ad is not None else None,
            "location": tuple(arm_obj.location), "rotation_mode": arm_obj.rotation_mode,
            "rotation": tuple(arm_obj.rotation_euler), "scale": tuple(arm_obj.scale),
            "betas": tuple(arm_obj.neural_avatar.betas)}


def _restore(scene, arm_obj, s: dict) -> None:
    scene.render.fps, scene.render.fps_base = s["fps"], s["fps_base"]
    scene.frame_end = s["frame_end"]
    if arm_obj.animation_data is not None:
        if s["had_anim"]:
            arm_obj.animation_data.action = s["action"]
        else:
            arm_obj.animation_data_clear()
    arm_obj.location, arm_obj.rotation_mode = s["location"], s["rotation_mode"]
    arm_obj.rotation_euler, arm_obj.scale = s["rotation"], s["scale"]
    if tuple(arm_obj.neural_avatar.betas) != s["betas"]:
        arm_obj.neural_avatar.betas = s["betas"]
    scene.frame_set(s["frame_current"])


def _apply_import(context, scene, arm_obj, model, actions, frame_start, set_scene_fps, apply_betas,
                  fps_int, fps_base) -> None:
    first_act, first_m, first_fps = actions[0]
    arm_obj.animation_data.action = first_act
    if hasattr(arm_obj.animation_data, "action_slot") and first_act.slots:
        arm_obj.animation_data.action_slot = first_act.slots[0]
    # Model frame = AMASS world = Blender world.
    arm_obj.location = (0.0, 0.0, 0.0)
    arm_obj.rotation_mode = "XYZ"
    arm_obj.rotation_euler = (0.0, 0.0, 0.0)
    arm_obj.scale = (1.0, 1.0, 1.0)
    if set_scene_fps:
        scene.render.fps = fps_int
        scene.render.fps_base = fps_base
    # The scene's range covers this motion and every other body's animation (never cut short
    # another body's motion when a second body gets one).
    longest = max(m.num_frames for _, m, _ in actions) if len(actions) > 1 else first_m.num_frames
    scene.frame_end = max(frame_start + longest - 1, _other_bodies_end(scene, arm_obj))
    if apply_betas and first_m.betas is not None:
        _apply_betas(arm_obj, model, first_m)
    scene.frame_set(scene.frame_current)


def _other_bodies_end(scene, arm_obj) -> int:
    """Last keyed frame of the other Neural Avatar bodies' actions in ``scene`` (0: none)."""
    end = 0
    for o in scene.objects:
        if o is arm_obj or o.type != "ARMATURE" or not o.neural_avatar.is_body:
            continue
        act = o.animation_data.action if o.animation_data else None
        if act is not None:
            end = max(end, int(math.ceil(act.frame_range[1])))
    return end


def _check_betas_model(arm_obj, m):
    s = arm_obj.neural_avatar
    want = {"smpl": "SMPL", "smplh": "SMPLH", "smplx": "SMPLX"}.get(m.source_type)
    if s.model_type != want:
        raise MotionFileError(f"The file's betas are for a {m.source_type.upper()} body; this body uses "
                              f"{s.model_type}. Import without 'Apply Betas' or use a matching body.")


def _apply_betas(arm_obj, model, m):
    s = arm_obj.neural_avatar
    b = np.zeros(len(s.betas))
    k = min(len(b), len(m.betas), model.num_betas)
    b[:k] = m.betas[:k]
    s.betas = b.tolist()
