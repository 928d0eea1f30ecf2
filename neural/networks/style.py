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

    def modulated_weight(self, styles: torch.Tensor) -> torch.Tensor:
        """``(B, out_ch, in_ch, k, k)`` weights for ``styles (B, in_ch)``: eq. 1 modulation, then
        eq. 3 demodulation when enabled."""
        weight = self.scale * self.weight[None] * styles[:, None, :, None, None]
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        return weight

    def forward(self, x: torch.Tensor, w: torch.Tensor | None = None,
                styles: torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, in_ch, H, W)``; either ``w (B|1, w_dim)`` or explicit ``styles (B|1, in_ch)``."""
        b, c, h, wd = x.shape
        if styles is None:
            if w is None:
                raise ValueError("ModulatedConv2d needs a style vector w or explicit styles")
            styles = self.affine(w)
        weight = self.modulated_weight(styles.to(torch.float32).expand(b, c))
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


# ------------------------------------------------------------------------ appearance encoder (eq. 4)


class _ResDown(nn.Module):
    """ResNet basic block with stride 2 (He et al. 2016): [conv3x3/2, GN, ReLU, conv3x3, GN] +
    a strided 1x1 projection; GroupNorm instead of BatchNorm (batches of one image at render)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        g = max(1, out_ch // 16)
        self.c1 = nn.Conv2d(in_ch, out_ch, 3, 2, 1, bias=False)
        self.n1 = nn.GroupNorm(g, out_ch)
        self.c2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.n2 = nn.GroupNorm(g, out_ch)
        self.skip = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, 2, bias=False), nn.GroupNorm(g, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.n1(self.c1(x)))
        return F.relu(self.n2(self.c2(y)) + self.skip(x))


class AppearanceEncoder(nn.Module):
    """HVS eq. 4, ``I_1* -> a_1 in R^{M x A}``: the appearance of every bone primitive from one
    image of the person.

    The paper uses a ResNet-50 on the 256² crop; here a 4-stage ResNet of basic blocks
    (widths ``w, 2w, 4w, 4w``, stride 16 in all) on the body crop at ``StyleConfig.encoder_res``
    (128² by default), about 1/60 of ResNet-50's multiply-adds, which is what a CPU trains.
    The paper's encoder regresses the vectors from the whole image; ours is told where each
    limb is: the source camera and pose give the primitives' normalised weights in the source
    view (eq. 14, the same renderer as the target view), and each primitive pools the feature
    map under its own weight, ``p_k = sum_x w_k(x) f(x) / sum_x w_k(x)``. With the image-wide
    mean feature ``g`` (inside the mask), the primitive's visibility ``log(mean_x w_k)`` and a
    learnt embedding ``e_k`` of the bone, a shared MLP gives ``a_k = MLP([p_k, g, v_k, e_k])``.
    Occluded limbs (``w_k ~ 0``) fall back on ``g`` and ``e_k``, so an image from any side
    gives every limb an appearance."""

    def __init__(self, cfg: StyleConfig):
        super().__init__()
        w = int(cfg.encoder_width)
        M, A = cfg.num_primitives, cfg.appearance_dim
        self.M, self.A = M, A
        self.stem = nn.Sequential(nn.Conv2d(4, w, 5, 1, 2, bias=False), nn.GroupNorm(max(1, w // 16), w), nn.ReLU())
        self.stages = nn.ModuleList([_ResDown(w, 2 * w), _ResDown(2 * w, 4 * w), _ResDown(4 * w, 4 * w),
                                     _ResDown(4 * w, 4 * w)])
        self.feat_ch = 4 * w + 2 * w  # the last stage plus the stride-4 stage, upsampled
        self.embed = nn.Parameter(torch.randn(M, 16) * 0.1)
        h = 2 * self.feat_ch
        self.mlp = nn.Sequential(nn.Linear(2 * self.feat_ch + 1 + 16, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
                                 nn.Linear(h, A))

    def features(self, rgb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B,3,H,W), (B,1,H,W)`` -> ``(B, feat_ch, H/4, W/4)``: the stride-16 features
        upsampled onto the stride-4 grid and concatenated with it (a feature pyramid's top)."""
        x = self.stem(torch.cat([rgb * 2.0 - 1.0, mask * 2.0 - 1.0], 1))
        x1 = self.stages[0](x)
        x2 = self.stages[1](x1)
        x4 = self.stages[3](self.stages[2](x2))
        return torch.cat([F.interpolate(x4, size=x2.shape[-2:], mode="bilinear", align_corners=False),
                          F.interpolate(x1, size=x2.shape[-2:], mode="bilinear", align_corners=False)], 1)

    def forward(self, rgb: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``rgb (B,3,H,W)``, ``mask (B,1,H,W)``, ``weights (B, M+1, h, w)`` (eq. 14 in the source
        view at the feature grid ``H/4``; background last) -> ``a (B, M, A)``."""
        f = self.features(rgb, mask)
        B, C, h, wd = f.shape
        if weights.shape[-2:] != (h, wd):
            weights = F.interpolate(weights, size=(h, wd), mode="bilinear", align_corners=False)
        wk = weights[:, : self.M].float()  # (B,M,h,w)
        f = f.float()
        num = torch.einsum("bmp,bcp->bmc", wk.flatten(2), f.flatten(2))
        den = wk.flatten(2).sum(-1, keepdim=True)
        pooled = num / (den + 1e-3)
        m = F.interpolate(mask, size=(h, wd), mode="area").flatten(2).float()
        g = (f.flatten(2) * m).sum(-1) / (m.sum(-1) + 1e-3)  # (B,C)
        vis = torch.log(den / (h * wd) + 1e-4)  # (B,M,1)
        z = torch.cat([pooled, g[:, None].expand(B, self.M, C), vis, self.embed[None].expand(B, -1, -1)], -1)
        return self.mlp(z)
