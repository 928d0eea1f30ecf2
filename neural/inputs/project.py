"""SMPLpix vertex projection: coloured vertices to an RGB-D image (SMPLpix eq. 3-4).

Pure torch, batched, device-agnostic, deterministic. No bpy here.
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np
import torch

from ...errors import NeuralAvatarError
from .camera import project_points

__all__ = ["project_vertices", "depth_keys", "KEY_EMPTY", "mesh_edges", "footprint_radii", "MAX_SPLAT_RADIUS",
           "subdivide_midpoints", "midpoints", "footprint_sources", "longest_incident_edges", "SPLAT_COVERAGE"]

#: Splat half-size per pixel of footprint (:func:`footprint_radii`): > 1/sqrt(3).
SPLAT_COVERAGE = 0.6

#: Largest per-vertex splat radius (a (2r+1)^2 square); beyond it a close-up is sparse again.
MAX_SPLAT_RADIUS = 12

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
    splat_radii: torch.Tensor | None = None,
    splat_lengths: torch.Tensor | None = None,
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
        splat_radii: optional ``(B,V)`` integer radii per vertex (:func:`footprint_radii`):
            vertex ``v`` writes a ``(2 r_v + 1)^2`` square, depth-tested like ``splat_radius``
            (which it replaces).
        splat_lengths: optional ``(B,V)`` world-space longest incident edge per vertex
            (:func:`longest_incident_edges`): the radii of :func:`footprint_radii`, computed here
            from this projection's depths instead of a second one (replaces ``splat_radii``).

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
        if splat_lengths is not None:  # footprint radii from this projection's depths
            if splat_lengths.shape[-1] != V or splat_lengths.dim() != 2 or splat_lengths.shape[0] not in (1, B):
                raise NeuralAvatarError(f"Splat lengths of shape {tuple(splat_lengths.shape)} do not match {V} vertices.")
            splat_radii = _radii(splat_lengths.float(), z.float(), K)
        # Keep only indices that can touch the image (with splats) before integer conversion.
        if splat_radii is not None:
            rv = torch.as_tensor(splat_radii, device=verts.device).long().clamp(0, MAX_SPLAT_RADIUS)
            if rv.dim() == 1:
                rv = rv.unsqueeze(0)
            if rv.shape[-1] != V or rv.shape[0] not in (1, B):
                raise NeuralAvatarError(f"Splat radii of shape {tuple(rv.shape)} do not match {V} vertices.")
            rv = rv.expand(B, V)
            r = int(rv.max()) if rv.numel() else 0
        else:
            rv = None
            r = splat_radius
        valid &= (col >= -r) & (col < W + r) & (row >= -r) & (row < H + r)
        # flat (b * V + v) indices and 1-D index_select throughout: torch's CPU advanced
        # indexing with two index tensors costs several times more on 10^5 points
        flat = torch.nonzero(valid.reshape(-1)).squeeze(1)
        b_idx, v_idx = flat // V, flat % V
        cj = col.reshape(-1).index_select(0, flat).long()
        ri = row.reshape(-1).index_select(0, flat).long()
        zk = z.reshape(-1).index_select(0, flat).float()
        keys = depth_keys(zk, v_idx)

        def square(rad, ri, cj, b_idx, keys):
            """Flat pixel indices and keys of each vertex's (2 rad + 1)² square inside the image."""
            base = (b_idx * H + ri) * W + cj
            if rad == 0:
                ok = (ri >= 0) & (ri < H) & (cj >= 0) & (cj < W)
                return (base, keys) if bool(ok.all()) else (base[ok], keys[ok])
            d = torch.arange(-rad, rad + 1, device=verts.device)
            dy, dx = torch.meshgrid(d, d, indexing="ij")
            n = dy.numel()
            fits = (ri >= rad) & (ri < H - rad) & (cj >= rad) & (cj < W - rad)
            if bool(fits.all()):  # the common case: every square inside the window
                return (base[:, None] + (dy * W + dx).reshape(1, -1)).reshape(-1), \
                    keys[:, None].expand(-1, n).reshape(-1)
            ri = (ri[:, None] + dy.reshape(1, -1)).reshape(-1)
            cj = (cj[:, None] + dx.reshape(1, -1)).reshape(-1)
            b_idx, keys = b_idx.repeat_interleave(n), keys.repeat_interleave(n)
            sel = torch.nonzero((ri >= 0) & (ri < H) & (cj >= 0) & (cj < W)).squeeze(1)
            return (b_idx[sel] * H + ri[sel]) * W + cj[sel], keys[sel]

        if rv is None:
            pix, keys = square(r, ri, cj, b_idx, keys)
        else:  # per-vertex squares, one pass per radius (cost: sum of the squares' areas)
            own = rv.reshape(-1).index_select(0, flat)
            order = torch.argsort(own, stable=True)
            own, ri, cj, b_idx, keys = (x.index_select(0, order) for x in (own, ri, cj, b_idx, keys))
            counts = torch.bincount(own, minlength=r + 1).tolist()
            parts, s0 = [], 0
            for q, c in enumerate(counts):
                if c:
                    parts.append(square(q, ri[s0:s0 + c], cj[s0:s0 + c], b_idx[s0:s0 + c], keys[s0:s0 + c]))
                s0 += c
            pix, keys = (torch.cat([p[k] for p in parts]) for k in range(2))
        buf = torch.full((B * H * W,), KEY_EMPTY, dtype=torch.int64, device=verts.device)
        buf.scatter_reduce_(0, pix, keys, reduce="amin", include_self=True)
        hit = buf != KEY_EMPTY
        # Only the pixels a vertex landed on are gathered and written (a body covers a part of
        # its window); everything else keeps the background value 1.
        pix_hit = torch.nonzero(hit).squeeze(1)
        winner = key_index(buf.index_select(0, pix_hit))
        b_hit, q_hit = pix_hit // (H * W), pix_hit % (H * W)
        near = _as_batch(depth_range[0], B, X)
        far = _as_batch(depth_range[1], B, X)
        if torch.any(far <= near):
            raise NeuralAvatarError("depth_range far must be greater than near.")
        bw = b_hit * V + winner  # the winners' flat (b, v) indices
        dep = ((z.float().reshape(-1).index_select(0, bw) - near.index_select(0, b_hit))
               / (far - near).index_select(0, b_hit)).clamp(0.0, 1.0)

    # colours shared by the batch (a (V, C) table expanded) are read from the table itself
    src = colors[0] if colors.stride(0) == 0 or B == 1 else colors.reshape(B * V, C)
    picked = src.index_select(0, winner if src.shape[0] == V else bw)
    vals = torch.cat([picked.to(out_dtype), dep.to(out_dtype)[:, None]], dim=1)  # (N, C+1)
    img = torch.ones(B, C + 1, H * W, dtype=out_dtype, device=verts.device)
    ch = torch.arange(C + 1, device=verts.device)
    # out of place: differentiable w.r.t. the colours
    img = img.index_put((b_hit[:, None], ch[None, :], q_hit[:, None]), vals).reshape(B, C + 1, H, W)
    if return_mask:
        mask = hit.reshape(B, 1, H, W).to(out_dtype)
        return img, mask
    return img


def _edges_of(f: torch.Tensor, return_inverse: bool = False):
    """Unique undirected edges of faces ``f (F, 3)`` (int64), each face's ab, bc, ca in turn."""
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], 0)
    e = torch.sort(e, dim=1).values
    return torch.unique(e, dim=0, return_inverse=return_inverse)


def mesh_edges(faces: torch.Tensor) -> torch.Tensor:
    """Unique undirected edges ``(E, 2)`` (int64, lower index first) of a triangle mesh ``(F, 3)``."""
    f = faces if torch.is_tensor(faces) else torch.as_tensor(faces)  # a tensor stays where it is
    return _edges_of(f.long().reshape(-1, 3))


def _subdivide(f: torch.Tensor, n: int, src: torch.Tensor | None = None):
    """One 1-to-4 midpoint subdivision of faces ``f (F, 3)`` over ``n`` points: ``(edges, faces
    (4F, 3), src)``. ``src (F, 3)``, if given, names for each face's edges ab, bc, ca the
    level-0 edge it is a scaled copy of; ``src`` of the new faces follows from the midsegment
    theorem: a half of an edge copies that edge, and the segment joining two edges' midpoints
    is parallel to the third edge and half its length."""
    edges, inv = _edges_of(f, return_inverse=True)
    m = int(n) + inv.view(3, -1).T  # (F, 3): midpoints of ab, bc, ca
    a, b, c = f.unbind(1)
    mab, mbc, mca = m.unbind(1)
    sub = torch.stack([torch.stack([a, mab, mca], 1), torch.stack([b, mbc, mab], 1),
                       torch.stack([c, mca, mbc], 1), torch.stack([mab, mbc, mca], 1)], 1)
    if src is not None:
        sab, sbc, sca = src.unbind(1)
        # (a, m_ab, m_ca): a-m_ab in ab, m_ab-m_ca parallel to bc, m_ca-a in ca; and so on
        src = torch.stack([torch.stack([sab, sbc, sca], 1), torch.stack([sbc, sca, sab], 1),
                           torch.stack([sca, sab, sbc], 1), torch.stack([sca, sab, sbc], 1)], 1).reshape(-1, 3)
    return edges, sub.reshape(-1, 3), src


def subdivide_midpoints(faces: torch.Tensor, num_verts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One level of 1-to-4 midpoint subdivision of a triangle mesh (SMPLpix sec. 4: the SMPL-X
    topology "upsampled" to 27 554 vertices, where SMPL's 6 890 + its 20 664 edges' midpoints
    give exactly that count). Returns ``(edges (E, 2), faces (4F, 3))``: new vertex
    ``num_verts + e`` is the midpoint of edge ``e`` (:func:`mesh_edges`' order), and face
    ``(a, b, c)`` becomes ``(a, m_ab, m_ca), (b, m_bc, m_ab), (c, m_ca, m_bc), (m_ab, m_bc, m_ca)``,
    keeping its winding. Runs where ``faces`` lives (also inside a ``torch.device("meta")``
    context, where a bundle's network is first built to check its size)."""
    f = (faces if torch.is_tensor(faces) else torch.as_tensor(np.asarray(faces), device="cpu")).long().reshape(-1, 3)
    edges, sub, _ = _subdivide(f, num_verts)
    return edges, sub


def footprint_sources(faces: torch.Tensor, num_verts: int, levels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What :func:`longest_incident_edges` needs to size the splats of ``levels`` midpoint
    subdivisions (:func:`subdivide_midpoints`) from the base mesh alone.

    By the midsegment theorem every edge of the subdivided mesh is a copy, scaled by
    ``2^-levels``, of one base edge (:func:`_subdivide`), so a subdivided point's longest
    incident edge is ``2^-levels`` times the longest of a fixed set of base edges. Returns
    ``(edges (E0, 2), point (P,), edge (P,))``: the base mesh's edges, and the distinct
    (subdivided point, base edge) incidences."""
    f = faces.long().reshape(-1, 3)
    edges0, inv = _edges_of(f, return_inverse=True)
    src, n = inv.view(3, -1).T, int(num_verts)
    for _ in range(int(levels)):
        e, f, src = _subdivide(f, n, src)
        n += int(e.shape[0])
    # each face gives its corners their two incident edges: a (ab, ca), b (ab, bc), c (bc, ca)
    point = torch.cat([f[:, 0], f[:, 0], f[:, 1], f[:, 1], f[:, 2], f[:, 2]])
    edge = torch.cat([src[:, 0], src[:, 2], src[:, 0], src[:, 1], src[:, 1], src[:, 2]])
    pairs = torch.unique(point * edges0.shape[0] + edge)
    return edges0, pairs // edges0.shape[0], pairs % edges0.shape[0]


def midpoints(x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """``x (..., V, C)`` followed by its edges' midpoints: ``(..., V + E, C)`` (linear in ``x``, so
    posed positions, colours and descriptors all subdivide the same way)."""
    e = edges.to(x.device)
    return torch.cat([x, 0.5 * (x.index_select(-2, e[:, 0]) + x.index_select(-2, e[:, 1]))], -2)


def longest_incident_edges(verts: torch.Tensor, edges: torch.Tensor, point: torch.Tensor | None = None,
                           edge: torch.Tensor | None = None, levels: int = 0,
                           num_points: int | None = None) -> torch.Tensor:
    """World-space length of each point's longest incident edge ``(B, N)``.

    Without ``point``/``edge``: the mesh ``verts (B, V, 3)`` with ``edges (E, 2)``, ``N = V``.
    With them (:func:`footprint_sources`): ``verts`` are the base mesh's (at least its ``V0``
    vertices first), ``edges`` its edges, and the result is for the ``num_points`` points of
    ``levels`` midpoint subdivisions: ``2^-levels`` times the longest base edge of each point's
    incidences, i.e. the same lengths measured on the subdivided mesh, from a quarter of the
    edges per level and without its positions."""
    with torch.no_grad():
        X = verts.detach().float()
        B = X.shape[0]
        e = edges.to(X.device).long()
        length = (X.index_select(1, e[:, 0]) - X.index_select(1, e[:, 1])).norm(dim=-1)  # (B, E)
        if point is None:
            idx = torch.cat([e[:, 0], e[:, 1]]).expand(B, -1)
            lv = torch.zeros(B, X.shape[1], device=X.device)
            lv.scatter_reduce_(1, idx, torch.cat([length, length], 1), reduce="amax", include_self=True)
            return lv
        length = length * (0.5 ** int(levels))
        lv = torch.zeros(B, int(num_points), device=X.device)
        lv.scatter_reduce_(1, point.to(X.device).expand(B, -1), length.index_select(1, edge.to(X.device)),
                           reduce="amax", include_self=True)
        return lv


def _radii(lv: torch.Tensor, z: torch.Tensor, K: torch.Tensor, coverage: float = SPLAT_COVERAGE) -> torch.Tensor:
    """``r_v = ceil(coverage * f * l_v / z_v - 1/2)`` in ``[0, MAX_SPLAT_RADIUS]`` (:func:`footprint_radii`)."""
    B = z.shape[0]
    Kb = K.float().expand(B, 3, 3)
    f = 0.5 * (Kb[:, 0, 0] + Kb[:, 1, 1])
    s = f[:, None] * lv / z.clamp_min(1e-4)
    return torch.ceil(coverage * s - 0.5).clamp(0, MAX_SPLAT_RADIUS).long()


def footprint_radii(verts: torch.Tensor, edges: torch.Tensor, K: torch.Tensor, R: torch.Tensor,
                    t: torch.Tensor, coverage: float = SPLAT_COVERAGE) -> torch.Tensor:
    """Per-vertex splat radii ``(B, V)`` that keep projected points dense at any scale.

    A vertex's pixel footprint is ``s_v = f * l_v / z_v``: its longest incident edge ``l_v`` (in
    the posed mesh) at its camera depth ``z_v``, ``f`` the mean focal length in pixels. A square
    of half-size ``r`` around each vertex fills the gaps of a triangle of side ``s`` when
    ``r + 1/2 >= s / sqrt(3)`` (the centroid's distance to the corners), so
    ``r_v = ceil(coverage * s_v - 1/2)`` with ``coverage = 0.6 > 1/sqrt(3)``; 0 where vertices are
    already denser than pixels (the shipped avatars' scale), and at most ``MAX_SPLAT_RADIUS``.
    (:func:`project_vertices` with ``splat_lengths`` computes the same from its own projection.)
    """
    with torch.no_grad():
        X = verts.detach().float()
        B = X.shape[0]
        lv = longest_incident_edges(X, edges)
        R = R.float().expand(B, 3, 3)
        t = t.float().expand(B, 3)
        z = torch.einsum("bij,bvj->bvi", R, X)[..., 2] + t[:, None, 2]
        return _radii(lv, z, K, coverage)
