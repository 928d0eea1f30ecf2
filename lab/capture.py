"""Capture a training dataset (``neural_avatar.capture/1``, ``neural/DATASET_FORMAT.md``) from
a body rig in Blender: randomized poses from motion clips, randomized cameras, ground truth
rendered by Cycles / Workbench / EEVEE, written resumably.

Posing follows the AMASS convention of :mod:`.import_motion`: the armature object gets the
identity transform (model frame = AMASS world = Blender world, Z up), every joint's axis-angle
``v`` goes on its bone as ``Quaternion(v/|v|, |v|)`` (the root's is ``root_orient``) and the
pelvis bone's location is ``trans``. Hence for frame ``i``::

    world vertices = object_matrix[i] @ forward(model, betas[i], poses[i], transl[i])

with ``object_matrix`` the armature's ``matrix_world`` (identity), ``poses = pose_aa`` and
``transl = trans`` (SMPL eq. 1-5 with translation; checked against Blender's evaluated mesh in
``tests/operators/test_capture.py``).

Cameras: a perspective camera (50 mm on a 36 mm sensor) at yaw ``heading + yaw_rel`` around the
body (``heading`` = the direction the body faces in that frame), at a distance that keeps the
posed body in view (``1.02 r / tan(fov/2)`` for the bounding-box half-diagonal ``r``) times
U[1, 1.25], at a random height, looking at the body's centre. ``K, R, t`` are recorded with
:func:`..neural.camera.blender_camera_to_krt` from the camera Blender renders with.

Splits (no frame shared, and disjoint by motion *and* camera): with 3+ motions one motion is
held out for ``val`` and one for ``test``; with 2 the second is ``test`` and ``val`` comes from
the train motion's last 20 % of time; with 1, ``val``/``test`` use the last 20 % of the clip.
``val``/``test`` cameras lie in a held-out yaw sector (``HOLDOUT_SECTOR_DEG`` wide, relative to
the body's facing, position chosen by the seed), train cameras outside it.

Resumable: ``capture.json`` records the settings; a second run with the same settings skips
frames whose image and mask are already on disk (written atomically) and yields the identical
dataset; other settings in a used folder are refused. The descriptive files
(``dataset.json``, ``cameras.json``, ``body.npz``, ``vertex_colors.npy``) are written when the
last frame is done.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

import bpy

from ..common.deps import np

from ..errors import CancelledError, DatasetError, NeuralAvatarError
from ..common.guards import float_in, int_in
from ..blender import rig
from . import subject

FORMAT = "neural_avatar.capture/1"
HOLDOUT_SECTOR_DEG = 60.0
LENS_MM = 50.0
SENSOR_MM = 36.0
HOLDOUT_TIME = 0.2  # last fraction of a clip's time kept for val/test when motions are few
CAMERA_NAME = "NeuralAvatar_CaptureCamera"


# ------------------------------------------------------------------------------ plan (pure)
def split_counts(n: int):
    """(train, val, test) frame counts: 10 % val and test each (at least 1 from 3 frames)."""
    if n < 1:
        raise DatasetError("A capture needs at least one frame.")
    if n == 1:
        return 1, 0, 0
    if n == 2:
        return 1, 0, 1
    k = max(1, int(round(0.1 * n)))
    return n - 2 * k, k, k


def _heading(root_aa: np.ndarray) -> float:
    """World yaw (radians, atan2(y, x)) of the body's front (model +Z) under ``root_orient``."""
    from ..body import kinematics

    R = kinematics.axis_angle_to_matrix(np.asarray(root_aa, np.float64).reshape(1, 3))[0]
    f = R @ np.array([0.0, 0.0, 1.0])
    if math.hypot(f[0], f[1]) < 1e-6:  # facing straight up/down: use the body's up instead
        f = R @ np.array([0.0, 1.0, 0.0])
    return math.atan2(f[1], f[0])


def make_plan(model, motions, frames: int, seed: int, betas=None, views: int = 1) -> dict:
    """Which motion frame and which camera each dataset frame gets (deterministic in ``seed``).

    ``views`` > 1 captures synchronised views: consecutive groups of ``views`` frames share one
    pose and are seen from cameras spread evenly (jittered) over the split's yaw range, like a
    multi-camera studio (AniPixel / HVS source views). ``pose_group (N,)`` says which frames
    share a pose; with ``views == 1`` every frame is its own group.

    ``motions``: list of :class:`..motion.Motion`. Returns a dict of arrays (length ``frames``):
    ``split`` (str), ``motion_index``, ``frame_in_motion``, ``poses (N,J,3)``, ``transl (N,3)``,
    ``yaw_rel`` (deg), ``cam_world (N,4,4)`` (Blender camera matrix: looks along -Z, +Y up),
    ``target (N,3)``, plus ``sector`` (held-out yaw sector start, deg)."""
    from ..body import kinematics

    if not isinstance(frames, (int, np.integer)) or isinstance(frames, bool) or frames < 1:
        raise DatasetError(f"The number of frames must be a positive integer, got {frames!r}.")
    if not motions:
        raise DatasetError("No motion clips to pose the subject with.")
    if not isinstance(views, (int, np.integer)) or isinstance(views, bool) or not 1 <= views <= 64:
        raise DatasetError(f"The number of synchronised views must be 1 to 64, got {views!r}.")
    if frames % views:
        raise DatasetError(f"{frames} frames do not split into groups of {views} synchronised views; "
                           "choose a multiple.")
    J = model.num_joints
    rng = np.random.default_rng(int(seed))
    V = int(views)
    n_tr, n_va, n_te = (c * V for c in split_counts(int(frames) // V))
    M = len(motions)
    order = rng.permutation(M)
    # per split: list of (motion index, first frame, end frame)
    spans = {}
    if M >= 3:
        test_m, val_m = int(order[0]), int(order[1])
        spans["train"] = [(int(m), 0, motions[m].num_frames) for m in order[2:]]
        spans["val"] = [(val_m, 0, motions[val_m].num_frames)]
        spans["test"] = [(test_m, 0, motions[test_m].num_frames)]
    else:
        def cut(m):
            n = motions[m].num_frames
            c = max(1, min(n - 1, int(round(n * (1 - HOLDOUT_TIME))))) if n > 1 else 1
            return c, n

        if M == 2:
            test_m, tr_m = int(order[0]), int(order[1])
            c, n = cut(tr_m)
            spans["train"] = [(tr_m, 0, c)]
            spans["val"] = [(tr_m, c, n)] if n > c else [(tr_m, 0, c)]
            spans["test"] = [(test_m, 0, motions[test_m].num_frames)]
        else:
            c, n = cut(0)
            spans["train"] = [(0, 0, c)]
            rest = (0, c, n) if n > c else (0, 0, c)
            mid = (rest[1] + rest[2]) // 2
            spans["val"] = [(0, rest[1], max(mid, rest[1] + 1))]
            spans["test"] = [(0, min(mid, rest[2] - 1), rest[2])]
    sector = float(rng.uniform(0.0, 360.0))
    splits = ["train"] * n_tr + ["val"] * n_va + ["test"] * n_te
    N = len(splits)
    out = {"split": np.asarray(splits), "motion_index": np.zeros(N, np.int64),
           "frame_in_motion": np.zeros(N, np.int64), "poses": np.zeros((N, J, 3)),
           "transl": np.zeros((N, 3)), "yaw_rel": np.zeros(N), "cam_world": np.zeros((N, 4, 4)),
           "target": np.zeros((N, 3)), "sector": sector, "pose_group": np.arange(N) // V}
    pose_cache = {}
    b = np.zeros(model.num_betas) if betas is None else np.asarray(betas, np.float64)
    half_fov = math.atan(0.5 * SENSOR_MM / LENS_MM)
    for i, sp in enumerate(splits):
        k = i % V  # view within the pose group
        if k == 0:
            m, f0, f1 = spans[sp][int(rng.integers(len(spans[sp])))]
            f = int(rng.integers(f0, max(f1, f0 + 1)))
            if m not in pose_cache:
                pose_cache[m] = motions[m].pose_aa(J)
            pose = pose_cache[m][f]
            trans = np.asarray(motions[m].trans[f], np.float64)
        lo_y, span = (sector + HOLDOUT_SECTOR_DEG, 360.0 - HOLDOUT_SECTOR_DEG) if sp == "train" \
            else (sector, HOLDOUT_SECTOR_DEG)
        # one view: uniform over the range; V views: stratified (view k in the k-th of V slices)
        yaw = (lo_y + span * (k + rng.uniform(0.0, 1.0)) / V) % 360.0
        dist_scale = rng.uniform(1.0, 1.25)
        elev = rng.uniform(-0.15, 0.45)  # camera height above the centre, fraction of distance
        v, _ = kinematics.forward(model, b, pose, trans)
        lo, hi = v.min(0), v.max(0)
        centre = 0.5 * (lo + hi)
        radius = 0.5 * float(np.linalg.norm(hi - lo))
        dist = 1.02 * radius / math.tan(half_fov) * dist_scale
        a = _heading(pose[0]) + math.radians(yaw)
        d = np.array([math.cos(a), math.sin(a), elev])
        eye = centre + dist * d / np.linalg.norm(d)
        out["cam_world"][i] = _look_at_matrix(eye, centre)
        out["motion_index"][i], out["frame_in_motion"][i] = m, f
        out["poses"][i], out["transl"][i] = pose, trans
        out["yaw_rel"][i], out["target"][i] = yaw, centre
    return out


def _look_at_matrix(eye, target) -> np.ndarray:
    """Blender camera world matrix at ``eye`` looking at ``target`` (local -Z forward, +Y up
    as close to world +Z as possible)."""
    fwd = np.asarray(target, np.float64) - np.asarray(eye, np.float64)
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-9:
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    M = np.eye(4)
    M[:3, 0], M[:3, 1], M[:3, 2], M[:3, 3] = right, up, -fwd, eye
    return M


# ------------------------------------------------------------------------------ Blender side
def current_view_plan(scene, arm, names) -> dict:
    """The plan of a one-frame capture of ``arm`` as the scene shows it now: the pose at the
    current frame (bone rotations as axis-angle, the pelvis bone's location as ``transl``; the
    armature object's own transform is kept, in ``object_matrix``) seen by the scene camera.
    Same keys as :func:`make_plan`."""
    cam = scene.camera
    if cam is None or cam.type != "CAMERA":
        raise DatasetError("The scene has no camera to take the image from: add one, or give an image folder "
                           "that holds a capture.")
    if cam.data.type != "PERSP":
        raise DatasetError(f"The scene camera '{cam.name}' is {cam.data.type.lower()}; the avatars need a "
                           "perspective camera.")
    pose = rig.pose_axis_angle(arm, names)
    pelvis = arm.pose.bones.get(names[0])
    transl = np.asarray(pelvis.location, np.float64) if pelvis is not None else np.zeros(3)
    return {"split": np.asarray(["train"]), "motion_index": np.zeros(1, np.int64),
            "frame_in_motion": np.asarray([int(scene.frame_current)], np.int64), "poses": pose[None],
            "transl": transl[None], "yaw_rel": np.zeros(1), "cam_world": np.asarray(cam.matrix_world)[None],
            "target": np.zeros((1, 3)), "sector": 0.0, "pose_group": np.zeros(1, np.int64)}


def set_pose(arm, names, pose_aa: np.ndarray, transl: np.ndarray, keep_object: bool = False):
    """AMASS convention: identity object, bone quaternions from axis-angle, pelvis location = transl
    (``keep_object``: the armature object keeps its transform)."""
    from mathutils import Quaternion

    if not keep_object:
        arm.location = (0.0, 0.0, 0.0)
        arm.rotation_mode = "XYZ"
        arm.rotation_euler = (0.0, 0.0, 0.0)
        arm.scale = (1.0, 1.0, 1.0)
    pbs = arm.pose.bones
    for j, n in enumerate(names):
        pb = pbs.get(n)
        if pb is None:
            continue
        v = np.asarray(pose_aa[j], np.float64)
        ang = float(np.linalg.norm(v))
        pb.rotation_mode = "QUATERNION"
        pb.rotation_quaternion = Quaternion((v / ang).tolist(), ang) if ang > 1e-12 else (1.0, 0.0, 0.0, 0.0)
        pb.scale = (1.0, 1.0, 1.0)
        pb.location = tuple(float(x) for x in transl) if j == 0 else (0.0, 0.0, 0.0)


class _SceneState:
    """Snapshot of what a capture changes (render settings, camera, rig pose/transform/action)."""

    _RENDER = ("engine", "resolution_x", "resolution_y", "resolution_percentage", "film_transparent",
               "filepath", "dither_intensity", "use_border", "pixel_aspect_x", "pixel_aspect_y")

    def __init__(self, scene, arm):
        self.scene, self.arm = scene, arm
        r = scene.render
        self.render = {k: getattr(r, k) for k in self._RENDER}
        self.img = (r.image_settings.file_format, r.image_settings.color_mode, r.image_settings.color_depth)
        self.view = (scene.view_settings.view_transform, scene.view_settings.look)
        self.camera = scene.camera
        self.cycles = {k: getattr(scene.cycles, k) for k in ("samples", "use_denoising", "device",
                                                              "use_adaptive_sampling")} \
            if hasattr(scene, "cycles") else {}
        self.obj = (tuple(arm.location), arm.rotation_mode, tuple(arm.rotation_euler),
                    tuple(arm.rotation_quaternion), tuple(arm.scale))
        self.pose = {pb.name: (pb.rotation_mode, tuple(pb.rotation_quaternion), tuple(pb.rotation_euler),
                               tuple(pb.location), tuple(pb.scale)) for pb in arm.pose.bones}
        ad = arm.animation_data
        self.action = ad.action if ad is not None else None
        self.use_nla = ad.use_nla if ad is not None else None
        if ad is not None:  # animation would overwrite the pose we set on every render
            ad.action = None
            ad.use_nla = False

    def restore(self):
        scene, arm = self.scene, self.arm
        try:
            for k, v in self.render.items():
                setattr(scene.render, k, v)
            s = scene.render.image_settings
            s.file_format, s.color_mode, s.color_depth = self.img
            scene.view_settings.view_transform, scene.view_settings.look = self.view
            for k, v in self.cycles.items():
                setattr(scene.cycles, k, v)
            scene.camera = self.camera
        except (ReferenceError, TypeError, AttributeError):
            pass
        try:
            loc, mode, eul, quat, scale = self.obj
            arm.location, arm.rotation_mode, arm.rotation_euler = loc, mode, eul
            arm.rotation_quaternion, arm.scale = quat, scale
            for pb in arm.pose.bones:
                st = self.pose.get(pb.name)
                if st:
                    pb.rotation_mode, pb.rotation_quaternion, pb.rotation_euler, pb.location, pb.scale = st
            ad = arm.animation_data
            if ad is not None:
                if self.use_nla is not None:
                    ad.use_nla = self.use_nla
                ad.action = self.action
        except ReferenceError:
            pass


def _vertex_colors_of(arm) -> np.ndarray:
    """The body's ``neural_avatar_color`` attribute as sRGB (V,3) float32."""
    mesh_obj = rig.body_mesh(arm)
    attr = mesh_obj.data.color_attributes.get(rig.COLOR_ATTR) if mesh_obj else None
    if attr is None or attr.domain != "POINT":
        raise DatasetError(f"The body '{arm.name}' has no per-vertex colour attribute '{rig.COLOR_ATTR}'; "
                           "dress it first (Add Demo Subject) or paint that attribute.")
    c = np.empty(len(attr.data) * 4, np.float32)
    attr.data.foreach_get("color", c)
    c = c.reshape(-1, 4)[:, :3]
    if attr.data_type == "FLOAT_COLOR":
        c = subject.linear_to_srgb(c)
    return np.clip(c, 0, 1).astype(np.float32)


def _check_writable(out_dir: str):
    if not out_dir:
        raise DatasetError("No dataset folder given.")
    try:
        os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
        os.makedirs(os.path.join(out_dir, "masks"), exist_ok=True)
        fd, p = tempfile.mkstemp(dir=out_dir, prefix=".write_test_")
        os.close(fd)
        os.remove(p)
    except OSError as e:
        raise DatasetError(f"Cannot write to the dataset folder '{out_dir}': {e.strerror or e}.") from e


def _write_png(path: str, arr: np.ndarray):
    import cv2

    tmp = path + ".part.png"
    if not cv2.imwrite(tmp, arr):
        raise DatasetError(f"Could not write '{path}'.")
    os.replace(tmp, path)


class CaptureJob:
    """One capture, one frame per :meth:`step` (the modal operator calls it per timer tick)."""

    def __init__(self, context, arm, out_dir: str, frames: int, res: int, engine: str = "CYCLES",
                 seed: int = 0, motions=None, background=subject.DEFAULT_BACKGROUND,
                 samples: int = subject.CYCLES_SAMPLES, model=None, vertex_colors=None, views: int = 1,
                 current_view: bool = False):
        from .. import motion as motion_lib

        if not isinstance(frames, (int, np.integer)) or isinstance(frames, bool) or frames < 1:
            raise DatasetError(f"The number of frames must be at least 1, got {frames!r}.")
        if not isinstance(res, (int, np.integer)) or res < 8:
            raise DatasetError(f"The capture resolution must be at least 8 pixels, got {res!r}.")
        if arm is None or arm.type != "ARMATURE" or not arm.neural_avatar.is_body:
            raise NeuralAvatarError("Select a Neural Avatar body to capture.")
        self.context, self.scene, self.arm = context, context.scene, arm
        self.out_dir = os.path.abspath(out_dir)
        self.model = model or rig.model_for(arm)
        paths = [str(p) for p in (motions if motions else motion_lib.bundled_motion_paths())]
        if not paths:
            raise DatasetError("No motion clips found: import or bundle AMASS *_poses.npz files.")
        self.motion_paths = paths
        self.motions = [motion_lib.load_motion(p) for p in paths]
        self.names = list(self.model.joint_names)
        self.betas = rig.current_betas(arm, self.model)
        self.vertex_colors = np.asarray(vertex_colors, np.float32) if vertex_colors is not None \
            else _vertex_colors_of(arm)
        if self.vertex_colors.shape != (self.model.num_verts, 3):
            raise DatasetError(f"Vertex colours have shape {self.vertex_colors.shape}, the body has "
                               f"{self.model.num_verts} vertices.")
        self.res, self.seed, self.samples = int(res), int(seed), int(samples)
        self.background = tuple(float(c) for c in background)
        self.engine_req = str(engine).upper()
        self.settings = {"format": FORMAT, "frames": int(frames), "res": self.res, "seed": self.seed,
                         "engine": self.engine_req, "samples": self.samples, "background": list(self.background),
                         "motions": [os.path.basename(p) for p in paths], "body_model": self.model.model_id,
                         "betas": [round(float(x), 6) for x in self.betas]}
        self.views = int(views)
        if self.views != 1:  # absent for single-view captures, so older captures still resume
            self.settings["views"] = self.views
        #: one frame of the body as the scene shows it now (pose, object transform, scene camera)
        self.current_view = bool(current_view)
        if self.current_view:
            if int(frames) != 1 or self.views != 1:
                raise DatasetError("A capture of the current view has one frame and one view.")
            self.plan = current_view_plan(self.scene, arm, self.names)
            self.view_camera = self.scene.camera
            self.settings["current_view"] = {"frame": int(self.scene.frame_current), "camera": self.scene.camera.name}
        _check_writable(self.out_dir)
        self._check_resume()
        if not self.current_view:
            self.plan = make_plan(self.model, self.motions, int(frames), self.seed, self.betas, self.views)
        self.N = int(frames)
        self.i = 0
        self.rendered = 0
        self.cams = [None] * self.N
        self.object_matrix = np.zeros((self.N, 4, 4))
        self.frame_seconds = []
        self.state = None
        self.cam_obj = None
        self.tmp_dir = None
        self.finished = False

    # ---- resume
    def _check_resume(self):
        p = os.path.join(self.out_dir, "capture.json")
        if os.path.isfile(p):
            try:
                with open(p, "r", encoding="utf-8") as f:
                    old = json.load(f)
            except (OSError, ValueError, RecursionError):
                old = None
            if old != self.settings:
                diff = sorted(k for k in set(self.settings) | set(old or {})
                              if (old or {}).get(k) != self.settings.get(k))
                raise DatasetError(
                    f"'{self.out_dir}' holds a capture made with other settings ({', '.join(diff)}); "
                    "choose another folder, or the same settings to resume it.")
        else:
            existing = [f for f in os.listdir(os.path.join(self.out_dir, "images")) if f.endswith(".png")]
            if existing or os.path.isfile(os.path.join(self.out_dir, "dataset.json")):
                raise DatasetError(f"'{self.out_dir}' already holds images of another dataset; choose an empty folder.")
            with open(p, "w", encoding="utf-8") as f:
                json.dump(self.settings, f, indent=1)

    def done_on_disk(self, i: int) -> bool:
        return all(os.path.isfile(os.path.join(self.out_dir, d, f"{i:06d}.png")) for d in ("images", "masks"))

    # ---- lifecycle
    def start(self):
        scene = self.scene
        self.state = _SceneState(scene, self.arm)
        try:
            self.engine = subject.setup_ground_truth_render(scene, self.res, self.engine_req, self.samples)
            if self.current_view:  # the scene's frame shape, its longer side at the capture's resolution
                rx = self.state.render["resolution_x"] * self.state.render["pixel_aspect_x"]
                ry = self.state.render["resolution_y"] * self.state.render["pixel_aspect_y"]
                k = self.res / max(rx, ry, 1.0)
                scene.render.resolution_x = max(8, int(round(rx * k)))
                scene.render.resolution_y = max(8, int(round(ry * k)))
            cam_data = bpy.data.cameras.new(CAMERA_NAME)
            cam_data.lens = LENS_MM
            cam_data.sensor_width = SENSOR_MM
            cam_data.sensor_fit = "AUTO"
            cam_data.clip_start, cam_data.clip_end = 0.05, 200.0
            self.cam_obj = bpy.data.objects.new(CAMERA_NAME, cam_data)
            scene.collection.objects.link(self.cam_obj)
            scene.camera = self.cam_obj
            self.tmp_dir = tempfile.mkdtemp(prefix="na_capture_")
        except Exception:
            self.cleanup()
            raise

    def run(self, progress=None, should_stop=None):
        """Render every remaining frame (``step()`` until finished), then clean up.
        ``should_stop()`` returning True raises :class:`CancelledError` (frames done stay)."""
        try:
            while not self.finished:
                if should_stop is not None and should_stop():
                    raise CancelledError(f"Capture cancelled after {self.i} of {self.N} frames; run it "
                                         "again with the same settings to resume.")
                info = self.step()
                if progress is not None:
                    progress(info)
        finally:
            self.cleanup()

    def cleanup(self):
        if self.state is not None:
            self.state.restore()
            self.state = None
        if self.cam_obj is not None:
            data = self.cam_obj.data
            try:
                bpy.data.objects.remove(self.cam_obj)
                bpy.data.cameras.remove(data)
            except ReferenceError:
                pass
            self.cam_obj = None
        if self.tmp_dir and os.path.isdir(self.tmp_dir):
            for f in os.listdir(self.tmp_dir):
                os.remove(os.path.join(self.tmp_dir, f))
            os.rmdir(self.tmp_dir)
            self.tmp_dir = None

    def pose_frame(self, i: int):
        """Put the rig and the camera in frame ``i``'s state; record K, R, t and object_matrix."""
        from mathutils import Matrix

        from ..neural.inputs.camera import blender_camera_to_krt

        p = self.plan
        set_pose(self.arm, self.names, p["poses"][i], p["transl"][i], keep_object=self.current_view)
        self.cam_obj.matrix_world = Matrix(p["cam_world"][i].tolist())
        if self.current_view:  # the scene camera's optics (its frame is square here: sensor fit AUTO)
            src, dst = self.view_camera.data, self.cam_obj.data
            for k in ("lens", "sensor_width", "sensor_height", "sensor_fit", "shift_x", "shift_y",
                      "clip_start", "clip_end"):
                setattr(dst, k, getattr(src, k))
        self.context.view_layer.update()
        if self.model.has_posedirs:
            rig.update_correctives(self.arm, force=True)
        cam = self.cam_obj.data
        r = self.scene.render
        K, R, t = blender_camera_to_krt(
            np.array(self.cam_obj.matrix_world), cam.lens, cam.sensor_width, cam.sensor_height,
            cam.sensor_fit, cam.shift_x, cam.shift_y, r.resolution_x, r.resolution_y,
            r.pixel_aspect_x, r.pixel_aspect_y, cam.clip_start, cam.clip_end, r.resolution_percentage, cam.type)
        self.cams[i] = (K, R, t)
        self.object_matrix[i] = np.array(self.arm.matrix_world)

    def step(self) -> dict:
        """Process the next frame (render unless already on disk); returns a progress dict."""
        if self.state is None:
            self.start()
        i = self.i
        self.pose_frame(i)
        rendered = False
        t0 = time.perf_counter()
        if not self.done_on_disk(i):
            rgba = subject.render_ground_truth(self.scene, self.tmp_dir)
            img, mask = subject.composite(rgba, self.background)
            _write_png(os.path.join(self.out_dir, "images", f"{i:06d}.png"), img[:, :, ::-1])
            _write_png(os.path.join(self.out_dir, "masks", f"{i:06d}.png"), mask)
            rendered = True
            self.rendered += 1
            self.frame_seconds.append(time.perf_counter() - t0)
        self.i += 1
        info = {"frame": i, "done": self.i, "of": self.N, "split": str(self.plan["split"][i]),
                "rendered": rendered, "seconds": round(time.perf_counter() - t0, 3)}
        if self.i >= self.N:
            self.write_metadata()
            self.finished = True
            self.cleanup()
        return info

    def write_metadata(self):
        p = self.plan
        N = self.N
        splits = {s: [int(i) for i in np.nonzero(p["split"] == s)[0]] for s in ("train", "val", "test")}
        cam_ids = [f"{p['split'][i]}_{i:06d}" for i in range(N)]
        frames = [{"index": i, "camera_id": cam_ids[i], "K": self.cams[i][0].tolist(),
                   "R": self.cams[i][1].tolist(), "t": self.cams[i][2].tolist(),
                   "width": self.scene.render.resolution_x, "height": self.scene.render.resolution_y}
                  for i in range(N)]
        extra = {"pose_group": p["pose_group"]} if self.views > 1 else {}
        np.savez(os.path.join(self.out_dir, "body.npz"), poses=p["poses"],
                 betas=np.repeat(self.betas[None], N, 0), transl=p["transl"], object_matrix=self.object_matrix,
                 motion_index=p["motion_index"], frame_in_motion=p["frame_in_motion"], **extra)
        np.save(os.path.join(self.out_dir, "vertex_colors.npy"), self.vertex_colors)
        with open(os.path.join(self.out_dir, "cameras.json"), "w", encoding="utf-8") as f:
            json.dump({"frames": frames}, f)
        mt = self.arm.neural_avatar.model_type.lower()
        meta = {
            "format": FORMAT, "body_model": self.model.model_id, "model_type": mt,
            "gender": self.arm.neural_avatar.gender.lower(), "num_joints": int(self.model.num_joints),
            "resolution": [self.scene.render.resolution_y, self.scene.render.resolution_x], "num_frames": N,
            "engine": self.engine_req if self.engine_req != "BLENDER_WORKBENCH" else "WORKBENCH",
            "background": list(self.background), "splits": splits,
            "motions": [os.path.splitext(os.path.basename(x))[0] for x in self.motion_paths],
            "cameras": cam_ids,
            **({"views_per_pose": self.views} if self.views > 1 else {}),
            "capture": {"seed": self.seed, "samples": self.samples, "lens_mm": LENS_MM, "sensor_mm": SENSOR_MM,
                        "holdout_sector_deg": [float(p["sector"]), HOLDOUT_SECTOR_DEG],
                        "yaw_rel_deg": [round(float(y), 3) for y in p["yaw_rel"]]},
        }
        tmp = os.path.join(self.out_dir, "dataset.json.part")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
        os.replace(tmp, os.path.join(self.out_dir, "dataset.json"))


def capture_dataset(context, out_dir: str, frames: int, res: int, engine: str = "CYCLES", seed: int = 0,
                    motions=None, progress=None, should_stop=None, arm=None, **kw) -> dict:
    """Capture ``frames`` frames of the body ``arm`` (default: the selected body, else the only
    one) into ``out_dir``. ``progress(info)`` is called after every frame; ``should_stop()``
    returning True cancels (raises :class:`CancelledError`; frames done so far stay on disk and a
    later run with the same settings resumes). Returns a summary dict."""
    arm = arm or _pick_body(context)
    job = CaptureJob(context, arm, out_dir, frames, res, engine, seed, motions, **kw)
    job.run(progress, should_stop)
    secs = job.frame_seconds
    return {"out_dir": job.out_dir, "frames": job.N, "rendered": job.rendered,
            "seconds_per_frame": float(np.mean(secs)) if secs else 0.0, "engine": job.engine_req}


def _pick_body(context):
    arm = rig.find_body(context)
    if arm is None:
        bodies = rig.body_armatures(context.scene)
        if len(bodies) == 1:
            arm = bodies[0]
        elif bodies:
            raise NeuralAvatarError("Several bodies are in the scene: select the one to capture.")
        else:
            raise NeuralAvatarError("The scene has no Neural Avatar body: add one (and dress it with "
                                    "Add Demo Subject) before capturing.")
    return arm
