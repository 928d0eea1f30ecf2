"""Skeleton-driven deformation for AniPixel's bidirectional skinning field (Fan et al.,
"AniPixel", sec. 3.1). No bpy here.

The engine and the captures give a body as posed vertices (and joints) in world space, not as
pose parameters, so the bone transformations ``B^i`` of eq. 1 and 3 are recovered from the
vertices: for every bone, the rigid motion that best carries the neutral template's rest
vertices onto the posed ones, each vertex weighted by its skinning weight for that bone
(weighted Kabsch / Procrustes). For an LBS body this is exact for the rigid part of a limb;
shape and pose-corrective offsets stay in the residual, which is what the canonical
normalisation and the displacement field (sec. 3.2) then absorb.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def bone_transforms(rest: torch.Tensor, posed: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-bone rigid transforms ``T (B,J,4,4)`` with ``posed ~ T_j @ rest`` where bone ``j``
    moves the vertices: weighted Kabsch on ``rest (N,3)``, ``posed (B,N,3)`` with
    ``weights (N,J)`` (rows summing to 1). Bones with no weight get the root's... identity."""
    B = posed.shape[0]
    w = weights.to(posed.dtype)  # (N,J)
    ws = w.sum(0).clamp_min(1e-8)  # (J,)
    mu_r = (w.T @ rest) / ws[:, None]  # (J,3)
    mu_p = torch.einsum("nj,bnc->bjc", w, posed) / ws[None, :, None]  # (B,J,3)
    # covariance H_j = sum_n w_nj (r_n - mu_r_j)(p_n - mu_p_j)^T = sum w r p^T - ws mu_r mu_p^T
    H = torch.einsum("nj,na,bnc->bjac", w, rest, posed) - ws[None, :, None, None] * mu_r[None, :, :, None] * mu_p[:, :, None, :]
    U, S, Vh = torch.linalg.svd(H.double())
    V = Vh.transpose(-1, -2)
    d = torch.sign(torch.linalg.det(V @ U.transpose(-1, -2)))
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    Rm = (V @ D @ U.transpose(-1, -2)).to(posed.dtype)  # (B,J,3,3)
    tr = mu_p - (Rm @ mu_r[None, :, :, None])[..., 0]
    T = torch.zeros(B, w.shape[1], 4, 4, dtype=posed.dtype, device=posed.device)
    T[..., :3, :3] = Rm
    T[..., :3, 3] = tr
    T[..., 3, 3] = 1.0
    empty = (w.sum(0) < 1e-6)
    if bool(empty.any()):
        T[:, empty] = torch.eye(4, dtype=posed.dtype, device=posed.device)
    return T


def blend(weights: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """``sum_i w^i B^i``: ``weights (B,P,J)``, ``T (B,J,4,4)`` -> ``(B,P,4,4)``."""
    return torch.einsum("bpj,bjxy->bpxy", weights, T)


def apply(M: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``M (B,P,4,4) @ [x, 1]`` for ``x (B,P,3)``."""
    return (M[..., :3, :3] @ x[..., None])[..., 0] + M[..., :3, 3]


def apply_inverse(M: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``M^-1 @ [x, 1]`` (eq. 1's inverse of the blended transform), by a batched solve."""
    return torch.linalg.solve(M[..., :3, :3], (x - M[..., :3, 3])[..., None])[..., 0]


def nearest(points: torch.Tensor, verts: torch.Tensor, chunk: int = 2048,
            radius: Optional[float] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Nearest vertex of ``verts (B,N,3)`` for every ``points (B,P,3)``: ``(dist (B,P), idx (B,P))``.

    Exact, and pruned so that its cost follows the points near the body rather than points x
    vertices (AniPixel asks it for every ray sample and every canonical point, eq. 1-4):

    - the points are sorted along the body's longest axis and taken in chunks; a chunk is
      compared only with the vertices inside its bounding box grown by a bound ``r`` on its
      points' nearest distance, which holds every point's nearest vertex;
    - ``r`` is ``radius`` when given, otherwise the largest distance from a chunk point to a
      coarse subset of the vertices (an upper bound on its nearest distance);
    - with ``radius``, only the distances below it are needed (eq. 1's ``near_body``: farther
      points are background): points whose voxel of the vertices' grid is farther than
      ``radius`` from every occupied voxel get ``dist = inf`` (and ``idx = 0``) without a
      distance computation, and a point whose nearest vertex lies at or beyond ``radius`` may
      report any distance that is ``>= radius``.
    """
    B, P, _ = points.shape
    d_out = torch.full((B, P), float("inf"), dtype=points.dtype, device=points.device)
    i_out = torch.zeros(B, P, dtype=torch.long, device=points.device)
    if P == 0 or verts.shape[1] == 0:
        return d_out, i_out
    for b in range(B):
        x, v = points[b], verts[b]
        cand = _near_voxels(x, v, radius) if radius is not None else None
        ids = torch.arange(P, device=x.device) if cand is None else torch.nonzero(cand)[:, 0]
        if len(ids) == 0:
            continue
        axis = int(torch.argmax(v.amax(0) - v.amin(0)))
        ids = ids[torch.argsort(x[ids, axis])]
        coarse = v[:: max(1, v.shape[0] // 256)] if radius is None else None
        for s in range(0, len(ids), chunk):
            ci = ids[s:s + chunk]
            q = x[ci]
            if radius is None:
                r = torch.cdist(q, coarse).amin(-1).amax()
            else:
                r = torch.as_tensor(radius, dtype=q.dtype, device=q.device)
            lo, hi = q.amin(0) - r, q.amax(0) + r
            sel = torch.nonzero(((v >= lo) & (v <= hi)).all(-1))[:, 0]
            if len(sel) == 0:  # only with radius: nothing within it
                continue
            dm, im = torch.cdist(q, v[sel]).min(-1)
            d_out[b, ci], i_out[b, ci] = dm, sel[im]
    return d_out, i_out


VOXEL = 0.04
"""Side (m) of the occupancy grid :func:`nearest` culls points with when given a radius."""


def _near_voxels(x: torch.Tensor, v: torch.Tensor, radius: float) -> torch.Tensor:
    """``(P,)`` bool: points whose voxel might hold a point within ``radius`` of a vertex
    (conservative: a voxel is kept when the closest two points of it and of an occupied voxel
    are nearer than ``radius``)."""
    h = VOXEL
    k = int(math.ceil(radius / h))
    lo = v.amin(0) - radius
    dims = (((v.amax(0) + radius) - lo) / h).floor().long() + 1
    if int(dims.prod()) > 64 ** 3 * 8:  # a huge body box: no culling, the chunked search still holds
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    occ = torch.zeros(*dims.tolist(), dtype=x.dtype, device=x.device)
    vi = ((v - lo) / h).floor().long()
    occ[vi[:, 0], vi[:, 1], vi[:, 2]] = 1.0
    o = torch.arange(-k, k + 1, device=x.device, dtype=x.dtype)
    g = torch.stack(torch.meshgrid(o, o, o, indexing="ij"), -1)
    gap = (g.abs() - 1).clamp_min(0) * h  # closest distance between two voxels this far apart, per axis
    ker = ((gap ** 2).sum(-1) < radius ** 2).to(x.dtype)
    near = F.conv3d(occ[None, None], ker[None, None], padding=k)[0, 0] > 0
    xi = ((x - lo) / h).floor().long()
    inside = ((xi >= 0) & (xi < dims)).all(-1)
    keep = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    xin = xi[inside]
    keep[inside] = near[xin[:, 0], xin[:, 1], xin[:, 2]]
    return keep


def unpose(posed: torch.Tensor, weights: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Each posed vertex carried back by its own blended transform (inverse LBS): the
    subject's body in the template's rest pose, ``(B,N,3)``."""
    M = blend(weights[None].expand(posed.shape[0], -1, -1).to(posed.dtype), T)
    return apply_inverse(M, posed)


def box_normalisation(unposed: torch.Tensor, template: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AniPixel sec. 3.2: "we resize the body of each person to align with a pre-defined
    neutral-sized canonical body via the minimum 3D bounding box". Returns per-axis ``scale
    (B,3)``, the subject box centre ``c_s (B,3)`` and the template's ``c_0 (3,)``:
    ``x_c = scale * (x - c_s) + c_0``."""
    lo, hi = unposed.amin(1), unposed.amax(1)
    lo0, hi0 = template.amin(0), template.amax(0)
    scale = (hi0 - lo0)[None] / (hi - lo).clamp_min(1e-3)
    return scale, 0.5 * (lo + hi), 0.5 * (lo0 + hi0)
