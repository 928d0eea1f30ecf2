"""Resampling by time, slerp and quaternion continuity (pure; tiny arrays)."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neural_avatar.errors import MotionFileError
from neural_avatar.motion import (
    Motion,
    axis_angle_from_quat,
    make_quats_continuous,
    output_frame_count,
    quat_from_axis_angle,
    resample,
    slerp,
    to_rig_quaternions,
)
from neural_avatar.motion.resample import (
    matrix_to_quat,
    quat_conjugate,
    quat_multiply,
    quat_rotate,
    quat_to_matrix,
)

RNG = np.random.default_rng(1)


def _rodrigues(aa):
    """Reference rotation matrix (Rodrigues' formula), independent of the quaternion code."""
    aa = np.asarray(aa, dtype=np.float64)
    out = np.empty(aa.shape[:-1] + (3, 3))
    for idx in np.ndindex(aa.shape[:-1]):
        v = aa[idx]
        th = np.linalg.norm(v)
        if th < 1e-15:
            out[idx] = np.eye(3)
            continue
        k = v / th
        K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        out[idx] = np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K
    return out


def _random_aa(shape, max_angle=3.1):
    v = RNG.normal(size=shape + (3,))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    return v * RNG.uniform(0, max_angle, size=shape + (1,))


def _motion(n, fps, with_hands=True):
    """A smooth random motion (rotations up to ~1 rad apart between frames)."""
    t = np.arange(n)[:, None]
    root = 1.2 * np.sin(0.3 * t + np.array([0.0, 1.0, 2.0]))
    body = 0.8 * np.sin(0.2 * t[:, :, None] + RNG.uniform(0, 6, size=(1, 21, 3)))
    hand = 0.5 * np.sin(0.25 * t[:, :, None] + RNG.uniform(0, 6, size=(1, 30, 3)))
    return Motion(
        root_orient=root, body_pose=body, trans=np.cumsum(RNG.normal(size=(n, 3)), axis=0),
        fps=fps, source_type="smplh", name="m", hand_pose=hand if with_hands else None,
        betas=np.arange(16.0), gender="female",
    )


def _rot(aa):
    return quat_to_matrix(quat_from_axis_angle(aa))


# ---------------------------------------------------------------- quaternion helpers


def test_axis_angle_quat_matrix_agree_with_rodrigues():
    aa = _random_aa((50,))
    aa[:3] = [[0, 0, 0], [1e-10, 0, 0], [0, 0, np.pi - 1e-9]]
    np.testing.assert_allclose(_rot(aa), _rodrigues(aa), atol=1e-12)
    np.testing.assert_allclose(axis_angle_from_quat(quat_from_axis_angle(aa)), aa, atol=1e-12)
    q = quat_from_axis_angle(aa)
    q_back = matrix_to_quat(_rodrigues(aa))
    np.testing.assert_allclose(np.abs(np.sum(q * q_back, -1)), 1.0, atol=1e-12)
    # Sign of q never matters for axis_angle_from_quat.
    np.testing.assert_allclose(axis_angle_from_quat(-q), aa, atol=1e-12)


def test_quat_multiply_is_matrix_product_and_rotate_matches():
    a, b = _random_aa((20,)), _random_aa((20,))
    qa, qb = quat_from_axis_angle(a), quat_from_axis_angle(b)
    np.testing.assert_allclose(quat_to_matrix(quat_multiply(qa, qb)),
                               _rodrigues(a) @ _rodrigues(b), atol=1e-12)
    v = RNG.normal(size=(20, 3))
    np.testing.assert_allclose(quat_rotate(qa, v), np.einsum("nij,nj->ni", _rodrigues(a), v),
                               atol=1e-12)


def test_slerp_matches_rotation_composition():
    """slerp(q0, q1, t) = q0 ⊗ exp(t · log(q0⁻¹ ⊗ q1)), shortest arc, via matrices."""
    a0, a1 = _random_aa((40,)), _random_aa((40,))
    t = RNG.uniform(0, 1, size=(40, 1))
    q0, q1 = quat_from_axis_angle(a0), quat_from_axis_angle(a1)
    got = quat_to_matrix(slerp(q0, q1, t[:, 0]))
    R0, R1 = _rodrigues(a0), _rodrigues(a1)
    rel = np.einsum("nji,njk->nik", R0, R1)  # R0ᵀ R1
    rel_aa = axis_angle_from_quat(matrix_to_quat(rel))  # angle ≤ π: the shortest arc
    want = R0 @ _rodrigues(rel_aa * t)
    np.testing.assert_allclose(got, want, atol=1e-10)


def test_slerp_endpoints_and_constant_speed():
    q0 = quat_from_axis_angle(np.array([0.3, -0.2, 0.1]))
    q1 = quat_from_axis_angle(np.array([-1.0, 2.0, 0.5]))
    np.testing.assert_array_equal(slerp(q0, q1, 0.0), q0 / np.linalg.norm(q0))
    end = slerp(q0, q1, 1.0)
    assert abs(abs(end @ q1) - 1) < 1e-12
    ts = np.linspace(0, 1, 11)
    qs = slerp(q0[None], q1[None], ts)
    ang = [np.linalg.norm(axis_angle_from_quat(quat_multiply(quat_conjugate(qs[i]), qs[i + 1])))
           for i in range(10)]
    np.testing.assert_allclose(ang, ang[0], atol=1e-10)


def test_slerp_numerically_safe_near_zero_and_pi():
    q0 = quat_from_axis_angle(np.array([0.0, 0.0, 0.7]))
    for eps in (0.0, 1e-14, 1e-9):  # nearly identical
        q1 = quat_from_axis_angle(np.array([0.0, eps, 0.7]))
        out = slerp(q0, q1, 0.37)
        assert np.all(np.isfinite(out)) and abs(np.linalg.norm(out) - 1) < 1e-12
        np.testing.assert_allclose(axis_angle_from_quat(out), [0, 0.37 * eps, 0.7], atol=1e-12)
    # Rotations (almost) π apart, and q1 = −q0 (same rotation, opposite sign).
    for delta in (np.pi, np.pi - 1e-9):
        q1 = quat_multiply(q0, quat_from_axis_angle(np.array([delta, 0.0, 0.0])))
        out = slerp(q0, q1, 0.5)
        assert np.all(np.isfinite(out))
        rel = axis_angle_from_quat(quat_multiply(quat_conjugate(q0), out))
        np.testing.assert_allclose(np.linalg.norm(rel), delta / 2, atol=1e-8)
    out = slerp(q0, -q0, 0.5)
    assert abs(abs(out @ q0) - 1) < 1e-12


def test_make_quats_continuous_no_negative_dot_and_same_rotations():
    q = quat_from_axis_angle(_random_aa((30, 5)))
    flips = RNG.choice([-1.0, 1.0], size=(30, 5, 1))
    qf = q * flips
    qc = make_quats_continuous(qf)
    assert np.all(np.sum(qc[1:] * qc[:-1], axis=-1) >= 0)
    np.testing.assert_allclose(np.abs(qc), np.abs(qf))  # only signs changed
    np.testing.assert_array_equal(qc[0], qf[0])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-10, 10), min_size=6, max_size=60).map(np.array))
def test_continuity_property(values):
    n = len(values) // 3
    q = quat_from_axis_angle(values[: n * 3].reshape(n, 1, 3))
    qc = make_quats_continuous(q)
    assert np.all(np.sum(qc[1:] * qc[:-1], axis=-1) >= 0)


def test_to_rig_quaternions_continuous_and_equal_rotations():
    m = _motion(40, 30.0)
    # Force sign trouble: rotations near π flip hemisphere between frames.
    m.body_pose[:, 0] = np.array([0.0, 0.0, np.pi - 0.01]) * np.where(
        np.arange(40) % 2, 1.0, -1.0)[:, None]
    for j in (24, 52, 55):
        q = to_rig_quaternions(m, j)
        assert q.shape == (40, j, 4)
        assert np.all(np.sum(q[1:] * q[:-1], axis=-1) >= -1e-12)
        np.testing.assert_allclose(quat_to_matrix(q), _rot(m.pose_aa(j)), atol=1e-12)


# ---------------------------------------------------------------- resample


def test_120_to_30_every_4th_source_frame_exactly():
    m = _motion(121, 120.0)
    r = resample(m, 30)
    assert r.num_frames == 31 and r.fps == 30.0
    np.testing.assert_array_equal(r.root_orient, m.root_orient[::4])
    np.testing.assert_array_equal(r.body_pose, m.body_pose[::4])
    np.testing.assert_array_equal(r.hand_pose, m.hand_pose[::4])
    np.testing.assert_array_equal(r.trans, m.trans[::4])
    assert r.betas is m.betas and r.gender == "female" and r.name == "m"
    assert r.duration == m.duration


def test_120_to_30_partial_tail():
    m = _motion(123, 120.0)  # 122 source steps: the output cannot reach the last 2 frames
    r = resample(m, 30)
    assert r.num_frames == output_frame_count(123, 120.0, 30.0)
    np.testing.assert_array_equal(r.trans, m.trans[: 4 * r.num_frames: 4])


@pytest.mark.parametrize("src,dst,n", [(50.0, 30.0, 101), (59.94, 24.0, 300), (24.0, 60.0, 25),
                                       (120.00004577636719, 30.0, 241)])
def test_any_ratio_preserves_duration_and_count(src, dst, n):
    m = _motion(n, src)
    r = resample(m, dst)
    d = (n - 1) / src
    assert r.num_frames == round(d * dst) + 1
    assert abs(r.duration - d) <= 0.5 / dst + 1e-12  # within half an output frame
    # Output frame k shows source time k/dst: compare with direct interpolation.
    for k in range(0, r.num_frames, 7):
        u = min(k * src / dst, n - 1)
        i0 = min(int(np.floor(u)), n - 2)
        a = u - i0
        np.testing.assert_allclose(r.trans[k], (1 - a) * m.trans[i0] + a * m.trans[i0 + 1],
                                   atol=1e-9)
        q0 = quat_from_axis_angle(m.body_pose[i0])
        q1 = quat_from_axis_angle(m.body_pose[i0 + 1])
        want = quat_to_matrix(slerp(q0, q1, np.full(21, a)))
        np.testing.assert_allclose(_rot(r.body_pose[k]), want, atol=1e-9)


def test_50_to_30_slerp_is_by_time_not_index():
    """A constant-speed spin keeps its angular speed (rad/s) after resampling."""
    n, fps = 51, 50.0
    w = 2.0  # rad/s about z: total 2 rad in 1 s, all steps < π
    ang = w * np.arange(n) / fps
    m = Motion(root_orient=np.stack([0 * ang, 0 * ang, ang], -1), body_pose=np.zeros((n, 21, 3)),
               trans=np.stack([ang, 0 * ang, 0 * ang], -1), fps=fps, source_type="smpl")
    r = resample(m, 30.0)
    assert r.num_frames == 31
    t = np.arange(31) / 30.0
    np.testing.assert_allclose(r.root_orient[:, 2], w * t, atol=1e-12)
    np.testing.assert_allclose(r.trans[:, 0], w * t, atol=1e-12)


def test_interpolation_takes_short_way_across_sign_flip():
    """Two keys 20° apart whose quaternions would flip sign (angles near ±π)."""
    a = np.pi - np.radians(10)
    aa = np.array([[0, 0, a], [0, 0, -a]])  # 20° apart through π
    m = Motion(root_orient=aa, body_pose=np.zeros((2, 21, 3)), trans=np.zeros((2, 3)),
               fps=1.0, source_type="smpl")
    r = resample(m, 2.0)
    mid = quat_from_axis_angle(r.root_orient[1])
    want = quat_from_axis_angle(np.array([0, 0, np.pi]))
    assert abs(abs(mid @ want) - 1) < 1e-12


def test_single_frame_and_same_rate():
    m = _motion(1, 30.0)
    r = resample(m, 24.0)
    assert r.num_frames == 1
    np.testing.assert_array_equal(r.body_pose, m.body_pose)
    m2 = _motion(10, 30.0)
    r2 = resample(m2, 30.0)
    np.testing.assert_array_equal(r2.body_pose, m2.body_pose)
    assert r2 is not m2


def test_optional_fields_resampled_or_kept_none():
    m = _motion(11, 10.0, with_hands=False)
    m = dataclasses.replace(m, jaw_pose=np.zeros((11, 3)), eye_pose=np.zeros((11, 2, 3)),
                            smpl_hand_pose=np.ones((11, 2, 3)) * 0.1)
    r = resample(m, 25.0)
    assert r.hand_pose is None
    assert r.jaw_pose.shape == (26, 3) and r.eye_pose.shape == (26, 2, 3)
    np.testing.assert_allclose(r.smpl_hand_pose, 0.1, atol=1e-12)


@pytest.mark.parametrize("bad", [0, -1, np.nan, np.inf, "x", None])
def test_bad_target_fps(bad):
    with pytest.raises(MotionFileError):
        resample(_motion(5, 30.0), bad)


def test_too_many_frames_refused():
    with pytest.raises(MotionFileError, match="frames"):
        resample(_motion(3, 1.0), 1e9)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), src=st.floats(1.0, 240.0), dst=st.floats(1.0, 240.0))
def test_resample_property(n, src, dst):
    m = _motion(n, src)
    r = resample(m, dst)
    assert r.num_frames == round((n - 1) / src * dst) + 1
    np.testing.assert_array_equal(r.body_pose[0], m.body_pose[0])
    np.testing.assert_array_equal(r.trans[0], m.trans[0])
    for arr in (r.root_orient, r.body_pose, r.hand_pose, r.trans):
        assert np.all(np.isfinite(arr))
    assert np.all(np.linalg.norm(r.body_pose, axis=-1) <= np.pi + 1e-9)
    # Translations stay inside the source's range (linear interpolation, clamped end).
    assert np.all(r.trans.min(0) >= m.trans.min(0) - 1e-9)
    assert np.all(r.trans.max(0) <= m.trans.max(0) + 1e-9)
