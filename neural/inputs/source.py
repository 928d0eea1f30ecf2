"""Source views: the images a generalizable avatar is *given* at render time, as opposed to
the frames it is trained on. HumanViewSynthesis encodes appearance from one image of a
person (eq. 4, ``I_1* -> a_1``); AniPixel reads pixel-aligned features from a few views.
No bpy here.

A :class:`SourceViews` holds ``V`` views of one instant per batch item: images, masks,
cameras (OpenCV convention, ARCHITECTURE.md) and the body at that instant in world space.
:func:`crop_to_body` cuts each view to a square window around the projected body and resizes
it to a fixed side, as the papers do ("images are loosely cropped around the subject",
HVS sec. IV), with the window's intrinsics, so the encoders see the person at one scale
whatever the source camera was.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ...errors import NeuralAvatarError


@dataclass
class SourceViews:
    """``rgb (B,V,3,H,W)`` in [0,1] over ``background``; ``mask (B,V,1,H,W)`` in [0,1];
    ``K (B,V,3,3)``, ``R (B,V,3,3)``, ``t (B,V,3)``; ``verts (B,N,3)``, ``joints (B,J,3)``:
    the body of the instant the views show (world space); ``background (3,)``."""

    rgb: torch.Tensor
    mask: torch.Tensor
    K: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    verts: torch.Tensor
    joints: torch.Tensor
    background: Optional[torch.Tensor] = None

    @property
    def batch_size(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def num_views(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def size(self) -> Tuple[int, int]:
        return int(self.rgb.shape[-2]), int(self.rgb.shape[-1])

    def validate(self) -> "SourceViews":
        if self.rgb.dim() != 5 or self.rgb.shape[2] != 3:
            raise NeuralAvatarError(f"Source images must be (B,V,3,H,W), got {tuple(self.rgb.shape)}.")
        B, V, _, H, W = self.rgb.shape
        for name, t, shape in (("mask", self.mask, (B, V, 1, H, W)), ("K", self.K, (B, V, 3, 3)),
                               ("R", self.R, (B, V, 3, 3)), ("t", self.t, (B, V, 3))):
            if tuple(t.shape) != shape:
                raise NeuralAvatarError(f"Source {name} must be {shape}, got {tuple(t.shape)}.")
        if self.verts.dim() != 3 or self.verts.shape[0] != B or self.joints.dim() != 3 or self.joints.shape[0] != B:
            raise NeuralAvatarError("Source views need the body (verts (B,N,3), joints (B,J,3)) of their instant.")
        for name in ("rgb", "K", "R", "t", "verts", "joints"):
            if not bool(torch.isfinite(getattr(self, name)).all()):
                raise NeuralAvatarError(f"Source {name} holds NaN or infinite values.")
        return self

    def to(self, device) -> "SourceViews":
        return SourceViews(**{k: (None if v is None else v.to(device)) for k, v in self.__dict__.items()})

    def select(self, views: Sequence[int]) -> "SourceViews":
        idx = torch.as_tensor(list(views), dtype=torch.long, device=self.rgb.device)
        return replace(self, rgb=self.rgb[:, idx], mask=self.mask[:, idx], K=self.K[:, idx], R=self.R[:, idx],
                       t=self.t[:, idx])


def project(points: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor):
    """``points (B,N,3)`` world, camera ``(B,3,3), (B,3,3), (B,3)`` -> pixel ``uv (B,N,2)``
    (``u = fx x/z + cx``, pixel centres at +0.5) and camera depth ``z (B,N)``."""
    pc = points @ R.transpose(1, 2) + t[:, None]
    z = pc[..., 2]
    uv = (pc @ K.transpose(1, 2))[..., :2] / z.clamp_min(1e-6)[..., None]
    return uv, z


def crop_to_body(src: SourceViews, side: int, margin: float = 0.12) -> SourceViews:
    """Each view cut to the square around its projected body (bounding box of the vertices,
    grown by ``margin`` of its longer side on each side) and resampled to ``side`` x ``side``
    (bilinear, antialiased when shrinking); outside the source image the window is background
    with mask 0. The returned cameras are the windows' (``K' = S (K - offset)``)."""
    src.validate()
    B, V, _, H, W = src.rgb.shape
    dev, dt = src.rgb.device, src.rgb.dtype
    bg = (src.background if src.background is not None else torch.ones(3, device=dev)).to(dev, dt).view(1, 3, 1, 1)
    rgb_o, m_o, K_o = [], [], []
    for v in range(V):
        uv, z = project(src.verts, src.K[:, v], src.R[:, v], src.t[:, v])
        lo, hi = uv.amin(1), uv.amax(1)  # (B,2)
        c = 0.5 * (lo + hi)
        s = (hi - lo).amax(-1) * (1.0 + 2.0 * margin)  # (B,)
        s = s.clamp_min(8.0)
        x0 = c[:, 0] - 0.5 * s
        y0 = c[:, 1] - 0.5 * s
        # normalised sampling grid (align_corners=False): pixel centre j+0.5 -> (2(j+0.5)/W - 1)
        g = (torch.arange(side, device=dev, dtype=dt) + 0.5) / side  # (side,)
        xs = x0[:, None] + g[None] * s[:, None]  # source pixel coordinates of the window's centres
        ys = y0[:, None] + g[None] * s[:, None]
        gx = (2.0 * xs / W - 1.0)[:, None, :].expand(B, side, side)
        gy = (2.0 * ys / H - 1.0)[:, :, None].expand(B, side, side)
        grid = torch.stack([gx, gy], -1)
        img = src.rgb[:, v] - bg
        scale = (s / side)  # source pixels per window pixel
        if float(scale.max()) > 1.5:  # shrinking: blur first (antialias)
            k = int(min(15, 2 * round(float(scale.max()) / 2) + 1))
            img = F.avg_pool2d(img, k, stride=1, padding=k // 2, count_include_pad=False)
            msk = F.avg_pool2d(src.mask[:, v], k, stride=1, padding=k // 2, count_include_pad=False)
        else:
            msk = src.mask[:, v]
        rgb_o.append(F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + bg)
        m_o.append(F.grid_sample(msk, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
        Kn = src.K[:, v].clone()
        f = (side / s)[:, None]
        Kn[:, 0, :] = Kn[:, 0, :] * f
        Kn[:, 1, :] = Kn[:, 1, :] * f
        Kn[:, 0, 2] = (src.K[:, v, 0, 2] - x0) * f[:, 0]
        Kn[:, 1, 2] = (src.K[:, v, 1, 2] - y0) * f[:, 0]
        K_o.append(Kn)
    return replace(src, rgb=torch.stack(rgb_o, 1), mask=torch.stack(m_o, 1), K=torch.stack(K_o, 1))
