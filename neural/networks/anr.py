"""The two-stage ANR renderer (Raj et al., "ANR: Articulated Neural Rendering for Virtual
Avatars", CVPR 2021, sec. 3.2, eq. 2):

    M-hat, I-hat, J-hat = R2( R1(T, I_uv), I_norm )

R1 maps the neural image (the neural texture T sampled through the rasterised UV image
I_uv) to a refined latent image whose first three channels J-hat are supervised as RGB
(eq. 3); the rasterised view-space normal image I_norm is concatenated to R1's output and
R2 predicts RGB I-hat and a single-channel soft mask M-hat in [0, 1]. The output is blended
over the background B: I-hat' = M-hat * I-hat + (1 - M-hat) * B (sec. 3.3). R1 and R2 are
shallow UNets (resize + conv up, no transposed convs) at the output resolution.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import AnrConfig
from .unet import UNet


def composite(rgb: torch.Tensor, mask: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """ANR's blend I' = M * I + (1 - M) * B (sec. 3.3).

    ``rgb (B,3,H,W)``, ``mask (B,1,H,W)``, ``background`` (3,), (B,3) or (B,3,H,W).
    """
    bg = background.to(device=rgb.device, dtype=rgb.dtype)
    if bg.ndim == 1:
        bg = bg.view(1, -1, 1, 1)
    elif bg.ndim == 2:
        bg = bg[:, :, None, None]
    return mask * rgb + (1.0 - mask) * bg


class AnrRenderer(nn.Module):
    """R1 -> [concat I_norm] -> R2 (ANR eq. 2)."""

    def __init__(self, cfg: AnrConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.r1 = UNet(cfg.texture_channels, cfg.latent_channels, cfg.r1_width, cfg.r1_depth, cfg.norm)
        r2_in = cfg.latent_channels + (3 if cfg.use_normals else 0)
        self.r2 = UNet(r2_in, 4, cfg.r2_width, cfg.r2_depth, cfg.norm)

    @property
    def in_channels(self) -> int:
        return self.cfg.texture_channels

    def forward(self, neural_image: torch.Tensor, normals: torch.Tensor | None = None,
                background: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``neural_image (B,C,H,W)`` (texture sampled through I_uv, 0 off the body),
        ``normals (B,3,H,W)`` view-space unit normals (0 off the body; required when
        ``use_normals``), ``background`` as in :func:`composite` (default: black).

        Returns ``rgb`` (composited, eq. I'), ``rgb_fg`` (I-hat before blending),
        ``mask`` (M-hat), ``mask_logit``, ``aux_rgb`` (J-hat = sigmoid of R1's first three
        channels) and ``latent`` (R1's output)."""
        latent = self.r1(neural_image)
        x = latent
        if self.cfg.use_normals:
            if normals is None:
                raise ValueError("this ANR renderer was configured with use_normals=True and needs a normal image")
            x = torch.cat([latent, normals.to(latent.dtype)], dim=1)
        y = self.r2(x)
        rgb_fg = torch.sigmoid(y[:, :3])
        mask_logit = y[:, 3:4]
        mask = torch.sigmoid(mask_logit)
        if background is None:
            background = torch.zeros(3, device=y.device)
        return {
            "rgb": composite(rgb_fg, mask, background),
            "rgb_fg": rgb_fg,
            "mask": mask,
            "mask_logit": mask_logit,
            "aux_rgb": torch.sigmoid(latent[:, :3]),
            "latent": latent,
        }
