"""Training losses of the three papers.

* :func:`l1` - photometric L1 (ANR eq. 3 with a mask weight, HVS eq. 17).
* :class:`VGGPerceptualLoss` - SMPLpix eq. 6 / ANR eq. 5 multi-layer L1 on VGG16 features.
* :class:`MultiScalePatchDiscriminator`, :func:`gan_losses`, :func:`feature_matching_loss` -
  the pix2pixHD 3-scale PatchGAN with feature matching of SMPLpix eq. 7 (and ANR eq. 7).
* :func:`mask_bce` - ANR eq. 4.  :func:`tv_loss` - ANR eq. 6 total variation (texture / image / mask).

All image tensors are (B,C,H,W) float, RGB in [0, 1].
"""

from __future__ import annotations

import warnings
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .vgg import VGG16Features, load_vgg16

__all__ = [
    "l1",
    "VGGPerceptualLoss",
    "SMPLPIX_VGG_WEIGHTS",
    "MultiScalePatchDiscriminator",
    "gan_losses",
    "gan_d_loss",
    "gan_g_loss",
    "feature_matching_loss",
    "mask_bce",
    "tv_loss",
]

#: SMPLpix eq. 6 weights 1/2^(5-i) for i = 0..5, where layer 0 is the image itself and
#: layers 1..5 are relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
SMPLPIX_VGG_WEIGHTS: Tuple[float, ...] = tuple(1.0 / 2 ** (5 - i) for i in range(6))


def l1(pred: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean absolute error. With ``weight`` (broadcastable to ``pred``, e.g. a (B,1,H,W) mask)
    it is the weighted mean ``sum(w |p - t|) / sum(w)`` over the broadcast elements, i.e. ANR
    eq. 3's mask-weighted ``M̂ ||Î - I||`` normalised by the mask area (0 if the mask is empty)."""
    diff = (pred - target).abs()
    if weight is None:
        return diff.mean()
    w = weight.expand_as(diff).to(diff.dtype)
    return (w * diff).sum() / w.sum().clamp_min(1e-8)


class VGGPerceptualLoss(nn.Module):
    """SMPLpix eq. 6: ``L = sum_{i=0..5} 1/2^(5-i) * || f_i(I_gt) - f_i(I_x) ||_1`` where
    ``f_0`` is the image and ``f_1..f_5`` are the VGG16 relu1_2 … relu5_3 activations; each
    ``||.||_1`` is the mean absolute difference over that layer's elements (pix2pixHD's
    VGGLoss convention). ANR eq. 5 is the same loss on the background-blended image.

    ``weights`` overrides the six per-layer weights. Without VGG16 weights on this machine
    (see :mod:`.vgg`) the loss falls back to ``0.16 * L1 + 0.84 * (1 - MS-SSIM)`` (the mix of
    Zhao et al. 2017, "Loss functions for image restoration"), single-scale SSIM when the
    image is too small for 5 MS-SSIM scales; ``.description`` and a warning say which is used.
    """

    def __init__(self, weights: Sequence[float] = SMPLPIX_VGG_WEIGHTS, vgg: Optional[VGG16Features] = None,
                 allow_fallback: bool = True):
        super().__init__()
        if len(weights) != 6:
            raise ValueError("VGGPerceptualLoss needs 6 weights (image + 5 VGG layers)")
        self.weights = tuple(float(w) for w in weights)
        source = "given VGG16 module"
        if vgg is None:
            vgg, source = load_vgg16(required=not allow_fallback)
        self.vgg = vgg
        if vgg is not None:
            self.description = f"SMPLpix eq. 6 multi-layer VGG16 L1 (weights: {source})"
        else:
            self.description = ("fallback 0.16*L1 + 0.84*(1-MS-SSIM): " + source)
            warnings.warn("VGG perceptual loss unavailable, using L1 + MS-SSIM: " + source, RuntimeWarning)

    @property
    def uses_vgg(self) -> bool:
        return self.vgg is not None

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """pred, target (B,3,H,W) in [0,1] -> scalar loss."""
        if self.vgg is None:
            return _l1_msssim(pred, target)
        loss = self.weights[0] * (pred - target).abs().mean()
        both = self.vgg(torch.cat([pred, target], 0))
        n = pred.shape[0]
        for w, f in zip(self.weights[1:], both):
            if w != 0.0:
                loss = loss + w * (f[:n] - f[n:].detach()).abs().mean()
        return loss


def _l1_msssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from pytorch_msssim import ms_ssim, ssim

    side = min(pred.shape[-2:])
    win = 11 if side >= 11 else (side if side % 2 == 1 else side - 1)
    win = max(win, 3)
    p = pred.clamp(0, 1)
    if side > (win - 1) * 2 ** 4:
        s = ms_ssim(p, target, data_range=1.0, win_size=win)
    else:
        s = ssim(p, target, data_range=1.0, win_size=win)
    return 0.16 * (pred - target).abs().mean() + 0.84 * (1.0 - s)


# ----------------------------------------------------------------------- discriminator


class NLayerDiscriminator(nn.Module):
    """pix2pixHD PatchGAN: conv4x4/s2 + LeakyReLU(0.2), ``n_layers-1`` × [conv4x4/s2, IN,
    LReLU], conv4x4/s1 + IN + LReLU, conv4x4/s1 -> 1 channel. Returns every block's output
    (the last is the patch prediction) for feature matching."""

    def __init__(self, in_ch: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        blocks = [nn.Sequential(nn.Conv2d(in_ch, ndf, 4, 2, 2), nn.LeakyReLU(0.2, True))]
        nf = ndf
        for _ in range(1, n_layers):
            prev, nf = nf, min(nf * 2, 512)
            blocks.append(nn.Sequential(nn.Conv2d(prev, nf, 4, 2, 2), nn.InstanceNorm2d(nf),
                                        nn.LeakyReLU(0.2, True)))
        prev, nf = nf, min(nf * 2, 512)
        blocks.append(nn.Sequential(nn.Conv2d(prev, nf, 4, 1, 2), nn.InstanceNorm2d(nf),
                                    nn.LeakyReLU(0.2, True)))
        blocks.append(nn.Conv2d(nf, 1, 4, 1, 2))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        outs = []
        for b in self.blocks:
            x = b(x)
            outs.append(x)
        return outs


class MultiScalePatchDiscriminator(nn.Module):
    """pix2pixHD multi-scale discriminator (SMPLpix eq. 7: D_1, D_2, D_3): ``num_scales``
    PatchGANs applied to the image downsampled by 1, 2, 4 (AvgPool 3x3/s2, pad 1, no padded
    pixels counted). ``forward(x)`` returns, per scale, the list of intermediate features whose
    last entry is the (B,1,h,w) patch logit map."""

    def __init__(self, in_ch: int = 3, ndf: int = 64, n_layers: int = 3, num_scales: int = 3):
        super().__init__()
        self.nets = nn.ModuleList(NLayerDiscriminator(in_ch, ndf, n_layers) for _ in range(num_scales))
        self.n_layers = n_layers

    def forward(self, x: torch.Tensor) -> List[List[torch.Tensor]]:
        outs = []
        for k, net in enumerate(self.nets):
            if k > 0:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outs.append(net(x))
        return outs


def gan_d_loss(real_outs: List[List[torch.Tensor]], fake_outs: List[List[torch.Tensor]],
               kind: str = "lsgan") -> torch.Tensor:
    """Discriminator loss summed over scales (the max over D_k in SMPLpix eq. 7).

    ``lsgan`` (pix2pixHD, default): ``mean((D(x)-1)^2) + mean(D(G(z))^2)``, halved;
    ``hinge``: ``mean(relu(1-D(x))) + mean(relu(1+D(G(z))))``. ``fake_outs`` must come from a
    detached generator output."""
    loss = real_outs[0][-1].new_zeros(())
    for r, f in zip(real_outs, fake_outs):
        r, f = r[-1], f[-1]
        if kind == "lsgan":
            loss = loss + 0.5 * (((r - 1) ** 2).mean() + (f ** 2).mean())
        elif kind == "hinge":
            loss = loss + F.relu(1 - r).mean() + F.relu(1 + f).mean()
        else:
            raise ValueError(f"unknown GAN loss {kind!r} (lsgan or hinge)")
    return loss


def gan_g_loss(fake_outs: List[List[torch.Tensor]], kind: str = "lsgan") -> torch.Tensor:
    """Generator adversarial loss summed over scales (SMPLpix eq. 7 ``sum_k L_GAN(G, D_k)``,
    ANR eq. 7 ``D(Î', 1)``): lsgan ``mean((D(G(z))-1)^2)``; hinge ``-mean(D(G(z)))``."""
    loss = fake_outs[0][-1].new_zeros(())
    for f in fake_outs:
        f = f[-1]
        if kind == "lsgan":
            loss = loss + ((f - 1) ** 2).mean()
        elif kind == "hinge":
            loss = loss - f.mean()
        else:
            raise ValueError(f"unknown GAN loss {kind!r} (lsgan or hinge)")
    return loss


def gan_losses(disc: MultiScalePatchDiscriminator, real: torch.Tensor, fake: torch.Tensor,
               kind: str = "lsgan", fm_weight: float = 0.1):
    """One pix2pixHD step's GAN terms (SMPLpix eq. 7).

    Returns ``(d_loss, g_adv, g_fm)``: ``d_loss`` trains ``disc`` (fake detached), ``g_adv``
    and ``g_fm = fm_weight * sum_k L_FM(G, D_k)`` train the generator (gradients reach ``fake``
    through ``disc``; step only the generator's optimizer with them)."""
    real_outs = disc(real)
    d_loss = gan_d_loss(real_outs, disc(fake.detach()), kind)
    fake_outs = disc(fake)
    g_adv = gan_g_loss(fake_outs, kind)
    g_fm = feature_matching_loss(real_outs, fake_outs, weight=fm_weight)
    return d_loss, g_adv, g_fm


def feature_matching_loss(real_outs: List[List[torch.Tensor]], fake_outs: List[List[torch.Tensor]],
                          weight: float = 0.1) -> torch.Tensor:
    """SMPLpix eq. 7 feature matching ``weight * sum_k L_FM(G, D_k)`` with pix2pixHD eq. 4
    ``L_FM(G, D_k) = sum_i 1/N_i || D_k^(i)(x) - D_k^(i)(G(s)) ||_1`` over the intermediate
    layers i (the final logit map excluded), ``1/N_i`` = mean over the layer's elements.
    Real features are detached (they are targets)."""
    loss = fake_outs[0][-1].new_zeros(())
    for r_scale, f_scale in zip(real_outs, fake_outs):
        for r, f in zip(r_scale[:-1], f_scale[:-1]):
            loss = loss + (f - r.detach()).abs().mean()
    return weight * loss


def mask_bce(pred_mask: torch.Tensor, target_mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """ANR eq. 4: ``BCE(M̂, M) = -mean(M log M̂ + (1-M) log(1-M̂))``; M̂ is clamped to
    [eps, 1-eps] so a saturated mask gives a finite loss and gradient."""
    p = pred_mask.clamp(eps, 1.0 - eps)
    t = target_mask.to(p.dtype)
    return -(t * torch.log(p) + (1 - t) * torch.log(1 - p)).mean()


def tv_loss(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic L1 total variation (ANR eq. 6 TV, used on the neural texture, the blended
    image and the mask): ``mean|x[...,i+1,j]-x[...,i,j]| + mean|x[...,i,j+1]-x[...,i,j]|``.
    Accepts (H,W), (C,H,W) or (B,C,H,W)."""
    if x.dim() < 2:
        raise ValueError("tv_loss needs at least a 2-D tensor")
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean() if x.shape[-2] > 1 else x.new_zeros(())
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean() if x.shape[-1] > 1 else x.new_zeros(())
    return dx + dy
