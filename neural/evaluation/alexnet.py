"""The ST-LPIPS AlexNet metric: a perceptual distance independent of the training loss.

Training uses the shift-tolerant VGG16 trunk (``neural/training/vgg.py``) for its perceptual
loss; measuring with the same trunk would reward a network for fooling exactly the features it
was optimised on. The evaluation therefore uses another network: the shift-tolerant **AlexNet**
of stlpips-pytorch 0.0.2 (``stlpips_pytorch/weights/vST0.0/alex_shift_tolerant.pth``, BSD-2:
the trunk, its ScalingLayer and the five linear heads in one file, trained together by
Ghildyal & Liu 2022 on the BAPPS judgements). The file is found with ``find_spec`` without
importing the package (it imports torchvision) and read with ``torch.load(weights_only=True)``
under an exact key/shape allow-list.

Architecture (``invariant_networks.alexnet(variant='shift_tolerant')``): conv11x11 stride 1 →
BlurPool → ReLU (relu1) → MaxPool3 s1 → BlurPool → conv5x5 → ReLU (relu2) → MaxPool3 s1 →
BlurPool → conv3x3 → ReLU (relu3) → conv3x3 → ReLU (relu4) → conv3x3 → ReLU (relu5), BlurPool =
reflect-pad 2 px + depthwise [1,2,1]²/16 stride 2. Distance: LPIPS eq. 1 (Zhang et al. 2018),
``d = Σ_l mean_hw ‖w_l ⊙ (φ̂_l(x) − φ̂_l(y))‖²`` with channel-normalised features φ̂_l.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import NeuralAvatarError

CHANNELS = (64, 192, 384, 256, 256)
#: name -> shape of every tensor the weight file must hold (and nothing else)
_SHAPES = {
    "scaling_layer.shift": (1, 3, 1, 1), "scaling_layer.scale": (1, 3, 1, 1),
    "net.slice1.0.weight": (64, 3, 11, 11), "net.slice1.0.bias": (64,), "net.slice1.1.filt": (64, 1, 3, 3),
    "net.slice2.4.filt": (64, 1, 3, 3), "net.slice2.5.weight": (192, 64, 5, 5), "net.slice2.5.bias": (192,),
    "net.slice3.8.filt": (192, 1, 3, 3), "net.slice3.9.weight": (384, 192, 3, 3), "net.slice3.9.bias": (384,),
    "net.slice4.11.weight": (256, 384, 3, 3), "net.slice4.11.bias": (256,),
    "net.slice5.13.weight": (256, 256, 3, 3), "net.slice5.13.bias": (256,),
    **{f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate(CHANNELS)},
}
#: smallest input side (the reflect padding must stay smaller than the deepest map)
MIN_SIDE = 48


def weights_path() -> Optional[str]:
    from ..training.vgg import package_file

    return package_file("stlpips_pytorch", "weights", "vST0.0", "alex_shift_tolerant.pth")


def _blur(x: torch.Tensor, filt: torch.Tensor) -> torch.Tensor:
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), filt, stride=2, groups=x.shape[1])


class STAlexTrunk(nn.Module):
    """The shift-tolerant AlexNet trunk (with its ScalingLayer): RGB in [0, 1] → the 5 ReLU maps."""

    source = ("ST-LPIPS AlexNet (shift-tolerant): stlpips-pytorch 0.0.2 trunk + its own linear heads "
              "(stlpips_pytorch/weights/vST0.0/alex_shift_tolerant.pth); the training loss uses the VGG16 trunk")

    def __init__(self, sd: Dict[str, torch.Tensor]):
        super().__init__()
        for k, shape in _SHAPES.items():
            if k not in sd or tuple(sd[k].shape) != shape:
                raise NeuralAvatarError(f"The AlexNet LPIPS weights lack '{k}' of shape {shape}.")
        extra = sorted(set(sd) - set(_SHAPES))
        if extra:
            raise NeuralAvatarError(f"The AlexNet LPIPS weights hold unexpected tensors {extra[:3]}.")
        for k, v in sd.items():
            if not k.startswith("lin"):
                self.register_buffer(k.replace(".", "_"), v.detach().float().clone())

    def _b(self, k: str) -> torch.Tensor:
        return getattr(self, k.replace(".", "_"))

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        if min(x.shape[-2:]) < MIN_SIDE:
            s = MIN_SIDE / min(x.shape[-2:])
            size = (max(MIN_SIDE, round(x.shape[-2] * s)), max(MIN_SIDE, round(x.shape[-1] * s)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        b = self._b
        x = (2.0 * x - 1.0 - b("scaling_layer.shift")) / b("scaling_layer.scale")
        h = F.conv2d(x, b("net.slice1.0.weight"), b("net.slice1.0.bias"), padding=2)
        h = F.relu(_blur(h, b("net.slice1.1.filt")))
        f1 = h
        h = _blur(F.max_pool2d(h, 3, 1), b("net.slice2.4.filt"))
        h = F.relu(F.conv2d(h, b("net.slice2.5.weight"), b("net.slice2.5.bias"), padding=2))
        f2 = h
        h = _blur(F.max_pool2d(h, 3, 1), b("net.slice3.8.filt"))
        h = F.relu(F.conv2d(h, b("net.slice3.9.weight"), b("net.slice3.9.bias"), padding=1))
        f3 = h
        h = F.relu(F.conv2d(h, b("net.slice4.11.weight"), b("net.slice4.11.bias"), padding=1))
        f4 = h
        h = F.relu(F.conv2d(h, b("net.slice5.13.weight"), b("net.slice5.13.bias"), padding=1))
        return [f1, f2, f3, f4, h]


def load(device: torch.device):
    """The ST-LPIPS AlexNet metric: :class:`STAlexTrunk` + its heads in ``metrics.LPIPSModel``."""
    p = weights_path()
    if p is None:
        raise NeuralAvatarError("The LPIPS metric needs stlpips-pytorch==0.0.2's AlexNet weights "
                                "(pip install stlpips-pytorch==0.0.2 --no-deps).")
    from ...common.guards import check_bytes
    import os

    check_bytes(os.path.getsize(p), "AlexNet LPIPS weights")
    sd = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict):
        raise NeuralAvatarError("The AlexNet LPIPS weights are not a state dict.")
    from .metrics import LPIPSModel

    trunk = STAlexTrunk(sd)
    heads = [sd[f"lin{k}.model.1.weight"] for k in range(len(CHANNELS))]
    return LPIPSModel(trunk, heads, STAlexTrunk.source, channels=CHANNELS).to(device).eval()
