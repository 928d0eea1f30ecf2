"""Finding, loading and validating model files; error messages (pure tier)."""

import pickle
import sys
import types

import numpy as np
import pytest

from neural_avatar import body
from neural_avatar.errors import BodyModelError


def test_joint_tables_match_smplx():
    from smplx.joint_names import JOINT_NAMES, SMPLH_JOINT_NAMES
    assert len(body.SMPL_JOINT_NAMES) == 24 == len(body.SMPL_PARENTS)
    assert body.SMPL_JOINT_NAMES[:22] == tuple(JOINT_NAMES[:22])
    assert body.SMPL_JOINT_NAMES[22:] == ("left_hand", "right_hand")
    assert body.SMPLH_JOINT_NAMES == tuple(SMPLH_JOINT_NAMES[:52])
    assert body.SMPLX_JOINT_NAMES == tuple(JOINT_NAMES[:55])
    for parents in (body.SMPL_PARENTS, body.SMPLH_PARENTS, body.SMPLX_PARENTS):
        assert parents[0] == -1 and all(0 <= p < i for i, p in enumerate(parents) if i)
    # fingers hang off the wrists, eyes and jaw off the head
    assert body.SMPLH_PARENTS[body.SMPLH_JOINT_NAMES.index("left_index1")] == 20
    assert body.SMPLX_PARENTS[body.SMPLX_JOINT_NAMES.index("right_thumb1")] == 21
    assert body.SMPLX_PARENTS[body.SMPLX_JOINT_NAMES.index("jaw")] == 15


@pytest.mark.parametrize("model_type,J", [("smpl", 24), ("smplh", 52), ("smplx", 55)])
def test_find_and_load_synthetic(tmp_path, model_type, J):
    path = body.write_synthetic_model(tmp_path, model_type, "male", num_verts=4 * J)
    assert body.find_model_file(tmp_path, model_type, "male") == path
    m = body.load_model(tmp_path, model_type, "male")
    assert (m.num_joints, m.num_betas, m.model_type, m.gender) == (J, 10, model_type, "male")
    assert m.posedirs.shape == (4 * J, 3, 9 * (J - 1))
    assert m.shapedirs.dtype == np.float64 and m.parents[0] == -1
    # model type inferred from the joint count
    assert body.load_model_file(path).model_type == model_type


def test_find_accepts_files_directly_in_folder_and_amass_layout(tmp_path):
    data = body.make_synthetic_model("smplh", num_verts=120)
    np.savez(tmp_path / "SMPLH_FEMALE.npz", **data)
    assert body.find_model_file(tmp_path, "smplh", "female") == tmp_path / "SMPLH_FEMALE.npz"
    (tmp_path / "smplh" / "neutral").mkdir(parents=True)
    np.savez(tmp_path / "smplh" / "neutral" / "model.npz", **data)
    assert body.find_model_file(tmp_path, "smplh", "neutral").name == "model.npz"


def test_missing_folder_and_file_errors(tmp_path):
    with pytest.raises(BodyModelError, match="folder not found"):
        body.find_model_file(tmp_path / "nope", "smpl", "neutral")
    with pytest.raises(BodyModelError, match=r"smpl/SMPL_NEUTRAL\.pkl"):
        body.find_model_file(tmp_path, "smpl", "neutral")
    with pytest.raises(BodyModelError, match="not found"):
        body.load_model_file(tmp_path / "SMPL_NEUTRAL.pkl")
    with pytest.raises(BodyModelError, match="gender"):
        body.find_model_file(tmp_path, "smpl", "other")


def _synthetic(**kw):
    return body.make_synthetic_model("smpl", num_verts=100, seed=1, **kw)


def test_validate_missing_keys():
    d = _synthetic()
    del d["weights"], d["J_regressor"]
    with pytest.raises(BodyModelError, match="J_regressor, weights"):
        body.validate(d)


@pytest.mark.parametrize("key,value,match", [
    ("v_template", np.zeros((100, 2)), "'v_template' has shape"),
    ("shapedirs", np.zeros((99, 3, 10)), "'shapedirs' has shape"),
    ("posedirs", np.zeros((100, 3, 200)), r"'posedirs' has shape \(100, 3, 200\), expected \(100, 3, 207\)"),
    ("weights", np.full((100, 23), 1 / 23), "'weights' has shape"),
    ("f", np.array([[0, 1, 100]]), "outside the 100 vertices"),
    ("J_regressor", np.zeros((24, 50)), "'J_regressor' has shape"),
])
def test_validate_wrong_shapes(key, value, match):
    d = _synthetic()
    d[key] = value
    with pytest.raises(BodyModelError, match=match):
        body.validate(d)


def test_validate_nan_and_bad_weights():
    d = _synthetic()
    d["shapedirs"][3, 1, 2] = np.nan
    with pytest.raises(BodyModelError, match="NaN"):
        body.validate(d)
    d = _synthetic()
    d["weights"][0] *= 2
    with pytest.raises(BodyModelError, match="sum to 1"):
        body.validate(d)


def test_validate_joint_count_mismatch():
    d = _synthetic()
    d["J_regressor"] = d["J_regressor"][:23]
    with pytest.raises(BodyModelError, match="regresses 23 joints but the kinematic tree has 24"):
        body.validate(d)
    # an SMPL file loaded as SMPL-X
    with pytest.raises(BodyModelError, match="SMPL-X has 55 joints but this file's kinematic tree has 24"):
        body.validate(_synthetic(), model_type="smplx")
    d = _synthetic()
    d["kintree_table"][0, 5] = 7  # parent after child
    with pytest.raises(BodyModelError, match="not ordered"):
        body.validate(d)


def test_npz_object_arrays_are_not_unpickled(tmp_path):
    d = _synthetic()
    d["f"] = np.array([{"evil": 1}], dtype=object)
    path = tmp_path / "SMPL_NEUTRAL.npz"
    np.savez(path, **d)
    with pytest.raises(BodyModelError, match="pickled Python objects"):
        body.load_model_file(path, "smpl")


def _install_fake_module(monkeypatch, modname, classname, cls_body=None):
    """Register a throw-away module so pickle can write instances naming it."""
    parts = modname.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        if name not in sys.modules:
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    mod = sys.modules[modname]
    cls = type(classname, (), dict(cls_body or {}))
    cls.__module__ = modname
    cls.__qualname__ = classname
    setattr(mod, classname, cls)
    return cls


def test_pickle_with_scipy_sparse_regressor_loads_without_scipy(tmp_path, monkeypatch):
    csc = _install_fake_module(monkeypatch, "scipy.sparse._csc", "csc_matrix")
    d = _synthetic()
    dense = d["J_regressor"]
    rows, cols = np.nonzero(dense.T)  # column-major order
    sp = csc()
    sp.__dict__.update({
        "data": dense[cols, rows], "indices": cols,
        "indptr": np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=dense.shape[1]))]),
        "_shape": dense.shape, "maxprint": 50})
    d["J_regressor"] = sp
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps(d, protocol=2))
    for name in ("scipy.sparse._csc", "scipy.sparse", "scipy"):
        monkeypatch.setitem(sys.modules, name, None)
    m = body.load_model_file(path)
    np.testing.assert_array_equal(m.J_regressor, dense)
    assert m.model_type == "smpl"


def test_pickle_refuses_arbitrary_globals(tmp_path):
    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo pwned",))

    d = _synthetic()
    d["f"] = Evil()
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps(d))
    with pytest.raises(BodyModelError, match="refused global"):
        body.load_model_file(path)


def test_plain_pickle_loads_like_npz(tmp_path):
    d = _synthetic()
    pkl = tmp_path / "SMPL_FEMALE.pkl"
    pkl.write_bytes(pickle.dumps(d, protocol=2))
    m = body.load_model_file(pkl)
    assert m.gender == "female"  # from the file name
    np.testing.assert_array_equal(m.posedirs, d["posedirs"])
