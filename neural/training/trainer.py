"""Training of the three avatars on a capture folder (``DATASET_FORMAT.md``).

Schedules and losses follow the papers:

* ``VERTEX_PROJECTION`` (SMPLpix, sec. 3.3): stage 1 - Adam(1e-4) on the multi-layer VGG
  L1 loss (eq. 6); stage 2 - Adam *restarted* at 1e-5 plus the 3-scale PatchGAN loss and
  0.1 x feature matching (eq. 7), discriminator conditioned on the RGB-D input (pix2pixHD).
  The paper's 100 + 100 epochs become ``stage1_fraction * steps`` + the rest.
  Our avatar also predicts a soft mask, supervised by BCE (ANR eq. 4); the VGG/GAN terms see
  the image composited over the background.
* ``NEURAL_TEXTURE`` (ANR, sec. 3.3-3.4, eq. 3-10): pixel loss (eq. 3, L1 on R2's RGB and
  R1's auxiliary RGB weighted by the predicted mask, detached), mask BCE (eq. 4), VGG feature
  loss on the blended image (eq. 5), TV on the neural texture (and small TV on blended image
  and mask, eq. 6), multi-scale adversarial loss (eq. 7); UV sampling grid jitter U[-0.02,
  0.02] (grid units, clamped); split optimisation: even steps train texture + renderer on
  coverage keyframes (eq. 10), odd steps the renderer only on the other frames (eq. 9);
  multi-identity: one texture per identity (same U[-1,1] initialisation), shared renderer,
  one identity per step chosen at random; augmentation by random rescale [0.5, 1.25] + crop.
* ``GAUSSIAN_BONES`` (HumanViewSynthesis, sec. III-D/IV): 10 x L1 (eq. 17) + 10 x VGG
  perceptual + 1e-3 x ||a||^2 appearance regulariser (eq. 20-21) + mask BCE; AdamW(2e-3,
  weight decay 0.1 on the network); per-limb appearance vectors per identity + style UNet.

Checkpoints (``OUT/last.ckpt``, ``OUT/best.ckpt`` on the validation PSNR inside the body's
bounding box) are written atomically (temp file + ``os.replace``) and hold only tensors and
plain containers, so they load with ``torch.load(weights_only=True)``: model, discriminator,
per-identity banks, optimisers, schedulers, RNG states (torch, numpy, python as tensors),
step. ``resume`` continues exactly (the loss of step s+1 equals the uninterrupted run's).
Per-step randomness of the data pipeline (frame choice, augmentation) is keyed by
``(seed, step)``, so it is also independent of the number of processes.

Multi-process: launched by ``torchrun`` (env ``WORLD_SIZE``/``RANK``), gloo on CPU / nccl on
CUDA. Every rank draws the same global batch and takes its shard ``positions[rank::world]``;
after backward the gradients are averaged with ``all_reduce`` (the DDP reduction, done
explicitly because per-identity parameters are swapped in with ``torch.func.functional_call``
and split optimisation leaves parameter groups unused on some steps). Parameters are
broadcast from rank 0 at start. BatchNorm statistics are per rank (as with DDP's default);
on CUDA the networks are converted to SyncBatchNorm.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from ...errors import DatasetError, NeuralAvatarError
from ...common.guards import float_in, int_in
from ..config import GAUSSIAN_BONES, MODES, NEURAL_TEXTURE, PIXEL_ALIGNED, VERTEX_PROJECTION, AvatarConfig
from .losses import (
    MultiScalePatchDiscriminator,
    VGGPerceptualLoss,
    feature_matching_loss,
    gan_d_loss,
    gan_g_loss,
    l1,
    tv_loss,
)

__all__ = ["TrainConfig", "train", "main", "load_checkpoint", "CKPT_FORMAT"]

CKPT_FORMAT = "neural_avatar.train_ckpt/1"

#: the TrainConfig field holding each mode's perceptual (VGG) weight (``train --vgg-weight``)
VGG_WEIGHT_FIELD = {GAUSSIAN_BONES: "w_vgg_hvs", PIXEL_ALIGNED: "w_pixel_vgg"}


def vgg_weight_field_name(mode: str) -> str:
    """The :class:`TrainConfig` field of ``mode``'s perceptual weight (SMPLpix / ANR: ``w_vgg``)."""
    return VGG_WEIGHT_FIELD.get(mode, "w_vgg")


#: the TrainConfig field holding each mode's image L1 weight (``train --pixel-weight``): SMPLpix's
#: optional L1 beside eq. 6, ANR's eq. 3 pixel loss, HVS's eq. 17; AniPixel's is not exposed
PIXEL_WEIGHT_FIELD = {VERTEX_PROJECTION: "w_pixel_vp", NEURAL_TEXTURE: "w_pixel", GAUSSIAN_BONES: "w_pixel_hvs"}


def pixel_weight_field_name(mode: str) -> Optional[str]:
    """The :class:`TrainConfig` field of ``mode``'s image L1 weight, or None (AniPixel)."""
    return PIXEL_WEIGHT_FIELD.get(mode)


@dataclass
class TrainConfig:
    """Settings of one training run (``python -m neural_avatar train`` maps its flags here)."""

    data: str
    """Capture folder in the ``neural_avatar.capture/1`` format."""
    mode: str
    """VERTEX_PROJECTION (SMPLpix), NEURAL_TEXTURE (ANR) or GAUSSIAN_BONES (HumanViewSynthesis)."""
    out: str
    """Output folder: metrics.jsonl, last.ckpt, best.ckpt, val/ images, loss.png, avatar.safetensors/.json."""
    steps: int = 2000
    """Total optimisation steps (SMPLpix: 100+100 epochs in the paper, scaled to this)."""
    res: Optional[int] = None
    """Training resolution (longer image side); None = the capture's."""
    batch: int = 4
    """Global batch size (split across processes; SMPLpix used 10)."""
    lr: Optional[float] = None
    """Network learning rate; None = the paper's (SMPLpix 1e-4, ANR 2e-4, HVS 2e-3)."""
    lr_identity: Optional[float] = None
    """Learning rate of per-identity parameters (texture, appearance); None = mode default (ANR 1e-3, HVS = lr)."""
    lr_stage2: float = 1e-5
    """SMPLpix stage-2 learning rate (Adam restarted, eq. 7)."""
    stage1_fraction: float = 0.5
    """SMPLpix: fraction of the steps in stage 1 (100 of 200 epochs in the paper)."""
    use_gan: Optional[bool] = None
    """Adversarial loss; None = mode default (SMPLpix stage 2: yes, ANR: yes, HVS: no)."""
    color_augment: str = "none"
    """SMPLpix on several people: 'permute' or 'hue' (neural/training/color_augment.py). With
    probability ``color_augment_p`` a step transforms the linear albedo of the input vertex
    colours and the target image alike, so the network paints the colours it is given instead of
    memorising the training people's palettes (unseen subjects)."""
    color_augment_p: float = 0.5
    color_permute: bool = False
    """Alias of ``color_augment='permute'`` (earlier bundles' training records)."""
    gan_loss: str = "lsgan"
    """'lsgan' (pix2pixHD) or 'hinge'."""
    gan_weight: float = 1.0
    """Weight of the generator's adversarial loss."""
    fm_weight: float = 0.1
    """Feature-matching weight (SMPLpix eq. 7: 0.1)."""
    disc_lr: Optional[float] = None
    """Discriminator learning rate; None = the generator's current one."""
    disc_width: int = 64
    """Channels of the first discriminator layer (pix2pixHD ndf)."""
    w_pixel: float = 1.0
    """ANR eq. 3 pixel-loss weight (HVS uses 10 via w_pixel_hvs)."""
    w_vgg: float = 1.0
    """Perceptual (VGG) loss weight for SMPLpix (eq. 6) and ANR (eq. 5); ``train --vgg-weight``."""
    w_mask: float = 1.0
    """Mask BCE weight (ANR eq. 4)."""
    w_pixel_vp: float = 0.0
    """SMPLpix: weight of an image L1 term beside eq. 6 (whose only pixel term is the 1/32-weighted
    image level of the VGG pyramid, which lets colours drift where the perceptual terms cannot
    tell them apart); 0 = the paper's loss."""
    w_tv_texture: float = 0.01
    """TV weight on the neural texture (ANR)."""
    w_tv_image: float = 0.001
    """TV weights beta_I = beta_m on the blended image and mask (ANR eq. 6)."""
    w_aux: float = 1.0
    """Weight of the R1 auxiliary-RGB term of ANR eq. 3."""
    w_pixel_hvs: float = 10.0
    #: AniPixel eq. 8 weights (the paper defers them to its supplement) and phase 1's share
    w_pixel_mask: float = 0.1
    w_pixel_eikonal: float = 0.05
    w_pixel_shape: float = 0.5
    w_pixel_vgg: float = 0.1
    w_pixel_disp: float = 1.0
    phase1_fraction: float = 0.2
    source_views: int = 3
    """HVS lambda_I (eq. 21)."""
    w_vgg_hvs: float = 10.0
    """HVS lambda_phi (eq. 21)."""
    w_appearance: float = 1e-3
    """HVS lambda_a appearance regulariser (eq. 20-21)."""
    weight_decay_hvs: float = 0.1
    """HVS AdamW weight decay on the network."""
    uv_jitter: float = 0.02
    """ANR sampling-grid jitter amplitude (grid units in [-1,1]); 0 disables."""
    split_optimization: bool = True
    """ANR keyframe split optimisation (eq. 9-10)."""
    keyframe_fraction: float = 0.1
    """ANR: share of training frames used as texture keyframes (< 10 % in the paper)."""
    augment: Optional[bool] = None
    """Random rescale + crop; None = mode default (ANR yes; every mode when training on patches)."""
    scale_range: Optional[List[float]] = None
    """Range of the random rescale; None = ANR's [0.5, 1.25] on whole frames, [0.5, 1.0] on patches
    (the engine renders a body from half to the full capture scale)."""
    patch: Optional[int] = None
    """Train on ``patch`` x ``patch`` windows of the frames around the body, at the capture's pixel
    scale (``CaptureDataset(patch=...)``): the cost of a step follows the patch, the scale the
    avatar learns follows the capture. None = whole frames at ``res``."""
    w_haze: float = 1.0
    """Weight of the haze penalty: mean predicted alpha outside the dilated ground-truth silhouette
    (the VERTEX_PROJECTION veil / NEURAL_TEXTURE halo at their source; the ``haze`` metric)."""
    precision: str = "fp32"
    """'fp32' or 'bf16' (CPU/CUDA autocast of the networks and losses; the optimiser state stays fp32)."""
    fit_identity: Optional[str] = None
    """Fit a new identity with the renderer frozen (ANR's fitting of a new person; HVS appearance
    vectors likewise): ``init`` is the trained bundle, only the identity's own parameters (ANR:
    the neural texture, freshly initialised) are optimised on this capture, BatchNorm statistics
    stay frozen, no adversarial term; the result is ``init``'s identities plus this name."""
    frames_limit: int = 0
    """Train on at most this many frames of the train split, evenly spaced (fitting from K frames); 0 = all."""
    time_limit_s: float = 0.0
    """End the run normally (validation, bundle) once this many seconds have passed; 0 = no limit.
    Recipes with a wall-clock budget (the GPU recipe's 10 minutes) use it."""
    init: Optional[str] = None
    """A bundle (.json or .safetensors) of the same mode whose weights start the run (coarse-to-fine:
    a low-resolution avatar refined at the capture's scale). Tensors whose shapes differ are skipped."""
    perceptual: str = "auto"
    """'auto' (VGG16 if weights exist, else L1+MS-SSIM), 'vgg' (require VGG16) or 'l1_msssim'."""
    seed: int = 0
    """Seed of initialisation and of the per-step data randomness."""
    log_every: int = 10
    """Write a metrics.jsonl line / progress event every N steps."""
    val_every: int = 200
    """Validate (PSNR/SSIM/LPIPS, images) every N steps and at the end; 0 = only at the end."""
    ckpt_every: int = 200
    """Write last.ckpt every N steps (and at the end / on cancel)."""
    val_frames: int = 8
    """At most this many validation frames per validation."""
    device: str = "cpu"
    """torch device ('cpu', 'cuda', 'cuda:1', ...)."""
    resume: bool = False
    """Continue from OUT/last.ckpt if it exists."""
    avatar: Dict[str, Any] = field(default_factory=dict)
    """Overrides of the AvatarConfig (e.g. {"unet": {"width": 16}}); see neural/config.py."""
    threads: int = 0
    """torch CPU threads (0 = leave torch's default)."""
    body_dir: Optional[str] = None
    """Folder with SMPL/SMPL-H/SMPL-X model files when the capture is not of the default body."""

    def validate(self) -> None:
        if self.mode not in MODES:
            raise NeuralAvatarError(f"Unknown mode {self.mode!r}; use one of {', '.join(MODES)}.")
        if self.steps < 1:
            raise NeuralAvatarError("Training needs at least one step.")
        if self.batch < 1:
            raise NeuralAvatarError("The batch size must be at least 1.")
        if self.perceptual not in ("auto", "vgg", "l1_msssim"):
            raise NeuralAvatarError(f"perceptual must be auto, vgg or l1_msssim, got {self.perceptual!r}.")
        if self.gan_loss not in ("lsgan", "hinge"):
            raise NeuralAvatarError(f"gan_loss must be lsgan or hinge, got {self.gan_loss!r}.")
        if not 0.0 < self.stage1_fraction <= 1.0:
            raise NeuralAvatarError("stage1_fraction must be in (0, 1].")
        if self.fit_identity is not None:
            if not self.init:
                raise NeuralAvatarError("Fitting an identity needs the trained bundle (init) whose renderer it keeps.")
            if self.mode == VERTEX_PROJECTION:
                raise NeuralAvatarError("SMPLpix has nothing to fit for a new person: its input is the person's "
                                        "baked vertex colours. Render the new subject with its own colours instead.")
        if self.precision not in ("fp32", "bf16"):
            raise NeuralAvatarError(f"precision must be fp32 or bf16, got {self.precision!r}.")
        if self.patch is not None and not 16 <= int(self.patch) <= 4096:
            raise NeuralAvatarError(f"The training patch must be 16–4096 pixels, got {self.patch}.")
        if self.scale_range is not None and not (len(self.scale_range) == 2 and
                                                 0.05 <= float(self.scale_range[0]) <= float(self.scale_range[1]) <= 4.0):
            raise NeuralAvatarError(f"scale_range must be two numbers 0.05 ≤ lo ≤ hi ≤ 4, got {self.scale_range}.")
        from .color_augment import MODES as _CA

        if self.color_augment not in _CA:
            raise NeuralAvatarError(f"color_augment must be one of {', '.join(_CA)}, got {self.color_augment!r}.")
        if self.color_permute and self.color_augment == "none":
            self.color_augment = "permute"
        if not 0.0 <= float(self.color_augment_p) <= 1.0:
            raise NeuralAvatarError(f"color_augment_p must be in [0, 1], got {self.color_augment_p}.")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------ helpers


class _Dist:
    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.owns_group = False
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.owns_group = True
        if dist.is_initialized():
            self.world = dist.get_world_size()
            self.rank = dist.get_rank()

    @property
    def active(self) -> bool:
        return self.world > 1

    def mean_(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t /= self.world
        return t

    def sync_grads(self, params) -> None:
        if not self.active:
            return
        for p in params:
            if p.grad is not None:
                self.mean_(p.grad)

    def broadcast_(self, module: nn.Module) -> None:
        if self.active:
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, 0)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _atomic_torch_save(obj, path: Path) -> None:
    """Checkpoints are written like bundles: temp file, fsync, rename (never half-written)."""
    from ..bundle import atomic_write

    atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))


def remove_stale_temp_files(out: Path) -> list:
    """Temp files a killed run left next to its checkpoints and bundles (``.<name>.*.tmp``)."""
    gone = []
    for p in Path(out).glob(".*.tmp"):
        try:
            p.unlink()
            gone.append(p.name)
        except OSError:
            pass
    return gone


def truncate_metrics(path: Path, last_step: int) -> int:
    """Drop metrics.jsonl lines after ``last_step`` (written after the checkpoint a resumed run
    starts from); returns how many were dropped. Unparseable lines (a killed write) go too."""
    if not path.exists():
        return 0
    keep, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
            ok = isinstance(rec, dict) and int(rec.get("step", 0)) <= last_step
        except (ValueError, TypeError):
            ok = False
        if ok:
            keep.append(line)
        else:
            dropped += 1
    if dropped:
        from ..bundle import atomic_write

        atomic_write(path, lambda tmp: Path(tmp).write_text("".join(l + "\n" for l in keep), encoding="utf-8"))
    return dropped


def _rng_state() -> Dict[str, torch.Tensor]:
    """torch / numpy / python RNG states as tensors (weights_only-loadable)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    pv, pstate, pgauss = random.getstate()
    st = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, np.int64)),
        "numpy_meta": torch.tensor([pos, has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([cached], dtype=torch.float64),
        "python_state": torch.tensor(list(pstate), dtype=torch.int64),
        "python_meta": torch.tensor([pv], dtype=torch.int64),
        "python_gauss": torch.tensor([float("nan") if pgauss is None else pgauss], dtype=torch.float64),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.stack(torch.cuda.get_rng_state_all()) if torch.cuda.device_count() else torch.empty(0)
    return st


def _set_rng_state(st: Dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(st["torch"].to(torch.uint8))
    np.random.set_state(("MT19937", st["numpy_keys"].numpy().astype(np.uint32), int(st["numpy_meta"][0]),
                         int(st["numpy_meta"][1]), float(st["numpy_gauss"][0])))
    g = float(st["python_gauss"][0])
    random.setstate((int(st["python_meta"][0]), tuple(int(x) for x in st["python_state"].tolist()),
                     None if math.isnan(g) else g))
    if "cuda" in st and torch.cuda.is_available() and st["cuda"].numel():
        torch.cuda.set_rng_state_all(list(st["cuda"]))


def load_checkpoint(path) -> Dict[str, Any]:
    """Read a training checkpoint safely (``weights_only=True``) and check its format."""
    name = os.path.basename(os.fspath(path))
    try:
        ck = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - worded for the user below
        text = str(e)
        if "weights_only" in text or "Unsupported global" in text or "WeightsUnpickler" in text:
            raise NeuralAvatarError(
                f"The training checkpoint {name} holds Python objects besides tensors; it was not made by "
                "Neural Avatar (or by an old version) and is not loaded, since loading it could run code. "
                "Start the training again without --resume, or in a new output folder.") from None
        raise NeuralAvatarError(f"The training checkpoint {name} cannot be read (damaged or not a checkpoint: "
                                f"{type(e).__name__}).") from None
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
        raise NeuralAvatarError(f"{os.path.basename(os.fspath(path))} is not a neural_avatar training checkpoint.")
    return ck


def _merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _draw_loss_curve(history: List[List[float]], path: Path) -> None:
    """loss.png: log10(loss) over steps, drawn with OpenCV (no matplotlib here)."""
    import cv2

    W, H, m = 640, 360, 48
    img = np.full((H, W, 3), 255, np.uint8)
    cv2.rectangle(img, (m, 16), (W - 16, H - m), (0, 0, 0), 1)
    if len(history) >= 2:
        s = np.array([h[0] for h in history], np.float64)
        y = np.log10(np.maximum(np.array([h[1] for h in history], np.float64), 1e-12))
        x0, x1 = s.min(), max(s.max(), s.min() + 1)
        y0, y1 = y.min(), max(y.max(), y.min() + 1e-6)
        px = m + (s - x0) / (x1 - x0) * (W - 16 - m)
        py = (H - m) - (y - y0) / (y1 - y0) * (H - m - 16)
        pts = np.stack([px, py], 1).round().astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(img, [pts], False, (200, 80, 0), 1, cv2.LINE_AA)
        font = cv2.FONT_HERSHEY_SIMPLEX
        cv2.putText(img, f"{10 ** y1:.3g}", (2, 24), font, 0.35, (0, 0, 0), 1)
        cv2.putText(img, f"{10 ** y0:.3g}", (2, H - m), font, 0.35, (0, 0, 0), 1)
        cv2.putText(img, f"step {int(x0)}", (m, H - m + 18), font, 0.35, (0, 0, 0), 1)
        cv2.putText(img, f"{int(x1)}", (W - 56, H - m + 18), font, 0.35, (0, 0, 0), 1)
        cv2.putText(img, "loss (log scale)", (W // 2 - 60, H - 12), font, 0.45, (0, 0, 0), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


def _to_u8(x: torch.Tensor) -> np.ndarray:
    """(3,H,W) [0,1] RGB -> (H,W,3) BGR uint8."""
    a = x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return np.round(a[:, :, ::-1] * 255).astype(np.uint8)


# ------------------------------------------------------------------------ forward wrapper


class _TrainForward(nn.Module):
    """Runs ``avatar`` for training. For NEURAL_TEXTURE it rebuilds the ANR input with the
    UV sampling-grid jitter of ANR sec. 3.4 (uniform in [-j, j] grid units, i.e. [-j/2, j/2]
    in UV, clamped back to the texture), otherwise it is ``avatar(frame)``. Wrapping lets
    ``torch.func.functional_call`` swap in another identity's parameters."""

    def __init__(self, avatar: nn.Module):
        super().__init__()
        self.avatar = avatar
        self.jitter = 0.0

    def forward(self, frame):
        av = self.avatar
        if av.mode != NEURAL_TEXTURE or self.jitter <= 0.0 or not self.training:
            return av(frame)
        import inspect

        from ..avatar import _check_frame, fp32_inputs

        frame = av.prepare(frame)
        if "uv_jitter" in inspect.signature(av.make_input).parameters:  # avatar supports it itself
            with fp32_inputs(frame.verts.device):
                inputs = av.make_input(frame, uv_jitter=self.jitter)
            return av.run_network(inputs, frame)
        from ..inputs.raster import rasterize, sample_texture

        _check_frame(frame, av.config.num_verts, None)
        use_n = av.config.anr.use_normals
        with fp32_inputs(frame.verts.device):
            ras = rasterize(frame.verts, av.faces, frame.K, frame.R, frame.t, frame.size,
                            uv=av.uv, uv_faces=av.uv_faces, compute_normals=use_n)
        fg = ras.mask[:, 0, ..., None] > 0.5
        noise = (torch.rand_like(ras.uv) * 2.0 - 1.0) * (0.5 * self.jitter)
        uv = torch.where(fg, (ras.uv + noise).clamp(0.0, 1.0), ras.uv)
        neural = sample_texture(av.identity.texture(), uv, background=0.0)
        normals = ras.normals if use_n else None  # camera frame (OpenCV), 0 off the body
        inputs = {"input": neural, "normals": normals, "depth": ras.depth[:, None], "raster_mask": ras.mask}
        return av.run_network(inputs, frame)


# ------------------------------------------------------------------------ trainer


class _Trainer:
    """Mode-specific losses and optimisers around one avatar + identity banks."""

    def __init__(self, cfg: TrainConfig, avatar, num_identities: int, device: torch.device, dd: _Dist):
        self.cfg = cfg
        self.mode = cfg.mode
        self.avatar = avatar
        self.fwd = _TrainForward(avatar)
        self.fwd.jitter = cfg.uv_jitter if self.mode == NEURAL_TEXTURE else 0.0
        self.device = device
        self.dd = dd
        # per-identity parameter banks: identity 0 = the avatar's own parameters
        self.ident_names = [n for n, p in avatar.named_parameters() if n.startswith("identity.") and p.requires_grad]
        own = dict(avatar.named_parameters())
        self.banks: List[Dict[str, nn.Parameter]] = [{n: own[n] for n in self.ident_names}]
        for _ in range(1, num_identities):
            # ANR: the same initialisation for every identity
            self.banks.append({n: nn.Parameter(own[n].detach().clone()) for n in self.ident_names})
        #: per-identity tensors that are data, not learnt (SMPLpix: each subject's baked vertex
        #: colours); swapped in like the banks. Set by train() from the dataset.
        self.fixed: List[Dict[str, torch.Tensor]] = [{} for _ in range(num_identities)]
        if cfg.perceptual == "l1_msssim":
            self.perc = _fallback_perceptual()
        else:
            self.perc = VGGPerceptualLoss(allow_fallback=(cfg.perceptual == "auto"))
        self.perc.to(device)
        use_gan = cfg.use_gan if cfg.use_gan is not None else (
            self.mode in (VERTEX_PROJECTION, NEURAL_TEXTURE) and cfg.fit_identity is None)
        self.disc = None
        if use_gan:
            in_ch = 3 + (avatar.input_channels if self.mode == VERTEX_PROJECTION else 0)
            self.disc = MultiScalePatchDiscriminator(in_ch, cfg.disc_width).to(device)
        self.stage1_steps = max(1, int(round(cfg.steps * cfg.stage1_fraction))) if self.mode == VERTEX_PROJECTION else 0
        self.stage = 1
        self.haze_radius = 1
        self.color_augment = cfg.color_augment
        if self.color_augment != "none" and self.mode == VERTEX_PROJECTION:
            from .color_augment import is_grey

            if not is_grey(avatar.config.background):
                raise NeuralAvatarError(
                    f"Colour augmentation needs a grey training background (it maps grey to itself); this "
                    f"capture's is {tuple(avatar.config.background)}.")
        self.step_count = 0  # AniPixel's phase: masks only for the first phase1_fraction of the steps
        self.phase1_steps = int(round(cfg.steps * cfg.phase1_fraction)) if self.mode == PIXEL_ALIGNED else 0
        self._build_optimizers(stage=1)

    # -- optimisers -----------------------------------------------------------
    def _lr(self) -> float:
        if self.cfg.lr is not None:
            return float(self.cfg.lr)
        return {VERTEX_PROJECTION: 1e-4, NEURAL_TEXTURE: 2e-4, GAUSSIAN_BONES: 2e-3, PIXEL_ALIGNED: 5e-4}[self.mode]

    def _build_optimizers(self, stage: int) -> None:
        cfg = self.cfg
        lr = self._lr() if stage == 1 else cfg.lr_stage2
        net = self.avatar.network_parameters()
        ident = [p for b in self.banks for p in b.values()]
        self.opts: Dict[str, torch.optim.Optimizer] = {}
        if not net:  # fitting an identity: train() froze the renderer
            lr_id = cfg.lr_identity if cfg.lr_identity is not None else (1e-3 if self.mode == NEURAL_TEXTURE else lr)
            self.opts["identity"] = torch.optim.Adam(ident, lr=lr_id)
        elif self.mode == GAUSSIAN_BONES:
            lr_id = cfg.lr_identity if cfg.lr_identity is not None else lr
            self.opts["net"] = torch.optim.AdamW(net, lr=lr, weight_decay=cfg.weight_decay_hvs)
            if ident:
                self.opts["identity"] = torch.optim.AdamW(ident, lr=lr_id, weight_decay=0.0)
        else:
            self.opts["net"] = torch.optim.Adam(net, lr=lr, betas=(0.5, 0.999) if self.disc is not None else (0.9, 0.999))
            if ident:
                lr_id = cfg.lr_identity if cfg.lr_identity is not None else (1e-3 if self.mode == NEURAL_TEXTURE else lr)
                self.opts["identity"] = torch.optim.Adam(ident, lr=lr_id)
        if self.disc is not None:
            self.opts["disc"] = torch.optim.Adam(self.disc.parameters(), lr=cfg.disc_lr or lr, betas=(0.5, 0.999))
        # constant learning rates within a stage, as in the papers (LambdaLR keeps the
        # schedule state in checkpoints and gives one place to change it)
        self.scheds = {k: torch.optim.lr_scheduler.LambdaLR(o, _constant) for k, o in self.opts.items()}

    def maybe_advance_stage(self, step: int) -> bool:
        """SMPLpix: at the stage boundary restart Adam at lr_stage2 (eq. 7 stage)."""
        if self.mode == VERTEX_PROJECTION and self.stage == 1 and step >= self.stage1_steps and self.stage1_steps < self.cfg.steps:
            self.stage = 2
            self._build_optimizers(stage=2)
            return True
        return False

    @property
    def gan_active(self) -> bool:
        if self.disc is None:
            return False
        return self.mode != VERTEX_PROJECTION or self.stage == 2

    def lrs(self) -> Dict[str, float]:
        return {k: float(o.param_groups[0]["lr"]) for k, o in self.opts.items()}

    # -- one step ---------------------------------------------------------------
    def forward(self, frame, identity: int, appearance: Optional[torch.Tensor] = None):
        """The avatar on ``frame`` with ``identity``'s parameters; ``appearance (B,M,A)``
        (HVS with an encoder) replaces the identity's appearance vectors per sample."""
        if identity == 0 and appearance is None and not getattr(self, "_permuted", None):
            return self.fwd(frame)
        params = {"avatar." + n: p for n, p in self.banks[identity].items()} if identity else {}
        params.update({"avatar." + n: t for n, t in self.fixed[identity].items()})
        if getattr(self, "_permuted", None):
            params.update({"avatar." + n: t for n, t in self._permuted.items()})
        if appearance is not None:
            params["avatar.identity.appearance"] = appearance
        return torch.func.functional_call(self.fwd, params, (frame,), strict=False)

    def identity_tensors(self, identity: int) -> Dict[str, torch.Tensor]:
        """Every per-identity tensor of ``identity`` (learnt and fixed), for its bundle."""
        out = {n: p for n, p in self.banks[identity].items()}
        out.update(self.fixed[identity])
        return out

    def texture_of(self, identity: int) -> Optional[torch.Tensor]:
        if self.mode != NEURAL_TEXTURE:
            return None
        tex = self.avatar.identity.texture
        if identity == 0:
            return tex()
        params = {n[len("identity.texture."):]: p for n, p in self.banks[identity].items()
                  if n.startswith("identity.texture.")}
        return torch.func.functional_call(tex, params, ())

    def autocast(self):
        """bf16 autocast of the forward pass and losses (TrainConfig.precision); a no-op in fp32."""
        import contextlib

        if self.cfg.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def step(self, frame, tgt, identity: int, update_identity: bool, source=None) -> Dict[str, float]:
        aug = self.color_augment
        if aug != "none" and self.mode == VERTEX_PROJECTION:
            from . import color_augment as CA

            g = torch.Generator().manual_seed(int(self.step_count) * 7919 + 17)
            if float(torch.rand((), generator=g)) < self.cfg.color_augment_p:
                m = CA.random_matrix(aug, g)
                vc = self.fixed[identity].get("identity.vertex_colors", self.avatar.identity.vertex_colors)
                self._permuted = {"identity.vertex_colors": CA.apply_to_colors(m, vc.detach())}
                tgt = dataclasses.replace(tgt, rgb=CA.apply_to_image(m, tgt.rgb))
        try:
            with self.autocast():
                comps, d_loss = self._losses(frame, tgt, identity, update_identity, source)
        finally:
            self._permuted = None
        return self._apply(comps, d_loss, identity, update_identity)

    def _losses(self, frame, tgt, identity: int, update_identity: bool, source=None):
        cfg = self.cfg
        self.avatar.train()
        self.fwd.train()
        if cfg.fit_identity is not None:  # the renderer is frozen: BatchNorm keeps its statistics
            for m in self.avatar.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        if self.mode == PIXEL_ALIGNED:
            return self._pixel_losses(frame, tgt, identity, source), None
        app = None
        if source is not None:  # HVS eq. 4: the appearance read from another image of the person
            app = self.avatar.encode_appearance(source)
        out = self.forward(frame, identity, app)
        rgb, gt = out["rgb"], tgt.rgb
        comps: Dict[str, torch.Tensor] = {}
        if out.get("mask_logit") is not None:
            comps["mask"] = cfg.w_mask * F.binary_cross_entropy_with_logits(out["mask_logit"], tgt.mask)
            if cfg.w_haze > 0:
                # haze penalty: predicted alpha where the dilated ground-truth silhouette is empty
                # (the `haze` metric's region, neural/evaluation/metrics.haze)
                from ..evaluation.metrics import outside_silhouette

                outside = outside_silhouette(tgt.mask, radius=self.haze_radius)
                comps["haze"] = cfg.w_haze * (out["mask"].float() * outside).sum() / outside.sum().clamp_min(1.0)
        if self.mode == VERTEX_PROJECTION:
            comps["vgg"] = cfg.w_vgg * self.perc(rgb, gt)  # eq. 6 (includes the 1/32-weighted image L1)
            if cfg.w_pixel_vp > 0:
                comps["pixel"] = cfg.w_pixel_vp * l1(rgb, gt)
        elif self.mode == NEURAL_TEXTURE:
            w = out["mask"].detach()
            comps["pixel"] = cfg.w_pixel * l1(out["rgb_fg"], gt, w)  # eq. 3, I-hat term
            if out.get("aux_rgb") is not None:
                comps["aux"] = cfg.w_aux * l1(out["aux_rgb"], gt, w)  # eq. 3, J-hat term
            comps["vgg"] = cfg.w_vgg * self.perc(rgb, gt)  # eq. 5 on the blended image
            comps["tv"] = cfg.w_tv_image * (tv_loss(rgb) + tv_loss(out["mask"]))  # eq. 6
            if update_identity:
                comps["tv_texture"] = cfg.w_tv_texture * tv_loss(self.texture_of(identity))
        else:
            comps["pixel"] = cfg.w_pixel_hvs * l1(rgb, gt)  # eq. 17
            comps["vgg"] = cfg.w_vgg_hvs * self.perc(rgb, gt)  # perceptual, eq. 21
            if app is None:
                app = self.banks[identity].get("identity.appearance")
            if app is not None:
                comps["appearance"] = cfg.w_appearance * app.float().pow(2).sum(-1).mean()  # eq. 20
        d_loss = None
        if self.gan_active:
            if self.mode == VERTEX_PROJECTION:
                cond = out["input"].detach()
                fake, real = torch.cat([cond, rgb], 1), torch.cat([cond, gt], 1)
            else:
                fake, real = rgb, gt
            real_outs = self.disc(real)
            for p in self.disc.parameters():
                p.requires_grad_(False)
            fake_outs = self.disc(fake)
            for p in self.disc.parameters():
                p.requires_grad_(True)
            comps["adv"] = cfg.gan_weight * gan_g_loss(fake_outs, cfg.gan_loss)
            comps["fm"] = feature_matching_loss(real_outs, fake_outs, weight=cfg.fm_weight)
            d_loss = gan_d_loss(real_outs, self.disc(fake.detach()), cfg.gan_loss)
        return comps, d_loss

    def _pixel_losses(self, frame, tgt, identity: int, source) -> Dict[str, torch.Tensor]:
        """AniPixel eq. 8, ``L = l_C L_C + l_M L_M + l_N L_N + l_S L_S + l_D L_D`` (sec. 3.5), and
        its two phases (sec. 4: the SDF first from the masks alone, then every loss):

        * ``L_C``: L1 + VGG perceptual on the rendered patch;
        * ``L_M``: BCE of the accumulated opacity and of the minimum-SDF mask
          ``sigmoid(-k min_s)`` (AniNeRF's) against the ground-truth mask;
        * ``L_N``: the shape loss of MPS-NeRF, the canonical SDF zero and its normal along the
          neutral body's at template vertices (the body prior; weighted down in phase 2, since
          clothes and hair leave the body) ;
        * ``L_S``: Eikonal ``(|grad s| - 1)^2`` at the samples;
        * ``L_D``: ``|Delta_t|^2 + |Delta_o|^2`` and the forward-weight residual.
        The supplement's weights are not in the paper's text: ``TrainConfig.w_pixel_*``."""
        cfg = self.cfg
        av = self.avatar
        av.train()
        ident = torch.full((frame.batch_size,), int(identity), dtype=torch.long, device=self.device)
        with torch.autocast(self.device.type, enabled=False):
            frame = av.prepare(frame)
            enc = av.encode_sources(source, identity=ident)
            r = av.render_rays(frame, enc, need_grad=True, jitter=True, template_loss=True)
        rgb, gt, m = r["rgb"], tgt.rgb, tgt.mask
        phase2 = self.step_count >= self.phase1_steps
        comps: Dict[str, torch.Tensor] = {}
        eps = 1e-4
        comps["mask"] = cfg.w_pixel_mask * (F.binary_cross_entropy(r["mask"].clamp(eps, 1 - eps), m)
                                            + F.binary_cross_entropy(torch.sigmoid(-100.0 * r["min_sdf"]).clamp(eps, 1 - eps), m))
        if "grad" in r:
            comps["eikonal"] = cfg.w_pixel_eikonal * (r["grad"].norm(dim=-1) - 1.0).pow(2).mean()
        shape = sum(t["sdf"].abs().mean() + (1.0 - (t["normal"] * t["target_normal"]).sum(-1)).mean() for t in r["tmpl"])
        comps["shape"] = cfg.w_pixel_shape * (1.0 if not phase2 else 0.1) * shape / max(1, len(r["tmpl"]))
        if phase2:
            comps["pixel"] = l1(rgb, gt)
            comps["vgg"] = cfg.w_pixel_vgg * self.perc(rgb, gt)
            if "disp" in r:
                comps["disp"] = cfg.w_pixel_disp * (r["disp"].pow(2).sum(-1).mean() + 0.01 * r["fw_res"].pow(2).mean())
        return comps

    def _apply(self, comps, d_loss, identity: int, update_identity: bool) -> Dict[str, float]:
        loss = sum(c.float() for c in comps.values())
        for o in self.opts.values():
            o.zero_grad(set_to_none=True)
        if d_loss is not None:
            # D gradients from d_loss only (G terms ran with D frozen)
            (loss + d_loss).backward()
        else:
            loss.backward()
        active_ident = list(self.banks[identity].values()) if update_identity else []
        if not update_identity:
            for b in self.banks:
                for p in b.values():
                    p.grad = None
        params = list(self.avatar.network_parameters()) + active_ident
        if self.disc is not None:
            params += list(self.disc.parameters())
        self.dd.sync_grads(params)
        stepped = ["net"] if "net" in self.opts else []
        if update_identity and "identity" in self.opts:
            stepped.append("identity")
        if d_loss is not None:
            stepped.append("disc")
        for k in stepped:
            self.opts[k].step()
            self.scheds[k].step()
        vals = {k: float(v.detach()) for k, v in comps.items()}
        vals["loss"] = float(loss.detach())
        if d_loss is not None:
            vals["disc"] = float(d_loss.detach())
        if self.dd.active:
            keys = sorted(vals)
            t = torch.tensor([vals[k] for k in keys], dtype=torch.float64)
            self.dd.mean_(t)
            vals = dict(zip(keys, t.tolist()))
        return vals

    # -- state ----------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {
            "avatar": {k: v.detach().cpu() for k, v in self.avatar.state_dict().items()},
            "banks": [{n: p.detach().cpu() for n, p in b.items()} for b in self.banks[1:]],
            "disc": None if self.disc is None else {k: v.cpu() for k, v in self.disc.state_dict().items()},
            "optimizers": {k: o.state_dict() for k, o in self.opts.items()},
            "schedulers": {k: s.state_dict() for k, s in self.scheds.items()},
            "stage": self.stage,
        }

    def load_state_dict(self, st: Dict[str, Any]) -> None:
        self.avatar.load_state_dict(st["avatar"])
        for b, saved in zip(self.banks[1:], st["banks"]):
            for n, p in b.items():
                p.data.copy_(saved[n])
        if self.disc is not None and st.get("disc") is not None:
            self.disc.load_state_dict(st["disc"])
        if int(st.get("stage", 1)) != self.stage:
            self.stage = int(st["stage"])
            self._build_optimizers(self.stage)
        for k, o in self.opts.items():
            if k in st["optimizers"]:
                o.load_state_dict(st["optimizers"][k])
        for k, s in self.scheds.items():
            if k in st["schedulers"]:
                s.load_state_dict(st["schedulers"][k])


def _constant(_step: int) -> float:
    return 1.0


class _fallback_perceptual(nn.Module):
    """perceptual='l1_msssim': the VGG-free fallback of VGGPerceptualLoss, forced."""

    description = "0.16*L1 + 0.84*(1-MS-SSIM) (forced by perceptual='l1_msssim')"
    uses_vgg = False

    def forward(self, pred, target):
        from .losses import _l1_msssim

        return _l1_msssim(pred, target)


# ------------------------------------------------------------------------ main loop


def _load_body(meta: dict, body_dir: Optional[str] = None):
    """The body model a capture was made with: the embedded default body, or an SMPL-family
    model from ``body_dir`` (the user's licensed files) for ``model_type`` smpl/smplh/smplx."""
    from ...body import load_default, load_model

    model_type = meta.get("model_type", "default")
    if model_type == "default":
        return load_default()
    if not body_dir:
        raise NeuralAvatarError(f"The capture uses a {model_type.upper()} body: give the folder with the "
                                f"model files (--body-dir).")
    return load_model(body_dir, model_type, meta.get("gender", "neutral"))


def train(cfg: TrainConfig, progress: Optional[Callable[[dict], None]] = None,
          should_stop: Optional[Callable[[], bool]] = None, body_model=None,
          forward_fn=None) -> Dict[str, Any]:
    """Train an avatar; returns ``{"status": "finished"|"cancelled", "step", "out",
    "bundle" (path or None), "val" (last validation metrics), "best_psnr", "loss_description"}``.

    ``progress(event_dict)`` is called on every logged step (``{"event": "progress", "step",
    "loss", "eta_s", ...}``) and validation. ``should_stop()`` is polled before every step;
    when it returns True the run writes ``last.ckpt`` and returns with status "cancelled".
    ``body_model`` / ``forward_fn`` default to ``body.load_default()`` / ``body.kinematics.forward``.
    """
    cfg.validate()
    from ..avatar import build_avatar
    from ..bundle import save_bundle
    from .dataset import CaptureDataset, keyframes_by_coverage
    from ..evaluation import metrics as M

    from ..device import pick_device

    # "AUTO" / "CUDA" / "MPS" / "CPU" (the UI's names) or a torch device string ("cuda:1").
    device = pick_device(cfg.device) if cfg.device.upper() in ("AUTO", "CUDA", "MPS", "CPU") else torch.device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    dd = _Dist(device)
    out = Path(cfg.out)
    is_main = dd.rank == 0
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    dd.barrier()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)

    from .dataset import read_dataset_meta

    body = body_model if body_model is not None else _load_body(read_dataset_meta(cfg.data), cfg.body_dir)
    if cfg.mode == PIXEL_ALIGNED and cfg.patch is None:
        cfg = dataclasses.replace(cfg, patch=32)  # AniPixel renders patches for the VGG loss (sec. 4)
    augment = cfg.augment if cfg.augment is not None else (cfg.mode == NEURAL_TEXTURE or cfg.patch is not None)
    scale_range = tuple(cfg.scale_range) if cfg.scale_range else ((0.5, 1.0) if cfg.patch else (0.5, 1.25))
    ds = CaptureDataset(cfg.data, "train", body, res=cfg.res, device=device, augment=augment, seed=cfg.seed,
                        forward_fn=forward_fn, patch=cfg.patch, scale_range=scale_range)
    val_idx = ds.meta["splits"].get("val") or []
    ds_val = (CaptureDataset(cfg.data, "val", body, res=cfg.res, device=device, forward_fn=forward_fn)
              if val_idx else None)

    base = AvatarConfig.default(cfg.mode, resolution=int(max(ds.size)), background=ds.background,
                                num_joints=int(ds.params["poses"].shape[1])).to_dict()
    if cfg.init:
        # a warm start (and a fitted identity) keeps the networks of the bundle it starts from
        from ..bundle import read_bundle_meta

        sub = {"VERTEX_PROJECTION": "unet", "NEURAL_TEXTURE": "anr", "GAUSSIAN_BONES": "style",
               "PIXEL_ALIGNED": "pixel"}[cfg.mode]
        init_cfg = (read_bundle_meta(cfg.init).get("config") or {}).get(sub)
        if isinstance(init_cfg, dict):
            base[sub] = _merge(base[sub] or {}, init_cfg)
    acfg = AvatarConfig.from_dict(_merge(base, cfg.avatar or {}))
    if cfg.mode == PIXEL_ALIGNED:
        acfg = dataclasses.replace(acfg, pixel=dataclasses.replace(acfg.pixel, num_identities=ds.num_identities))
    avatar = build_avatar(acfg, body).to(device)
    if cfg.mode == PIXEL_ALIGNED:
        # each person's body box (log scale vs the neutral body), for "the nearest person" at test
        with torch.no_grad():
            for k in range(ds.num_identities):
                pos = [p for p in range(len(ds)) if ds.identity_index[ds.indices[p]] == k][:4]
                if pos:
                    vs = torch.stack([torch.from_numpy(ds.posed_body(ds.indices[p])[0]) for p in pos]).to(device)
                    avatar.identity_scale[k] = torch.log(avatar.body_state(vs)["scale"]).mean(0)
    init_info = None
    if cfg.init:
        init_info = _warm_start(avatar, cfg.init, cfg.mode, skip_identity=cfg.fit_identity is not None)
    if cfg.fit_identity is not None:
        for n, p in avatar.named_parameters():
            if not n.startswith("identity."):
                p.requires_grad_(False)
    if cfg.mode == VERTEX_PROJECTION:
        # SMPLpix: the projected colours are data (the capture's baked albedo), not learnt;
        # every identity gets its own (set on the trainer below)
        vc = avatar.identity.vertex_colors
        vc.data.copy_(ds.vertex_colors.to(device))
        vc.requires_grad_(False)
    if device.type == "cuda" and dd.active:
        avatar = nn.SyncBatchNorm.convert_sync_batchnorm(avatar)
    dd.broadcast_(avatar)
    # HVS with an appearance encoder (eq. 4): one shared set of widths/background for everybody;
    # each step reads the person's appearance from another frame of them
    encoder = cfg.mode == GAUSSIAN_BONES and getattr(avatar, "encoder", None) is not None
    if encoder and cfg.fit_identity is not None:
        raise NeuralAvatarError("A GAUSSIAN_BONES avatar with an appearance encoder needs no fitting: use "
                                "Avatar from Image (python -m neural_avatar avatar-from-image).")
    trainer = _Trainer(cfg, avatar, 1 if encoder else ds.num_identities, device, dd)
    if cfg.mode == VERTEX_PROJECTION and ds.num_identities > 1:
        if ds.vertex_colors_all.shape[0] != ds.num_identities:
            raise NeuralAvatarError(f"A {ds.num_identities}-identity capture needs one vertex-colour set per identity "
                                    f"(vertex_colors.npy holds {ds.vertex_colors_all.shape[0]}).")
        for k in range(ds.num_identities):
            trainer.fixed[k] = {"identity.vertex_colors": ds.vertex_colors_all[k].to(device)}
    trainer.haze_radius = training_haze_radius(ds.size, float(scale_range[0]) if augment else 1.0)
    if trainer.disc is not None:
        dd.broadcast_(trainer.disc)

    # ANR keyframes (split optimisation, sec. 3.4)
    positions_all = np.arange(len(ds))
    if cfg.frames_limit and cfg.frames_limit < len(ds):
        positions_all = np.unique(np.linspace(0, len(ds) - 1, int(cfg.frames_limit)).round().astype(np.int64))
    keyframes: List[int] = []
    if cfg.mode == NEURAL_TEXTURE and cfg.split_optimization and len(ds) > 1 and cfg.fit_identity is None:
        for ident in range(ds.num_identities):
            pool = [int(p) for p in positions_all if ds.identity_index[ds.indices[p]] == ident]
            if not pool:
                continue
            sub = _SubsetView(ds, pool)
            chosen = keyframes_by_coverage(sub, fraction=cfg.keyframe_fraction)
            keyframes += [pool[c] for c in chosen]

    start_step = 0
    best = -float("inf")
    history: List[List[float]] = []
    last_val: Dict[str, float] = {}
    ckpt_last, ckpt_best = out / "last.ckpt", out / "best.ckpt"
    if cfg.resume and ckpt_last.is_file():
        ck = load_checkpoint(ckpt_last)
        if ck.get("mode") != cfg.mode:
            raise NeuralAvatarError(f"last.ckpt was trained for {ck.get('mode')}, not {cfg.mode}.")
        trainer.load_state_dict(ck["trainer"])
        start_step = int(ck["step"])
        best = float(ck.get("best_psnr", best))
        history = [list(h) for h in ck.get("history", [])]
        keyframes = [int(k) for k in ck.get("keyframes", keyframes)]
        last_val = dict(ck.get("val", {}))
        _set_rng_state(ck["rng"])

    def make_ckpt(step: int) -> Dict[str, Any]:
        return {"format": CKPT_FORMAT, "mode": cfg.mode, "step": step, "config": cfg.to_dict(),
                "avatar_config": acfg.to_dict(), "trainer": trainer.state_dict(), "rng": _rng_state(),
                "best_psnr": best, "history": history, "keyframes": keyframes, "val": last_val}

    if is_main:
        remove_stale_temp_files(out)
        truncate_metrics(out / "metrics.jsonl", start_step)
    log_f = open(out / "metrics.jsonl", "a", encoding="utf-8") if is_main else None
    t0 = time.time()
    status = "finished"
    time_limited = False
    step = start_step

    def emit(ev: dict) -> None:
        if progress is not None and is_main:
            progress(ev)

    def validate(step: int) -> Dict[str, float]:
        if ds_val is None:
            return {}
        pos = list(range(min(len(ds_val), cfg.val_frames)))
        frame, tgt = ds_val.batch(pos)
        trainer.avatar.eval()
        preds = []
        src_pos = ds_val.pick_sources(pos, np.random.default_rng([cfg.seed, 99])) if encoder else None
        if cfg.mode == PIXEL_ALIGNED:
            pos = pos[:2]  # volume rendering a whole frame costs seconds on a CPU
            frame, tgt = ds_val.batch(pos)
        with torch.no_grad():
            for b in range(len(pos)):
                fb = dataclasses.replace(frame, verts=frame.verts[b:b + 1], joints=frame.joints[b:b + 1],
                                         K=frame.K[b:b + 1], R=frame.R[b:b + 1], t=frame.t[b:b + 1])
                if cfg.mode == PIXEL_ALIGNED:
                    V = cfg.source_views
                    try:
                        sp = ds_val.pick_view_groups([pos[b]], np.random.default_rng([cfg.seed, 98, b]), V)
                        enc = trainer.avatar.encode_sources(ds_val.sources(sp, V),
                                                            identity=tgt.identity[b:b + 1])
                    except DatasetError:
                        return {}
                    preds.append(trainer.avatar(fb, enc)["rgb"].float())
                elif encoder:
                    app = trainer.avatar.encode_appearance(ds_val.sources([src_pos[b]]))
                    preds.append(trainer.forward(fb, 0, app)["rgb"].float())
                else:
                    preds.append(trainer.forward(fb, int(tgt.identity[b]))["rgb"].float())
        trainer.avatar.train()
        pred = torch.cat(preds)
        res = M.evaluate(pred, tgt.rgb, tgt.mask, with_lpips=True)
        tiles = [np.concatenate([_to_u8(pred[b]), _to_u8(tgt.rgb[b])], 1) for b in range(min(4, len(pos)))]
        import cv2

        (out / "val").mkdir(exist_ok=True)
        cv2.imwrite(str(out / "val" / f"step_{step:07d}.png"), np.concatenate(tiles, 0))
        return res

    try:
        while step < cfg.steps:
            if should_stop is not None and should_stop():
                status = "cancelled"
                break
            if cfg.time_limit_s > 0 and time.time() - t0 >= cfg.time_limit_s:
                time_limited = True
                break
            if trainer.maybe_advance_stage(step):
                emit({"event": "stage", "step": step, "stage": trainer.stage})
            rng = np.random.default_rng([cfg.seed, step])
            identity = int(rng.integers(ds.num_identities)) if ds.num_identities > 1 else 0
            pool = positions_all[ds.identity_index[np.asarray(ds.indices)[positions_all]] == identity]
            update_identity = True
            if keyframes:
                kf = np.array([k for k in keyframes if k in set(pool.tolist())], np.int64)
                rest = np.setdiff1d(pool, kf)
                if step % 2 == 0 or len(rest) == 0:
                    pool = kf  # eq. 10: texture + renderer on keyframes
                else:
                    pool, update_identity = rest, False  # eq. 9: renderer on the other frames
            chosen = rng.choice(pool, size=cfg.batch, replace=len(pool) < cfg.batch)
            if cfg.batch % dd.world:
                raise NeuralAvatarError(f"The batch ({cfg.batch}) must be divisible by the number of processes ({dd.world}).")
            shard = chosen[dd.rank::dd.world]
            frame, tgt = ds.batch(shard.tolist(), step=step)
            trainer.step_count = step
            if cfg.mode == PIXEL_ALIGNED:
                V = cfg.source_views
                source = ds.sources(ds.pick_view_groups(shard.tolist(), rng, V), views_per_item=V)
                vals = trainer.step(frame, tgt, identity, update_identity, source)
            elif encoder:
                source = ds.sources(ds.pick_sources(shard.tolist(), rng))
                vals = trainer.step(frame, tgt, 0, update_identity, source)
            else:
                vals = trainer.step(frame, tgt, identity, update_identity)
            if not math.isfinite(vals["loss"]):
                raise NeuralAvatarError(f"Training diverged at step {step + 1} (loss is {vals['loss']}).")
            step += 1
            history.append([float(step), vals["loss"]])
            if is_main and (step % max(cfg.log_every, 1) == 0 or step == cfg.steps or step == start_step + 1):
                el = time.time() - t0
                eta = el / (step - start_step) * (cfg.steps - step)
                rec = {"step": step, **vals, "lr": trainer.lrs(), "stage": trainer.stage, "identity": identity,
                       "update_identity": update_identity, "elapsed_s": round(el, 3), "eta_s": round(eta, 3)}
                log_f.write(json.dumps(rec) + "\n")
                log_f.flush()
                emit({"event": "progress", "step": step, "steps": cfg.steps, "loss": vals["loss"],
                      "eta_s": round(eta, 1)})
            if cfg.val_every and step % cfg.val_every == 0 and step < cfg.steps and is_main:
                last_val = validate(step)
                if last_val:
                    emit({"event": "validation", "step": step, **last_val})
                    log_f.write(json.dumps({"step": step, "loss": history[-1][1] if history else None, "validation": last_val}) + "\n")
                    log_f.flush()
                    if last_val["psnr_bbox"] > best:
                        best = last_val["psnr_bbox"]
                        _atomic_torch_save(make_ckpt(step), ckpt_best)
                _draw_loss_curve(history, out / "loss.png")
            if cfg.ckpt_every and step % cfg.ckpt_every == 0 and is_main:
                _atomic_torch_save(make_ckpt(step), ckpt_last)
            dd.barrier() if (cfg.ckpt_every and step % cfg.ckpt_every == 0) else None

        bundle = None
        if is_main:
            if status == "finished":
                last_val = validate(step) or last_val
                if last_val:
                    log_f.write(json.dumps({"step": step, "loss": history[-1][1] if history else None, "validation": last_val}) + "\n")
                    emit({"event": "validation", "step": step, **last_val})
                    if last_val["psnr_bbox"] > best:
                        best = last_val["psnr_bbox"]
                        _atomic_torch_save(make_ckpt(step), ckpt_best)
            _atomic_torch_save(make_ckpt(step), ckpt_last)
            _draw_loss_curve(history, out / "loss.png")
            if status == "finished":
                info = {"training": {
                    "mode": cfg.mode, "steps": step, "dataset": os.path.basename(os.path.abspath(cfg.data)),
                    "resolution": list(ds.size), "batch": cfg.batch, "seed": cfg.seed,
                    "patch": cfg.patch, "scale_range": list(scale_range) if augment else None,
                    "precision": cfg.precision, "haze_weight": cfg.w_haze, "haze_radius_px": int(trainer.haze_radius),
                    "mask_weight": cfg.w_mask, "init": init_info, "lr": trainer.lrs(),
                    **({"pixel_weight": getattr(cfg, pixel_weight_field_name(cfg.mode))}
                       if pixel_weight_field_name(cfg.mode) else {}),
                    "vgg_weight": getattr(cfg, vgg_weight_field_name(cfg.mode)),
                    **({"color_augment": cfg.color_augment} if cfg.color_augment != "none" else {}),
                    "machine": _machine(device), "wall_s": round(time.time() - t0, 1),
                    "steps_planned": cfg.steps, "time_limited": time_limited,
                    "loss": trainer.perc.description, "gan": trainer.disc is not None,
                    "final_loss": history[-1][1] if history else None,
                    "validation": {k: v for k, v in last_val.items() if math.isfinite(v)},
                    "validation_note": "psnr/ssim/lpips on the whole image (_full) and inside the body's bounding box (_bbox)",
                    "lpips_source": M.LPIPS_SOURCE, "keyframes": [int(ds.indices[k]) for k in keyframes],
                    "identities": ds.identities}}
                # one bundle: the shared renderer + every identity's own tensors (load_bundle(identity=...))
                idents = None
                if cfg.fit_identity is not None:
                    # the trained bundle's people (the avatar shows the first) + the fitted one
                    from ..bundle import identity_bank

                    fitted = {n: p.detach().clone() for n, p in trainer.avatar.named_parameters()
                              if n.startswith("identity.")}
                    bank = identity_bank(cfg.init)
                    if cfg.fit_identity in [n for n, _ in bank]:
                        raise NeuralAvatarError(f"The bundle already has an identity '{cfg.fit_identity}'.")
                    own = dict(trainer.avatar.named_parameters())
                    with torch.no_grad():
                        for n, t in bank[0][1].items():
                            own[n].data.copy_(t)
                    idents = [(bank[0][0], {})] + bank[1:] + [(cfg.fit_identity, fitted)]
                elif encoder:
                    # every zoo person as an identity: appearance encoded from their frames
                    idents = _encoded_identities(trainer, ds, device)
                    idents = idents if len(idents) > 1 else None
                elif ds.num_identities > 1:
                    idents = [(ds.identities[0], {})] + [(ds.identities[k], trainer.identity_tensors(k))
                                                         for k in range(1, ds.num_identities)]
                bundle = str(save_bundle(trainer.avatar, out / "avatar", info, identities=idents)[0])
            emit({"event": "done" if status == "finished" else "cancelled", "step": step,
                  "bundle": bundle, **({"val": last_val} if last_val else {})})
        dd.barrier()
    finally:
        if log_f is not None:
            log_f.close()
        dd.close()
    return {"status": status, "step": step, "out": str(out), "bundle": bundle if is_main else None,
            "val": last_val, "best_psnr": best, "loss_description": trainer.perc.description,
            "keyframes": keyframes}


def _encoded_identities(trainer: "_Trainer", ds, device, frames: int = 8) -> list:
    """HVS with an encoder: each capture identity's appearance (eq. 4) averaged over up to
    ``frames`` of its frames, as the bundle's identities (the first one is the avatar's own)."""
    av = trainer.avatar
    av.eval()
    base = {n: t.detach().clone() for n, t in trainer.identity_tensors(0).items()}
    out = []
    with torch.no_grad():
        for k, name in enumerate(ds.identities):
            pos = [p for p in range(len(ds)) if ds.identity_index[ds.indices[p]] == k]
            if not pos:
                continue
            pick = [pos[int(i)] for i in np.unique(np.linspace(0, len(pos) - 1, min(frames, len(pos))).round())]
            app = torch.cat([av.encode_appearance(ds.sources([p])) for p in pick]).mean(0)
            if not out:
                av.identity.appearance.data.copy_(app)
                out.append((name, {}))
            else:
                out.append((name, {**base, "identity.appearance": app}))
    av.train()
    return out


def _machine(device: torch.device) -> Dict[str, Any]:
    """Where a bundle was trained (its JSON says so): device, CPU / GPU name, threads, torch."""
    import platform

    info: Dict[str, Any] = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                            "platform": platform.platform(terse=True), "world_size": int(os.environ.get("WORLD_SIZE", "1"))}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def training_haze_radius(size, scale_lo: float = 1.0) -> int:
    """Dilation radius (px) of the haze penalty's silhouette for a capture of ``size``.

    The ``haze`` metric dilates by 1 % of the *rendered* frame's side. A training window rescaled
    by ``f`` stands for a frame ``f`` x the capture's size, so the penalty takes the radius of the
    smallest frame the rescale range stands for: 3 px for 512² at ``f = 0.5``, where a fixed 5 px
    left a 3-5 px halo unpenalised that the 256² eval counts. Stricter at larger scales, where the
    ground truth's alpha is zero there anyway."""
    from ..evaluation.metrics import haze_radius

    f = min(max(float(scale_lo), 0.0), 1.0)
    return haze_radius([max(1, int(round(int(s) * f))) for s in size])


def _warm_start(avatar, path: str, mode: str, skip_identity: bool = False) -> Dict[str, Any]:
    """Copy a bundle's weights into ``avatar`` where names and shapes agree (coarse-to-fine);
    ``skip_identity``: keep the avatar's fresh identity (fitting a new person).

    A convolution whose input channels grew (SMPLpix's first conv when descriptors are added
    to the RGB-D input) gets the bundle's kernels on its first channels and zeros on the new
    ones, so the warm-started network paints the same picture at step 0. SMPLpix descriptors
    of a bundle without subdivision are carried onto a subdivided avatar's points by midpoints."""
    from ..bundle import load_bundle

    src = load_bundle(path, expected_mode=mode)
    own = avatar.state_dict()
    copied, skipped, extended = [], [], []
    with torch.no_grad():
        for k, v in src.state_dict().items():
            if skip_identity and k.startswith("identity."):
                continue
            if k in own and own[k].shape == v.shape and own[k].dtype == v.dtype:
                own[k].copy_(v.to(own[k].device))
                copied.append(k)
            elif (k in own and own[k].dtype == v.dtype and own[k].dim() == 4 == v.dim()
                  and own[k].shape[0] == v.shape[0] and own[k].shape[2:] == v.shape[2:]
                  and own[k].shape[1] > v.shape[1]):
                own[k].zero_()
                own[k][:, :v.shape[1]].copy_(v.to(own[k].device))
                copied.append(k)
                extended.append(k)
            elif (k == "identity.vertex_descriptors" and k in own and hasattr(avatar, "densify")
                  and own[k].dim() == 2 == v.dim() and own[k].shape[1] == v.shape[1]
                  and v.shape[0] == avatar.config.num_verts and own[k].shape[0] == avatar.num_points):
                # the bundle's per-vertex descriptors onto the subdivided points (UNetConfig.subdivide):
                # each new point starts at its edge's midpoint value, like its position and colour,
                # so the warm-started input is the bundle's, only denser
                own[k].copy_(avatar.densify(v.to(own[k].device)))
                copied.append(k)
                extended.append(k)
            else:
                skipped.append(k)
    if not copied:
        raise NeuralAvatarError(f"The bundle {os.path.basename(path)} shares no weights with this avatar.")
    info = {"bundle": os.path.basename(path), "tensors_copied": len(copied), "tensors_skipped": skipped[:20]}
    if extended:
        info["tensors_extended"] = extended[:20]
    return info


class _SubsetView:
    """A CaptureDataset restricted to some split positions (for per-identity keyframes)."""

    def __init__(self, ds, positions: List[int]):
        self._ds = ds
        self.indices = [ds.indices[p] for p in positions]

    def __len__(self):
        return len(self.indices)

    def __getattr__(self, name):
        return getattr(self._ds, name)


# ------------------------------------------------------------------------ CLI






if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
