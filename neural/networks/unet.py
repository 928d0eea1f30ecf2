"""The SMPLpix neural renderer G (Prokudin et al., "SMPLpix", WACV 2021, sec. 3.2, eq. 5)
and the generic UNet it is built from (also ANR's shallow R1/R2).

Paper: "4 layers of downconv and upconv double convolutional layers [Conv2d, BatchNorm,
ReLU] x 2, with convolutional layers having the kernel size of 3. In case of downconv,
this double convolutional layer is preceded by max pooling operation with kernel size 2;
in case of upconv, it is preceded by bilinear upsampling and concatenation with the
output of a corresponding downconv layer."

Up-sampling is always a resize followed by a convolution (no transposed convolutions,
whose uneven overlap paints checkerboards). Inputs of any size work: they are padded
(replicate) to a multiple of ``2**depth`` and the output is cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import UNetConfig


def make_norm(kind: str, ch: int) -> nn.Module:
    """The normalisation layer after a conv: BatchNorm (SMPLpix), InstanceNorm or none."""
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "instance":
        return nn.InstanceNorm2d(ch, affine=True)
    return nn.Identity()


class DoubleConv(nn.Sequential):
    """[Conv3x3, Norm, ReLU] x 2 (SMPLpix sec. 3.2)."""

    def __init__(self, in_ch: int, out_ch: int, norm: str = "batch", mid_ch: int | None = None):
        mid_ch = mid_ch or out_ch
        bias = norm == "none"
        super().__init__(
            nn.Conv2d(in_ch, mid_ch, 3, padding=1, bias=bias),
            make_norm(norm, mid_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_ch, out_ch, 3, padding=1, bias=bias),
            make_norm(norm, out_ch),
            nn.ReLU(inplace=True),
        )


class Down(nn.Module):
    """downconv: MaxPool(2) then DoubleConv."""

    def __init__(self, in_ch: int, out_ch: int, norm: str):
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.conv = DoubleConv(in_ch, out_ch, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))


def resize_to(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize ``x (B,C,h,w)`` to ``size``; bilinear uses half-pixel centres (align_corners=False)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


class Up(nn.Module):
    """upconv: resize to the skip's size, concatenate the skip, DoubleConv."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, norm: str, mode: str):
        super().__init__()
        self.mode = mode
        self.conv = DoubleConv(in_ch + skip_ch, out_ch, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = resize_to(x, skip.shape[-2:], self.mode)
        return self.conv(torch.cat([skip, x], dim=1))


def level_widths(width: int, depth: int, max_width: int) -> list[int]:
    """Channels of levels 0..depth: ``min(width * 2**i, max_width)``."""
    return [min(width * 2 ** i, max_width) for i in range(depth + 1)]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad ``x`` on the bottom/right to a multiple of ``multiple``; returns the original (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


class UNet(nn.Module):
    """Generic UNet returning raw (linear) outputs ``(B, out_ch, H, W)`` for any H, W.

    ``depth`` levels of :class:`Down` / :class:`Up`, 1x1 output conv. With depth 4,
    BatchNorm and bilinear up this is SMPLpix's G (sec. 3.2); ANR's R1/R2 use depth 2-3.
    """

    def __init__(self, in_ch: int, out_ch: int, width: int = 32, depth: int = 4,
                 norm: str = "batch", up: str = "bilinear", max_width: int = 512):
        super().__init__()
        self.in_ch, self.out_ch, self.depth = in_ch, out_ch, depth
        ws = level_widths(width, depth, max_width)
        self.inc = DoubleConv(in_ch, ws[0], norm)
        self.downs = nn.ModuleList(Down(ws[i], ws[i + 1], norm) for i in range(depth))
        self.ups = nn.ModuleList(
            Up(ws[i + 1], ws[i], ws[i], norm, up) for i in reversed(range(depth))
        )
        self.outc = nn.Conv2d(ws[0], out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_ch:
            raise ValueError(f"UNet expects (B,{self.in_ch},H,W), got {tuple(x.shape)}")
        x, (h, w) = pad_to_multiple(x, 2 ** self.depth)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        return self.outc(y)[..., :h, :w]


class SMPLpixUNet(nn.Module):
    """SMPLpix renderer G_Theta: P_X -> I_X (eq. 5).

    Input: the RGB-D vertex projection image P_X (eq. 3-4), ``(B, in_ch, H, W)``.
    Output ``(B, out_ch, H, W)``: channels 0-2 are sigmoid RGB in [0, 1]; with
    ``out_ch == 4`` channel 3 is the soft-mask *logit* (apply a sigmoid for the mask; kept
    as a logit so a BCE-with-logits loss stays stable under autocast).
    """

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        cfg.validate()
        if cfg.out_ch not in (3, 4):
            raise ValueError(f"SMPLpixUNet outputs RGB (3) or RGB + mask (4) channels, not {cfg.out_ch}")
        self.cfg = cfg
        self.unet = UNet(cfg.in_ch, cfg.out_ch, cfg.width, cfg.depth, cfg.norm, cfg.up, cfg.max_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.unet(x)
        rgb = torch.sigmoid(y[:, :3])
        if self.cfg.out_ch == 4:
            return torch.cat([rgb, y[:, 3:4]], dim=1)
        return rgb
