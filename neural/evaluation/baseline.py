"""The classical baseline of the comparison protocol: the body mesh rasterized with
per-vertex colours (SMPLpix, Table 1 row "per-verts"; Prokudin et al. 2021, sec. 4).

Each pixel covered by the posed body shows the colour of the visible triangle interpolated
from its three vertex colours with perspective-correct barycentrics (Gouraud interpolation,
no lighting: the colours are the same baked albedo the SMPLpix mode gets as its input, eq. 3),
z-buffered by :func:`.raster.rasterize`; uncovered pixels show the background, and the result
is the "over" composite ``I = M * C + (1 - M) * B`` (ANR sec. 3.3) with the coverage ``M``.

Anti-aliasing: with ``supersample = s > 1`` the mesh is rasterized at ``s`` times the
resolution (K scaled exactly, pixel centres follow ARCHITECTURE.md) and box-filtered back
(average pooling over ``s x s`` samples), so edges get fractional coverage like any
classical rasterizer with SSAA; ``s = 1`` samples pixel centres only.

Pure torch (no bpy): usable for the evaluation, previews and tests.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import NeuralAvatarError
from ..avatar import FrameInputs
from ..inputs.raster import rasterize

__all__ = ["CLASSICAL", "render_vertex_colors", "VertexColorBaseline"]

#: Method name of the baseline in evaluation results.
CLASSICAL = "CLASSICAL"


def _scale_K(K: torch.Tensor, s: int) -> torch.Tensor:
    """Intrinsics of the same camera at ``s`` times the resolution: pixel ``(i, j)`` of the
    big image covers ``[j/s, (j+1)/s)`` of the small one, so ``fx, fy, cx, cy`` scale by ``s``
    (the skew too); the last row stays ``(0, 0, 1)``."""
    Ks = K.clone()
    Ks[..., :2, :] = Ks[..., :2, :] * s
    return Ks


def render_vertex_colors(verts: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor,
                         K: torch.Tensor, R: torch.Tensor, t: torch.Tensor, size: tuple,
                         background=1.0, supersample: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-vertex-colour mesh render (SMPLpix Table 1 "per-verts").

    Args:
        verts: ``(B,V,3)`` world-space posed vertices.
        faces: ``(F,3)`` triangle vertex indices.
        colors: ``(V,3)`` or ``(B,V,3)`` vertex colours in [0, 1] (sRGB, as displayed).
        K, R, t: OpenCV cameras ``(B|1,3,3)``, ``(B|1,3,3)``, ``(B|1,3)``.
        size: ``(H, W)``.
        background: scalar or RGB ``(3,)`` in [0, 1].
        supersample: SSAA factor ``s >= 1`` (module docstring).

    Returns ``(rgb (B,3,H,W), coverage (B,1,H,W))``: ``rgb = M * C + (1 - M) * background``
    with ``C`` the barycentric interpolation ``sum_k b_k c_{f_k}`` of the visible face's
    vertex colours and ``M`` the (box-filtered) coverage.
    """
    if verts.dim() != 3 or verts.shape[-1] != 3:
        raise NeuralAvatarError(f"Vertices must have shape (B,V,3), got {tuple(verts.shape)}.")
    B, V, _ = verts.shape
    s = int(supersample)
    if s < 1:
        raise NeuralAvatarError(f"The supersampling factor must be at least 1, got {supersample!r}.")
    dev = verts.device
    colors = torch.as_tensor(colors, dtype=torch.float32, device=dev)
    if colors.dim() == 2:
        colors = colors[None]
    if colors.dim() != 3 or colors.shape[1:] != (V, 3) or colors.shape[0] not in (1, B):
        raise NeuralAvatarError(f"Vertex colours must be ({V}, 3) for this body, got {tuple(colors.shape)}.")
    colors = colors.clamp(0.0, 1.0).expand(B, V, 3)
    faces = torch.as_tensor(faces, device=dev).long()
    H, W = int(size[0]), int(size[1])
    K = torch.as_tensor(K, dtype=torch.float32, device=dev)
    R = torch.as_tensor(R, dtype=torch.float32, device=dev)
    t = torch.as_tensor(t, dtype=torch.float32, device=dev)
    Ks = _scale_K(K, s) if s > 1 else K
    ras = rasterize(verts.float(), faces, Ks, R, t, (H * s, W * s), compute_normals=False)
    hit = ras.face_id >= 0  # (B,Hs,Ws)
    fid = ras.face_id.clamp_min(0)
    vidx = faces[fid]  # (B,Hs,Ws,3)
    bidx = torch.arange(B, device=dev).view(B, 1, 1, 1)
    corner = colors[bidx, vidx]  # (B,Hs,Ws,3 corners,3 rgb)
    col = (ras.bary.to(torch.float32).unsqueeze(-1) * corner).sum(-2)  # (B,Hs,Ws,3)
    col = torch.where(hit[..., None], col, torch.zeros_like(col)).permute(0, 3, 1, 2)
    cov = hit[:, None].to(torch.float32)
    if s > 1:
        col = F.avg_pool2d(col, s)  # premultiplied colour: box filter is exact
        cov = F.avg_pool2d(cov, s)
    bg = torch.as_tensor(background, dtype=torch.float32, device=dev)
    bg = bg.view(1, -1, 1, 1) if bg.dim() == 1 else bg
    rgb = col + (1.0 - cov) * bg
    return rgb.clamp(0.0, 1.0), cov


class VertexColorBaseline:
    """The classical method with the same calling convention as :meth:`.avatar.Avatar.render`:
    ``render(frame)`` -> ``{"rgb", "mask"}``. ``faces (F,3)`` of the body and its
    ``vertex_colors (V,3)`` (the subject's baked colours, sRGB in [0, 1])."""

    mode = CLASSICAL

    def __init__(self, faces, vertex_colors, background=(1.0, 1.0, 1.0), supersample: int = 2,
                 device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.faces = torch.as_tensor(np.array(faces, np.int64) if not torch.is_tensor(faces) else faces,
                                     device=self.device).long()
        vc = torch.as_tensor(np.array(vertex_colors, np.float32) if not torch.is_tensor(vertex_colors)
                             else vertex_colors, dtype=torch.float32, device=self.device)
        if vc.dim() != 2 or vc.shape[1] != 3:
            raise NeuralAvatarError(f"Vertex colours must be (V, 3), got {tuple(vc.shape)}.")
        if not bool(torch.isfinite(vc).all()):
            raise NeuralAvatarError("Vertex colours contain NaN or infinite values.")
        if self.faces.numel() and int(self.faces.max()) >= vc.shape[0]:
            raise NeuralAvatarError(f"The faces index {int(self.faces.max()) + 1} vertices, the colours have "
                                    f"{vc.shape[0]}.")
        self.vertex_colors = vc
        self.background = torch.as_tensor(background, dtype=torch.float32, device=self.device)
        self.supersample = int(supersample)

    @torch.no_grad()
    def render(self, frame: FrameInputs, precision: Optional[str] = None) -> dict[str, Any]:
        """``{"rgb" (B,3,H,W), "mask" (B,1,H,W)}``; ``precision`` is accepted for symmetry with
        the avatars and ignored (the rasterizer runs in float32)."""
        if frame.verts is None:
            raise NeuralAvatarError("The classical render needs the posed body vertices.")
        if frame.verts.shape[1] != self.vertex_colors.shape[0]:
            raise NeuralAvatarError(f"The body has {frame.verts.shape[1]} vertices, the vertex colours "
                                    f"{self.vertex_colors.shape[0]}.")
        f = frame.to(self.device)
        bg = f.background if f.background is not None else self.background
        rgb, cov = render_vertex_colors(f.verts, self.faces, self.vertex_colors, f.K, f.R, f.t, f.size,
                                        bg, self.supersample)
        return {"rgb": rgb, "mask": cov}
