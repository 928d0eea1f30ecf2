"""Resampling motions by *time* (not by frame index) and the quaternion helpers it needs.

Pure numpy, no bpy. Quaternions are ``(w, x, y, z)``, unit length, Hamilton product,
and act on column vectors (``v' = q v q*``), matching Blender's ``mathutils.Quaternion``.
Axis-angle vectors ``v`` mean "rotate by ``|v|`` radians about ``v/|v|``" (SMPL / AMASS).

The resampler is Shoemake's spherical linear interpolation (Shoemake 1985, "Animating
rotation with quaternion curves", eq. ``slerp(q0, q1; t) = sin((1-t)Ω)/sin Ω · q0 +
sin(tΩ)/sin Ω · q1`` with ``cos Ω = q0·q1``) applied per joint between the two source
frames that bracket each output time, and linear interpolation for translations.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import MotionFileError

__all__ = [
    "quat_from_axis_angle",
    "axis_angle_from_quat",
    "quat_multiply",
    "quat_conjugate",
    "quat_rotate",
    "quat_to_matrix",
    "matrix_to_quat",
    "make_quats_continuous",
    "slerp",
    "output_frame_count",
    "resample",
    "to_rig_quaternions",
    "MAX_OUTPUT_FRAMES",
]

#: Refuse to produce more frames than this (a 10-hour clip at 240 fps is 8.6 M frames).
MAX_OUTPUT_FRAMES = 10_000_000


# ----------------------------------------------------------------------------------------
# Quaternion helpers
# ----------------------------------------------------------------------------------------


def quat_from_axis_angle(aa: np.ndarray) -> np.ndarray:
    """Axis-angle ``(..., 3)`` → unit quaternion ``(..., 4)`` (w, x, y, z).

    ``q = (cos(θ/2), sin(θ/2) · v/θ)`` with ``θ = |v|`` (Rodrigues / exponential map).
    ``sin(θ/2)/θ`` is evaluated as ``sinc(θ/2π)/2`` so ``θ → 0`` is exact (no division).
    """
    aa = np.asarray(aa, dtype=np.float64)
    theta = np.linalg.norm(aa, axis=-1, keepdims=True)
    w = np.cos(0.5 * theta)
    k = 0.5 * np.sinc(theta / (2.0 * np.pi))  # = sin(θ/2)/θ, → 1/2 at θ = 0
    return np.concatenate([w, aa * k], axis=-1)


def axis_angle_from_quat(q: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(..., 4)`` → axis-angle ``(..., 3)`` with angle in ``[0, π]``.

    Inverse of :func:`quat_from_axis_angle` (logarithm map): the quaternion is first put in
    the ``w ≥ 0`` hemisphere (``q`` and ``-q`` are the same rotation), then
    ``θ = 2·atan2(|xyz|, w)``, ``v = xyz · θ/|xyz|`` with the limit ``2/w`` as ``|xyz| → 0``.
    """
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    q = np.where(q[..., :1] < 0.0, -q, q)
    w = q[..., :1]
    xyz = q[..., 1:]
    s = np.linalg.norm(xyz, axis=-1, keepdims=True)
    theta = 2.0 * np.arctan2(s, w)
    safe_s = np.where(s > 1e-12, s, 1.0)
    scale = np.where(s > 1e-12, theta / safe_s, 2.0 / np.maximum(w, 1e-12))
    return xyz * scale


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a ⊗ b`` (rotate by ``b`` first, then by ``a``); broadcasts."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    """``(w, -x, -y, -z)``: the inverse of a unit quaternion."""
    q = np.asarray(q, dtype=np.float64)
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def quat_rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors ``v (..., 3)`` by unit quaternions ``q (..., 4)``: ``q v q*``."""
    q = np.asarray(q, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    w = q[..., :1]
    u = q[..., 1:]
    t = 2.0 * np.cross(u, v)
    return v + w * t + np.cross(u, t)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(..., 4)`` → rotation matrix ``(..., 3, 3)``."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """Rotation matrix ``(..., 3, 3)`` → unit quaternion ``(..., 4)`` with ``w ≥ 0``.

    Shepperd's method: pick the largest of ``4w², 4x², 4y², 4z²`` as the pivot so the
    square root is never taken of a small number.
    """
    m = np.asarray(m, dtype=np.float64)
    shape = m.shape[:-2]
    m = m.reshape(-1, 3, 3)
    tr = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    cands = np.stack(
        [tr, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], axis=-1
    )  # pivots ∝ 4w²-1, 4x²-1, ...
    pivot = np.argmax(cands, axis=-1)
    q = np.empty((m.shape[0], 4))
    for p in range(4):
        sel = pivot == p
        if not np.any(sel):
            continue
        r = m[sel]
        if p == 0:
            s = np.sqrt(1.0 + r[:, 0, 0] + r[:, 1, 1] + r[:, 2, 2]) * 2.0
            q[sel] = np.stack(
                [0.25 * s, (r[:, 2, 1] - r[:, 1, 2]) / s, (r[:, 0, 2] - r[:, 2, 0]) / s,
                 (r[:, 1, 0] - r[:, 0, 1]) / s], -1)
        elif p == 1:
            s = np.sqrt(1.0 + r[:, 0, 0] - r[:, 1, 1] - r[:, 2, 2]) * 2.0
            q[sel] = np.stack(
                [(r[:, 2, 1] - r[:, 1, 2]) / s, 0.25 * s, (r[:, 0, 1] + r[:, 1, 0]) / s,
                 (r[:, 0, 2] + r[:, 2, 0]) / s], -1)
        elif p == 2:
            s = np.sqrt(1.0 + r[:, 1, 1] - r[:, 0, 0] - r[:, 2, 2]) * 2.0
            q[sel] = np.stack(
                [(r[:, 0, 2] - r[:, 2, 0]) / s, (r[:, 0, 1] + r[:, 1, 0]) / s, 0.25 * s,
                 (r[:, 1, 2] + r[:, 2, 1]) / s], -1)
        else:
            s = np.sqrt(1.0 + r[:, 2, 2] - r[:, 0, 0] - r[:, 1, 1]) * 2.0
            q[sel] = np.stack(
                [(r[:, 1, 0] - r[:, 0, 1]) / s, (r[:, 0, 2] + r[:, 2, 0]) / s,
                 (r[:, 1, 2] + r[:, 2, 1]) / s, 0.25 * s], -1)
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    q = np.where(q[:, :1] < 0.0, -q, q)
    return q.reshape(*shape, 4)


def make_quats_continuous(q: np.ndarray) -> np.ndarray:
    """Flip quaternion signs along axis 0 so consecutive keys have a dot product ``≥ 0``.

    ``q (N, ..., 4)``; returns a new array. ``q`` and ``-q`` are the same rotation, but a
    curve interpolator (Blender's F-curves interpolate each component) would swing through
    the long way if the sign flips between two keys. The flip factor of frame ``k`` is
    ``f_k = f_{k-1} · sign(q_k · q_{k-1})`` (``f_0 = 1``), i.e. a cumulative product,
    so this is vectorised (no Python loop over frames).
    """
    q = np.array(q, dtype=np.float64, copy=True)
    if q.shape[0] < 2:
        return q
    d = np.sum(q[1:] * q[:-1], axis=-1)
    s = np.where(d < 0.0, -1.0, 1.0)
    f = np.concatenate([np.ones_like(s[:1]), np.cumprod(s, axis=0)], axis=0)
    return q * f[..., None]


def slerp(q0: np.ndarray, q1: np.ndarray, t) -> np.ndarray:
    """Spherical linear interpolation between unit quaternions, shortest arc; broadcasts.

    Shoemake (1985): ``slerp = sin((1-t)Ω)/sin Ω · q0 + sin(tΩ)/sin Ω · q1``, ``cos Ω = q0·q1``
    after putting ``q1`` in ``q0``'s hemisphere (so ``Ω ≤ π/2`` and rotations up to π apart
    take the short way). Numerically safe everywhere: ``Ω = 2·atan2(|q1-q0|, |q1+q0|)``
    is accurate at both small and large angles (``arccos`` is not near 1), and the weights
    are written with ``sinc`` so ``Ω → 0`` needs no special case. ``t = 0`` returns ``q0``
    exactly, ``t = 1`` returns ``±q1`` (in ``q0``'s hemisphere). ``t`` broadcasts against
    the quaternions' shape without its last axis (``q (M, J, 4)`` with ``t (M, 1)``).
    """
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0.0, -q1, q1)
    omega = 2.0 * np.arctan2(
        np.linalg.norm(q1 - q0, axis=-1, keepdims=True),
        np.linalg.norm(q1 + q0, axis=-1, keepdims=True),
    )
    t = t[..., None]  # t broadcasts against the quaternions' leading shape
    denom = np.sinc(omega / np.pi)  # sin Ω / Ω, ≥ 2/π since Ω ≤ π/2
    w0 = (1.0 - t) * np.sinc((1.0 - t) * omega / np.pi) / denom
    w1 = t * np.sinc(t * omega / np.pi) / denom
    out = w0 * q0 + w1 * q1
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------------------
# Resampling
# ----------------------------------------------------------------------------------------


def output_frame_count(num_frames: int, fps: float, target_fps: float) -> int:
    """``round(duration × target_fps) + 1`` with ``duration = (num_frames - 1) / fps``."""
    duration = (num_frames - 1) / float(fps)
    return int(round(duration * float(target_fps))) + 1


def _check_fps(value, what: str) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise MotionFileError(f"{what} must be a number, got {value!r}.") from None
    if not np.isfinite(f) or f <= 0.0:
        raise MotionFileError(f"{what} must be a positive, finite frame rate, got {value!r}.")
    return f


def _rotation_fields(motion) -> list[str]:
    """Names of the Motion fields that hold axis-angle rotations (present ones only)."""
    names = ["root_orient", "body_pose", "hand_pose", "jaw_pose", "eye_pose", "smpl_hand_pose"]
    return [n for n in names if getattr(motion, n) is not None]


def _interpolate_at(motion, u: np.ndarray, fps: float):
    """Sample ``motion`` at fractional source frame indices ``u (M,)``; returns a new Motion.

    Rotations: slerp between frames ``floor(u)`` and ``floor(u)+1`` per joint; translation:
    linear. Where ``u`` is (numerically) an integer the source values are copied exactly.
    """
    n = motion.num_frames
    u = np.clip(np.asarray(u, dtype=np.float64), 0.0, n - 1)
    snapped = np.round(u)
    exact = np.abs(u - snapped) <= 1e-9 * np.maximum(1.0, np.abs(u))
    u = np.where(exact, snapped, u)
    i0 = np.floor(u).astype(np.int64)
    if n >= 2:
        i0 = np.minimum(i0, n - 2)
        i1 = i0 + 1
    else:
        i1 = i0
    alpha = u - i0  # in [0, 1]; 1 only for the clamped last frame
    at_i0 = alpha == 0.0
    at_i1 = alpha == 1.0

    # Rotations: one (N, J, 3) stack of every rotation field, slerped in one go.
    fields = _rotation_fields(motion)
    arrays = [np.asarray(getattr(motion, f), dtype=np.float64) for f in fields]
    widths = [a.reshape(n, -1, 3).shape[1] for a in arrays]
    aa = np.concatenate([a.reshape(n, -1, 3) for a in arrays], axis=1)  # (N, J, 3)
    q = make_quats_continuous(quat_from_axis_angle(aa))
    q_out = slerp(q[i0], q[i1], alpha[:, None])
    aa_out = axis_angle_from_quat(q_out)
    aa_out = np.where(at_i0[:, None, None], aa[i0], aa_out)
    aa_out = np.where(at_i1[:, None, None], aa[i1], aa_out)

    trans = np.asarray(motion.trans, dtype=np.float64)
    a = alpha[:, None]
    trans_out = (1.0 - a) * trans[i0] + a * trans[i1]
    trans_out = np.where(at_i0[:, None], trans[i0], trans_out)
    trans_out = np.where(at_i1[:, None], trans[i1], trans_out)

    updates = {"trans": trans_out, "fps": float(fps)}
    start = 0
    for f, a_src, w in zip(fields, arrays, widths):
        block = aa_out[:, start:start + w]
        start += w
        updates[f] = block.reshape((len(u),) + a_src.shape[1:])
    return dataclasses.replace(motion, **updates)


def resample(motion, target_fps: float):
    """Resample a :class:`~neural_avatar.motion.amass.Motion` to ``target_fps`` by time.

    Output frame ``k`` shows source time ``k / target_fps`` (source frame index
    ``u = k · fps / target_fps``, computed in that order so integer ratios such as
    120→30 land exactly on source frames, which are then copied bit for bit). The number
    of output frames is ``round(duration × target_fps) + 1`` with
    ``duration = (N-1)/fps``; output times past the last source frame are clamped to it.
    Rotations are slerped per joint between the bracketing source frames (after making
    the source quaternions sign-continuous), translations are interpolated linearly.
    ``target_fps`` equal to the source rate returns an unchanged copy.
    """
    target = _check_fps(target_fps, "Target frame rate")
    fps = _check_fps(motion.fps, "The motion's frame rate")
    n = motion.num_frames
    if n < 1:
        raise MotionFileError(f"Motion '{motion.name}' has no frames.")
    if target == fps:
        return dataclasses.replace(motion)
    m = output_frame_count(n, fps, target)
    if m > MAX_OUTPUT_FRAMES:
        raise MotionFileError(
            f"Resampling '{motion.name}' to {target:g} fps would make {m} frames "
            f"(more than {MAX_OUTPUT_FRAMES}); choose a lower frame rate."
        )
    from ..errors import ResourceLimitError
    from ..common.guards import check_elements

    try:  # output poses (m, J, 3) + quaternions and slerp work arrays (~8 float64 per value)
        check_elements((m, 56, 4), 8 * 8, f"Resampling '{motion.name}' to {target:g} fps")
    except ResourceLimitError as e:
        raise MotionFileError(str(e)) from None
    k = np.arange(m, dtype=np.float64)
    u = k * fps / target
    return _interpolate_at(motion, u, target)


def to_rig_quaternions(motion, num_joints: int) -> np.ndarray:
    """Per-frame local joint quaternions ``(N, J, 4)`` (w, x, y, z) for a J-joint rig.

    ``J`` is 24 (SMPL), 52 (SMPL-H) or 55 (SMPL-X); see ``Motion.pose_aa``. Signs are made
    continuous along time (consecutive dot products ``≥ 0``) so per-component F-curve
    interpolation between keys never swings the long way round. In the project's rig every
    bone's local frame is the model frame, so these go on ``rotation_quaternion`` directly.
    """
    return make_quats_continuous(quat_from_axis_angle(motion.pose_aa(num_joints)))
