"""VGG16 convolutional feature extractor in plain torch (no torchvision: it does not
import with the CPU torch build used here).

Used by the perceptual losses (SMPLpix eq. 6, ANR eq. 5) and by the LPIPS-style metric.
Weights are only ever read from local files, never downloaded:

1. ``$NEURAL_AVATAR_VGG16`` if set (a torchvision ``vgg16`` state dict ``.pth``);
2. the user's torch hub cache ``<torch.hub.get_dir()>/checkpoints/vgg16-*.pth``
   (torchvision's ImageNet VGG16, ``features.N.weight`` keys) -> architecture ``"standard"``;
3. the VGG16 trunk that ``stlpips-pytorch==0.0.2`` ships
   (``stlpips_pytorch/weights/vST0.0/vgg_shift_tolerant.pth``, BSD-2) -> architecture
   ``"shift_tolerant"``. The file is located with ``importlib.util.find_spec`` without importing
   the package (its ``import torchvision`` fails here) and read with
   ``torch.load(weights_only=True)``.

Shift-tolerant layer sequence (read from ``stlpips_pytorch/invariant_networks.py`` ``vggnet``,
variant ``shift_tolerant``, built by ``models_lpf/vgg.py`` ``vgg16(filter_size=3, pad_more=True)``):
every VGG ``MaxPool2d(2, stride=2)`` is replaced by ``MaxPool2d(2, stride=1)`` followed by an
anti-aliasing *BlurPool* ``Downsample``: reflect-pad 2 px on every side, then a depthwise 3x3
binomial filter ``[1,2,1]x[1,2,1]/16`` with stride 2. The 13 conv layers (3x3, padding 1) and
ReLUs are the usual VGG16 ones. Its state dict keys are ``net.slice{s}.{i}.weight`` with conv
indices 0,2 | 6,8 | 12,14,16 | 20,22,24 | 28,30,32 and blur filters ``net.slice{s}.{i}.filt``;
the file also carries the ST-LPIPS linear heads ``lin{k}.model.1.weight`` (used by
:mod:`.metrics`). The features come out at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in both
architectures; the shift-tolerant ones are one pixel larger after each pooling stage.

Inputs are RGB in [0, 1]; ImageNet normalisation (mean 0.485/0.456/0.406, std
0.229/0.224/0.225) happens inside :class:`VGG16Features` (it equals LPIPS' ScalingLayer on
[-1, 1] inputs).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import threading
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import NeuralAvatarError

__all__ = [
    "VGG16Features",
    "load_vgg16",
    "find_vgg16_weights",
    "LAYER_NAMES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

#: Names of the returned feature maps, in order.
LAYER_NAMES = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
#: Channels of the returned feature maps.
LAYER_CHANNELS = (64, 128, 256, 512, 512)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# VGG16 configuration "D": numbers are conv output channels, "M" a pooling stage.
_CFG_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# conv index (0..12) after whose ReLU a feature is returned (relu1_2 ... relu5_3).
_TAP_CONVS = (1, 3, 6, 9, 12)
# torchvision ``features`` indices of the 13 convs.
_TV_CONV_IDX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
# stlpips shift-tolerant (slice, index) of the 13 convs.
_ST_CONV_IDX = (
    (1, 0), (1, 2), (2, 6), (2, 8), (3, 12), (3, 14), (3, 16),
    (4, 20), (4, 22), (4, 24), (5, 28), (5, 30), (5, 32),
)
#: Smallest input side the shift-tolerant trunk accepts (reflect padding of 2 px must stay
#: smaller than the deepest map); smaller inputs are bilinearly upsampled first.
MIN_SIDE = 32


class BlurPool(nn.Module):
    """Anti-aliased downsampling (Zhang 2019, "Making convolutional networks shift-invariant
    again"): reflect-pad ``pad`` px, depthwise binomial [1,2,1]^2/16 filter, stride 2."""

    def __init__(self, channels: int, pad: int = 2):
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        k = (a[:, None] * a[None, :]) / 16.0
        self.register_buffer("filt", k[None, None].repeat(channels, 1, 1, 1), persistent=False)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad,) * 4, mode="reflect")
        return F.conv2d(x, self.filt, stride=2, groups=x.shape[1])


class VGG16Features(nn.Module):
    """VGG16 conv trunk returning ``[relu1_2, relu2_2, relu3_3, relu4_3, relu5_3]``.

    ``architecture`` is ``"standard"`` (torchvision layout: max-pool 2x2 stride 2) or
    ``"shift_tolerant"`` (stlpips: max-pool 2x2 stride 1 + BlurPool). Parameters are frozen
    (``requires_grad=False``); gradients still flow to the *input*, as a perceptual loss needs.
    """

    def __init__(self, architecture: str = "standard"):
        super().__init__()
        if architecture not in ("standard", "shift_tolerant"):
            raise ValueError(f"unknown VGG16 architecture {architecture!r}")
        self.architecture = architecture
        self.convs = nn.ModuleList()
        self.pools = nn.ModuleList()
        cin = 3
        for v in _CFG_D:
            if v == "M":
                if architecture == "standard":
                    self.pools.append(nn.MaxPool2d(2, 2))
                else:
                    self.pools.append(nn.Sequential(nn.MaxPool2d(2, 1), BlurPool(cin, pad=2)))
            else:
                self.convs.append(nn.Conv2d(cin, int(v), 3, padding=1))
                cin = int(v)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # noqa: D102 - always stays in eval mode (no BN/dropout anyway)
        return super().train(False)

    def forward(self, x: torch.Tensor, num_layers: int = 5) -> List[torch.Tensor]:
        """x (B,3,H,W) RGB in [0,1] -> list of ``num_layers`` feature maps (relu1_2 first)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"VGG16 expects (B,3,H,W) RGB, got {tuple(x.shape)}")
        if self.architecture == "shift_tolerant" and min(x.shape[-2:]) < MIN_SIDE:
            s = MIN_SIDE / min(x.shape[-2:])
            size = (max(MIN_SIDE, round(x.shape[-2] * s)), max(MIN_SIDE, round(x.shape[-1] * s)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        h = (x - self.mean) / self.std
        feats: List[torch.Tensor] = []
        ci = 0
        pi = 0
        for v in _CFG_D:
            if v == "M":
                h = self.pools[pi](h)
                pi += 1
            else:
                h = F.relu(self.convs[ci](h))
                if ci in _TAP_CONVS:
                    feats.append(h)
                    if len(feats) == num_layers:
                        return feats
                ci += 1
        return feats


# --------------------------------------------------------------------------- weights


def package_file(package: str, *parts: str) -> Optional[str]:
    """Path of a data file shipped inside an installed package, located with ``find_spec``
    without importing the package (stlpips and lpips import torchvision, which fails here)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = os.path.join(loc, *parts)
        if os.path.isfile(p):
            return p
    return None


def _stlpips_weights_path() -> Optional[str]:
    return package_file("stlpips_pytorch", "weights", "vST0.0", "vgg_shift_tolerant.pth")


def _torch_cache_paths() -> List[str]:
    dirs = []
    try:
        dirs.append(os.path.join(torch.hub.get_dir(), "checkpoints"))
    except Exception:  # pragma: no cover - get_dir never fails in practice
        pass
    dirs.append(os.path.join(os.path.expanduser("~"), ".cache", "torch", "hub", "checkpoints"))
    out: List[str] = []
    for d in dirs:
        for p in sorted(glob.glob(os.path.join(d, "vgg16-*.pth"))):
            if p not in out:
                out.append(p)
    return out


def find_vgg16_weights() -> List[Tuple[str, str]]:
    """Candidate weight files, best first, as ``(path, kind)`` with kind ``"torchvision"`` or
    ``"stlpips"``. Only checks that files exist; nothing is read."""
    cands: List[Tuple[str, str]] = []
    env = os.environ.get("NEURAL_AVATAR_VGG16")
    if env and os.path.isfile(env):
        cands.append((env, "torchvision"))
    cands += [(p, "torchvision") for p in _torch_cache_paths()]
    st = _stlpips_weights_path()
    if st:
        cands.append((st, "stlpips"))
    return cands


def _map_state_dict(sd: Dict[str, torch.Tensor], kind: str) -> Dict[str, torch.Tensor]:
    out: Dict[str, torch.Tensor] = {}
    for k in range(13):
        if kind == "torchvision":
            src = f"features.{_TV_CONV_IDX[k]}"
        else:
            s, i = _ST_CONV_IDX[k]
            src = f"net.slice{s}.{i}"
        for leaf in ("weight", "bias"):
            key = f"{src}.{leaf}"
            if key not in sd:
                raise NeuralAvatarError(
                    f"VGG16 weight file lacks '{key}': it is not a {kind} VGG16 state dict")
            out[f"convs.{k}.{leaf}"] = sd[key].float()
    return out


_CACHE: Dict[str, Tuple[Dict[str, torch.Tensor], str, str, Dict[str, torch.Tensor]]] = {}
_LOCK = threading.Lock()


def _load_file(path: str, kind: str):
    """Read + map one weight file (cached): returns (conv state dict, architecture, source,
    raw extra tensors such as stlpips' lin heads)."""
    with _LOCK:
        if path in _CACHE:
            return _CACHE[path]
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # corrupt / not a state dict
            raise NeuralAvatarError(f"cannot read VGG16 weights {os.path.basename(path)}: {e}") from e
        if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        if not isinstance(sd, dict):
            raise NeuralAvatarError(f"VGG16 weights {os.path.basename(path)} are not a state dict")
        mapped = _map_state_dict(sd, kind)
        arch = "standard" if kind == "torchvision" else "shift_tolerant"
        if kind == "torchvision":
            source = f"torchvision ImageNet VGG16 ({os.path.basename(path)}, torch hub cache)"
        else:
            source = ("stlpips-pytorch 0.0.2 shift-tolerant VGG16 "
                      "(stlpips_pytorch/weights/vST0.0/vgg_shift_tolerant.pth)")
        extra = {k: v.float() for k, v in sd.items() if k.startswith("lin")}
        _CACHE[path] = (mapped, arch, source, extra)
        return _CACHE[path]


def load_vgg16(required: bool = False, device: str | torch.device = "cpu"
               ) -> Tuple[Optional[VGG16Features], str]:
    """Build a frozen :class:`VGG16Features` from the first usable local weight file.

    Returns ``(model, source)``; ``source`` names the file used. When no file is found (or
    none loads) it returns ``(None, reason)`` or, with ``required=True``, raises
    :class:`NeuralAvatarError`. Each call returns a fresh module (weights are cached in memory).
    """
    errors: List[str] = []
    for path, kind in find_vgg16_weights():
        try:
            mapped, arch, source, _ = _load_file(path, kind)
        except NeuralAvatarError as e:
            errors.append(str(e))
            continue
        model = VGG16Features(arch)
        model.load_state_dict(mapped, strict=True)
        return model.to(device), source
    reason = ("no VGG16 weights found (looked for $NEURAL_AVATAR_VGG16, "
              "~/.cache/torch/hub/checkpoints/vgg16-*.pth and the stlpips-pytorch package)")
    if errors:
        reason += "; " + "; ".join(errors)
    if required:
        raise NeuralAvatarError(reason)
    return None, reason


def stlpips_lin_heads() -> Optional[Dict[str, torch.Tensor]]:
    """The ST-LPIPS linear heads (``lin0..lin4``, shapes (1,C,1,1)) stored next to the
    shift-tolerant trunk, or None when stlpips-pytorch is not installed."""
    p = _stlpips_weights_path()
    if p is None:
        return None
    _, _, _, extra = _load_file(p, "stlpips")
    return extra
