"""Body-model pickles never run code: the unpickler allows exact (module, name) pairs only.
For every module it allows, a hostile pickle naming something else in that module (or walking
a dotted name, as protocol 4 can) is refused before anything is imported or called. chumpy is
never imported: an original SMPL pickle's chumpy leaves load through a stub."""
import pickle
import sys

import numpy as np
import pytest

from neural_avatar import body
from neural_avatar.body import model as model_mod
from neural_avatar.errors import BodyModelError, ResourceLimitError

from .test_loading import _install_fake_module, _synthetic

ALLOWED_MODULES = sorted({m for m, _ in model_mod._ALLOWED_GLOBALS})
# Per allowed module: a name that would run code or reach something dangerous if resolved.
HOSTILE = {
    "numpy": ["load", "fromfile", "testing", "lib"], "numpy.core.multiarray": ["_vec_string", "c_einsum"],
    "numpy._core.multiarray": ["_vec_string"], "numpy.core.numeric": ["loads", "fromfunction"],
    "numpy._core.numeric": ["fromfunction"], "scipy.sparse": ["load_npz", "linalg"],
    "chumpy": ["ch", "utils"], "chumpy.ch": ["os", "Ch_for_sure", "__builtins__"],
    "copyreg": ["__newobj_ex__", "pickle", "dispatch_table"], "copy_reg": ["constructor"],
    "_codecs": ["lookup", "register"], "collections": ["namedtuple", "UserDict"],
    "builtins": ["eval", "exec", "getattr", "__import__", "open", "compile", "type"],
    "__builtin__": ["eval", "apply"],
}


def _global_pickle(module: str, name: str, protocol: int) -> bytes:
    """A pickle that resolves module.name and calls it with ('echo pwned',)."""
    arg = b"\x8c\x0aecho pwned\x85"  # SHORT_BINUNICODE + TUPLE1
    if protocol == 2:
        return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n" + arg + b"R."
    m, n = module.encode(), name.encode()
    return (b"\x80\x04\x8c" + bytes([len(m)]) + m + b"\x8c" + bytes([len(n)]) + n + b"\x93" + arg + b"R.")


@pytest.mark.parametrize("module", ALLOWED_MODULES)
@pytest.mark.parametrize("protocol", [2, 4])
def test_hostile_globals_in_every_allowed_module_are_refused(tmp_path, module, protocol, monkeypatch):
    names = HOSTILE.get(module) or HOSTILE.get(module.split(".")[0], ["system"])
    allowed_name = next(n for m, n in model_mod._ALLOWED_GLOBALS if m == module)
    names = names + [f"{allowed_name}.__globals__", f"{allowed_name}.__init__.__globals__", "__dict__"]
    imported = []
    real_import = model_mod._ModelUnpickler.find_class

    for name in names:
        path = tmp_path / f"SMPL_NEUTRAL_{protocol}.pkl"
        path.write_bytes(_global_pickle(module, name, protocol))
        before = set(sys.modules)
        with pytest.raises(BodyModelError, match="refused global"):
            body.load_model_file(path, "smpl")
        imported += [m for m in set(sys.modules) - before if m.split(".")[0] in ("chumpy", "scipy", "os")]
    assert not imported, imported
    del real_import


def test_numpy_scalar_types_are_allowed_but_not_functions(tmp_path):
    up = model_mod._ModelUnpickler(open(__file__, "rb"))
    assert up.find_class("numpy", "float64") is np.float64
    for name in ("load", "save", "frompyfunc", "vectorize"):
        with pytest.raises(pickle.UnpicklingError):
            up.find_class("numpy", name)


def test_original_smpl_pickle_with_chumpy_leaves_loads_without_chumpy(tmp_path, monkeypatch):
    Ch = _install_fake_module(monkeypatch, "chumpy.ch", "Ch")
    d = _synthetic()
    for key in ("shapedirs", "v_template", "posedirs"):
        obj = Ch()
        obj.x = d[key]
        d[key] = obj
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps(d, protocol=2))
    monkeypatch.setitem(sys.modules, "chumpy", None)  # not installed: never imported
    monkeypatch.delitem(sys.modules, "chumpy.ch")
    m = body.load_model_file(path, "smpl")
    np.testing.assert_array_equal(m.shapedirs, _synthetic()["shapedirs"])
    assert "chumpy.ch" not in sys.modules


def test_chumpy_expression_without_array_is_refused_with_a_fix(tmp_path, monkeypatch):
    Ch = _install_fake_module(monkeypatch, "chumpy.ch", "Ch")
    d = _synthetic()
    obj = Ch()
    obj.a, obj.b = 1, 2  # a derived node (no 'x')
    d["shapedirs"] = obj
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps(d, protocol=2))
    with pytest.raises(BodyModelError, match="clean_ch.py"):
        body.load_model_file(path, "smpl")


def test_sparse_matrix_claiming_a_huge_shape_is_refused_before_allocating(tmp_path, monkeypatch):
    csc = _install_fake_module(monkeypatch, "scipy.sparse._csc", "csc_matrix")
    d = _synthetic()
    sp = csc()
    sp.__dict__.update({"data": np.ones(1), "indices": np.zeros(1, np.int64), "indptr": np.array([0, 1]),
                        "_shape": (10 ** 7, 10 ** 7)})
    d["J_regressor"] = sp
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps(d, protocol=2))
    for name in ("scipy.sparse._csc", "scipy.sparse", "scipy"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ResourceLimitError, match="would need"):
        body.load_model_file(path)


def test_deeply_nested_pickle_is_a_project_error(tmp_path):
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    n = 100000  # lists nested n deep (EMPTY_LIST pushes, APPEND folds them)
    path.write_bytes(b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b".")
    with pytest.raises(BodyModelError):
        body.load_model_file(path)
    path.write_bytes(b"\x80\x02" + b"]" * n)  # no STOP
    with pytest.raises(BodyModelError):
        body.load_model_file(path)
