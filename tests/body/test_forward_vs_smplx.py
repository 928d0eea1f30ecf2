"""body.kinematics.forward against smplx on the same arrays (pure tier)."""

import numpy as np
import pytest
import torch

from neural_avatar import body
from neural_avatar.body import kinematics as K
from neural_avatar.errors import BodyModelError


def _smplx_forward(sm, model, betas, pose, transl):
    """Call the smplx module with the per-joint pose split the way smplx wants it."""
    N = pose.shape[0]
    T = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)  # noqa: E731
    kw = dict(betas=T(betas), global_orient=T(pose[:, 0]), transl=T(transl))
    if model.model_type in ("smpl", "default"):
        kw["body_pose"] = T(pose[:, 1:].reshape(N, -1))
    else:
        kw["body_pose"] = T(pose[:, 1:22].reshape(N, -1))
        h = 22 if model.model_type == "smplh" else 25
        if model.model_type == "smplx":
            kw["jaw_pose"], kw["leye_pose"], kw["reye_pose"] = T(pose[:, 22]), T(pose[:, 23]), T(pose[:, 24])
            kw["expression"] = torch.zeros(N, sm.num_expression_coeffs, dtype=torch.float64)
        kw["left_hand_pose"] = T(pose[:, h:h + 15].reshape(N, -1))
        kw["right_hand_pose"] = T(pose[:, h + 15:h + 30].reshape(N, -1))
    with torch.no_grad():
        out = sm(**kw)
    return out.vertices.numpy(), out.joints.numpy()[:, :model.num_joints]


def _check_against_smplx(model, seed, n_betas=10, n=3):
    rng = np.random.default_rng(seed)
    betas = rng.normal(size=(n, n_betas))
    pose = rng.normal(scale=0.6, size=(n, model.num_joints, 3))
    transl = rng.normal(size=(n, 3))
    sm = body.make_smplx_model(model, num_betas=n_betas)
    v_ref, j_ref = _smplx_forward(sm, model, betas, pose, transl)
    v, j = K.forward(model, betas, pose, transl)
    assert v.shape == v_ref.shape and j.shape == j_ref.shape
    assert np.abs(v - v_ref).max() < 1e-6
    assert np.abs(j - j_ref).max() < 1e-6
    # a single frame gives the same result as the batch
    v0, j0 = K.forward(model, betas[0], pose[0], transl[0])
    np.testing.assert_allclose(v0, v[0], atol=1e-12)
    np.testing.assert_allclose(j0, j[0], atol=1e-12)
    # the pose really moves the mesh (a test that cannot pass by accident)
    v_rest, _ = K.forward(model, betas[0], None, transl[0])
    assert np.abs(v_rest - v0).max() > 1e-3


def test_default_body_matches_smplx():
    model = body.load_default()
    _check_against_smplx(model, seed=0, n=2)


@pytest.mark.parametrize("model_type,num_verts", [("smpl", 300), ("smplh", 400), ("smplx", 10000)])
def test_synthetic_with_posedirs_matches_smplx(tmp_path, model_type, num_verts):
    path = body.write_synthetic_model(tmp_path, model_type, "female", num_verts=num_verts, seed=3)
    model = body.load_model_file(path, model_type, "female")
    assert model.has_posedirs
    assert model.model_id == f"{model_type}-female"
    _check_against_smplx(model, seed=1, n=3 if model_type != "smplx" else 2)


def test_fewer_betas_are_zero_padded_more_raise():
    model = body.validate(body.make_synthetic_model("smpl", num_verts=120, seed=2))
    rng = np.random.default_rng(0)
    b3 = rng.normal(size=3)
    v3, j3 = K.shape(model, b3)
    v10, j10 = K.shape(model, np.concatenate([b3, np.zeros(7)]))
    np.testing.assert_array_equal(v3, v10)
    np.testing.assert_array_equal(j3, j10)
    np.testing.assert_allclose(j3, model.J_regressor @ v3, atol=1e-12)
    with pytest.raises(BodyModelError, match="11 shape coefficients"):
        K.shape(model, np.zeros(11))


def test_corrective_offsets_are_posedirs_times_feature():
    model = body.validate(body.make_synthetic_model("smpl", num_verts=96, seed=5))
    pose = np.random.default_rng(4).normal(size=(24, 3))
    feat = K.pose_feature(pose)
    assert feat.shape == (207,)
    R = K.axis_angle_to_matrix(pose[3])
    np.testing.assert_allclose(feat[18:27], (R - np.eye(3)).ravel())
    off = K.corrective_offsets(model, pose)
    expected = (model.posedirs.reshape(-1, 207) @ feat).reshape(-1, 3)
    np.testing.assert_allclose(off, expected, atol=1e-12)
    assert np.abs(off).max() > 1e-3
    assert np.abs(K.corrective_offsets(model, np.zeros((24, 3)))).max() == 0.0


def test_rotation_helpers_round_trip_and_quaternion_convention():
    rng = np.random.default_rng(7)
    axis = rng.normal(size=(200, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    angle = rng.uniform(0, np.pi - 1e-6, size=(200, 1))
    angle[:3] = [[0.0], [1e-10], [np.pi - 1e-7]]
    aa = axis * angle
    R = K.axis_angle_to_matrix(aa)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    back = K.matrix_to_axis_angle(R)
    np.testing.assert_allclose(K.axis_angle_to_matrix(back), R, atol=1e-9)
    np.testing.assert_allclose(back[3:], aa[3:], atol=1e-7)
    # (w, x, y, z): a 90° turn about +z
    q = K.axis_angle_to_quaternion(np.array([0.0, 0.0, np.pi / 2]))
    np.testing.assert_allclose(q, [np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)], atol=1e-12)
    np.testing.assert_allclose(K.axis_angle_to_matrix(np.array([0, 0, np.pi / 2])) @ [1, 0, 0],
                               [0, 1, 0], atol=1e-12)
    qs = K.axis_angle_to_quaternion(aa)
    np.testing.assert_allclose(np.linalg.norm(qs, axis=1), 1.0, atol=1e-12)


def test_forward_rejects_bad_pose_shapes():
    model = body.validate(body.make_synthetic_model("smpl", num_verts=96, seed=5))
    with pytest.raises(BodyModelError, match=r"\(24, 3\)"):
        K.forward(model, None, np.zeros((23, 3)))
    with pytest.raises(BodyModelError, match="NaN"):
        K.forward(model, None, np.full((24, 3), np.nan))
    v, j = K.forward(model, None, np.zeros(72))  # flat pose accepted
    np.testing.assert_allclose(j, model.J_regressor @ model.v_template, atol=1e-12)
