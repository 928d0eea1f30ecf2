"""Synthetic SMPL / SMPL-H / SMPL-X model files for tests (no licensed data needed).

The arrays follow the released files' key layout exactly (``v_template``, ``shapedirs``,
``posedirs``, ``J_regressor``, ``weights``, ``kintree_table`` with root 4294967295, ``f``,
``vt``/``ft``; SMPL-H/SMPL-X add ``hands_components{l,r}``/``hands_mean{l,r}``, SMPL-X adds
10 expression directions after the 10 shape directions and landmark arrays), so the same
file loads through :func:`body.model.load_model_file` and through smplx.

The body is a stick figure: joints are placed along the real kinematic tree (each child
offset from its parent in a direction that depends on the joint's role: legs down, spine
up, arms sideways, fingers outward), and every vertex sits near one joint, is skinned to
that joint and its parent (valid LBS weights, rows sum to 1), and the joint regressor
averages each joint's own vertices (rows sum to 1), so J_regressor @ v_template lies near
the constructed joints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import numpy as np

from ..errors import BodyModelError
from . import JOINT_NAMES_BY_TYPE, PARENTS_BY_TYPE

_PREFIX = {"smpl": "SMPL", "smplh": "SMPLH", "smplx": "SMPLX"}


def _bone_direction(name: str) -> np.ndarray:
    """A unit direction (model frame, Y-up, +X = the body's left) for the bone ending at
    the joint called ``name``."""
    side = 1.0 if name.startswith("left") else (-1.0 if name.startswith("right") else 0.0)
    if any(k in name for k in ("hip", "knee", "ankle")):
        d = (0.3 * side, -1.0, 0.0) if "hip" in name else (0.0, -1.0, 0.05)
    elif "foot" in name:
        d = (0.0, -0.3, 1.0)
    elif any(k in name for k in ("collar", "shoulder", "elbow", "wrist", "hand",
                                 "index", "middle", "ring", "pinky", "thumb")):
        d = (side, 0.15 if "collar" in name else 0.0, 0.0)
        if "thumb" in name:
            d = (side, 0.0, 0.6)
    elif "eye" in name or name == "jaw":
        d = (0.3 * side, 0.2 if "eye" in name else -0.3, 1.0)
    else:  # spine, neck, head
        d = (0.0, 1.0, 0.0)
    d = np.asarray(d, dtype=np.float64)
    return d / np.linalg.norm(d)


_BONE_LENGTH = {"hip": 0.1, "knee": 0.4, "ankle": 0.4, "foot": 0.12, "spine": 0.12,
                "neck": 0.2, "head": 0.1, "collar": 0.08, "shoulder": 0.1, "elbow": 0.26,
                "wrist": 0.25, "hand": 0.08, "jaw": 0.08, "eye": 0.1}


def _bone_length(name: str) -> float:
    for key, length in _BONE_LENGTH.items():
        if key in name:
            return length
    return 0.03  # finger phalanges


def make_synthetic_model(model_type: str = "smpl", num_verts: int = 300, seed: int = 0,
                         with_posedirs: bool = True, num_betas: int = 10) -> Dict[str, np.ndarray]:
    """A random but valid model as a dict of plain numpy arrays in the file key layout.

    ``model_type`` smpl (24 joints), smplh (52) or smplx (55); SMPL-X stores its 10 shape
    directions followed by 10 expression directions (smplx's <400-component layout), so
    it needs ``num_betas == 10``. ``with_posedirs`` False gives zero pose correctives.
    """
    if model_type not in _PREFIX:
        raise BodyModelError(f"Unknown synthetic model type '{model_type}'.")
    names = JOINT_NAMES_BY_TYPE[model_type]
    parents = np.asarray(PARENTS_BY_TYPE[model_type], dtype=np.int64)
    J = len(names)
    if num_verts < 2 * J:
        raise BodyModelError(f"A synthetic {model_type} model needs at least {2 * J} vertices.")
    if model_type == "smplx" and num_betas != 10:
        raise BodyModelError("Synthetic SMPL-X models have exactly 10 shape directions.")
    rng = np.random.default_rng(seed)

    joints = np.zeros((J, 3))
    for k in range(1, J):
        length = _bone_length(names[k]) * rng.uniform(0.9, 1.1)
        joints[k] = joints[parents[k]] + length * _bone_direction(names[k])

    owner = np.arange(num_verts) % J                       # every joint owns vertices
    owner = owner[rng.permutation(num_verts)]
    v_template = joints[owner] + rng.normal(scale=0.02, size=(num_verts, 3))

    weights = np.zeros((num_verts, J))
    own = rng.uniform(0.5, 1.0, size=num_verts)
    weights[np.arange(num_verts), owner] = own
    par = parents[owner]
    has_par = par >= 0
    rows = np.nonzero(has_par)[0]
    weights[rows, par[has_par]] += 1.0 - own[has_par]
    weights[~has_par, 0] = 1.0
    weights /= weights.sum(axis=1, keepdims=True)

    J_regressor = np.zeros((J, num_verts))
    J_regressor[owner, np.arange(num_verts)] = rng.uniform(0.2, 1.0, size=num_verts)
    J_regressor /= J_regressor.sum(axis=1, keepdims=True)

    n_dirs = 20 if model_type == "smplx" else num_betas
    shapedirs = rng.normal(scale=0.01, size=(num_verts, 3, n_dirs))
    P = 9 * (J - 1)
    posedirs = (rng.normal(scale=0.01, size=(num_verts, 3, P)) if with_posedirs
                else np.zeros((num_verts, 3, P)))

    # triangles among vertices of the same joint
    order = np.argsort(owner, kind="stable")
    tri = np.stack([order[:-2], order[1:-1], order[2:]], axis=1)
    same = (owner[tri[:, 0]] == owner[tri[:, 1]]) & (owner[tri[:, 1]] == owner[tri[:, 2]])
    f = tri[same].astype(np.int64)
    vt = rng.uniform(0.0, 1.0, size=(num_verts + 7, 2))
    ft = (f + rng.integers(0, 8, size=(f.shape[0], 1))) % vt.shape[0]

    kintree = np.stack([parents, np.arange(J)]).astype(np.int64)
    kintree[0, 0] = 4294967295
    data = {
        "v_template": v_template, "shapedirs": shapedirs, "posedirs": posedirs,
        "J_regressor": J_regressor, "weights": weights, "kintree_table": kintree,
        "f": f, "vt": vt, "ft": ft,
    }
    if model_type in ("smplh", "smplx"):
        for side in "lr":
            q, _ = np.linalg.qr(rng.normal(size=(45, 45)))
            data[f"hands_components{side}"] = q
            data[f"hands_mean{side}"] = rng.normal(scale=0.1, size=45)
    if model_type == "smplx":
        data["lmk_faces_idx"] = rng.integers(0, max(1, f.shape[0]), size=51).astype(np.int64)
        bary = rng.uniform(0.1, 1.0, size=(51, 3))
        data["lmk_bary_coords"] = bary / bary.sum(axis=1, keepdims=True)
    return data


def write_synthetic_model(folder: os.PathLike | str, model_type: str = "smpl",
                          gender: str = "neutral", **kwargs) -> Path:
    """Write :func:`make_synthetic_model` where :func:`body.model.find_model_file` looks:
    ``folder/<type>/<PREFIX>_<GENDER>.npz`` (npz for SMPL too; the loader accepts it).
    Extra keyword arguments go to :func:`make_synthetic_model`. Returns the file path."""
    data = make_synthetic_model(model_type, **kwargs)
    path = Path(folder) / model_type / f"{_PREFIX[model_type]}_{gender.upper()}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return path
