"""AMASS / SMPL-family motion files: loading, validation and writing. Pure numpy, no bpy.

Layouts understood by :func:`load_motion` (``np.load(..., allow_pickle=False)`` always):

* AMASS SMPL-H release ``*_poses.npz``: ``poses (N, 156)`` = 52 joints × axis-angle
  (root 0:3, body joints 1–21 3:66, hands 66:156 = 15 left then 15 right), ``trans (N, 3)``,
  ``betas (16,)``, ``dmpls (N, 8)``, ``gender``, ``mocap_framerate``.
* AMASS SMPL-X release ``*_stageii.npz``: ``mocap_frame_rate`` (the other spelling) and
  either ``poses (N, 165)`` = 55 joints (root, body 1–21, jaw, left eye, right eye,
  15 left-hand, 15 right-hand joints) or split keys ``root_orient (N, 3)``,
  ``pose_body (N, 63)``, ``pose_hand (N, 90)``, ``pose_jaw (N, 3)``, ``pose_eye (N, 6)``.
* Plain SMPL: ``poses (N, 72)`` = 24 joints (joints 22/23 are SMPL's ``left_hand`` /
  ``right_hand``).

``gender`` may be a str or bytes (``b'female'``); it is decoded, never ``str()``-ed.
The world frame is AMASS's: Z up, metres. With ``global_orient = root_orient`` and
``transl = trans`` an SMPL-family model posed by smplx stands in that world directly.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from pathlib import Path

import numpy as np

from ..errors import MotionFileError

__all__ = [
    "Motion",
    "load_motion",
    "save_amass_smplh",
    "joint_names_for",
    "SMPL_JOINT_NAMES",
    "SMPLH_JOINT_NAMES",
    "SMPLX_JOINT_NAMES",
    "SOURCE_TYPES",
    "FPS_KEYS",
]

# ----------------------------------------------------------------------------------------
# Joint names (smplx 0.1.28's names and order are the reference)
# ----------------------------------------------------------------------------------------

_BODY_22 = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
)
_FINGERS = tuple(
    f"{finger}{i}" for finger in ("index", "middle", "pinky", "ring", "thumb") for i in (1, 2, 3)
)
_HANDS_30 = tuple(f"left_{f}" for f in _FINGERS) + tuple(f"right_{f}" for f in _FINGERS)

#: SMPL (24 joints): the 22 body joints plus SMPL's single-bone hands.
SMPL_JOINT_NAMES = _BODY_22 + ("left_hand", "right_hand")
#: SMPL-H (52 joints): body joints then 15 left-hand and 15 right-hand finger joints.
SMPLH_JOINT_NAMES = _BODY_22 + _HANDS_30
#: SMPL-X (55 joints): body, jaw, eyes, then the same 30 finger joints.
SMPLX_JOINT_NAMES = _BODY_22 + ("jaw", "left_eye_smplhf", "right_eye_smplhf") + _HANDS_30

SOURCE_TYPES = ("smpl", "smplh", "smplx")
_NAMES_BY_TYPE = {"smpl": SMPL_JOINT_NAMES, "smplh": SMPLH_JOINT_NAMES, "smplx": SMPLX_JOINT_NAMES}
_TYPE_BY_COUNT = {24: "smpl", 52: "smplh", 55: "smplx"}

#: Frame-rate keys, in the order they are looked for (SMPL-H spelling, SMPL-X spelling, plain).
FPS_KEYS = ("mocap_framerate", "mocap_frame_rate", "fps")

_POSE_WIDTHS = {72: "smpl", 156: "smplh", 165: "smplx"}


def joint_names_for(kind) -> tuple[str, ...]:
    """Joint names (smplx's) for ``"smpl"`` / ``"smplh"`` / ``"smplx"`` or a joint count
    (24, 52, 55), in the order of ``Motion.pose_aa``'s joint axis."""
    if isinstance(kind, (int, np.integer)) and not isinstance(kind, bool):
        if int(kind) not in _TYPE_BY_COUNT:
            raise MotionFileError(
                f"No SMPL-family rig has {int(kind)} joints (24 SMPL, 52 SMPL-H, 55 SMPL-X)."
            )
        kind = _TYPE_BY_COUNT[int(kind)]
    if kind not in _NAMES_BY_TYPE:
        raise MotionFileError(f"Unknown body model type {kind!r}; expected one of {SOURCE_TYPES}.")
    return _NAMES_BY_TYPE[kind]


# ----------------------------------------------------------------------------------------
# Motion
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Motion:
    """One motion clip in the AMASS world (Z up, metres). All rotations are axis-angle,
    local to the parent joint, relative to the model's rest pose (SMPL convention)."""

    root_orient: np.ndarray
    """(N, 3) global orientation of the pelvis (smplx ``global_orient``)."""
    body_pose: np.ndarray
    """(N, 21, 3) body joints 1–21 (left_hip … right_wrist)."""
    trans: np.ndarray
    """(N, 3) translation in metres (smplx ``transl``): pelvis = rest pelvis + trans."""
    fps: float
    """Frames per second of the clip (> 0)."""
    source_type: str
    """Which model the file was made for: ``"smpl"``, ``"smplh"`` or ``"smplx"``."""
    name: str = "motion"
    """The file stem (used as the action name)."""
    hand_pose: np.ndarray | None = None
    """(N, 30, 3) finger joints, 15 left then 15 right (SMPL-H/X order), or None (rest)."""
    jaw_pose: np.ndarray | None = None
    """(N, 3) SMPL-X jaw, or None."""
    eye_pose: np.ndarray | None = None
    """(N, 2, 3) SMPL-X left and right eye, or None."""
    smpl_hand_pose: np.ndarray | None = None
    """(N, 2, 3) SMPL's own ``left_hand`` / ``right_hand`` joints (22, 23) from 72-wide
    SMPL files, or None."""
    betas: np.ndarray | None = None
    """(B,) shape coefficients stored in the file, or None."""
    gender: str | None = None
    """Decoded gender string (``"male"``, ``"female"``, ``"neutral"``, …) or None."""

    @property
    def num_frames(self) -> int:
        return int(np.shape(self.trans)[0])

    @property
    def duration(self) -> float:
        """``(N - 1) / fps`` seconds: the time from the first to the last frame."""
        return (self.num_frames - 1) / float(self.fps)

    def pose_aa(self, num_joints: int) -> np.ndarray:
        """Axis-angle pose ``(N, J, 3)`` for a J-joint rig in smplx's joint order
        (:func:`joint_names_for`).

        * 24 (SMPL): root, body 1–21, then ``left_hand``/``right_hand``: SMPL's own values
          for SMPL files, rest (zeros) for SMPL-H/SMPL-X files (a single SMPL hand bone has
          no faithful counterpart among 15 finger joints).
        * 52 (SMPL-H): root, body, 30 finger joints (rest where the file has none).
        * 55 (SMPL-X): root, body, jaw, two eyes, 30 finger joints (rest where absent).
        """
        n = self.num_frames
        root = np.asarray(self.root_orient, dtype=np.float64).reshape(n, 1, 3)
        body = np.asarray(self.body_pose, dtype=np.float64).reshape(n, 21, 3)

        def part(value, joints):
            if value is None:
                return np.zeros((n, joints, 3))
            return np.asarray(value, dtype=np.float64).reshape(n, joints, 3)

        if num_joints == 24:
            return np.concatenate([root, body, part(self.smpl_hand_pose, 2)], axis=1)
        if num_joints == 52:
            return np.concatenate([root, body, part(self.hand_pose, 30)], axis=1)
        if num_joints == 55:
            return np.concatenate(
                [root, body, part(self.jaw_pose, 1), part(self.eye_pose, 2),
                 part(self.hand_pose, 30)],
                axis=1,
            )
        raise MotionFileError(
            f"Cannot pose a rig with {num_joints} joints; supported are 24 (SMPL), "
            "52 (SMPL-H) and 55 (SMPL-X)."
        )


# ----------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------


class _Archive:
    """Reads arrays from an opened ``NpzFile`` one key at a time, turning every failure
    (corrupt member, pickled object array, …) into a MotionFileError naming the key."""

    def __init__(self, npz, label: str):
        self._npz = npz
        self._label = label
        self.keys = tuple(npz.files)

    def __contains__(self, key: str) -> bool:
        return key in self.keys

    def _declared(self, key: str):
        """Shape and dtype a member declares in its .npy header (read without its data)."""
        from ..common.guards import npy_header

        try:
            with self._npz.zip.open(key + ".npy") as f:
                return npy_header(f)
        except Exception as e:  # noqa: BLE001 - zlib.error, SyntaxError from a garbled header, ...
            raise MotionFileError(f"{self._label}: cannot read '{key}' (damaged file?): "
                                  f"{type(e).__name__}: {e}") from None

    def get(self, key: str) -> np.ndarray:
        declared = self._declared(key) if hasattr(self._npz, "zip") else None
        if declared is not None:  # a compressed member can expand far beyond the file's size
            from ..common.guards import check_elements
            from ..errors import ResourceLimitError

            shape, dtype = declared
            try:
                check_elements(shape, max(1, dtype.itemsize) * 4, f"{self._label}: '{key}' {tuple(shape)}")
            except ResourceLimitError as e:
                raise MotionFileError(str(e)) from None
        try:
            arr = self._npz[key]
        except ValueError as e:
            if "pickle" in str(e).lower():
                raise MotionFileError(
                    f"{self._label}: '{key}' holds pickled Python objects; such data is refused "
                    "for safety (only plain numeric/string arrays are read)."
                ) from None
            raise MotionFileError(f"{self._label}: cannot read '{key}': {e}") from None
        except Exception as e:  # zlib.error, BadZipFile, EOFError, OSError, ...
            raise MotionFileError(
                f"{self._label}: cannot read '{key}' (damaged file?): {type(e).__name__}: {e}"
            ) from None
        if not isinstance(arr, np.ndarray):
            raise MotionFileError(f"{self._label}: '{key}' is not an array.")
        if arr.dtype.hasobject:
            raise MotionFileError(
                f"{self._label}: '{key}' holds Python objects; such data is refused for safety."
            )
        return arr


def _numeric(arch: _Archive, key: str, label: str) -> np.ndarray:
    """Read ``key`` as a finite float64 array (ints/floats only)."""
    arr = arch.get(key)
    if arr.dtype.kind not in "iuf":
        raise MotionFileError(
            f"{label}: '{key}' must hold numbers, but its data type is {arr.dtype}."
        )
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise MotionFileError(f"{label}: '{key}' contains {bad} NaN or infinite value(s).")
    return arr


def _frames_by_width(arr: np.ndarray, key: str, label: str, widths) -> np.ndarray:
    """Check ``arr`` is 2-D ``(N, w)`` with ``w`` in ``widths`` (1-D arrays are refused)."""
    widths = tuple(widths)
    if arr.ndim != 2 or arr.shape[1] not in widths:
        want = " or ".join(f"(N, {w})" for w in widths)
        raise MotionFileError(f"{label}: '{key}' has shape {arr.shape}, expected {want}.")
    return arr


def _decode_gender(arch: _Archive, label: str) -> str | None:
    if "gender" not in arch:
        return None
    g = arch.get("gender")
    if g.dtype.kind not in "US":
        raise MotionFileError(
            f"{label}: 'gender' must be text (str or bytes), but its data type is {g.dtype}."
        )
    if g.size != 1:
        raise MotionFileError(f"{label}: 'gender' must be a single string, got shape {g.shape}.")
    value = g.reshape(()).item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    value = str(value).strip().lower()
    return value or None


def _read_fps(arch: _Archive, label: str) -> float:
    key = next((k for k in FPS_KEYS if k in arch), None)
    if key is None:
        raise MotionFileError(
            f"{label}: no frame rate found (looked for {', '.join(FPS_KEYS)}); "
            f"the file has keys: {', '.join(arch.keys) or '(none)'}."
        )
    arr = _numeric(arch, key, label)
    if arr.size != 1:
        raise MotionFileError(f"{label}: '{key}' must be a single number, got shape {arr.shape}.")
    fps = float(arr.reshape(()))
    if not fps > 0.0:
        raise MotionFileError(f"{label}: frame rate '{key}' must be positive, got {fps:g}.")
    return fps


def _read_betas(arch: _Archive, label: str) -> np.ndarray | None:
    if "betas" not in arch:
        return None
    b = _numeric(arch, "betas", label)
    if b.ndim == 2 and b.shape[0] >= 1:
        if not np.allclose(b, b[:1], atol=1e-6):
            raise MotionFileError(
                f"{label}: 'betas' changes from frame to frame; only one body shape per clip "
                "is supported."
            )
        b = b[0]
    if b.ndim != 1 or b.shape[0] == 0:
        raise MotionFileError(f"{label}: 'betas' has shape {b.shape}, expected (B,).")
    return b


def load_motion(path) -> Motion:
    """Load an AMASS SMPL-H / SMPL-X or plain SMPL ``.npz`` motion (layout from keys/widths).

    Raises :class:`~neural_avatar.errors.MotionFileError` with a message naming the file
    and the problem for: a missing or unreadable file (not a zip / npz, damaged member),
    pickled or object data, missing keys (the keys found are listed), wrong widths or
    ranks, frame counts that differ between arrays, zero frames, NaN/inf values,
    a frame rate that is missing, not a single number or ``≤ 0``, and non-text gender.
    """
    p = Path(os.fspath(path))
    label = f"Motion file '{p.name}'"
    if not p.is_file():
        raise MotionFileError(f"{label} does not exist or is not a file.")
    try:
        npz = np.load(p, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise MotionFileError(
                f"{label} is not an .npz archive (it looks like pickled Python data, which "
                "is refused for safety)."
            ) from None
        raise MotionFileError(f"{label} cannot be read as an .npz archive: {e}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise MotionFileError(f"{label} cannot be read as an .npz archive: {e}") from None
    except Exception as e:  # anything numpy's readers throw on garbage
        raise MotionFileError(
            f"{label} cannot be read as an .npz archive: {type(e).__name__}: {e}"
        ) from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise MotionFileError(
            f"{label} holds a single array (.npy data), not an AMASS-style .npz archive."
        )
    with npz:
        arch = _Archive(npz, label)
        return _parse(arch, label, p)


def _parse(arch: _Archive, label: str, p: Path) -> Motion:
    name = p.name[:-4] if p.name.lower().endswith(".npz") else p.stem
    found = ", ".join(arch.keys) or "(none)"
    hand = jaw = eye = smpl_hand = None
    if "poses" in arch:
        poses = _frames_by_width(
            _numeric(arch, "poses", label), "poses", label, sorted(_POSE_WIDTHS)
        )
        width = poses.shape[1]
        source_type = _POSE_WIDTHS[width]
        n = poses.shape[0]
        root = poses[:, 0:3]
        body = poses[:, 3:66].reshape(n, 21, 3)
        if source_type == "smpl":
            smpl_hand = poses[:, 66:72].reshape(n, 2, 3)
        elif source_type == "smplh":
            hand = poses[:, 66:156].reshape(n, 30, 3)
        else:
            jaw = poses[:, 66:69]
            eye = poses[:, 69:75].reshape(n, 2, 3)
            hand = poses[:, 75:165].reshape(n, 30, 3)
        pose_keys = ["poses"]
    elif "root_orient" in arch and "pose_body" in arch:
        root = _frames_by_width(_numeric(arch, "root_orient", label), "root_orient", label, [3])
        n = root.shape[0]
        body = _frames_by_width(_numeric(arch, "pose_body", label), "pose_body", label, [63])
        body = body.reshape(body.shape[0], 21, 3)
        pose_keys = ["root_orient", "pose_body"]
        if "pose_hand" in arch:
            h = _frames_by_width(_numeric(arch, "pose_hand", label), "pose_hand", label, [90])
            hand = h.reshape(h.shape[0], 30, 3)
            pose_keys.append("pose_hand")
        if "pose_jaw" in arch:
            jaw = _frames_by_width(_numeric(arch, "pose_jaw", label), "pose_jaw", label, [3])
            pose_keys.append("pose_jaw")
        if "pose_eye" in arch:
            e = _frames_by_width(_numeric(arch, "pose_eye", label), "pose_eye", label, [6])
            eye = e.reshape(e.shape[0], 2, 3)
            pose_keys.append("pose_eye")
        smt = None
        if "surface_model_type" in arch:
            s = arch.get("surface_model_type")
            if s.dtype.kind in "US" and s.size == 1:
                v = s.reshape(()).item()
                smt = (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)).lower()
        if smt in ("smplx", "smplh"):
            source_type = smt
        else:
            source_type = "smplx" if (jaw is not None or eye is not None) else "smplh"
    else:
        raise MotionFileError(
            f"{label} has no pose data: expected 'poses' (N×72, N×156 or N×165) or "
            f"'root_orient' + 'pose_body'; the file has keys: {found}."
        )

    if "trans" not in arch:
        raise MotionFileError(
            f"{label} has no 'trans' (N×3 root translation); the file has keys: {found}."
        )
    trans = _frames_by_width(_numeric(arch, "trans", label), "trans", label, [3])
    fps = _read_fps(arch, label)

    counts = {"trans": trans.shape[0], pose_keys[0]: n}
    for key, arr in (("pose_body", body), ("pose_hand", hand), ("pose_jaw", jaw),
                     ("pose_eye", eye)):
        if key in pose_keys and arr is not None:
            counts[key] = arr.shape[0]
    if len(set(counts.values())) != 1:
        desc = ", ".join(f"'{k}' {v}" for k, v in counts.items())
        raise MotionFileError(f"{label}: arrays disagree on the number of frames ({desc}).")
    if n == 0:
        raise MotionFileError(f"{label} has zero frames.")

    return Motion(
        root_orient=np.ascontiguousarray(root),
        body_pose=np.ascontiguousarray(body),
        trans=np.ascontiguousarray(trans),
        fps=fps,
        source_type=source_type,
        name=name,
        hand_pose=None if hand is None else np.ascontiguousarray(hand),
        jaw_pose=None if jaw is None else np.ascontiguousarray(jaw),
        eye_pose=None if eye is None else np.ascontiguousarray(eye),
        smpl_hand_pose=None if smpl_hand is None else np.ascontiguousarray(smpl_hand),
        betas=_read_betas(arch, label),
        gender=_decode_gender(arch, label),
    )


# ----------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------


def save_amass_smplh(path, motion: Motion, num_betas: int = 16) -> None:
    """Write ``motion`` in the AMASS SMPL-H release layout (compressed ``.npz``).

    Keys: ``poses (N, 156)`` (``motion.pose_aa(52)``), ``trans (N, 3)``, ``betas (16,)``
    (the motion's betas cut or zero-padded to 16, zeros if none), ``dmpls (N, 8)`` zeros,
    ``gender`` (str, ``"neutral"`` if unknown) and ``mocap_framerate`` (float). Every array
    is plain numeric or text, so the file loads with ``allow_pickle=False``.
    """
    n = motion.num_frames
    if n < 1:
        raise MotionFileError("Cannot save a motion with zero frames.")
    poses = motion.pose_aa(52).reshape(n, 156)
    trans = np.asarray(motion.trans, dtype=np.float64).reshape(n, 3)
    if not (np.all(np.isfinite(poses)) and np.all(np.isfinite(trans))):
        raise MotionFileError(f"Motion '{motion.name}' has NaN/inf values; not saved.")
    fps = float(motion.fps)
    if not (np.isfinite(fps) and fps > 0):
        raise MotionFileError(f"Motion '{motion.name}' has an invalid frame rate {fps!r}.")
    betas = np.zeros(num_betas)
    if motion.betas is not None:
        b = np.asarray(motion.betas, dtype=np.float64).ravel()[:num_betas]
        betas[: b.shape[0]] = b
    np.savez_compressed(
        os.fspath(path),
        poses=poses,
        trans=trans,
        betas=betas,
        dmpls=np.zeros((n, 8)),
        gender=np.array(motion.gender or "neutral"),
        mocap_framerate=np.array(fps),
    )
