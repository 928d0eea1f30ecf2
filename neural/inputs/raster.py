"""Neural-texture inputs (ANR / DNR): a z-buffered triangle rasterizer and texture sampling.

ANR (sec. 3.1, eq. 1-2) renders a learned ``C``-channel neural texture ``T`` through the
rasterized UV image ``I^uv`` of the posed body and injects the rasterized normal image
``I^norm`` between its two networks. This module produces both images:

* :func:`rasterize` -- pure-torch z-buffer rasterizer (per-pixel face id, perspective-correct
  barycentrics, depth, UV with per-face UV indices so seams stay sharp, view-space normals);
* :func:`sample_texture` -- bilinear lookup of ``T`` at ``I^uv`` (the "texturing" of eq. 1);
* :class:`LaplacianPyramidTexture` -- DNR's hierarchical neural texture, ANR's U[-1,1] init.

No nvdiffrast (non-commercial licence), no bpy. Everything is batched and device-agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import NeuralAvatarError
from .camera import _batch_cam
from .project import KEY_EMPTY, depth_keys, key_index

__all__ = [
    "Raster",
    "rasterize",
    "sample_texture",
    "uv_to_grid",
    "LaplacianPyramidTexture",
    "vertex_normals",
    "face_normals",
]

#: UV value written to background pixels.
UV_BACKGROUND = -1.0
#: Barycentric tolerance of the inside test, so that shared edges leave no cracks.
_INSIDE_TOL = 1e-6


@dataclass
class Raster:
    """Per-pixel rasterization result (row 0 = top, OpenCV camera).

    Attributes:
        face_id: ``(B,H,W)`` long, index into ``faces``; ``-1`` on background.
        bary: ``(B,H,W,3)`` perspective-correct barycentrics of ``faces[face_id]``'s three
            vertices (sum to 1; 0 on background).
        depth: ``(B,H,W)`` camera-frame ``z`` of the visible surface; ``+inf`` on background.
        mask: ``(B,1,H,W)`` float coverage (1 = surface).
        uv: ``(B,H,W,2)`` interpolated UV (``v`` up, see :func:`sample_texture`) or ``None``
            when no UVs were given; background ``-1``.
        normals: ``(B,3,H,W)`` unit interpolated vertex normals in the camera frame (OpenCV
            axes: x right, y down, z forward) or ``None``; background 0.
    """

    face_id: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    uv: Optional[torch.Tensor] = None
    normals: Optional[torch.Tensor] = None


def face_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted face normals ``(v1 - v0) x (v2 - v0)`` of ``verts (B,V,3)``: ``(B,F,3)``
    (length = twice the face area, direction by the right-hand rule on the vertex order)."""
    v0 = verts[:, faces[:, 0]]
    v1 = verts[:, faces[:, 1]]
    v2 = verts[:, faces[:, 2]]
    return torch.cross(v1 - v0, v2 - v0, dim=-1)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Smooth vertex normals ``(B,V,3)``: unit sum of the area-weighted normals of the faces
    around each vertex (the normals ANR's ``I^norm`` interpolates). Isolated vertices get 0."""
    if verts.dim() != 3 or verts.shape[-1] != 3:
        raise NeuralAvatarError(f"Vertices must have shape (B,V,3), got {tuple(verts.shape)}.")
    faces = faces.to(device=verts.device, dtype=torch.long)
    fn = face_normals(verts, faces)  # (B,F,3)
    B, V, _ = verts.shape
    n = torch.zeros_like(verts)
    for k in range(3):
        n = n.index_add(1, faces[:, k], fn)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(eps)


def _edge(ax, ay, bx, by, px, py):
    """2D edge function (twice the signed area of triangle a, b, p)."""
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


def _bary_coefs(sx, sy, zz):
    """Per-face affine coefficients of the screen-space barycentrics, relative to vertex 0.

    With ``dx = px - x0``, ``dy = py - y0`` the edge functions over the doubled area give
    ``l1 = a1 dx + b1 dy``, ``l2 = a2 dx + b2 dy``, ``l0 = 1 - l1 - l2`` (computing relative to a
    vertex avoids the cancellation of the absolute-coordinate form in float32), and
    ``1/z = 1/z0 + l1 (1/z1 - 1/z0) + l2 (1/z2 - 1/z0)`` (1/z is affine in screen space).
    Returns ``(..., 9)``: ``x0, y0, a1, b1, a2, b2, 1/z0, 1/z1 - 1/z0, 1/z2 - 1/z0``.
    """
    x0, x1, x2 = sx.unbind(-1)
    y0, y1, y2 = sy.unbind(-1)
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    inv = 1.0 / area
    iz = 1.0 / zz
    return torch.stack(
        [x0, y0, (y2 - y0) * inv, -(x2 - x0) * inv, -(y1 - y0) * inv, (x1 - x0) * inv,
         iz[..., 0], iz[..., 1] - iz[..., 0], iz[..., 2] - iz[..., 0]],
        dim=-1,
    )


def _eval_coefs(c, px, py):
    """Screen barycentrics ``l (...,3)`` and ``1/z (...)`` at ``(px, py)`` from :func:`_bary_coefs`."""
    dx = px - c[..., 0]
    dy = py - c[..., 1]
    l1 = c[..., 2] * dx + c[..., 3] * dy
    l2 = c[..., 4] * dx + c[..., 5] * dy
    l0 = 1.0 - l1 - l2
    zinv = c[..., 6] + l1 * c[..., 7] + l2 * c[..., 8]
    return torch.stack([l0, l1, l2], dim=-1), zinv


def _bary_depth(sx, sy, zz, px, py):
    """Screen-space then perspective-correct barycentrics at sample points.

    ``sx, sy, zz``: ``(..., 3)`` screen positions and camera depths of the face vertices;
    ``px, py``: ``(...)`` sample points. Screen-space weights ``l_i`` (edge functions over the
    area) are corrected with ``b_i = (l_i / z_i) / sum_j (l_j / z_j)``, and the depth is
    ``z = 1 / sum_j (l_j / z_j)``. Returns ``l (...,3)``, ``b (...,3)``, ``z (...)``.
    """
    lam, zinv = _eval_coefs(_bary_coefs(sx, sy, zz), px, py)
    q = lam / zz
    return lam, q / zinv.unsqueeze(-1), 1.0 / zinv


def rasterize(
    verts: torch.Tensor,
    faces: torch.Tensor,
    K: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    size: Tuple[int, int],
    uv: Optional[torch.Tensor] = None,
    uv_faces: Optional[torch.Tensor] = None,
    compute_normals: bool = True,
    cull_backfaces: bool = False,
    near: float = 1e-3,
    chunk_pixels: int = 1 << 21,
) -> Raster:
    """Z-buffered triangle rasterization producing ANR's ``I^uv`` and ``I^norm`` (ANR eq. 1-2).

    Each triangle is projected with the pinhole model (SMPLpix eq. 3 / camera.py); the pixel
    centres ``(j+0.5, i+0.5)`` inside its screen bounding box are enumerated in one vectorized
    pass (chunked to at most ``chunk_pixels`` candidates), tested with edge functions, and the
    visible face per pixel is chosen by ``scatter_reduce(amin)`` over packed ``(depth, face)``
    int64 keys (nearest wins, ties to the lower face index: deterministic). Barycentrics are
    perspective-correct, so UVs and normals interpolate like a GPU rasterizer's.

    Args:
        verts: ``(B,V,3)`` world-space vertices.
        faces: ``(F,3)`` long vertex indices (shared by the batch).
        K, R, t: OpenCV camera ``(B|1,3,3)``, ``(B|1,3,3)``, ``(B|1,3)``.
        size: ``(H, W)``.
        uv: ``(T,2)`` UV coordinates (``v`` up); with ``uv_faces (F,3)`` indexing them per face
            corner (seams: one vertex may have several UVs). Without ``uv_faces`` the UVs are
            per vertex (``T == V``).
        compute_normals: fill :attr:`Raster.normals` with interpolated smooth vertex normals
            rotated into the camera frame (``R`` must be a rotation).
        cull_backfaces: skip faces whose right-hand-rule normal points away from the camera
            (same image for closed, consistently oriented meshes such as SMPL; half the work).
        near: faces with a vertex closer than ``near`` to the camera plane are skipped (no
            clipping).
        chunk_pixels: memory bound on enumerated (face, pixel) candidates per pass.

    The selection is not differentiable; the final barycentrics/UV/normals are computed with
    autograd enabled from the winning faces, so gradients reach vertex positions through the
    interpolation (no visibility gradients). Geometry runs in float32 (float64 if ``verts`` is).
    """
    if verts.dim() != 3 or verts.shape[-1] != 3:
        raise NeuralAvatarError(f"Vertices must have shape (B,V,3), got {tuple(verts.shape)}.")
    faces = torch.as_tensor(faces, device=verts.device).long()
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise NeuralAvatarError(f"Faces must have shape (F,3), got {tuple(faces.shape)}.")
    B, V, _ = verts.shape
    Fn = faces.shape[0]
    H, W = int(size[0]), int(size[1])
    if H < 1 or W < 1:
        raise NeuralAvatarError(f"Image size must be positive, got {size}.")
    if Fn and (int(faces.min()) < 0 or int(faces.max()) >= V):
        raise NeuralAvatarError("Face indices point outside the vertex array.")
    dev = verts.device
    dtype = torch.float64 if verts.dtype == torch.float64 else torch.float32
    X = verts.to(dtype)
    Kb, Rb, tb = _batch_cam(K, R, t, B, X)

    xc = X @ Rb.transpose(1, 2) + tb[:, None, :]  # (B,V,3) camera frame
    p = xc @ Kb.transpose(1, 2)
    zv = xc[..., 2]
    sx_v = p[..., 0] / zv
    sy_v = p[..., 1] / zv

    buf = torch.full((B * H * W,), KEY_EMPTY, dtype=torch.int64, device=dev)
    with torch.no_grad():
        fz = zv.detach()[:, faces]  # (B,F,3)
        fx = sx_v.detach()[:, faces]
        fy = sy_v.detach()[:, faces]
        area = _edge(fx[..., 0], fy[..., 0], fx[..., 1], fy[..., 1], fx[..., 2], fy[..., 2])
        ok = (fz > near).all(-1) & torch.isfinite(area) & (area.abs() > 1e-12)
        if cull_backfaces:
            xcd = xc.detach()
            fn = face_normals(xcd, faces)
            ok &= (fn * xcd[:, faces[:, 0]]).sum(-1) < 0
        j0 = torch.ceil(fx.amin(-1) - 0.5).clamp(0, W)
        j1 = torch.floor(fx.amax(-1) - 0.5).clamp(-1, W - 1)
        i0 = torch.ceil(fy.amin(-1) - 0.5).clamp(0, H)
        i1 = torch.floor(fy.amax(-1) - 0.5).clamp(-1, H - 1)
        bw = (j1 - j0 + 1).clamp_min(0)
        bh = (i1 - i0 + 1).clamp_min(0)
        ok &= (bw > 0) & (bh > 0)
        bsel, fsel = torch.nonzero(ok, as_tuple=True)
        if bsel.numel():
            bw = bw[bsel, fsel].long()
            bh = bh[bsel, fsel].long()
            j0 = j0[bsel, fsel].long()
            i0 = i0[bsel, fsel].long()
            counts = bw * bh
            csum = torch.cumsum(counts, 0)
            total = int(csum[-1])
            # Split the face list into chunks of at most ``chunk_pixels`` candidates (a single
            # face larger than that forms its own chunk).
            bounds = [0]
            if total > chunk_pixels:
                targets = torch.arange(chunk_pixels, total, chunk_pixels, device=dev)
                cuts = torch.searchsorted(csum, targets, right=True)
                bounds += sorted(set(int(c) for c in cuts.tolist()) - {0})
            bounds.append(len(counts))
            coefs = _bary_coefs(fx[bsel, fsel], fy[bsel, fsel], fz[bsel, fsel])  # (F',9)
            ints = torch.stack([j0, i0, bw, bsel * H], dim=1)  # (F',4)
            fsel = fsel.long()
            for a, b in zip(bounds[:-1], bounds[1:]):
                if b <= a:
                    continue
                cnt = counts[a:b]
                n = int(cnt.sum())
                if n == 0:
                    continue
                lf = torch.repeat_interleave(torch.arange(a, b, device=dev), cnt)
                start = torch.cumsum(cnt, 0) - cnt
                local = torch.arange(n, device=dev) - start.index_select(0, lf - a)
                it = ints.index_select(0, lf)
                w_ = it[:, 2]
                row = torch.div(local, w_, rounding_mode="floor")
                px = it[:, 0] + (local - row * w_)
                py = it[:, 1] + row
                c = coefs.index_select(0, lf)
                dx = (px.to(dtype) + 0.5) - c[:, 0]
                dy = (py.to(dtype) + 0.5) - c[:, 1]
                l1 = c[:, 2] * dx + c[:, 3] * dy
                l2 = c[:, 4] * dx + c[:, 5] * dy
                zinv = c[:, 6] + l1 * c[:, 7] + l2 * c[:, 8]
                inside = (l1 >= -_INSIDE_TOL) & (l2 >= -_INSIDE_TOL) & (l1 + l2 <= 1.0 + _INSIDE_TOL) & (zinv > 0)
                sel = torch.nonzero(inside, as_tuple=True)[0]
                if sel.numel() == 0:
                    continue
                lfs = lf.index_select(0, sel)
                keys = depth_keys(1.0 / zinv.index_select(0, sel), fsel.index_select(0, lfs))
                pix = (it[:, 3].index_select(0, sel) + py.index_select(0, sel)) * W + px.index_select(0, sel)
                buf.scatter_reduce_(0, pix, keys, reduce="amin", include_self=True)

    hit = buf != KEY_EMPTY
    face_id = torch.where(hit, key_index(buf), torch.full_like(buf, -1))
    hit_idx = torch.nonzero(hit, as_tuple=True)[0]
    hb = torch.div(hit_idx, H * W, rounding_mode="floor")
    rem = hit_idx - hb * H * W
    hi = torch.div(rem, W, rounding_mode="floor")
    hj = rem - hi * W
    hf = face_id[hit_idx]
    fv = faces.index_select(0, hf)  # (P,3)
    gidx = (hb[:, None] * V + fv).reshape(-1)
    # Winning faces re-evaluated with autograd enabled (interpolation gradients only).
    corner = torch.stack([sx_v, sy_v, zv], -1).reshape(B * V, 3).index_select(0, gidx).reshape(-1, 3, 3)
    _, bary_h, z_h = _bary_depth(
        corner[..., 0], corner[..., 1], corner[..., 2], hj.to(dtype) + 0.5, hi.to(dtype) + 0.5
    )
    bary_h = bary_h.clamp_min(0)
    bary_h = bary_h / bary_h.sum(-1, keepdim=True)

    N = B * H * W
    bary = torch.zeros(N, 3, dtype=dtype, device=dev).index_put((hit_idx,), bary_h)
    depth = torch.full((N,), float("inf"), dtype=dtype, device=dev).index_put((hit_idx,), z_h)
    out_uv = None
    if uv is not None:
        uv = torch.as_tensor(uv, device=dev).to(dtype)
        if uv_faces is None:
            if uv.shape[0] != V:
                raise NeuralAvatarError(
                    "UVs without uv_faces must be per vertex; pass uv_faces for seamed UVs."
                )
            uv_faces = faces
        uv_faces = torch.as_tensor(uv_faces, device=dev).long()
        if uv_faces.shape != faces.shape:
            raise NeuralAvatarError("uv_faces must have the same shape as faces.")
        if uv.dim() != 2 or uv.shape[1] != 2:
            raise NeuralAvatarError(f"UVs must have shape (T,2), got {tuple(uv.shape)}.")
        uvh = (bary_h.unsqueeze(-1) * uv.index_select(0, uv_faces.index_select(0, hf).reshape(-1)).reshape(-1, 3, 2)).sum(1)
        out_uv = torch.full((N, 2), UV_BACKGROUND, dtype=dtype, device=dev).index_put((hit_idx,), uvh)
        out_uv = out_uv.reshape(B, H, W, 2)
    normals = None
    if compute_normals:
        vn = vertex_normals(X, faces) @ Rb.transpose(1, 2)  # camera frame
        nh = (bary_h.unsqueeze(-1) * vn.reshape(B * V, 3).index_select(0, gidx).reshape(-1, 3, 3)).sum(1)
        nh = nh / nh.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        normals = torch.zeros(N, 3, dtype=dtype, device=dev).index_put((hit_idx,), nh)
        normals = normals.reshape(B, H, W, 3).permute(0, 3, 1, 2)
    return Raster(
        face_id=face_id.reshape(B, H, W),
        bary=bary.reshape(B, H, W, 3),
        depth=depth.reshape(B, H, W),
        mask=hit.reshape(B, 1, H, W).to(dtype),
        uv=out_uv,
        normals=normals,
    )


def uv_to_grid(uv: torch.Tensor) -> torch.Tensor:
    """UV (``u`` right, ``v`` up, both in ``[0,1]``) to ``grid_sample`` coordinates.

    Blender/SMPL UVs have ``v = 0`` at the *bottom* row of the texture image, whereas
    ``grid_sample``'s ``y = -1`` is the top row, so ``x = 2u - 1`` and ``y = 1 - 2v``.
    With ``align_corners=False`` ``u = 0`` / ``1`` are the outer texel edges, matching
    Blender's UV space."""
    return torch.stack([uv[..., 0] * 2.0 - 1.0, 1.0 - uv[..., 1] * 2.0], dim=-1)


def sample_texture(
    texture: torch.Tensor,
    raster_or_uv: Union[Raster, torch.Tensor],
    background: Union[float, torch.Tensor] = 0.0,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Texture the rasterized UV image: ``I[p] = T(uv[p])`` (the neural image of ANR eq. 1).

    Args:
        texture: ``(B|1, C, Ht, Wt)`` neural (or RGB) texture. Row 0 is the top of the texture
            image, i.e. ``v = 1``.
        raster_or_uv: a :class:`Raster` with UVs, or a UV image ``(B,H,W,2)`` where background
            pixels hold a negative sentinel (``-1``).
        background: value for uncovered pixels (scalar or ``(C,)``).
        mode: ``grid_sample`` mode (``"bilinear"`` or ``"nearest"``).

    UV convention: ``(u, v)`` in ``[0, 1]``, ``v`` up like Blender/SMPL UVs (``v = 0`` is the
    bottom row of the texture image); see :func:`uv_to_grid`. Sampling is bilinear
    (``grid_sample(align_corners=False, padding_mode="border")``) and differentiable w.r.t.
    the texture and the UVs. Returns ``(B, C, H, W)`` in the texture's dtype.
    """
    if isinstance(raster_or_uv, Raster):
        if raster_or_uv.uv is None:
            raise NeuralAvatarError("The raster has no UVs: rasterize with uv=... first.")
        uv = raster_or_uv.uv
        mask = raster_or_uv.mask[:, 0] > 0.5
    else:
        uv = raster_or_uv
        mask = (uv >= 0).all(-1)
    if uv.dim() != 4 or uv.shape[-1] != 2:
        raise NeuralAvatarError(f"UV image must have shape (B,H,W,2), got {tuple(uv.shape)}.")
    if texture.dim() != 4:
        raise NeuralAvatarError(f"Texture must have shape (B,C,H,W), got {tuple(texture.shape)}.")
    B = uv.shape[0]
    if texture.shape[0] not in (1, B):
        raise NeuralAvatarError(f"Texture batch {texture.shape[0]} does not match UV batch {B}.")
    tex = texture.expand(B, -1, -1, -1)
    grid = uv_to_grid(uv.to(tex.dtype))
    out = F.grid_sample(tex, grid, mode=mode, padding_mode="border", align_corners=False)
    bg = torch.as_tensor(background, dtype=out.dtype, device=out.device)
    if bg.dim() == 1:
        bg = bg.view(1, -1, 1, 1)
    return torch.where(mask[:, None], out, bg)


def is_closed_oriented(faces: torch.Tensor) -> bool:
    """Whether a triangle mesh is closed and consistently oriented: every directed edge appears
    once and its reverse once (the default body and SMPL are). Back-face culling is then exact for
    a camera outside the mesh."""
    f = torch.as_tensor(faces).long().reshape(-1, 3)
    if f.numel() == 0:
        return False
    d = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], 0)
    n = int(f.max()) + 1
    key = d[:, 0] * n + d[:, 1]
    rev = d[:, 1] * n + d[:, 0]
    if torch.unique(key).numel() != key.numel():
        return False
    return bool(torch.isin(rev, key).all())


class LaplacianPyramidTexture(nn.Module):
    """Learned neural texture stored as a Laplacian pyramid (DNR's hierarchical texture).

    ``levels`` parameters of sizes ``S, S/2, ..., S/2^(L-1)`` are bilinearly upsampled to
    ``S x S`` and summed, so coarse levels carry low frequencies and regions seen rarely still
    receive gradient. ``forward()`` returns the ``(1, C, S, S)`` texture ``T`` of ANR eq. 1
    (ANR: ``C = 8``, ``S = 256``).

    ``init="uniform"``: ANR's initialisation, the summed texture is U[-1, 1] (finest level
    uniform, coarser levels zero); pass the same ``generator`` seed for every identity to share
    the initialisation as ANR does. ``init="zeros"``: all zero.
    """

    def __init__(
        self,
        levels: int = 4,
        channels: int = 8,
        size: int = 256,
        init: str = "uniform",
        generator: Optional[torch.Generator] = None,
    ):
        super().__init__()
        if levels < 1 or channels < 1 or size < 1:
            raise NeuralAvatarError("Texture levels, channels and size must be positive.")
        if size >> (levels - 1) < 1:
            raise NeuralAvatarError(f"A {size}px texture cannot have {levels} pyramid levels.")
        if init not in ("uniform", "zeros"):
            raise NeuralAvatarError(f"Unknown texture init '{init}'.")
        self.size = int(size)
        self.channels = int(channels)
        params = []
        for lvl in range(levels):
            s = size >> lvl
            data = torch.zeros(1, channels, s, s)
            if init == "uniform" and lvl == 0 and not data.is_meta:  # meta: a size check, no memory
                data = torch.rand(1, channels, s, s, generator=generator) * 2.0 - 1.0
            params.append(nn.Parameter(data))
        self.levels = nn.ParameterList(params)

    def forward(self) -> torch.Tensor:
        # Inference (no autograd) reuses the summed texture while no level has changed (the
        # tensors' version counters and identities say so): 3 ms a frame at 512².
        import weakref

        levels = list(self.levels)
        cache = not torch.is_grad_enabled()
        if cache:
            memo = self.__dict__.get("_summed")
            if memo is not None and len(memo[0]) == len(levels) and all(
                    r() is p and v == p._version for (r, v), p in zip(memo[0], levels)):
                return memo[1]
        out = levels[0]
        for lvl in levels[1:]:
            out = out + F.interpolate(lvl, size=(self.size, self.size), mode="bilinear", align_corners=False)
        if cache:
            self.__dict__["_summed"] = (tuple((weakref.ref(p), p._version) for p in levels), out)
        return out
