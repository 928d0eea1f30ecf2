"""Convert the DeepMimic humanoid clips shipped in pybullet into AMASS SMPL-H ``.npz`` files.

Build-time tool (wired by the lead to ``python -m neural_avatar build-motions``); pure numpy,
no bpy, and pybullet is **not** needed at run time: the clips it converts are bundled under
``data/motions/``. Sources: pybullet 3.2.7's ``pybullet_data/data/motions/humanoid3d_*.txt``
and ``pybullet_data/humanoid/humanoid.urdf`` (zlib licence), read from an installed
``pybullet_data`` package, an unpacked folder, the wheel (``.whl``/``.zip``) or the sdist
(``.tar.gz``).

DeepMimic's humanoid (Peng et al. 2018, "DeepMimic: example-guided deep reinforcement learning
of physics-based character skills") is Y up, faces +X, its right side is +Z; every link frame
is parallel to the world at rest, the arms hang **down** (the URDF's shoulder→elbow offset is
−Y) and pybullet loads it with ``globalScaling = 0.25``. A clip frame holds 44 numbers:
duration, root position (3), root quaternion (4, w x y z), then local quaternions (w x y z) of
chest, neck, right hip, right knee angle (1), right ankle, right shoulder, right elbow angle (1),
left hip, left knee angle, left ankle, left shoulder, left elbow angle. Knees and elbows are
revolute joints about their local +Z.

The SMPL convention (Loper et al. 2015, eq. 4: the world transform of joint k is
``G_k = Π_{j ∈ A(k)} [R(θ_j) | j_j]`` over its ancestors) wants per-joint axis-angles that are
local to the parent, relative to SMPL's T-pose rest, in the model frame (Y up, faces +Z, left
is +X). With ``C`` the rotation from DeepMimic's body frame to SMPL's model frame, a DeepMimic
local rotation ``R`` becomes ``C R Cᵀ`` (its quaternion keeps ``w`` and rotates its axis by
``C``). The arms need one more step because the two rests differ: with ``A`` the rotation that
takes SMPL's T-pose arm onto DeepMimic's hanging arm (−90° about +Z for the left arm, +90° for
the right), a joint whose own rest differs by ``A_k`` and whose parent's by ``A_p`` gets
``A_pᵀ (C R Cᵀ) A_k`` so that every world bone transform ``G_k A_k⁻¹`` equals DeepMimic's.
The root gets ``W Q Cᵀ`` (``W``: DeepMimic's Y-up world → AMASS's Z-up world, X forward kept).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from ..errors import MotionFileError
from .amass import SMPL_JOINT_NAMES, Motion, save_amass_smplh
from .resample import (
    _interpolate_at,
    axis_angle_from_quat,
    matrix_to_quat,
    quat_conjugate,
    quat_from_axis_angle,
    quat_multiply,
    quat_rotate,
)

__all__ = [
    "DEFAULT_CLIPS",
    "RestReference",
    "SMPL_REFERENCE",
    "convert_frames",
    "deepmimic_reference",
    "deepmimic_joint_positions",
    "smpl_joint_positions",
    "reference_skeleton",
    "read_clip",
    "main",
]

#: Clips shipped under ``data/motions/`` (all uniformly timed in pybullet 3.2.7).
DEFAULT_CLIPS = ("walk", "run", "jump", "dance_a", "kick", "punch")

#: pybullet's DeepMimic environment loads ``humanoid.urdf`` with ``globalScaling=0.25``.
DM_SCALE = 0.25

# URDF joint origins (unscaled, DeepMimic body frame: X forward, Y up, Z right) of
# pybullet 3.2.7's ``humanoid/humanoid.urdf``; checked against the URDF when it is read.
DM_OFFSETS = {
    "chest": ("root", (0.0, 0.944604, 0.0)),
    "neck": ("chest", (0.0, 0.895576, 0.0)),
    "right_hip": ("root", (0.0, 0.0, 0.339548)),
    "right_knee": ("right_hip", (0.0, -1.686184, 0.0)),
    "right_ankle": ("right_knee", (0.0, -1.639480, 0.0)),
    "right_shoulder": ("chest", (-0.0962, 0.974, 0.73244)),
    "right_elbow": ("right_shoulder", (0.0, -1.099152, 0.0)),
    "right_wrist": ("right_elbow", (0.0, -1.035788, 0.0)),
    "left_hip": ("root", (0.0, 0.0, -0.339548)),
    "left_knee": ("left_hip", (0.0, -1.686184, 0.0)),
    "left_ankle": ("left_knee", (0.0, -1.639480, 0.0)),
    "left_shoulder": ("chest", (-0.0962, 0.974, -0.73244)),
    "left_elbow": ("left_shoulder", (0.0, -1.099152, 0.0)),
    "left_wrist": ("left_elbow", (0.0, -1.035788, 0.0)),
}
#: Depth of the sole below the ankle joint (unscaled): the foot box's centre y − half height.
DM_SOLE_BELOW_ANKLE = 0.09 + 0.22 / 2.0
#: Root height above the floor when standing straight (hips sit at root height), metres.
DM_HIP_HEIGHT = DM_SCALE * (1.686184 + 1.639480 + DM_SOLE_BELOW_ANKLE)

# Frame columns (0 = duration).
_COL = {
    "root_pos": slice(1, 4), "root_rot": slice(4, 8), "chest": slice(8, 12),
    "neck": slice(12, 16), "right_hip": slice(16, 20), "right_knee": 20,
    "right_ankle": slice(21, 25), "right_shoulder": slice(25, 29), "right_elbow": 29,
    "left_hip": slice(30, 34), "left_knee": 34, "left_ankle": slice(35, 39),
    "left_shoulder": slice(39, 43), "left_elbow": 43,
}
FRAME_WIDTH = 44

# DeepMimic body frame → SMPL model frame (forward X→Z, up Y→Y, right Z→−X).
C_DM_TO_SMPL = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
# DeepMimic world (Y up) → AMASS world (Z up): x → x, y → z, z → −y.
W_DM_TO_AMASS = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
_QC = matrix_to_quat(C_DM_TO_SMPL)
_QW = matrix_to_quat(W_DM_TO_AMASS)
# SMPL T-pose arm → DeepMimic's hanging arm, per side (about the model's +Z axis).
_Q_ARM = {
    "left": quat_from_axis_angle(np.array([0.0, 0.0, -np.pi / 2])),
    "right": quat_from_axis_angle(np.array([0.0, 0.0, np.pi / 2])),
}

_J = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)


@dataclasses.dataclass(frozen=True)
class RestReference:
    """Rest-pose landmarks of the SMPL-layout body the clips are fitted to, model frame."""

    pelvis: tuple
    """Rest position of joint 0 (smplx rotates the root about it; ``trans`` is added)."""
    hip_center: tuple
    """Midpoint of the two hip joints at rest (DeepMimic's root sits at hip height)."""
    sole_y: float
    """Height (model Y) of the soles at rest: the floor when standing."""

    @property
    def hip_height(self) -> float:
        return float(self.hip_center[1] - self.sole_y)


#: Landmarks of an average adult SMPL body (SMPL's template: pelvis ≈ 0.93 m above the soles,
#: hips ≈ 9 cm below the pelvis, origin near the pelvis). Used by ``--smpl-landmarks``.
SMPL_REFERENCE = RestReference(pelvis=(0.0, -0.223, 0.028), hip_center=(0.0, -0.314, 0.022),
                               sole_y=-1.15)


# ----------------------------------------------------------------------------------------
# Reading the sources
# ----------------------------------------------------------------------------------------


class _Source:
    """Finds files by their path suffix in a folder, a wheel/zip or an sdist tarball."""

    def __init__(self, path: Path):
        self.path = path
        if path.is_dir():
            self.kind = "dir"
        elif zipfile.is_zipfile(path):
            self.kind = "zip"
            with zipfile.ZipFile(path) as z:
                self._names = z.namelist()
        elif tarfile.is_tarfile(path):
            self.kind = "tar"
            with tarfile.open(path) as t:
                self._names = [m.name for m in t.getmembers() if m.isfile()]
        else:
            raise MotionFileError(
                f"'{path}' is neither a folder, a wheel/zip nor a tar archive of pybullet."
            )

    def read(self, suffix: str) -> bytes:
        """Bytes of the file whose path ends with ``suffix`` (e.g. ``humanoid/humanoid.urdf``)."""
        if self.kind == "dir":
            for base in (self.path, self.path / "pybullet_data"):
                cand = base / suffix.split("pybullet_data/", 1)[-1]
                if cand.is_file():
                    return cand.read_bytes()
            hits = sorted(self.path.rglob(Path(suffix).name))
            hits = [h for h in hits if h.as_posix().endswith(suffix)]
            if hits:
                return hits[0].read_bytes()
        else:
            hits = sorted(n for n in self._names if n.endswith("/" + suffix) or n == suffix)
            if hits:
                if self.kind == "zip":
                    with zipfile.ZipFile(self.path) as z:
                        return z.read(hits[0])
                with tarfile.open(self.path) as t:
                    f = t.extractfile(hits[0])
                    return f.read()
        raise MotionFileError(f"'{suffix}' was not found in '{self.path}'.")


def default_source() -> Path:
    """The installed ``pybullet_data`` folder (found without importing pybullet)."""
    import importlib.util

    spec = importlib.util.find_spec("pybullet_data")
    if spec is None or not spec.submodule_search_locations:
        raise MotionFileError(
            "pybullet_data is not installed. Install pybullet==3.2.7 for this build step, or "
            "pass --source with its wheel, sdist or pybullet_data folder."
        )
    return Path(list(spec.submodule_search_locations)[0])


def check_urdf(urdf: bytes) -> None:
    """Check that the URDF's joint offsets are the ones this converter was written for."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(urdf.rstrip(b"\x00\r\n\t "))  # pybullet's file ends with a NUL
    found = {}
    for j in root.iter("joint"):
        origin = j.find("origin")
        parent = j.find("parent")
        if origin is None or parent is None:
            continue
        xyz = tuple(float(v) for v in origin.get("xyz", "0 0 0").split())
        found[j.get("name")] = (parent.get("link"), xyz)
    for name, (parent, xyz) in DM_OFFSETS.items():
        if name not in found:
            raise MotionFileError(f"humanoid.urdf has no joint '{name}'.")
        fp, fxyz = found[name]
        if fp != parent or not np.allclose(fxyz, xyz, atol=1e-6):
            raise MotionFileError(
                f"humanoid.urdf joint '{name}' is {fp} {fxyz}, expected {parent} {xyz}: "
                "this pybullet version's humanoid differs from 3.2.7's."
            )


def read_clip(text: bytes | str) -> np.ndarray:
    """Parse a DeepMimic motion file (JSON with ``"Frames"``) into ``(N, 44)`` float64."""
    try:
        data = json.loads(text)
        frames = np.asarray(data["Frames"], dtype=np.float64)
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise MotionFileError(f"Not a DeepMimic motion file: {e}") from None
    if frames.ndim != 2 or frames.shape[1] != FRAME_WIDTH or frames.shape[0] < 1:
        raise MotionFileError(
            f"DeepMimic frames have shape {frames.shape}, expected (N, {FRAME_WIDTH})."
        )
    if not np.all(np.isfinite(frames)):
        raise MotionFileError("DeepMimic frames contain NaN or infinite values.")
    return frames


# ----------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------


def _quat(frames: np.ndarray, key: str) -> np.ndarray:
    q = frames[:, _COL[key]]
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def _revolute_z(frames: np.ndarray, key: str) -> np.ndarray:
    """Quaternion of a rotation by the column's angle about DeepMimic's local +Z."""
    angle = frames[:, _COL[key]]
    aa = np.zeros((frames.shape[0], 3))
    aa[:, 2] = angle
    return quat_from_axis_angle(aa)


def _to_smpl(q_dm: np.ndarray) -> np.ndarray:
    """``C R Cᵀ`` as a quaternion: same angle, axis rotated by ``C``."""
    return quat_multiply(quat_multiply(_QC, q_dm), quat_conjugate(_QC))


def _split(q: np.ndarray, parts: int) -> np.ndarray:
    """Axis-angle of ``q`` divided into ``parts`` equal rotations about the same axis."""
    return axis_angle_from_quat(q) / parts


def frame_times(frames: np.ndarray) -> np.ndarray:
    """Time of each frame: the cumulative sum of the preceding frames' durations."""
    return np.concatenate([[0.0], np.cumsum(frames[:-1, 0])])


def clip_rate(frames: np.ndarray) -> tuple[float, bool]:
    """``(fps, uniform)``: the clip's frame rate and whether every frame lasts the same.

    The files store durations rounded to a few digits (0.033332 for 1/30 s); a rate within
    0.1 % of an integer is taken as that integer. Non-uniform clips report the rate of
    their median frame duration.
    """
    d = frames[:-1, 0]
    if d.size == 0:
        return 30.0, True
    if np.any(d <= 0):
        raise MotionFileError("DeepMimic frame durations must be positive.")
    med = float(np.median(d))
    uniform = bool(np.all(np.abs(d - med) <= 1e-3 * med))
    fps = 1.0 / med
    if abs(fps - round(fps)) <= 1e-3 * fps:
        fps = float(round(fps))
    return fps, uniform


def convert_frames(frames: np.ndarray, reference: RestReference = SMPL_REFERENCE,
                   name: str = "deepmimic", fps: float | None = None) -> Motion:
    """DeepMimic frames ``(N, 44)`` → :class:`Motion` (SMPL-H layout, AMASS Z-up world).

    Joint map (DeepMimic → SMPL): root → pelvis (``root_orient``), chest → spine1/2/3 (a
    third of the rotation each, same axis, so their product is the chest rotation), neck →
    neck/head (half each), hips, knees (revolute), ankles → ankles, shoulders → shoulders
    (collars at rest), elbows (revolute) → elbows, wrists and feet (toes) at rest, fingers at
    rest. Translation: DeepMimic's root sits between the hips, so the hip centre is placed at
    ``s · W p`` with ``s = reference.hip_height / DM_HIP_HEIGHT`` (feet on the floor at
    z = 0 for the reference body), and ``trans = hip_centre − R_root (hip_c − pelvis) −
    pelvis`` makes smplx (``pelvis_world = pelvis + trans``) put the pelvis there.
    """
    frames = np.asarray(frames, dtype=np.float64)
    n = frames.shape[0]
    if fps is None:
        fps, _ = clip_rate(frames)
    aa = np.zeros((n, 24, 3))

    # Root: W Q Cᵀ.
    q_root = quat_multiply(quat_multiply(_QW, _quat(frames, "root_rot")), quat_conjugate(_QC))
    aa[:, 0] = axis_angle_from_quat(q_root)

    chest = _split(_to_smpl(_quat(frames, "chest")), 3)
    for j in ("spine1", "spine2", "spine3"):
        aa[:, _J[j]] = chest
    neck = _split(_to_smpl(_quat(frames, "neck")), 2)
    aa[:, _J["neck"]] = neck
    aa[:, _J["head"]] = neck

    for side in ("left", "right"):
        aa[:, _J[f"{side}_hip"]] = axis_angle_from_quat(_to_smpl(_quat(frames, f"{side}_hip")))
        aa[:, _J[f"{side}_knee"]] = axis_angle_from_quat(
            _to_smpl(_revolute_z(frames, f"{side}_knee")))
        aa[:, _J[f"{side}_ankle"]] = axis_angle_from_quat(
            _to_smpl(_quat(frames, f"{side}_ankle")))
        a = _Q_ARM[side]
        # Shoulder: parent (collar) has no rest offset: (C R Cᵀ) A.
        sh = quat_multiply(_to_smpl(_quat(frames, f"{side}_shoulder")), a)
        aa[:, _J[f"{side}_shoulder"]] = axis_angle_from_quat(sh)
        # Elbow: parent and child both offset by A: Aᵀ (C R Cᵀ) A.
        el = quat_multiply(quat_multiply(quat_conjugate(a),
                                         _to_smpl(_revolute_z(frames, f"{side}_elbow"))), a)
        aa[:, _J[f"{side}_elbow"]] = axis_angle_from_quat(el)
        # Wrist: DeepMimic's is fixed, so Aᵀ I A = I (rest).

    s = reference.hip_height / DM_HIP_HEIGHT
    hip_world = s * frames[:, _COL["root_pos"]] @ W_DM_TO_AMASS.T
    pelvis = np.asarray(reference.pelvis, dtype=np.float64)
    hip_c = np.asarray(reference.hip_center, dtype=np.float64)
    q_root_n = quat_from_axis_angle(aa[:, 0])
    trans = hip_world - quat_rotate(q_root_n, np.broadcast_to(hip_c - pelvis, (n, 3))) - pelvis

    return Motion(
        root_orient=aa[:, 0].copy(),
        body_pose=aa[:, 1:22].copy(),
        trans=trans,
        fps=float(fps),
        source_type="smplh",
        name=name,
        hand_pose=np.zeros((n, 30, 3)),
        betas=None,
        gender="neutral",
    )


def convert_clip(frames: np.ndarray, reference: RestReference = SMPL_REFERENCE,
                 name: str = "deepmimic") -> Motion:
    """Convert a clip at its native rate; a non-uniformly timed clip is first resampled by
    time (slerp/linear) onto a uniform grid at its median frame rate."""
    fps, uniform = clip_rate(frames)
    motion = convert_frames(frames, reference, name=name, fps=fps)
    if uniform:
        return motion
    t = frame_times(frames)
    m = int(round(t[-1] * fps)) + 1
    u = np.interp(np.arange(m) / fps, t, np.arange(len(t), dtype=np.float64))
    return _interpolate_at(motion, u, fps)


# ----------------------------------------------------------------------------------------
# Forward kinematics (verification and previews)
# ----------------------------------------------------------------------------------------


def deepmimic_joint_positions(frames: np.ndarray, reference: RestReference = SMPL_REFERENCE):
    """World positions (AMASS Z-up, same scale ``s`` as :func:`convert_frames`) of the
    DeepMimic joints computed directly from the clip: ``{name: (N, 3)}``."""
    frames = np.asarray(frames, dtype=np.float64)
    s = reference.hip_height / DM_HIP_HEIGHT
    n = frames.shape[0]
    glob = {"root": quat_multiply(_QW, _quat(frames, "root_rot"))}
    pos = {"root": s * frames[:, _COL["root_pos"]] @ W_DM_TO_AMASS.T}
    for name, (parent, off) in DM_OFFSETS.items():
        off = np.broadcast_to(np.asarray(off) * DM_SCALE * s, (n, 3))
        pos[name] = pos[parent] + quat_rotate(glob[parent], off)
        if name.endswith("wrist"):
            local = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
        elif name.endswith(("knee", "elbow")):
            local = _revolute_z(frames, name)
        else:
            local = _quat(frames, name)
        glob[name] = quat_multiply(glob[parent], local)
    return pos


def deepmimic_rest_joints() -> tuple[np.ndarray, RestReference]:
    """SMPL-layout rest joints ``(24, 3)`` (model frame) of DeepMimic's humanoid put in a
    T-pose, and its :class:`RestReference`. Posing it with a converted clip reproduces the
    DeepMimic joint positions exactly (used by the tests)."""
    dm = {"root": np.zeros(3)}
    for name, (parent, off) in DM_OFFSETS.items():
        dm[name] = dm[parent] + DM_SCALE * np.asarray(off)
    c = C_DM_TO_SMPL
    J = np.zeros((24, 3))
    J[_J["pelvis"]] = c @ dm["root"]
    for side in ("left", "right"):
        for dm_name, smpl in (("hip", "hip"), ("knee", "knee"), ("ankle", "ankle"),
                              ("ankle", "foot"), ("shoulder", "collar"),
                              ("shoulder", "shoulder")):
            J[_J[f"{side}_{smpl}"]] = c @ dm[f"{side}_{dm_name}"]
        sh = c @ dm[f"{side}_shoulder"]
        a_t = quat_conjugate(_Q_ARM[side])  # hanging arm → T-pose arm
        el = sh + quat_rotate(a_t, c @ (dm[f"{side}_elbow"] - dm[f"{side}_shoulder"]))
        wr = el + quat_rotate(a_t, c @ (dm[f"{side}_wrist"] - dm[f"{side}_elbow"]))
        J[_J[f"{side}_elbow"]] = el
        J[_J[f"{side}_wrist"]] = wr
        J[_J[f"{side}_hand"]] = wr
    for j in ("spine1", "spine2", "spine3"):
        J[_J[j]] = c @ dm["chest"]
    J[_J["neck"]] = c @ dm["neck"]
    J[_J["head"]] = c @ dm["neck"]
    ref = RestReference(pelvis=tuple(J[0]), hip_center=tuple(J[0]),
                        sole_y=float(-DM_HIP_HEIGHT))
    return J, ref


def reference_skeleton(reference: RestReference = SMPL_REFERENCE) -> np.ndarray:
    """SMPL-layout rest joints ``(24, 3)`` fitted to ``reference``: DeepMimic's T-posed
    skeleton scaled by ``s = reference.hip_height / DM_HIP_HEIGHT``, its hips centred on
    ``reference.hip_center`` and its pelvis joint moved to ``reference.pelvis``. Posing it
    with :func:`convert_frames` output (same reference) reproduces :func:`deepmimic_joint_positions`
    exactly, so it shows what the bundled files do to a body with those landmarks."""
    rest, _ = deepmimic_rest_joints()
    s = reference.hip_height / DM_HIP_HEIGHT
    joints = s * rest - s * rest[0] + np.asarray(reference.hip_center, dtype=np.float64)
    joints[0] = np.asarray(reference.pelvis, dtype=np.float64)
    return joints


def smpl_joint_positions(pose_aa: np.ndarray, trans: np.ndarray, rest_joints: np.ndarray):
    """SMPL forward kinematics of the joints (Loper et al. 2015, eq. 4, as smplx computes
    it: the root rotates about the rest pelvis, then ``trans`` is added): ``(N, 24, 3)``."""
    n = pose_aa.shape[0]
    q = quat_from_axis_angle(pose_aa)
    glob = np.zeros((n, 24, 4))
    pos = np.zeros((n, 24, 3))
    glob[:, 0] = q[:, 0]
    pos[:, 0] = rest_joints[0] + trans
    for k in range(1, 24):
        p = SMPL_PARENTS[k]
        glob[:, k] = quat_multiply(glob[:, p], q[:, k])
        off = np.broadcast_to(rest_joints[k] - rest_joints[p], (n, 3))
        pos[:, k] = pos[:, p] + quat_rotate(glob[:, p], off)
    return pos


# ----------------------------------------------------------------------------------------
# Previews (build-time visual check)
# ----------------------------------------------------------------------------------------


def _load_reference_body():
    """``(model, rest_joints (24, 3), RestReference)`` of the project's default body
    (``body.load_default()`` at rest through ``body.forward``), or None when that body is
    not available (it is optional at build time)."""
    try:
        from .. import body

        model = body.load_default()
        verts, joints = body.forward(model, None, np.zeros((model.num_joints, 3)), None)
    except Exception:  # package or data file absent, or not loadable: use the landmarks
        return None
    joints = np.asarray(joints)[:24]
    ref = RestReference(pelvis=tuple(joints[0]), hip_center=tuple(joints[[1, 2]].mean(0)),
                        sole_y=float(np.asarray(verts)[:, 1].min()))
    return model, joints, ref


def render_preview(motion: Motion, rest_joints: np.ndarray, path: Path, frames=None,
                   size: int = 256, verts_fn=None) -> None:
    """Side (looking along +Y) and front (looking along −X) orthographic views of a few frames,
    Z up, floor line at z = 0, saved as a PNG (build-time check; needs opencv)."""
    import cv2

    n = motion.num_frames
    frames = list(frames) if frames is not None else list(np.linspace(0, n - 1, 4).astype(int))
    pose = motion.pose_aa(24)
    joints = smpl_joint_positions(pose, motion.trans, rest_joints)
    tiles = []
    for f in frames:
        row = []
        center = joints[f, 0]
        pts3 = verts_fn(pose[f:f + 1], motion.trans[f:f + 1]) if verts_fn else None
        for view in ("side", "front"):
            img = np.full((size, size, 3), 255, np.uint8)
            axis_h = 0 if view == "side" else 1  # image horizontal: world x (side) or y
            scale = size / 2.4

            def proj(p, _h=axis_h, _c=center):
                u = (p[..., _h] - _c[_h]) * scale + size / 2
                v = size * 0.9 - p[..., 2] * scale
                return np.stack([u, v], -1)

            cv2.line(img, (0, int(size * 0.9)), (size, int(size * 0.9)), (0, 160, 0), 1)
            if pts3 is not None:
                for p in proj(pts3).astype(int)[:: max(1, len(pts3) // 4000)]:
                    cv2.circle(img, tuple(int(c) for c in p), 1, (200, 170, 150), -1)
            j2 = proj(joints[f])
            for k in range(1, 24):
                p = SMPL_PARENTS[k]
                color = (0, 0, 255) if "left" in SMPL_JOINT_NAMES[k] else (255, 0, 0)
                if "left" not in SMPL_JOINT_NAMES[k] and "right" not in SMPL_JOINT_NAMES[k]:
                    color = (0, 0, 0)
                cv2.line(img, tuple(int(c) for c in j2[p]), tuple(int(c) for c in j2[k]),
                         color, 2)
            cv2.putText(img, f"{motion.name} f{f} {view}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4, (0, 0, 0), 1)
            row.append(img)
        tiles.append(np.concatenate(row, axis=1))
    cv2.imwrite(str(path), np.concatenate(tiles, axis=0))


# ----------------------------------------------------------------------------------------
# Command
# ----------------------------------------------------------------------------------------


def _default_out() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "motions"


def build(source: Path, out: Path, clips=DEFAULT_CLIPS, fit_default_body: bool = True,
          preview: Path | None = None, log=print) -> list[Path]:
    """Convert ``clips`` from ``source`` into ``out/<clip>_poses.npz``; returns the paths.

    The clips are fitted to the project's default body (its rest pelvis, hip centre and
    soles, so it stands on the floor in the demo) or, with ``fit_default_body=False``, to
    :data:`SMPL_REFERENCE`. Previews pose the default body's mesh when it loads, else the
    reference skeleton.
    """
    src = _Source(source)
    check_urdf(src.read("pybullet_data/humanoid/humanoid.urdf"))
    body_ref = _load_reference_body() if (fit_default_body or preview is not None) else None
    if fit_default_body:
        if body_ref is None:
            raise MotionFileError(
                "The default body (data/bodies/neutral.npz) could not be loaded to fit the clips "
                "to; build it first ('python -m neural_avatar build-body') or pass "
                "--smpl-landmarks.")
        reference = body_ref[2]
    else:
        reference = SMPL_REFERENCE
    log(f"reference: {'default body' if fit_default_body else 'SMPL landmarks'} (hip height "
        f"{reference.hip_height:.3f} m, scale {reference.hip_height / DM_HIP_HEIGHT:.4f})")
    if body_ref is not None:
        r = body_ref[2]
        log(f"default body: pelvis {np.round(r.pelvis, 3)}, hip centre "
            f"{np.round(r.hip_center, 3)}, soles at y = {r.sole_y:.3f}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for clip in clips:
        frames = read_clip(src.read(f"pybullet_data/data/motions/humanoid3d_{clip}.txt"))
        motion = convert_clip(frames, reference, name=f"{clip}_poses")
        path = out / f"{clip}_poses.npz"
        save_amass_smplh(path, motion)
        written.append(path)
        log(f"{path.name}: {motion.num_frames} frames at {motion.fps:g} fps "
            f"({motion.duration:.2f} s)")
        if preview is not None:
            preview.mkdir(parents=True, exist_ok=True)
            if body_ref is not None:
                from .. import body

                def verts_fn(pose, trans, _m=body_ref[0]):
                    return body.forward(_m, None, pose[0], trans[0])[0]

                render_preview(motion, body_ref[1], preview / f"{clip}.png", verts_fn=verts_fn)
            else:  # no body model: DeepMimic's skeleton fitted to the reference landmarks
                render_preview(motion, reference_skeleton(reference), preview / f"{clip}.png")
    return written




if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
