"""Per-body crops at the scale an avatar was trained at.

A body is rendered in its own square screen-space window, the one a capture of the demo subject
would frame it in: the projection of the body's bounding sphere fills ``FILL`` of the window's
side (the capture protocol fits that sphere to the field of view with a distance factor of
1.02–1.275, ``lab/capture.py``; ``FILL`` is its mean). The window is rendered at
``min(its size in frame pixels, the avatar's training resolution)``: a body smaller than the
trained scale costs its own pixels; a close-up beyond it runs at the trained scale and is
upsampled (bilinear) into the frame. Pixels outside every window are exactly background, and
the predicted mask is feathered to 0 over the window's outer ``FEATHER`` so no window edge shows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

FILL = 1.0 / (1.02 * 1.1375)  # bounding-sphere diameter / window side in the training captures
FEATHER = 0.04  # fraction of the window side over which the mask fades to 0 at its border
MIN_SIDE = 16
SIZE_STEP = 16


@dataclass
class Crop:
    """A square window of the frame: top-left ``(x0, y0)`` and ``side`` in frame pixels (it may
    extend past the frame), rendered at ``res`` × ``res`` network pixels."""

    x0: float
    y0: float
    side: float
    res: int

    @property
    def scale(self) -> float:
        """Network pixels per frame pixel (≤ 1)."""
        return self.res / self.side

    def visible(self, width: int, height: int):
        """The integer frame rectangle ``(x0, y0, x1, y1)`` the window covers, or None."""
        xa, ya = max(0, int(math.floor(self.x0))), max(0, int(math.floor(self.y0)))
        xb = min(width, int(math.ceil(self.x0 + self.side)))
        yb = min(height, int(math.ceil(self.y0 + self.side)))
        return (xa, ya, xb, yb) if xb > xa and yb > ya else None


def _bounds(a: np.ndarray) -> tuple:
    """Column-wise ``(min, max)`` of an ``(N, C)`` array, C small. The same values as
    ``a.min(0), a.max(0)``, which numpy reduces along the strided axis at ~20× the cost
    (0.5 ms against 0.03 for a 10k-vertex body, several times per body per frame)."""
    at = np.ascontiguousarray(np.asarray(a).T)
    return at.min(1), at.max(1)


def _project_front(verts, K, R, t) -> np.ndarray:
    """Pixel positions ``(F, 2)`` (float64) of the vertices in front of the camera (``z > 1e-3``);
    empty when none is."""
    Xc = np.asarray(verts, np.float64) @ np.asarray(R, np.float64).T + np.asarray(t, np.float64)
    front = Xc[:, 2] > 1e-3
    return (Xc[front] @ np.asarray(K, np.float64).T)[:, :2] / Xc[front, 2:3]


def project_front(verts, K, R, t) -> np.ndarray:
    """Pixel positions ``(F, 2)`` (float64) of the body's vertices in front of the camera, for
    the ``uv=`` of :func:`body_crop`; :func:`to_window` moves them into a window's pixels, so a
    body is projected once a frame."""
    return _project_front(verts, K, R, t)


def to_window(uv: np.ndarray, crop: "Crop") -> np.ndarray:
    """Frame pixel positions -> the window's network pixels (what :func:`crop_intrinsics`' K
    projects to): shifted by the window's corner, scaled by ``crop.scale``."""
    return (np.asarray(uv, np.float64) - np.array([crop.x0, crop.y0])) * crop.scale


def body_crop(verts: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray, width: int, height: int,
              train_res: int, fill: float = FILL, uv: Optional[np.ndarray] = None) -> Optional[Crop]:
    """The window for a body with world-space ``verts`` (V, 3) seen by camera ``K, R, t`` in a
    ``width`` × ``height`` frame; None when the body is wholly behind the camera or outside the
    frame. ``uv``: the vertices' :func:`project_front` by this K, when already computed."""
    verts = np.asarray(verts, np.float64)
    uv = _project_front(verts, K, R, t) if uv is None else uv
    if not len(uv):
        return None
    K = np.asarray(K, np.float64)
    f = 0.5 * (K[0, 0] + K[1, 1])
    lo, hi = _bounds(verts)
    centre = 0.5 * (lo + hi)
    radius = 0.5 * float(np.linalg.norm(hi - lo))
    cc = np.asarray(R, np.float64) @ centre + np.asarray(t, np.float64)
    (u0, v0), (u1, v1) = _bounds(uv)
    if cc[2] > 1.5 * radius:  # the whole sphere in front: its projection frames the body as in training
        cu, cv = (K @ cc)[:2] / cc[2]
        side = 2.0 * radius * f / cc[2] / fill
        side = max(side, 1.05 * max(u1 - u0, v1 - v0))  # every projected vertex inside
    else:  # the camera is inside or near the body: frame the visible vertices
        cu, cv = 0.5 * (u0 + u1), 0.5 * (v0 + v1)
        side = 1.1 * max(u1 - u0, v1 - v0, 1.0)
    side = min(side, 64.0 * max(width, height))  # a camera touching the body: no absurd windows
    crop = Crop(cu - side / 2.0, cv - side / 2.0, side, 0)
    if crop.visible(width, height) is None:
        return None
    # Network sizes in steps of 16 pixels: few distinct shapes for the backends' kernel caches
    # (OpenVINO re-plans a dynamic-shape model for every new size) as a body moves.
    crop.res = int(max(MIN_SIDE, min(SIZE_STEP * math.ceil(side / SIZE_STEP), int(train_res))))
    return crop


def crop_intrinsics(K: np.ndarray, crop: Crop) -> np.ndarray:
    """K of the window's network image: frame pixel coordinates shifted by the window's corner
    and scaled by ``crop.scale`` (continuous coordinates, pixel centres at +0.5 in both)."""
    k = crop.scale
    Kc = np.array(K, np.float64)
    Kc[0, 0] *= k
    Kc[1, 1] *= k
    Kc[0, 1] *= k
    Kc[0, 2] = (Kc[0, 2] - crop.x0) * k
    Kc[1, 2] = (Kc[1, 2] - crop.y0) * k
    return Kc


def feather(mask: torch.Tensor, fraction: float = FEATHER, res: Optional[int] = None,
            offset: tuple = (0, 0)) -> torch.Tensor:
    """``mask (B,1,h,w)`` times a ramp from 0 at the window's border to 1 at ``fraction`` inside.
    The mask is the whole ``res`` × ``res`` window (default: its own side) or, with ``res`` and
    ``offset = (ox, oy)``, the part of it whose top-left is window pixel ``(ox, oy)``."""
    h, w = mask.shape[-2:]
    r = w if res is None else int(res)
    n = max(1.0, fraction * r)

    def ramp(o, length):
        idx = torch.arange(o, o + length, dtype=mask.dtype, device=mask.device) + 0.5
        return torch.clamp(torch.minimum(idx, r - idx) / n, 0.0, 1.0)

    return mask * ramp(offset[1], h)[None, None, :, None] * ramp(offset[0], w)[None, None, None, :]


def paste(img: torch.Tensor, crop: Crop, width: int, height: int, rect=None, fill=None) -> tuple:
    """Resample a window's network image ``img (C, r, r)`` into the frame pixels it covers
    (bilinear: the window is never finer than the frame). ``rect = (x0, y0, x1, y1)`` in window
    pixels limits it to the frame pixels that part of the window reaches (a body's region: the
    image is 0 outside it). ``img`` may also be only that region, ``(C, y1-y0, x1-x0)``: the
    window outside it holds ``fill`` (one value per channel, default 0), the same picture as the
    whole window without building it. Returns ``(array (y1-y0, x1-x0, C), (x0, y0, x1, y1))`` or
    ``(None, None)`` when nothing is visible."""
    r = crop.res if crop.res else img.shape[-1]
    ox = oy = 0
    if rect is not None and tuple(img.shape[-2:]) != (r, r):
        ox, oy, rx1, ry1 = (int(v) for v in rect)
        if tuple(img.shape[-2:]) != (ry1 - oy, rx1 - ox):
            raise ValueError(f"paste: image {tuple(img.shape[-2:])} is neither the window ({r}) nor the rect {rect}")
        # one pixel of the window around the region (its fill, or the region's own edge where the
        # region meets the window's border, which the whole-window sample clamps to) so the
        # bilinear footprint at the region's edge sees what the whole window holds there
        C = img.shape[0]
        fv = torch.zeros(C) if fill is None else torch.as_tensor(fill, dtype=torch.float32)
        canvas = fv.to(img.device, img.dtype).view(C, 1, 1).expand(C, img.shape[1] + 2, img.shape[2] + 2).clone()
        canvas[:, 1:-1, 1:-1] = img
        if ox == 0:
            canvas[:, :, 0] = canvas[:, :, 1]
        if rx1 == r:
            canvas[:, :, -1] = canvas[:, :, -2]
        if oy == 0:
            canvas[:, 0, :] = canvas[:, 1, :]
        if ry1 == r:
            canvas[:, -1, :] = canvas[:, -2, :]
        img, ox, oy = canvas, ox - 1, oy - 1
    vis = crop.visible(width, height)
    if vis is None:
        return None, None
    if rect is not None:  # the rect's frame pixels, one more on each side for the bilinear footprint
        k = crop.scale
        fx0 = int(math.floor(crop.x0 + rect[0] / k)) - 1
        fy0 = int(math.floor(crop.y0 + rect[1] / k)) - 1
        fx1 = int(math.ceil(crop.x0 + rect[2] / k)) + 1
        fy1 = int(math.ceil(crop.y0 + rect[3] / k)) + 1
        vis = (max(vis[0], fx0), max(vis[1], fy0), min(vis[2], fx1), min(vis[3], fy1))
        if vis[2] <= vis[0] or vis[3] <= vis[1]:
            return None, None
    xa, ya, xb, yb = vis
    k = crop.scale
    # frame pixel centre (j + 0.5) → window pixel coordinate → image pixel → normalised [-1, 1]
    # (align_corners=False)
    js = (torch.arange(xa, xb, dtype=torch.float64) + 0.5 - crop.x0) * k - ox
    is_ = (torch.arange(ya, yb, dtype=torch.float64) + 0.5 - crop.y0) * k - oy
    gx = (js / img.shape[-1] * 2.0 - 1.0).float()
    gy = (is_ / img.shape[-2] * 2.0 - 1.0).float()
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None]
    out = F.grid_sample(img[None].float(), grid.to(img.device), mode="bilinear", padding_mode="border",
                        align_corners=False)[0]
    return out.permute(1, 2, 0).cpu().numpy(), vis


GATE_RES = 128  # windows wider than this build the gate at 1/(res // GATE_RES) of their side
GATE_DILATE = 0.035  # fraction of the window side the body's silhouette is grown by (clothes, hair)


def silhouette_gate(verts: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray, res: int,
                    dilate: float = GATE_DILATE, region: Optional[tuple] = None,
                    uv: Optional[np.ndarray] = None) -> torch.Tensor:
    """``(1, 1, res, res)`` in [0, 1]: 1 on and near the body's projected vertices (grown by
    ``dilate`` of the side, then softened over as much again), 0 far from it. Multiplying the
    predicted mask by it removes what an avatar paints far from the body (a faint veil in
    SMPLpix's mask) without touching the body, its clothes or its hair.

    The gate is smooth on the scale of its growth (``dilate · res`` pixels), so windows wider
    than ``GATE_RES`` build it at a ``GATE_RES``-ish side and upsample it bilinearly: 1.5 ms instead
    of 35 ms at a 512-pixel window, the same gate to within the growth's rounding.

    ``region = (x0, y0, x1, y1)`` (window pixels) returns only that part, ``(1, 1, y1-y0, x1-x0)``:
    the same values as the whole window's gate cut there, upsampling only the low-side rows and
    columns the region's bilinear footprint reads (the whole 512² upsample was most of the gate's
    cost on a body's region). ``uv``: the vertices' window pixel positions by this K (as
    :func:`to_window` gives them), when already computed."""
    s = max(1, int(res) // GATE_RES)
    rl = -(-int(res) // s)
    uv = (_project_front(verts, K, R, t) if uv is None else np.asarray(uv, np.float64)) / s
    j, i = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
    ok = (j >= 0) & (j < rl) & (i >= 0) & (i < rl)
    m = torch.zeros(1, 1, rl, rl)
    m[0, 0, torch.as_tensor(i[ok]), torch.as_tensor(j[ok])] = 1.0
    k = max(1, int(round(dilate * rl)))
    # grow, then soften the edge: square max and box mean, each as two 1-D passes (both are
    # separable; exact, and O(res² k) instead of O(res² k²), which cost 0.4 s at 512²)
    m = F.max_pool2d(F.max_pool2d(m, (2 * k + 1, 1), stride=1, padding=(k, 0)), (1, 2 * k + 1), stride=1,
                     padding=(0, k))
    m = F.avg_pool2d(F.avg_pool2d(m, (2 * k + 1, 1), stride=1, padding=(k, 0), count_include_pad=False),
                     (1, 2 * k + 1), stride=1, padding=(0, k), count_include_pad=False)
    m = torch.clamp(m * 2.0, 0.0, 1.0)
    x0, y0, x1, y1 = (0, 0, int(res), int(res)) if region is None else (int(v) for v in region)
    if s == 1:
        return m[..., y0:y1, x0:x1]
    # Output pixel i of an s-fold bilinear upsample (align_corners=False) reads low-side samples
    # floor((i + 0.5) / s - 0.5) and the next, clamped to the border: rows / columns
    # [x0 // s - 1, ceil(x1 / s) + 1) hold every sample the region reads, and where that slice is
    # cut inside the map its clamped edge is never read, so the slice's upsample equals the
    # whole one's there.
    lx, ly = max(0, x0 // s - 1), max(0, y0 // s - 1)
    hx, hy = min(rl, -(-x1 // s) + 1), min(rl, -(-y1 // s) + 1)
    m = F.interpolate(m[..., ly:hy, lx:hx], scale_factor=s, mode="bilinear", align_corners=False)
    return m[..., y0 - ly * s:y1 - ly * s, x0 - lx * s:x1 - lx * s]


# --------------------------------------------------------------------------- body regions
#: how far beyond the body's projected vertices an avatar's output can reach after the gate: the
#: gate's growth plus its soft edge (2 × GATE_DILATE of the side), plus slack for the network's
#: receptive field to see background around the body
REGION_MARGIN = 2.0 * GATE_DILATE + 0.03
REGION_MIN_MARGIN_PX = 32  # the networks' receptive field is in pixels: small windows keep this much
#: per mode where the network sees farther: the style UNet's modulated bottleneck sits at 1/8 of
#: the side, and with 32 px a 128-px window's region changed its frame by 40 dB PSNR. With 48 px
#: windows up to ~256 px stay whole (the shipped 128² HVS avatar's always do); at 384 / 512 px
#: the region is 77 / 79 dB from the whole window (tests/neural/test_crop.py)
REGION_MIN_MARGIN_BY_MODE = {"GAUSSIAN_BONES": 48}
REGION_MODES = ("VERTEX_PROJECTION", "NEURAL_TEXTURE", "GAUSSIAN_BONES")
"""Fully convolutional networks that can run on a body's region of its window: the SMPLpix UNet,
ANR's R1/R2 and HVS's style UNet (its style vector is global, its convolutions local; the
Gaussian feature image is evaluated at the region's pixels). AniPixel's rays keep the whole
window."""


def body_extent(verts: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray, res: int,
                margin: Optional[float] = None, mode: Optional[str] = None, uv: Optional[np.ndarray] = None):
    """``(x0, y0, x1, y1)`` in window pixels: the box of the body's projected vertices grown by
    ``margin`` of the side (at least ``REGION_MIN_MARGIN_PX``, or the ``mode``'s own minimum) and
    clipped to the window. ``uv``: those window pixel positions, when already computed."""
    uv = _project_front(verts, K, R, t) if uv is None else uv
    if not len(uv):
        return (0, 0, res, res)
    m = max((REGION_MARGIN if margin is None else margin) * res,
            REGION_MIN_MARGIN_BY_MODE.get(mode, REGION_MIN_MARGIN_PX))
    lo, hi = _bounds(uv)
    x0, y0 = np.floor(lo - m)
    x1, y1 = np.ceil(hi + m)
    return (int(max(0, x0)), int(max(0, y0)), int(min(res, x1)), int(min(res, y1)))


def _aligned(lo: int, hi: int, step: int) -> tuple:
    return step * (lo // step), step * -(-hi // step)


def region_size(extents, res: int, step: int = SIZE_STEP) -> tuple:
    """``(h, w)`` of the network region shared by bodies whose windows are ``res`` wide: the largest
    extent in each direction once its ends are put on multiples of ``step`` (the networks'
    downsampling grid, see :func:`place_region`; few distinct shapes), at most ``res``."""
    def span(lo, hi):
        a, b = _aligned(lo, hi, step)
        return b - a
    w = max(span(e[0], e[2]) for e in extents)
    h = max(span(e[1], e[3]) for e in extents)
    return int(min(res, h)), int(min(res, w))


def place_region(extent, h: int, w: int, res: int, step: int = SIZE_STEP) -> tuple:
    """Top-left ``(ox, oy)`` of an ``h`` × ``w`` region holding ``extent``, about centred on it,
    inside the window, on multiples of ``step``: the networks' downsampling grid (a UNet of depth
    4 pools by 16) stays where it is in the whole window, so the region computes the same
    features where it sees the same input (a shifted grid changed SMPLpix's picture by 41 dB)."""
    def at(lo, hi, n):
        a, b = _aligned(lo, hi, step)
        o = a - step * (((n - (b - a)) // 2) // step)
        return int(min(max(0, o), max(0, res - n)))
    return at(extent[0], extent[2], w), at(extent[1], extent[3], h)


def region_intrinsics(K: np.ndarray, ox: int, oy: int) -> np.ndarray:
    """K of a region whose top-left is window pixel ``(ox, oy)``."""
    Kr = np.array(K, np.float64)
    Kr[0, 2] -= ox
    Kr[1, 2] -= oy
    return Kr
