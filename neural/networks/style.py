"""Image synthesis of HumanViewSynthesis (Rochette et al., "Human View Synthesis using
Diffuse Gaussian Primitives", sec. III-C, eq. 16): ``F, a -> I``.

"Following StyleGAN2 style mixing and design principles, we use a U-Net encoder-decoder.
[...] To recover high-frequency details, we incorporate the appearance a as styles at each
stage." The feature image F (B, A, H, W) rendered from the Gaussian bone primitives
(eq. 11-15) is encoded by a plain conv encoder (average-pool down, no strided aliasing);
the decoder up-samples by bilinear resize + concatenated skip + StyleGAN2 *modulated*
convolutions (Karras et al. 2020, "Analyzing and Improving the Image Quality of
StyleGAN", sec. 2.2, eq. 1 modulation and eq. 3 demodulation) whose styles come from a
mapping network applied to the flattened appearance vectors a (M x A). The last layer is
a 1x1 modulated conv without demodulation (StyleGAN2's toRGB) giving RGB + a mask logit.
Noise inputs are left out: rendering must be deterministic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import StyleConfig
from .unet import pad_to_multiple, resize_to

_SQRT2 = math.sqrt(2.0)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """StyleGAN's activation: leaky ReLU (slope 0.2) with gain sqrt(2)."""
    return F.leaky_relu(x, 0.2) * _SQRT2


class EqualLinear(nn.Module):
    """Fully connected layer with the equalised learning rate of StyleGAN (weights ~ N(0,1)
    scaled at run time by ``lr_mul / sqrt(in)``)."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class MappingNetwork(nn.Module):
    """Maps the flattened appearance vectors (M x A, HVS eq. 4/16) to a style vector w:
    pixel-norm, then ``layers`` x [EqualLinear, lrelu] (StyleGAN's mapping f, lr_mul 0.01)."""

    def __init__(self, in_dim: int, w_dim: int, layers: int = 2, lr_mul: float = 0.01):
        super().__init__()
        dims = [in_dim] + [w_dim] * layers
        self.fcs = nn.ModuleList(EqualLinear(dims[i], dims[i + 1], lr_mul=lr_mul) for i in range(layers))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        for fc in self.fcs:
            z = lrelu(fc(z))
        return z


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution (Karras et al. 2020, eq. 1 and 3).

    w'_ijk = s_i * w_ijk (modulation by the per-input-channel style s = A(w)),
    w''_ijk = w'_ijk / sqrt(sum_ik w'_ijk^2 + eps) (demodulation, optional). A batch of
    different styles runs as one grouped convolution (groups = batch size).
    Weights use the equalised learning rate (scale 1/sqrt(fan_in)); the style affine's bias
    starts at 1 so an untrained layer is a plain conv.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, w_dim: int,
                 demodulate: bool = True, bias: bool = True):
        super().__init__()
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, kernel_size
        self.demodulate = demodulate
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size * kernel_size)
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None

    def forward(self, x: torch.Tensor, w: torch.Tensor | None = None,
                styles: torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, in_ch, H, W)``; either ``w (B|1, w_dim)`` or explicit ``styles (B|1, in_ch)``."""
        b, c, h, wd = x.shape
        if styles is None:
            if w is None:
                raise ValueError("ModulatedConv2d needs a style vector w or explicit styles")
            styles = self.affine(w)
        styles = styles.to(torch.float32).expand(b, c)
        weight = self.scale * self.weight[None] * styles[:, None, :, None, None]  # (B,O,I,k,k)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        weight = weight.reshape(b * self.out_ch, c, self.kernel_size, self.kernel_size)
        out = F.conv2d(x.reshape(1, b * c, h, wd), weight.to(x.dtype),
                       padding=self.kernel_size // 2, groups=b)
        out = out.reshape(b, self.out_ch, h, wd)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1).to(out.dtype)
        return out


class EncoderBlock(nn.Sequential):
    """[Conv3x3, lrelu] x 2 (no normalisation, as in StyleGAN2)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
                         nn.Conv2d(out_ch, out_ch, 3, padding=1), nn.LeakyReLU(0.2, inplace=True))


class StyledBlock(nn.Module):
    """Decoder level: bilinear resize to the skip's size, concat the skip, 2 modulated 3x3 convs."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, w_dim: int):
        super().__init__()
        self.conv1 = ModulatedConv2d(in_ch + skip_ch, out_ch, 3, w_dim)
        self.conv2 = ModulatedConv2d(out_ch, out_ch, 3, w_dim)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, w: torch.Tensor) -> torch.Tensor:
        if skip is not None:
            x = torch.cat([skip, resize_to(x, skip.shape[-2:], "bilinear")], dim=1)
        return lrelu(self.conv2(lrelu(self.conv1(x, w)), w))


class StyleUNet(nn.Module):
    """HVS synthesis network (eq. 16): feature image ``F (B, A, H, W)`` and appearance
    ``a (B|1, M, A)`` -> ``(B, 3 + mask, H, W)``: sigmoid RGB, then (if ``out_mask``) the
    soft-mask logit. Any H, W (replicate-padded to a multiple of 2**levels, cropped back)."""

    def __init__(self, cfg: StyleConfig, out_mask: bool = True):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.out_mask = out_mask
        ws = list(cfg.widths)
        self.levels = len(ws) - 1
        self.mapping = MappingNetwork(cfg.num_primitives * cfg.appearance_dim, cfg.w_dim, cfg.mapping_layers)
        self.enc = nn.ModuleList(
            EncoderBlock(cfg.appearance_dim if i == 0 else ws[i - 1], ws[i]) for i in range(len(ws))
        )
        self.bottleneck = StyledBlock(ws[-1], 0, ws[-1], cfg.w_dim)
        self.dec = nn.ModuleList(StyledBlock(ws[i + 1], ws[i], ws[i], cfg.w_dim) for i in reversed(range(self.levels)))
        self.to_rgb = ModulatedConv2d(ws[0], 3 + int(out_mask), 1, cfg.w_dim, demodulate=False)

    def style(self, appearance: torch.Tensor) -> torch.Tensor:
        """w = mapping(flatten(a)); ``appearance (B|1, M, A)`` or ``(M, A)`` -> ``(B|1, w_dim)``."""
        if appearance.ndim == 2:
            appearance = appearance[None]
        m, a = self.cfg.num_primitives, self.cfg.appearance_dim
        if tuple(appearance.shape[1:]) != (m, a):
            raise ValueError(f"appearance must be (B, {m}, {a}), got {tuple(appearance.shape)}")
        return self.mapping(appearance.reshape(appearance.shape[0], m * a).float())

    def forward(self, features: torch.Tensor, appearance: torch.Tensor) -> torch.Tensor:
        if features.ndim != 4 or features.shape[1] != self.cfg.appearance_dim:
            raise ValueError(f"StyleUNet expects (B,{self.cfg.appearance_dim},H,W) features, got {tuple(features.shape)}")
        w = self.style(appearance)
        x, (h, wd) = pad_to_multiple(features, 2 ** self.levels)
        skips = []
        for i, block in enumerate(self.enc):
            if i > 0:
                x = F.avg_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        y = self.bottleneck(skips.pop(), None, w)
        for block in self.dec:
            y = block(y, skips.pop(), w)
        y = self.to_rgb(y, w)[..., :h, :wd]
        rgb = torch.sigmoid(y[:, :3])
        if self.out_mask:
            return torch.cat([rgb, y[:, 3:4]], dim=1)
        return rgb
