"""SMPL forward kinematics in numpy (float64, vectorised over vertices and frames).

Implements the SMPL model function M(β, θ) = W(T_P(β, θ), J(β), θ, 𝒲) of Loper et al.,
"SMPL: A Skinned Multi-Person Linear Model" (SIGGRAPH Asia 2015):

* eq. 8  T_P(β, θ) = T̄ + B_S(β) + B_P(θ)
* eq. 8  B_S(β) = Σ_n β_n S_n                      (:func:`shape`)
* eq. 9  B_P(θ) = Σ_n (R_n(θ) − R_n(θ*)) P_n        (:func:`pose_feature`, :func:`corrective_offsets`)
* eq. 10 J(β) = 𝒥 (T̄ + B_S(β))                     (:func:`shape`)
* eq. 1  Rodrigues' formula exp(ω̂) = I + ŵ sin‖ω‖ + ŵ²(1 − cos‖ω‖)   (:func:`axis_angle_to_matrix`)
* eq. 2–4 linear blend skinning with G'_k = G_k(θ, J) G_k(θ*, J)⁻¹   (:func:`forward`)

The result equals smplx's ``lbs`` (posed joints = smplx's first J joints, before its
extra vertex keypoints). Only loops over the (≤ 55) joints of the kinematic chain.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..errors import BodyModelError
from .model import BodyModel

_EPS = 1e-12


# --------------------------------------------------------------------------- rotations

def axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    """Rodrigues' formula (SMPL eq. 1): axis-angle (..., 3) → rotation matrices (..., 3, 3)."""
    aa = np.asarray(aa, dtype=np.float64)
    if aa.shape[-1] != 3:
        raise ValueError(f"axis-angle vectors need a last dimension of 3, got {aa.shape}")
    theta = np.linalg.norm(aa, axis=-1)
    small = theta < 1e-8
    safe = np.where(small, 1.0, theta)
    # sin(θ)/θ and (1-cos θ)/θ² with their Taylor limits near 0.
    a = np.where(small, 1.0 - theta ** 2 / 6.0, np.sin(safe) / safe)
    b = np.where(small, 0.5 - theta ** 2 / 24.0, (1.0 - np.cos(safe)) / safe ** 2)
    x, y, z = aa[..., 0], aa[..., 1], aa[..., 2]
    zero = np.zeros_like(x)
    K = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(aa.shape[:-1] + (3, 3))
    eye = np.broadcast_to(np.eye(3), K.shape)
    return eye + a[..., None, None] * K + b[..., None, None] * (K @ K)


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) → unit quaternions (..., 4) as (w, x, y, z), w ≥ 0
    (Shepperd's method: the largest of 4w², 4x², 4y², 4z² picks the stable formula)."""
    R = np.asarray(R, dtype=np.float64)
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    trace = m00 + m11 + m22
    cand = np.stack([
        np.stack([1 + trace, R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0],
                  R[..., 1, 0] - R[..., 0, 1]], -1),
        np.stack([R[..., 2, 1] - R[..., 1, 2], 1 + m00 - m11 - m22,
                  R[..., 0, 1] + R[..., 1, 0], R[..., 0, 2] + R[..., 2, 0]], -1),
        np.stack([R[..., 0, 2] - R[..., 2, 0], R[..., 0, 1] + R[..., 1, 0],
                  1 - m00 + m11 - m22, R[..., 1, 2] + R[..., 2, 1]], -1),
        np.stack([R[..., 1, 0] - R[..., 0, 1], R[..., 0, 2] + R[..., 2, 0],
                  R[..., 1, 2] + R[..., 2, 1], 1 - m00 - m11 + m22], -1),
    ], axis=-2)  # (..., 4 candidates, 4)
    diag = np.stack([1 + trace, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    best = np.argmax(diag, axis=-1)
    q = np.take_along_axis(cand, best[..., None, None], axis=-2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def quaternion_to_axis_angle(q: np.ndarray) -> np.ndarray:
    """Unit quaternions (..., 4) (w, x, y, z) → axis-angle (..., 3) with angle in [0, π]."""
    q = np.asarray(q, dtype=np.float64)
    q = np.where(q[..., :1] < 0, -q, q)
    w = q[..., 0]
    v = q[..., 1:]
    s = np.linalg.norm(v, axis=-1)
    angle = 2.0 * np.arctan2(s, w)
    small = s < 1e-8
    # angle / sin(angle/2) → 2 / w (≈ 2) near the identity.
    factor = np.where(small, 2.0 / np.where(np.abs(w) < _EPS, 1.0, w),
                      angle / np.where(small, 1.0, s))
    return v * factor[..., None]


def matrix_to_axis_angle(R: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) → axis-angle (..., 3), angle in [0, π] (stable near π)."""
    return quaternion_to_axis_angle(matrix_to_quaternion(R))


def axis_angle_to_quaternion(aa: np.ndarray) -> np.ndarray:
    """Axis-angle (..., 3) → unit quaternions (..., 4) as (w, x, y, z):
    q = (cos(θ/2), sin(θ/2) ω/θ)."""
    aa = np.asarray(aa, dtype=np.float64)
    theta = np.linalg.norm(aa, axis=-1)
    small = theta < 1e-8
    safe = np.where(small, 1.0, theta)
    k = np.where(small, 0.5 - theta ** 2 / 48.0, np.sin(safe / 2.0) / safe)
    return np.concatenate([np.cos(theta / 2.0)[..., None], aa * k[..., None]], axis=-1)


# --------------------------------------------------------------------------- SMPL terms

def _betas_vector(model: BodyModel, betas: Optional[np.ndarray]) -> np.ndarray:
    """Betas (B',) or (N,B') zero-padded to the model's B; more than B raises."""
    B = model.num_betas
    if betas is None:
        return np.zeros(B)
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim not in (1, 2):
        raise BodyModelError(f"betas must have shape (B,) or (N, B), got {betas.shape}.")
    n = betas.shape[-1]
    if n > B:
        raise BodyModelError(f"{n} shape coefficients given but {model.model_id or 'the model'} "
                             f"has only {B}.")
    if not np.all(np.isfinite(betas)):
        raise BodyModelError("betas contain NaN or infinite values.")
    if n < B:
        pad = np.zeros(betas.shape[:-1] + (B - n,))
        betas = np.concatenate([betas, pad], axis=-1)
    return betas


def shape(model: BodyModel, betas: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Shaped template and rest joints (SMPL eq. 8 shape term and eq. 10).

    v_shaped = T̄ + Σ_n β_n S_n,  J = 𝒥 v_shaped. ``betas`` (B',) with B' ≤ B (zero-padded)
    or (N, B') → (V,3),(J,3) or (N,V,3),(N,J,3).
    """
    b = _betas_vector(model, betas)
    v_shaped = model.v_template + np.einsum("vcb,...b->...vc", model.shapedirs, b)
    joints = np.einsum("jv,...vc->...jc", model.J_regressor, v_shaped)
    return v_shaped, joints


def pose_feature(pose_aa: np.ndarray) -> np.ndarray:
    """Pose-corrective feature of SMPL eq. 9 with θ* = 0: vec(R(θ_k) − I) for k = 1..J-1,
    row-major, concatenated → (9(J-1),) (or (N, 9(J-1)) for (N,J,3) input)."""
    pose_aa = np.asarray(pose_aa, dtype=np.float64)
    R = axis_angle_to_matrix(pose_aa[..., 1:, :])
    return (R - np.eye(3)).reshape(pose_aa.shape[:-2] + (-1,))


def corrective_offsets(model: BodyModel, pose_aa: np.ndarray) -> np.ndarray:
    """B_P(θ) = Σ_n (R_n(θ) − R_n(θ*)) P_n (SMPL eq. 9) → (V,3) (or (N,V,3))."""
    pose_aa = _check_pose(model, pose_aa)
    feat = pose_feature(pose_aa)
    return np.einsum("vcp,...p->...vc", model.posedirs, feat)


def _check_pose(model: BodyModel, pose_aa) -> np.ndarray:
    """(J,3) or (N,J,3); flat (3J,) and (N,3J) are reshaped."""
    pose_aa = np.asarray(pose_aa, dtype=np.float64)
    J = model.num_joints
    if pose_aa.ndim == 1 and pose_aa.size == 3 * J:
        pose_aa = pose_aa.reshape(J, 3)
    elif pose_aa.ndim == 2 and pose_aa.shape[1] == 3 * J and pose_aa.shape != (J, 3):
        pose_aa = pose_aa.reshape(-1, J, 3)
    if pose_aa.ndim not in (2, 3) or pose_aa.shape[-2:] != (J, 3):
        raise BodyModelError(f"pose must have shape ({J}, 3) or (N, {J}, 3) for "
                             f"{model.model_id or 'this model'}, got {pose_aa.shape}.")
    if not np.all(np.isfinite(pose_aa)):
        raise BodyModelError("pose contains NaN or infinite values.")
    return pose_aa


def rigid_transforms(rot: np.ndarray, joints: np.ndarray,
                     parents: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """World transforms along the kinematic chain (SMPL eq. 3–4).

    ``rot`` (N,J,3,3) local rotations, ``joints`` (N,J,3) rest joints. Returns the posed
    joints (N,J,3) and the skinning transforms G'_k = G_k(θ) G_k(θ*)⁻¹ as (N,J,3,4).
    """
    N, J = rot.shape[:2]
    rel = joints.copy()
    rel[:, 1:] -= joints[:, parents[1:]]
    local = np.zeros((N, J, 4, 4))
    local[..., :3, :3] = rot
    local[..., :3, 3] = rel
    local[..., 3, 3] = 1.0
    world = np.empty_like(local)
    world[:, 0] = local[:, 0]
    for k in range(1, J):  # loop over joints only (parents[k] < k)
        world[:, k] = world[:, parents[k]] @ local[:, k]
    posed_joints = world[..., :3, 3].copy()
    skin = world[..., :3, :].copy()
    skin[..., :3, 3] -= np.einsum("njab,njb->nja", world[..., :3, :3], joints)
    return posed_joints, skin


def forward(model: BodyModel, betas: Optional[np.ndarray] = None,
            pose_aa: Optional[np.ndarray] = None,
            transl: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """SMPL's model function M(β, θ) with translation: linear blend skinning of
    T_P(β, θ) = T̄ + B_S(β) + B_P(θ) (eq. 8) about J(β) (eq. 10) with eq. 2–4.

    ``betas`` (B',) or (N,B'); ``pose_aa`` (J,3) or (N,J,3) axis-angle per joint in the
    model's joint order (root first, relative to the parent); ``transl`` (3,) or (N,3).
    Returns (verts, joints): (V,3),(J,3) for a single pose, else (N,V,3),(N,J,3).
    Equals smplx's vertices and its first J joints (flat hand mean, no hand PCA).
    """
    J = model.num_joints
    if pose_aa is None:
        pose_aa = np.zeros((J, 3))
    pose_aa = _check_pose(model, pose_aa)
    single = pose_aa.ndim == 2
    poses = pose_aa[None] if single else pose_aa
    b = _betas_vector(model, betas)
    if b.ndim == 2:
        if single:
            single = False
            poses = np.broadcast_to(poses, (b.shape[0], J, 3))
        elif b.shape[0] not in (1, poses.shape[0]):
            raise BodyModelError(f"{b.shape[0]} shape vectors for {poses.shape[0]} poses.")
    N = poses.shape[0]
    v_shaped, joints = shape(model, b)
    v_shaped = np.broadcast_to(v_shaped, (N,) + model.v_template.shape)
    joints = np.broadcast_to(joints, (N, J, 3))

    rot = axis_angle_to_matrix(poses)                       # (N,J,3,3)
    v_posed = v_shaped
    if model.has_posedirs:
        feat = (rot[:, 1:] - np.eye(3)).reshape(N, -1)      # eq. 9 feature
        v_posed = v_shaped + np.einsum("vcp,np->nvc", model.posedirs, feat)

    posed_joints, skin = rigid_transforms(rot, np.ascontiguousarray(joints), model.parents)
    # per-vertex blended transform T_v = Σ_k w_vk G'_k (eq. 2), as (N,V,3,4)
    T = np.einsum("vk,nkab->nvab", model.weights, skin, optimize=True)
    verts = np.einsum("nvab,nvb->nva", T[..., :3], v_posed, optimize=True) + T[..., 3]

    if transl is not None:
        transl = np.asarray(transl, dtype=np.float64)
        if transl.shape[-1] != 3 or transl.ndim > 2:
            raise BodyModelError(f"transl must have shape (3,) or (N, 3), got {transl.shape}.")
        t = transl.reshape(-1, 1, 3)
        if t.shape[0] not in (1, N):
            raise BodyModelError(f"{t.shape[0]} translations for {N} poses.")
        verts = verts + t
        posed_joints = posed_joints + t
    if single:
        return verts[0], posed_joints[0]
    return verts, posed_joints
