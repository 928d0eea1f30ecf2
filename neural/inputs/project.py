"""SMPLpix vertex projection: coloured vertices to an RGB-D image (SMPLpix eq. 3-4).

Pure torch, batched, device-agnostic, deterministic. No bpy here.
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch

from ...errors import NeuralAvatarError
from .camera import project_points

__all__ = ["project_vertices", "depth_keys", "KEY_EMPTY"]

#: Value of an empty slot in a packed (depth, index) key buffer.
KEY_EMPTY = torch.iinfo(torch.int64).max
_INDEX_BITS = 32
_INDEX_MASK = (1 << _INDEX_BITS) - 1

Number = Union[float, int, torch.Tensor]


def depth_keys(z: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pack a positive depth and an element index into one sortable int64 key.

    For positive IEEE float32 values the bit pattern is monotonic in the value, so
    ``(bits(z) << 32) | index`` orders first by depth, then by index: ``amin`` over keys
    picks the nearest element and, at equal float32 depth, the lower index. This is the
    deterministic replacement of SMPLpix's "sort by depth and drop duplicates" (eq. 4).
    ``z`` must be > 0 and ``index`` in ``[0, 2^32)``.
    """
    bits = z.detach().to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    return (bits << _INDEX_BITS) | index.to(torch.int64)


def key_index(keys: torch.Tensor) -> torch.Tensor:
    """Element index stored in :func:`depth_keys` keys (undefined for ``KEY_EMPTY``)."""
    return keys & _INDEX_MASK


def _as_batch(x: Number, B: int, ref: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x, device=ref.device, dtype=torch.float32)
    if x.dim() == 0:
        x = x.expand(B)
    x = x.reshape(-1)
    if x.shape[0] == 1:
        x = x.expand(B)
    if x.shape[0] != B:
        raise NeuralAvatarError(f"Depth range has {x.shape[0]} entries for a batch of {B}.")
    return x


def project_vertices(
    verts: torch.Tensor,
    colors: torch.Tensor,
    K: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    size: Tuple[int, int],
    depth_range: Sequence[Number] = (0.1, 10.0),
    splat_radius: int = 0,
    return_mask: bool = False,
):
    """Project coloured vertices into an RGB-D image, SMPLpix eq. 3-4.

    Eq. 3: ``(u, v, d) = K (R x + t)`` (with perspective division); eq. 4:
    ``P[floor(v), floor(u)] = (r, g, b, d)`` on an image initialised to 1 in all channels.

    Args:
        verts: ``(B,V,3)`` posed vertices in the world frame.
        colors: ``(B,V,C)`` or ``(V,C)`` per-vertex colours (``C = 3`` for RGB; any ``C`` works).
        K, R, t: OpenCV camera ``(B|1,3,3)``, ``(B|1,3,3)``, ``(B|1,3)``.
        size: ``(H, W)``.
        depth_range: ``(near, far)``, floats or per-batch ``(B,)`` tensors. The depth channel is
            ``(z - near) / (far - near)`` clamped to ``[0, 1]``, so near -> 0 and far -> 1;
            background is 1 (SMPLpix: "a default value of 1 is used to initialize both RGB and
            depth"), i.e. the background reads as "at the far plane".
        splat_radius: ``r > 0`` writes a ``(2r+1)^2`` pixel square per vertex (for resolutions
            where vertices become sparser than pixels); every written pixel is depth-tested.
        return_mask: also return the coverage mask ``(B,1,H,W)`` (1 where a vertex landed).

    Collisions (SMPLpix sec. 3.1: sort by depth, keep the first): the nearest vertex wins;
    exact depth ties go to the lower vertex index. Implemented as ``scatter_reduce(amin)`` on
    packed int64 ``(depth, index)`` keys, hence deterministic on every device. Vertices with
    ``z <= 0`` (behind the pinhole) or non-finite projections are dropped; vertices beyond
    ``far`` are kept with depth 1.

    Geometry is computed in float32 (or float64 if ``verts`` is float64); the image has the
    dtype of ``colors`` when that is a floating type (fp16/bf16 for half-precision networks).
    Not differentiable w.r.t. vertex positions; differentiable w.r.t. ``colors``.
    Returns ``(B, C+1, H, W)`` (and the mask when ``return_mask``).
    """
    if verts.dim() != 3 or verts.shape[-1] != 3:
        raise NeuralAvatarError(f"Vertices must have shape (B,V,3), got {tuple(verts.shape)}.")
    B, V, _ = verts.shape
    H, W = int(size[0]), int(size[1])
    if H < 1 or W < 1:
        raise NeuralAvatarError(f"Image size must be positive, got {size}.")
    if colors.dim() == 2:
        colors = colors.unsqueeze(0).expand(B, -1, -1)
    if colors.dim() != 3 or colors.shape[1] != V or colors.shape[0] not in (1, B):
        raise NeuralAvatarError(
            f"Colours of shape {tuple(colors.shape)} do not match {V} vertices in a batch of {B}."
        )
    colors = colors.expand(B, -1, -1)
    C = colors.shape[-1]
    out_dtype = colors.dtype if colors.is_floating_point() else torch.float32
    splat_radius = int(splat_radius)
    if splat_radius < 0:
        raise NeuralAvatarError("Splat radius must be >= 0.")
    if len(depth_range) != 2:
        raise NeuralAvatarError("depth_range must be (near, far).")

    geo_dtype = torch.float64 if verts.dtype == torch.float64 else torch.float32
    X = verts.detach().to(geo_dtype)
    with torch.no_grad():
        uv, z = project_points(X, K, R, t)
        col = torch.floor(uv[..., 0])
        row = torch.floor(uv[..., 1])
        valid = (z > 0) & torch.isfinite(col) & torch.isfinite(row)
        # Keep only indices that can touch the image (with splats) before integer conversion.
        r = splat_radius
        valid &= (col >= -r) & (col < W + r) & (row >= -r) & (row < H + r)
        b_idx, v_idx = torch.nonzero(valid, as_tuple=True)
        cj = col[b_idx, v_idx].long()
        ri = row[b_idx, v_idx].long()
        zk = z[b_idx, v_idx].float()
        keys = depth_keys(zk, v_idx)
        if r > 0:
            d = torch.arange(-r, r + 1, device=verts.device)
            dy, dx = torch.meshgrid(d, d, indexing="ij")
            dy, dx = dy.reshape(1, -1), dx.reshape(1, -1)
            ri = (ri[:, None] + dy).reshape(-1)
            cj = (cj[:, None] + dx).reshape(-1)
            n = dy.shape[1]
            b_idx = b_idx.repeat_interleave(n)
            keys = keys.repeat_interleave(n)
            inside = (ri >= 0) & (ri < H) & (cj >= 0) & (cj < W)
            ri, cj, b_idx, keys = ri[inside], cj[inside], b_idx[inside], keys[inside]
        pix = (b_idx * H + ri) * W + cj
        buf = torch.full((B * H * W,), KEY_EMPTY, dtype=torch.int64, device=verts.device)
        buf.scatter_reduce_(0, pix, keys, reduce="amin", include_self=True)
        hit = buf != KEY_EMPTY
        winner = torch.where(hit, key_index(buf), torch.zeros_like(buf))
        b_of_pix = torch.arange(B, device=verts.device).repeat_interleave(H * W)
        near = _as_batch(depth_range[0], B, X)
        far = _as_batch(depth_range[1], B, X)
        if torch.any(far <= near):
            raise NeuralAvatarError("depth_range far must be greater than near.")
        zw = z.float()[b_of_pix, winner]
        dep = ((zw - near[b_of_pix]) / (far - near)[b_of_pix]).clamp(0.0, 1.0)
        dep = torch.where(hit, dep, torch.ones_like(dep))

    rgb = colors[b_of_pix, winner].to(out_dtype)  # (B*H*W, C), differentiable w.r.t. colours
    rgb = torch.where(hit[:, None], rgb, torch.ones_like(rgb))
    img = torch.cat([rgb, dep.to(out_dtype)[:, None]], dim=1)
    img = img.reshape(B, H, W, C + 1).permute(0, 3, 1, 2).contiguous()
    if return_mask:
        mask = hit.reshape(B, 1, H, W).to(out_dtype)
        return img, mask
    return img
