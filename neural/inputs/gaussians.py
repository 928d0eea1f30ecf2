"""Diffuse Gaussian bone primitives (Rochette et al., "Human View Synthesis using diffuse
Gaussian primitives", sec. III-B and appendix III). No bpy here.

One anisotropic Gaussian per bone (eq. 7-10), rendered by integrating each primitive's
density along every camera ray in closed form (eq. 13 / appendix III-A, eq. 45-69), with a
smooth rasterisation coefficient ``lambda = 1 / (1 + z*^4)`` for occlusion (appendix III-B,
eq. 70-83), a background pseudo-primitive (appendix III-C, eq. 84-89), normalised weights
(eq. 14 / 43) and the feature image ``J = sum_k w_k a_k`` (eq. 15 / 44).

Two deliberate differences from the public code (GuillaumeRochette/HumanViewSynthesis):

* The half-line integral keeps its ``erfc`` factor (the public code clamps it to 1).
* The ``erfc`` argument has the sign that follows from the substitution eq. 61: the lower
  limit is ``u(0) = -r^T S'^-1 mu / sqrt(r^T S'^-1 r)``; the paper's eq. 63 and eq. 88 drop
  the minus sign. With the paper's sign a primitive in front of the camera would get almost no
  density (``erfc(+large) -> 0``) and one behind the camera almost the full line integral, which
  is presumably why the public code clamps the factor. The sign used here is checked against
  numerical quadrature in ``tests/neural/test_gaussians.py``.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ...errors import NeuralAvatarError
from .camera import _batch_cam

__all__ = [
    "bone_list",
    "bone_gaussians",
    "ray_integral",
    "pixel_rays",
    "distort_normalized",
    "undistort_normalized",
    "gaussian_weights",
    "render_gaussians",
    "feature_stride",
]

_SQRT_PI = math.sqrt(math.pi)
_SQRT2 = math.sqrt(2.0)
_LOG2 = math.log(2.0)
#: Weights below exp(-80) of the largest one at a pixel are flushed to that floor (eq. 14 is
#: evaluated as a max-shifted log-sum; avoids denormal arithmetic, changes weights by < 1e-33).
_LOG_FLOOR = -80.0


def bone_list(parents: Sequence[int], bone_ids: Optional[Sequence[int]] = None) -> Tuple[list, list]:
    """Bones as (parent joint, child joint) index lists.

    ``parents[j]`` is joint ``j``'s parent (negative for a root). ``bone_ids`` selects bones by
    their *child* joint index (default: every joint that has a parent, in joint order)."""
    parents = [int(p) for p in (parents.tolist() if hasattr(parents, "tolist") else parents)]
    J = len(parents)
    children = list(range(J)) if bone_ids is None else [int(b) for b in bone_ids]
    pa, ch = [], []
    for c in children:
        if not 0 <= c < J:
            raise NeuralAvatarError(f"Bone id {c} is not a joint index (0..{J - 1}).")
        p = parents[c]
        if p < 0:
            if bone_ids is not None:
                raise NeuralAvatarError(f"Joint {c} has no parent, so it has no bone.")
            continue
        if p >= J:
            raise NeuralAvatarError(f"Joint {c} has parent {p} outside the skeleton.")
        pa.append(p)
        ch.append(c)
    if not ch:
        raise NeuralAvatarError("The skeleton has no bones.")
    return pa, ch


def bone_gaussians(
    joints: torch.Tensor,
    parents: Sequence[int],
    width: Union[float, torch.Tensor],
    bone_ids: Optional[Sequence[int]] = None,
    squared: bool = False,
    min_length: float = 1e-3,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One anisotropic Gaussian per bone, HumanViewSynthesis eq. 7-10.

    For a bone from parent joint ``P_i`` to child ``P_j``:
    ``mu = (P_i + P_j) / 2`` (eq. 7) and ``Sigma = R diag(len, w, w) R^T`` (eq. 8) where ``R``
    rotates the first axis onto the bone direction (eq. 9, appendix II) and, following eq. 10
    literally, ``len = ||P_j - P_i||_2`` -- the bone *length* itself is the variance entry
    along the bone, and ``w`` the one across it (no squaring). Because the two transverse
    entries are equal this equals ``w I + (len - w) d d^T`` with ``d`` the unit bone direction,
    which is what is computed (it has no singularity when the bone points along ``-x``, where
    appendix II's construction is undefined).

    ``squared=True`` uses ``diag(len^2, w^2, w^2)`` instead, as the public code does (its
    ``Pose3DToLimbs``); the renderer's ``alpha`` scales either.

    Args:
        joints: ``(B,J,3)``.
        parents: ``(J,)`` parent index per joint (negative for roots).
        width: scalar, ``(N,)`` per selected bone, or ``(J,)`` indexed by child joint.
        bone_ids: child-joint indices of the bones to use (default all bones).
        min_length: lengths are clamped below by this (degenerate bones stay positive definite).
    Returns ``mu (B,N,3)``, ``cov (B,N,3,3)``; differentiable w.r.t. ``joints`` and ``width``.
    """
    if joints.dim() != 3 or joints.shape[-1] != 3:
        raise NeuralAvatarError(f"Joints must have shape (B,J,3), got {tuple(joints.shape)}.")
    B, J, _ = joints.shape
    if len(parents) != J:
        raise NeuralAvatarError(f"{len(parents)} parents for {J} joints.")
    pa, ch = bone_list(parents, bone_ids)
    N = len(ch)
    Pi = joints[:, pa]
    Pj = joints[:, ch]
    mu = 0.5 * (Pi + Pj)
    d = Pj - Pi
    length = d.norm(dim=-1)  # (B,N)
    dirn = d / length.clamp_min(1e-12).unsqueeze(-1)
    length = length.clamp_min(min_length)

    w = torch.as_tensor(width, dtype=joints.dtype, device=joints.device)
    if w.dim() == 0:
        w = w.expand(N)
    elif w.dim() == 1 and w.shape[0] == J and J != N:
        w = w[torch.as_tensor(ch, device=joints.device)]
    elif not (w.dim() == 1 and w.shape[0] == N):
        raise NeuralAvatarError(f"Width must be a scalar, ({N},) per bone or ({J},) per joint.")
    if bool((w.detach() <= 0).any()):
        raise NeuralAvatarError("Bone widths must be positive.")
    w = w.unsqueeze(0).expand(B, N)
    if squared:
        length = length * length
        w = w * w
    eye = torch.eye(3, dtype=joints.dtype, device=joints.device)
    outer = dirn.unsqueeze(-1) * dirn.unsqueeze(-2)
    cov = w[..., None, None] * eye + (length - w)[..., None, None] * outer
    return mu, cov


def _integral_from_forms(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, alpha: float) -> torch.Tensor:
    """Closed-form half-line integral from the quadratic forms (appendix III-A, eq. 69).

    ``a = r^T S^-1 r``, ``b = r^T S^-1 (mu - o)``, ``c = (mu - o)^T S^-1 (mu - o)``:
    ``F = sqrt(alpha pi) / (2 sqrt(a)) * erfc(-b / sqrt(alpha a)) * exp(-(c - b^2/a) / alpha)``
    (erfc argument with the sign of eq. 61's substitution, see the module docstring).
    """
    a = a.clamp_min(1e-30)
    sa = a.sqrt()
    sal = math.sqrt(alpha)
    expo = (c - b * b / a).clamp_min(0.0) / alpha
    return (0.5 * _SQRT_PI * sal) / sa * torch.special.erfc(-b / (sal * sa)) * torch.exp(-expo)


def _log_erfc(x: torch.Tensor) -> torch.Tensor:
    """``log erfc(x) = log 2 + log Phi(-sqrt(2) x)``: finite for every ``x`` (no underflow)."""
    try:
        return _LOG2 + torch.special.log_ndtr(-_SQRT2 * x)
    except (NotImplementedError, RuntimeError):  # pragma: no cover - backends without log_ndtr
        # log erfc(x) = log erfcx(x) - x^2 for x > 0; erfc itself is safe for x <= 0.
        xp = x.clamp_min(0.0)
        pos = torch.log(torch.special.erfcx(xp)) - xp * xp
        neg = torch.log(torch.special.erfc(x.clamp_max(0.0)))
        return torch.where(x > 0, pos, neg)


def ray_integral(
    origin: torch.Tensor,
    direction: torch.Tensor,
    mu: torch.Tensor,
    cov_inv: torch.Tensor,
    alpha: float = 1.0,
    return_depth: bool = False,
):
    """``F = int_0^inf exp(-Delta^2(o + z r, mu, alpha Sigma)) dz`` in closed form.

    HumanViewSynthesis eq. 13 / 45-69 with the ``erfc`` term (the half line from the ray
    origin, not the whole line), generalised to a ray origin ``o`` (the paper's rays start at
    the pinhole, ``o = 0``). ``Delta^2(u, v, A) = (u - v)^T A^-1 (u - v)`` (eq. 47), note: no
    factor 1/2. All arguments broadcast: ``origin (...,3)``, ``direction (...,3)`` (the paper
    uses unit rays; ``z`` is measured in multiples of ``|r|``), ``mu (...,3)``,
    ``cov_inv (...,3,3)`` (``Sigma^-1``, *before* scaling by ``alpha``).
    With ``return_depth`` also returns ``z* = r^T S^-1 (mu-o) / r^T S^-1 r`` (eq. 82).
    """
    m = mu - origin
    Ar = (cov_inv @ direction.unsqueeze(-1)).squeeze(-1)
    Am = (cov_inv @ m.unsqueeze(-1)).squeeze(-1)
    a = (direction * Ar).sum(-1)
    b = (m * Ar).sum(-1)
    c = (m * Am).sum(-1)
    F = _integral_from_forms(a, b, c, alpha)
    if return_depth:
        return F, b / a.clamp_min(1e-30)
    return F


def distort_normalized(xy: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """OpenCV lens distortion of normalised image coordinates ``xy (...,2)`` with
    ``dist (B|1, D)``, ``D`` in 4/5/8 = ``(k1, k2, p1, p2[, k3[, k4, k5, k6]])``;
    ``dist`` broadcasts over ``xy``'s middle dimensions (``xy (B,P,2)``)."""
    d = torch.zeros(dist.shape[0], 8, dtype=xy.dtype, device=xy.device)
    d[:, : dist.shape[-1]] = dist.to(xy.dtype)
    k1, k2, p1, p2, k3, k4, k5, k6 = [d[:, i].view(-1, *([1] * (xy.dim() - 2))) for i in range(8)]
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return torch.stack([xd, yd], dim=-1)


def undistort_normalized(xy_d: torch.Tensor, dist: torch.Tensor, iters: int = 20) -> torch.Tensor:
    """Invert :func:`distort_normalized` by fixed-point iteration -- the ``u(., D)`` of
    HumanViewSynthesis eq. 12 / 41 (OpenCV's ``undistortPoints`` scheme):
    ``x <- (x_d - tangential(x)) / radial(x)``."""
    d = torch.zeros(dist.shape[0], 8, dtype=xy_d.dtype, device=xy_d.device)
    d[:, : dist.shape[-1]] = dist.to(xy_d.dtype)
    k1, k2, p1, p2, k3, k4, k5, k6 = [d[:, i].view(-1, *([1] * (xy_d.dim() - 2))) for i in range(8)]
    xd, yd = xy_d[..., 0], xy_d[..., 1]
    x, y = xd, yd
    for _ in range(iters):
        r2 = x * x + y * y
        icdist = (1 + r2 * (k4 + r2 * (k5 + r2 * k6))) / (1 + r2 * (k1 + r2 * (k2 + r2 * k3)))
        dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        x = (xd - dx) * icdist
        y = (yd - dy) * icdist
    return torch.stack([x, y], dim=-1)


def pixel_rays(
    K: torch.Tensor,
    size: Tuple[int, int],
    dist: Optional[torch.Tensor] = None,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> torch.Tensor:
    """Unit camera-frame rays through the pixel centres, HumanViewSynthesis eq. 12 / 41:
    ``r = u(K^-1 p, D) / |u(K^-1 p, D)|`` with ``p = (j + 0.5, i + 0.5, 1)`` (pixel centres,
    ARCHITECTURE.md; the paper uses ``(j, i, 1)``). ``K (B,3,3)``; returns ``(B, H*W, 3)``
    in row-major pixel order."""
    H, W = int(size[0]), int(size[1])
    K = torch.as_tensor(K, dtype=dtype, device=device)
    if K.dim() == 2:
        K = K.unsqueeze(0)
    jj = torch.arange(W, dtype=dtype, device=K.device) + 0.5
    ii = torch.arange(H, dtype=dtype, device=K.device) + 0.5
    gy, gx = torch.meshgrid(ii, jj, indexing="ij")
    pix = torch.stack([gx.reshape(-1), gy.reshape(-1), torch.ones(H * W, dtype=dtype, device=K.device)], -1)
    rays = pix.unsqueeze(0) @ torch.linalg.inv(K).transpose(1, 2)  # (B,P,3), z = 1
    if dist is not None:
        dist = torch.as_tensor(dist, dtype=dtype, device=K.device)
        if dist.dim() == 1:
            dist = dist.unsqueeze(0)
        xy = undistort_normalized(rays[..., :2] / rays[..., 2:3], dist)
        rays = torch.cat([xy, torch.ones_like(xy[..., :1])], -1)
    return rays / rays.norm(dim=-1, keepdim=True)


def gaussian_weights(
    mu: torch.Tensor,
    cov: torch.Tensor,
    K: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    size: Tuple[int, int],
    alpha: float = 2.5e-2,
    beta: float = 2.0,
    dist: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Normalised per-pixel primitive weights ``w (B, N+1, H, W)``, HumanViewSynthesis eq. 14.

    ``w_k = lambda_k F_k / sum_l lambda_l F_l`` over the ``N`` primitives and the background
    (last channel). ``F_k``: closed-form ray integral (eq. 69, with ``erfc``), ``lambda_k =
    1 / (1 + z*_k^4)`` with ``z*_k = r^T S^-1 mu / r^T S^-1 r`` (eq. 70/82, camera units,
    i.e. metres). Background (appendix III-C): ``z*_bg = beta * max_{pixels,k} z*`` per image
    (eq. 85), ``Sigma_bg = alpha I`` on the ray (eq. 84/86), so
    ``F_bg = sqrt(alpha pi)/2 * erfc(-z*_bg / sqrt(alpha))`` (eq. 88 with eq. 61's sign) and
    ``lambda_bg = 1 / (1 + z*_bg^4)`` (eq. 89).

    ``mu (B,N,3)``, ``cov (B,N,3,3)`` are in the world frame and are moved to the camera
    frame with ``R, t`` (``mu_c = R mu + t``, ``Sigma_c = R Sigma R^T``). ``alpha`` scales all
    shapes (eq. 11, ``Sigma' = alpha Sigma``), ``beta > 1`` places the background.
    ``dist (B|1, D)``: optional OpenCV distortion coefficients of the camera (eq. 12).
    Evaluated in the log domain and shifted by each pixel's largest term, so distant primitives
    cannot underflow (weights below ``e^-80`` of a pixel's largest are floored there).
    Differentiable w.r.t. ``mu`` and ``cov``.
    """
    if mu.dim() != 3 or mu.shape[-1] != 3:
        raise NeuralAvatarError(f"Primitive centres must have shape (B,N,3), got {tuple(mu.shape)}.")
    B, N, _ = mu.shape
    if cov.shape != (B, N, 3, 3):
        raise NeuralAvatarError(f"Covariances must have shape ({B},{N},3,3), got {tuple(cov.shape)}.")
    if alpha <= 0 or beta < 1:
        raise NeuralAvatarError("Gaussian renderer needs alpha > 0 and beta >= 1.")
    H, W = int(size[0]), int(size[1])
    Kb, Rb, tb = _batch_cam(K, R, t, B, mu)
    mu_c = mu @ Rb.transpose(1, 2) + tb[:, None, :]
    cov_c = Rb[:, None] @ cov @ Rb.transpose(1, 2)[:, None]
    A = torch.linalg.inv(cov_c)  # (B,N,3,3) = Sigma_c^-1
    A = 0.5 * (A + A.transpose(-1, -2))
    rays = pixel_rays(Kb, (H, W), dist=dist, dtype=mu.dtype, device=mu.device)  # (B,P,3)
    P = rays.shape[1]
    # Quadratic forms for every (pixel, primitive) with two matmuls (eq. 51).
    r_outer = (rays.unsqueeze(-1) * rays.unsqueeze(-2)).reshape(B, P, 9)
    a = r_outer @ A.reshape(B, N, 9).transpose(1, 2)  # r^T A r      (B,P,N)
    Am = (A @ mu_c.unsqueeze(-1)).squeeze(-1)  # (B,N,3)
    b = rays @ Am.transpose(1, 2)  # r^T A mu     (B,P,N)
    c = (mu_c * Am).sum(-1).unsqueeze(1)  # mu^T A mu    (B,1,N)
    sal = math.sqrt(alpha)
    # eq. 69 in the log domain (the log of _integral_from_forms, sharing sub-terms), so that
    # primitives far from a ray neither underflow to 0 nor hit slow denormal arithmetic.
    ra = torch.rsqrt(a.clamp_min(1e-30))  # 1 / sqrt(r^T A r)
    bra = b * ra
    z = bra * ra  # eq. 82, z* = r^T A mu / r^T A r
    expo = (c - bra * bra).clamp_min(0.0) * (1.0 / alpha)
    logF = torch.log(ra) + _log_erfc(bra * (-1.0 / sal)) - expo + math.log(0.5 * _SQRT_PI * sal)
    z2 = z * z
    loglam = -torch.log1p(z2 * z2)  # eq. 83
    z_bg = beta * z.reshape(B, -1).amax(dim=1)  # eq. 85, (B,)
    logF_bg = math.log(0.5 * _SQRT_PI * sal) + _log_erfc(-z_bg / sal)  # eq. 88 (sign of eq. 61)
    loglam_bg = -torch.log1p(z_bg ** 4)  # eq. 89
    logw = torch.cat([loglam + logF, (loglam_bg + logF_bg)[:, None, None].expand(B, P, 1)], dim=-1)
    # eq. 14, w_k = lambda_k F_k / sum_l lambda_l F_l, shifted by the per-pixel maximum.
    logw = logw - logw.detach().amax(dim=-1, keepdim=True)
    w = torch.exp(logw.clamp_min(_LOG_FLOOR))
    w = w / w.sum(-1, keepdim=True)
    return w.transpose(1, 2).reshape(B, N + 1, H, W)


def feature_stride(mu: torch.Tensor, cov: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                   alpha: float = 2.5e-2, max_stride: int = 2, min_sigma_px: float = 1.5) -> int:
    """How coarsely the feature image may be computed: the largest power of two ``s <= max_stride``
    at which the narrowest primitive in front of the camera still spans ``min_sigma_px`` pixels
    (its standard deviation ``f · sqrt(alpha · lambda_min(Sigma)) / z``). The weights of eq. 14
    are smooth on that scale, so computing them every ``s`` pixels and interpolating changes the
    style UNet's picture little, for s² less work (the input cost 400 ms a frame at 512² on one
    core). HVS demo avatar on 512² frames: the rendered image is 51–54 dB PSNR from the full
    computation at s = 2 (the feature image 72–75 dB), 40–43 dB at s = 4, hence ``max_stride=2``."""
    with torch.no_grad():
        B = mu.shape[0]
        Kb, Rb, tb = _batch_cam(K, R, t, B, mu)
        lam = torch.linalg.eigvalsh(cov.detach().float())[..., 0].clamp_min(0.0)  # (B,N)
        z = (mu.detach() @ Rb.transpose(1, 2) + tb[:, None, :])[..., 2]
        f = 0.5 * (Kb[:, 0, 0] + Kb[:, 1, 1])[:, None]
        front = z > 1e-3
        if not bool(front.any()):
            return 1
        sig = (f * torch.sqrt(alpha * lam) / z.clamp_min(1e-3))[front]
        s_max = float(sig.min()) / float(min_sigma_px)
    s = 1
    while s * 2 <= min(int(max_stride), s_max):
        s *= 2
    return s


def render_gaussians(
    mu: torch.Tensor,
    cov: torch.Tensor,
    appearance: torch.Tensor,
    K: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    size: Tuple[int, int],
    background_appearance: torch.Tensor,
    alpha: float = 2.5e-2,
    beta: float = 2.0,
    dist: Optional[torch.Tensor] = None,
    return_weights: bool = False,
    stride: int = 1,
):
    """Feature image ``J_ij = sum_{k=1}^{N+1} w_ijk a_k``, HumanViewSynthesis eq. 15 / 44.

    ``appearance (B,N,A)`` or ``(N,A)`` per primitive, ``background_appearance (B,A)`` or
    ``(A,)`` (the ``b`` of eq. 11); weights from :func:`gaussian_weights` (see there for
    ``alpha``, ``beta``, ``dist``). Returns ``(B,A,H,W)`` and, with ``return_weights``, also the
    weights ``(B,N+1,H,W)`` (background last). Differentiable w.r.t. ``mu``, ``cov`` and the
    appearances. ``stride s > 1`` (:func:`feature_stride`) computes the weights at every ``s``-th
    pixel (the camera's K scaled by 1/s, pixel centres kept) and upsamples them bilinearly.
    """
    B, N = mu.shape[0], mu.shape[1]
    s = int(stride)
    if s > 1:
        H, W = int(size[0]), int(size[1])
        hl, wl = -(-H // s), -(-W // s)
        Kl = torch.as_tensor(K, dtype=mu.dtype, device=mu.device).clone()
        Kl[..., :2, :] = Kl[..., :2, :] / s  # fx, skew, cx / s; fy, cy / s (continuous pixel coordinates)
        w = gaussian_weights(mu, cov, Kl, R, t, (hl, wl), alpha=alpha, beta=beta, dist=dist)
        w = F.interpolate(w, size=(hl * s, wl * s), mode="bilinear", align_corners=False)[..., :H, :W]
    else:
        w = gaussian_weights(mu, cov, K, R, t, size, alpha=alpha, beta=beta, dist=dist)
    if appearance.dim() == 2:
        appearance = appearance.unsqueeze(0)
    if appearance.dim() != 3 or appearance.shape[1] != N or appearance.shape[0] not in (1, B):
        raise NeuralAvatarError(f"Appearance must have shape (B,{N},A), got {tuple(appearance.shape)}.")
    A_ = appearance.shape[-1]
    bg = torch.as_tensor(background_appearance, dtype=appearance.dtype, device=appearance.device)
    if bg.dim() == 1:
        bg = bg.unsqueeze(0)
    if bg.shape[-1] != A_:
        raise NeuralAvatarError(f"Background appearance must have {A_} channels.")
    app = torch.cat([appearance.expand(B, -1, -1), bg.expand(B, -1).unsqueeze(1)], dim=1)  # (B,N+1,A)
    img = torch.einsum("bkhw,bka->bahw", w.to(app.dtype), app)
    if return_weights:
        return img, w
    return img
