"""Image-quality metrics for validation and the comparison protocol (SMPLpix Table 1:
PSNR and LPIPS; ANR Table 1: SSIM, LPIPS).

Every metric returns one value per image, shape (B,), and exists in two flavours, as the
field notes ask: on the whole image (``mask=None``) and inside the body's bounding box
(``mask=bbox_mask(gt_mask, margin)``): PSNR averages the squared error over the box's
pixels, SSIM and LPIPS are computed on the image cropped to the box.

**Independent of the loss.** ``lpips_distance`` (the ``lpips_mask``/``lpips_full`` of ``eval``
and the training validation) uses the ST-LPIPS *AlexNet* (:mod:`.alexnet`), while the training
loss uses the VGG16 trunk below; ``lpips_distance(..., net="vgg")`` is the VGG variant (the
metric of earlier releases, kept for comparison). :data:`LPIPS_SOURCE` names what is used.
``flip_distance`` is NVIDIA FLIP (Andersson et al. 2020; ``flip-evaluator``, BSD-3, no
weights), as ANR reports it; ``haze`` is the share of the frame outside the dilated
ground-truth silhouette where the predicted alpha exceeds 0.05.

The VGG variant is "LPIPS-style": ``d(x, y) = sum_l mean_hw || w_l ⊙ (φ̂_l(x) - φ̂_l(y)) ||²``
(Zhang et al. 2018, eq. 1) with φ̂_l the channel-normalised VGG16 features of :mod:`.vgg` and
w_l learned linear heads. The heads must match the trunk: with the torchvision ImageNet VGG16
(torch hub cache) the heads are the ``lpips==0.1.4`` package's ``lpips/weights/v0.1/vgg.pth``
(LPIPS v0.1, VGG); with the stlpips-pytorch shift-tolerant trunk they are the ST-LPIPS heads
stored in the same file (those were trained for that trunk; lpips' heads were trained for the
plain torchvision trunk). :data:`LPIPS_SOURCE` says which pair is in use; both files are read
with ``torch.load(weights_only=True)`` without importing their packages.
"""

from __future__ import annotations

import threading
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import NeuralAvatarError
from ..training.vgg import LAYER_CHANNELS, VGG16Features, find_vgg16_weights, load_vgg16, package_file, stlpips_lin_heads

__all__ = [
    "psnr",
    "ssim",
    "lpips_distance",
    "bbox_mask",
    "bbox_of_mask",
    "masked_psnr",
    "masked_ssim",
    "masked_lpips",
    "temporal_flicker",
    "flip_distance",
    "haze",
    "haze_radius",
    "outside_silhouette",
    "evaluate",
    "LPIPS_SOURCE",
    "lpips_source",
]


# ---------------------------------------------------------------------------- masks


def bbox_of_mask(mask: torch.Tensor, margin: int = 0, threshold: float = 0.5):
    """Per image (row0, row1, col0, col1) half-open box around ``mask > threshold`` grown by
    ``margin`` px and clipped to the image; None for an empty mask. mask (B,1,H,W) or (B,H,W)."""
    if mask.dim() == 4:
        mask = mask[:, 0]
    H, W = mask.shape[-2:]
    boxes = []
    for m in mask > threshold:
        rows = torch.nonzero(m.any(1)).flatten()
        cols = torch.nonzero(m.any(0)).flatten()
        if rows.numel() == 0:
            boxes.append(None)
            continue
        boxes.append((max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, H),
                      max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, W)))
    return boxes


def bbox_mask(mask: torch.Tensor, margin: int = 8, threshold: float = 0.5) -> torch.Tensor:
    """(B,1,H,W) bool: the axis-aligned bounding box of the body mask grown by ``margin`` px.
    An empty mask gives an all-True box (the metric then covers the whole image)."""
    if mask.dim() == 3:
        mask = mask[:, None]
    B, _, H, W = mask.shape
    out = torch.zeros(B, 1, H, W, dtype=torch.bool, device=mask.device)
    for b, box in enumerate(bbox_of_mask(mask, margin, threshold)):
        if box is None:
            out[b] = True
        else:
            r0, r1, c0, c1 = box
            out[b, :, r0:r1, c0:c1] = True
    return out


def _boxes_from(mask: torch.Tensor):
    """Boxes of a box-shaped (or any) mask; None for empty -> whole image."""
    return bbox_of_mask(mask.float(), 0, 0.5)


# ---------------------------------------------------------------------------- PSNR


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None,
         data_range: float = 1.0) -> torch.Tensor:
    """PSNR = 10 log10(range² / MSE) per image (B,). ``mask`` (B,1,H,W) restricts the MSE to
    its pixels (all channels). Identical images give ``+inf``."""
    pred = pred.float()
    target = target.float()
    se = (pred - target) ** 2
    if mask is None:
        mse = se.flatten(1).mean(1)
    else:
        w = mask.to(se.dtype).expand_as(se)
        mse = (se * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1.0)
    out = 10.0 * torch.log10(data_range ** 2 / mse)
    return torch.where(mse == 0, torch.full_like(out, float("inf")), out)


masked_psnr = psnr


# ---------------------------------------------------------------------------- SSIM


def _ssim_single(p: torch.Tensor, t: torch.Tensor, data_range: float) -> torch.Tensor:
    from pytorch_msssim import ssim as _ssim

    h, w = p.shape[-2:]
    side = min(h, w)
    win = 11
    if side < win:  # small crops: pad by replication so the 11x11 Gaussian window fits
        ph, pw = max(0, win - h), max(0, win - w)
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        p = F.pad(p, pad, mode="replicate")
        t = F.pad(t, pad, mode="replicate")
    return _ssim(p, t, data_range=data_range, size_average=False, win_size=win)


def ssim(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None,
         data_range: float = 1.0) -> torch.Tensor:
    """SSIM (Wang et al. 2004; pytorch_msssim, 11x11 Gaussian σ=1.5) per image (B,).
    With ``mask`` the images are cropped to the mask's bounding box first."""
    pred = pred.float().clamp(0, data_range)
    target = target.float()
    if mask is None:
        return _ssim_single(pred, target, data_range)
    vals = []
    for b, box in enumerate(_boxes_from(mask)):
        if box is None:
            vals.append(_ssim_single(pred[b:b + 1], target[b:b + 1], data_range))
        else:
            r0, r1, c0, c1 = box
            vals.append(_ssim_single(pred[b:b + 1, :, r0:r1, c0:c1], target[b:b + 1, :, r0:r1, c0:c1],
                                     data_range))
    return torch.cat(vals)


masked_ssim = ssim


# ---------------------------------------------------------------------------- LPIPS


def _lpips_package_heads_path() -> Optional[str]:
    return package_file("lpips", "weights", "v0.1", "vgg.pth")


def _describe_source() -> str:
    cands = find_vgg16_weights()
    if not cands:
        return "unavailable: no VGG16 weights on this machine"
    kind = cands[0][1]
    if kind == "torchvision":
        if _lpips_package_heads_path():
            return ("LPIPS v0.1 VGG: torchvision ImageNet VGG16 trunk (torch hub cache) + "
                    "lpips==0.1.4 linear heads (lpips/weights/v0.1/vgg.pth)")
        return "unavailable: torchvision VGG16 found but lpips==0.1.4 heads are not installed"
    return ("ST-LPIPS VGG (shift-tolerant): stlpips-pytorch 0.0.2 trunk + its own linear heads "
            "(stlpips_pytorch/weights/vST0.0/vgg_shift_tolerant.pth)")


#: Which trunk + linear heads the VGG variant (``net="vgg"``) uses on this machine.
LPIPS_VGG_SOURCE: str = _describe_source()


def _describe_alex() -> str:
    from .alexnet import STAlexTrunk, weights_path

    return STAlexTrunk.source if weights_path() else "unavailable: stlpips-pytorch==0.0.2 is not installed"


#: What :func:`lpips_distance` (the default, AlexNet) uses on this machine (decided from the
#: files present; nothing is loaded at import).
LPIPS_SOURCE: str = _describe_alex()


def lpips_source() -> str:
    return LPIPS_SOURCE


class LPIPSModel(nn.Module):
    """A trunk (VGG16, or the ST AlexNet of :mod:`.alexnet`) returning 5 feature maps + 5 linear
    1x1 heads (no bias), Zhang et al. 2018 eq. 1; ``channels``: the trunk's feature widths."""

    def __init__(self, vgg: nn.Module, heads: Sequence[torch.Tensor], source: str,
                 channels: Sequence[int] = LAYER_CHANNELS):
        super().__init__()
        self.vgg = vgg
        for k, w in enumerate(heads):
            if tuple(w.shape) != (1, channels[k], 1, 1):
                raise NeuralAvatarError(f"LPIPS head {k} has shape {tuple(w.shape)}")
            self.register_buffer(f"w{k}", w.float().clone())
        self.source = source

    @staticmethod
    def _unit(f: torch.Tensor) -> torch.Tensor:
        return f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self.vgg(x)
        fy = self.vgg(y)
        d = x.new_zeros(x.shape[0])
        for k, (a, b) in enumerate(zip(fx, fy)):
            diff = (self._unit(a) - self._unit(b)) ** 2
            d = d + F.conv2d(diff, getattr(self, f"w{k}")).mean((1, 2, 3))
        return d


_LPIPS: Dict[str, nn.Module] = {}
_LOCK = threading.Lock()


def _get_lpips(device: torch.device, net: str = "alex") -> nn.Module:
    if net not in ("alex", "vgg"):
        raise NeuralAvatarError(f"LPIPS trunk must be 'alex' or 'vgg', got {net!r}.")
    key = f"{net}:{device}"
    if net == "alex":
        with _LOCK:
            if key not in _LPIPS:
                from .alexnet import load

                _LPIPS[key] = load(device)
            return _LPIPS[key]
    with _LOCK:
        if key in _LPIPS:
            return _LPIPS[key]
        vgg, src = load_vgg16(required=True)
        if vgg.architecture == "shift_tolerant":
            heads_sd = stlpips_lin_heads()
            heads = [heads_sd[f"lin{k}.model.1.weight"] for k in range(5)]
        else:
            p = _lpips_package_heads_path()
            if p is None:
                raise NeuralAvatarError("LPIPS needs the lpips==0.1.4 package's linear heads "
                                        "(pip install lpips==0.1.4 --no-deps)")
            sd = torch.load(p, map_location="cpu", weights_only=True)
            heads = [sd[f"lin{k}.model.1.weight"] for k in range(5)]
        model = LPIPSModel(vgg, heads, LPIPS_VGG_SOURCE).to(device)
        _LPIPS[key] = model
        return model


@torch.no_grad()
def lpips_distance(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None,
                   net: str = "alex") -> torch.Tensor:
    """LPIPS perceptual distance per image (B,), lower is better (0 for identical images).
    Inputs RGB in [0,1]. With ``mask`` the images are cropped to its bounding box. ``net``:
    ``"alex"`` (ST-LPIPS AlexNet, independent of the VGG training loss; the default) or
    ``"vgg"``. Raises :class:`NeuralAvatarError` when the weights are missing."""
    model = _get_lpips(pred.device, net)
    pred = pred.float().clamp(0, 1)
    target = target.float()
    if mask is None:
        return model(pred, target)
    vals = []
    for b, box in enumerate(_boxes_from(mask)):
        if box is None:
            vals.append(model(pred[b:b + 1], target[b:b + 1]))
        else:
            r0, r1, c0, c1 = box
            vals.append(model(pred[b:b + 1, :, r0:r1, c0:c1], target[b:b + 1, :, r0:r1, c0:c1]))
    return torch.cat(vals)


masked_lpips = lpips_distance


# ---------------------------------------------------------------------------- temporal


def temporal_flicker(frames: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean absolute frame-to-frame change ``mean_t mean |f_t - f_{t-1}|`` of a sequence
    (T,C,H,W) -> scalar. With ``mask`` (T,1,H,W) or (1,1,H,W) only masked pixels of both
    frames count. Fewer than 2 frames -> 0."""
    if frames.shape[0] < 2:
        return frames.new_zeros(())
    d = (frames[1:].float() - frames[:-1].float()).abs()
    if mask is None:
        return d.mean()
    m = mask.float()
    if m.shape[0] > 1:
        m = m[1:] * m[:-1]
    w = m.expand_as(d)
    return (d * w).sum() / w.sum().clamp_min(1.0)


# ---------------------------------------------------------------------------- FLIP and haze


def flip_distance(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None,
                  ppd: float = 67.0) -> torch.Tensor:
    """Mean LDR-FLIP error per image (B,) in [0, 1], lower is better (NVIDIA FLIP, Andersson et
    al. 2020, the metric ANR reports; ``flip-evaluator``'s default 67 pixels per degree). Inputs
    sRGB in [0, 1]; with ``mask`` the images are cropped to its bounding box."""
    try:
        import flip_evaluator
    except ImportError:
        raise NeuralAvatarError("The FLIP metric needs the flip-evaluator package (pip install flip-evaluator==1.7).") from None
    import numpy as np

    p = pred.detach().float().clamp(0, 1).cpu()
    t = target.detach().float().clamp(0, 1).cpu()
    boxes = _boxes_from(mask) if mask is not None else [None] * p.shape[0]
    vals = []
    for b, box in enumerate(boxes):
        pb, tb = p[b], t[b]
        if box is not None:
            r0, r1, c0, c1 = box
            pb, tb = pb[:, r0:r1, c0:c1], tb[:, r0:r1, c0:c1]
        ref = np.ascontiguousarray(tb.permute(1, 2, 0).numpy(), dtype=np.float32)
        tst = np.ascontiguousarray(pb.permute(1, 2, 0).numpy(), dtype=np.float32)
        _, mean, _ = flip_evaluator.evaluate(ref, tst, "LDR", applyMagma=False, parameters={"ppd": float(ppd)})
        vals.append(float(mean))
    return torch.tensor(vals)


def haze_radius(size) -> int:
    """Dilation radius (px) of the ground-truth silhouette for :func:`haze`: 1 % of the longer
    side of the frame, at least 1 px (3 px at 256², 5 px at 512²)."""
    return max(1, int(round(0.01 * max(int(s) for s in size))))


def outside_silhouette(gt_mask: torch.Tensor, radius: int) -> torch.Tensor:
    """(B,1,H,W) float: 1 where the ground-truth mask dilated by ``radius`` px (square) is empty."""
    m = gt_mask if gt_mask.dim() == 4 else gt_mask[:, None]
    grown = F.max_pool2d((m.float() > 0.05).float(), 2 * radius + 1, stride=1, padding=radius)
    return 1.0 - grown


def haze(pred_alpha: torch.Tensor, gt_mask: torch.Tensor, radius: Optional[int] = None,
         threshold: float = 0.05) -> torch.Tensor:
    """Per image (B,): the fraction of the *frame* outside the dilated ground-truth silhouette
    where the predicted alpha exceeds ``threshold`` (the veil / halo a network paints around the
    body). ``radius`` defaults to :func:`haze_radius`."""
    a = pred_alpha if pred_alpha.dim() == 4 else pred_alpha[:, None]
    r = haze_radius(a.shape[-2:]) if radius is None else int(radius)
    out = outside_silhouette(gt_mask.to(a.device), r)
    return ((a.float() > threshold).float() * out).flatten(1).mean(1)


def evaluate(pred: torch.Tensor, target: torch.Tensor, gt_mask: Optional[torch.Tensor] = None,
             margin: int = 8, with_lpips: bool = True) -> Dict[str, float]:
    """Batch means of PSNR/SSIM(/LPIPS) on the full image (``*_full``) and inside the body's
    bounding box (``*_bbox``, when ``gt_mask`` is given). Infinite PSNRs are capped at 100 dB
    for the mean. LPIPS is skipped (key absent) when no VGG16 weights exist."""
    out: Dict[str, float] = {}
    box = bbox_mask(gt_mask, margin) if gt_mask is not None else None
    for suffix, m in (("full", None), ("bbox", box)):
        if suffix == "bbox" and m is None:
            continue
        out[f"psnr_{suffix}"] = float(psnr(pred, target, m).clamp(max=100.0).mean())
        out[f"ssim_{suffix}"] = float(ssim(pred, target, m).mean())
        if with_lpips:
            try:
                out[f"lpips_{suffix}"] = float(lpips_distance(pred, target, m).mean())
            except NeuralAvatarError:
                pass
    return out
