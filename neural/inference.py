"""Fast inference with the same pictures: BatchNorm folded into the preceding convolution,
channels-last memory layout, and bfloat16 where the CPU computes it natively.

Measured on a 2-core Zen 5 (avx512_bf16) with the SMPLpix UNet at 256², one run: eager fp32
210 ms; BN folded 113 ms; + channels_last 98 ms; + bf16 23 ms, at 75 dB PSNR against the fp32
output (``tests/neural/test_inference.py`` requires ≥ 60 dB for the fp32 path and ≥ 40 dB for
bf16). CPU float16 is never used (CPU autocast to fp16 is ~1000× slower).
"""
from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_CPU_BF16 = None


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX on x86; Apple M2 and later
    report it through torch's own check). Read once."""
    global _CPU_BF16
    if _CPU_BF16 is None:
        found = False
        if sys.platform.startswith("linux"):
            try:
                with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
                    for line in f:
                        if line.startswith("flags"):
                            found = any(flag in line.split() for flag in _BF16_FLAGS)
                            break
            except OSError:
                found = False
        if not found:
            check = getattr(getattr(torch.backends, "mkldnn", None), "is_bf16_supported", None)
            try:
                found = bool(check()) if callable(check) and sys.platform == "darwin" else found
            except Exception:  # noqa: BLE001
                found = False
        _CPU_BF16 = found
    return _CPU_BF16


def resolve_precision(precision: str, device) -> str:
    """``auto``: bf16 on a CPU with native bf16, fp32 on other CPUs, fp32 on GPUs (CUDA/MPS keep
    their explicit choices). ``fp16`` on a CPU means fp32. ``int8`` is a request to the OpenVINO
    backend (:class:`OpenVinoNetwork`); what torch runs besides it, and everything on a GPU, is
    ``auto``'s choice. The OpenVINO backend may run int8 for ``auto`` and ``int8`` where it holds."""
    dev = torch.device(device).type
    if precision in ("auto", "int8"):
        return "bf16" if dev == "cpu" and cpu_has_bf16() else "fp32"
    if precision == "fp16" and dev == "cpu":
        return "fp32"
    return precision


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` in an
    ``nn.Sequential`` into that convolution (w' = w·γ/σ, b' = (b-μ)·γ/σ + β); returns how many."""
    n = 0
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        keys = list(seq._modules)
        for ka, kb in zip(keys, keys[1:]):
            a, b = seq._modules[ka], seq._modules[kb]
            if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d) and b.track_running_stats \
                    and b.running_mean is not None:
                seq._modules[ka] = fuse_conv_bn_eval(a.eval(), b.eval())
                seq._modules[kb] = nn.Identity()
                n += 1
    return n


def prepare_for_inference(avatar) -> dict:
    """Make a loaded avatar fast for rendering (in place; it is no longer trainable): eval mode,
    BatchNorm folded, 4-D weights channels-last. Returns what was done."""
    avatar.eval()
    for p in avatar.parameters():
        p.requires_grad_(False)
    folded = fold_batchnorm(avatar)
    if avatar.device.type == "cpu":
        avatar.to(memory_format=torch.channels_last)
    avatar.inference_ready = True
    avatar.channels_last = avatar.device.type == "cpu"
    return {"batchnorm_folded": folded, "channels_last": avatar.channels_last,
            "threads": torch.get_num_threads()}


_THREADS_SET = False


def set_threads() -> int:
    """torch's intra-op threads set explicitly once: ``NEURAL_AVATAR_THREADS``, else
    ``OMP_NUM_THREADS``, else every core this process may use."""
    global _THREADS_SET
    if not _THREADS_SET:
        want = os.environ.get("NEURAL_AVATAR_THREADS") or os.environ.get("OMP_NUM_THREADS")
        try:
            n = int(want) if want else len(os.sched_getaffinity(0))
        except (ValueError, AttributeError):
            n = os.cpu_count() or 1
        torch.set_num_threads(max(1, n))
        _THREADS_SET = True
    return torch.get_num_threads()


# ----------------------------------------------------------------------------------- OpenVINO
# Optional backend (installer set "openvino"): the SMPLpix UNet and ANR's R1→R2 exported once per
# bundle and cached, then run by OpenVINO's CPU plugin with an explicit precision hint (its
# default on CPUs with bf16 is bf16). Measured here at 256², one run: SMPLpix 14.6 ms vs torch bf16
# 27.6 ms, ANR 28.5 vs 42.1 ms. The style UNet's modulated convolutions (weights computed from the
# style at run time) are not supported by the CPU plugin, so GAUSSIAN_BONES exports _StyleCore: the
# network with one person's modulated weights baked in, one cached model per appearance.
OPENVINO_ENV = "NEURAL_AVATAR_OPENVINO"  # "0": never use OpenVINO


class _AnrCore(nn.Module):
    """ANR's R1→R2 returning plain tensors (rgb_fg, mask_logit, aux_rgb) for export."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, neural_image, normals=None):
        out = self.net(neural_image, normals)
        return out["rgb_fg"], out["mask_logit"], out["aux_rgb"]


class _FixedStyleConv(nn.Module):
    """A StyleGAN2 modulated convolution whose style is fixed (one person's appearance): a plain
    convolution with the modulated, demodulated weights (networks/style.py ModulatedConv2d, eq. 1
    and 3), computed once."""

    def __init__(self, m, styles: torch.Tensor):
        super().__init__()
        with torch.no_grad():
            weight = m.modulated_weight(styles.float())
        self.conv = nn.Conv2d(m.in_ch, m.out_ch, m.kernel_size, padding=m.kernel_size // 2, bias=m.bias is not None)
        self.conv.weight = nn.Parameter(weight[0].contiguous(), requires_grad=False)
        if m.bias is not None:
            self.conv.bias = nn.Parameter(m.bias.detach().float().clone(), requires_grad=False)

    def forward(self, x, w=None, styles=None):
        return self.conv(x)


class _StyleCore(nn.Module):
    """HVS's style UNet with one person's appearance baked in: ``features -> output``. The style
    of every modulated convolution depends only on the appearance (eq. 16), which is fixed for an
    avatar loaded for one identity, so the modulated weights are constants and the network is a
    plain convolutional one that OpenVINO's CPU plugin can run."""

    def __init__(self, net, appearance: torch.Tensor):
        super().__init__()
        import copy

        from .networks.style import ModulatedConv2d

        core = copy.deepcopy(net).float().eval()
        app = appearance.detach().float()
        with torch.no_grad():
            w = core.style(app)

        def swap(mod):
            for name, ch in mod.named_children():
                if isinstance(ch, ModulatedConv2d):
                    with torch.no_grad():
                        setattr(mod, name, _FixedStyleConv(ch, ch.affine(w)))
                else:
                    swap(ch)

        swap(core)
        self.net = core
        self.register_buffer("appearance", app)

    def forward(self, features):
        return self.net(features, self.appearance)


INT8_ENV = "NEURAL_AVATAR_INT8"  # "0": never int8
#: int8 is used only where its picture stays this close to Float32 on the frame it was calibrated
#: on and on that frame mirrored (PSNR over the premultiplied RGB and the mask): ``auto`` / ``int8``
INT8_MIN_PSNR_DB = {"auto": 40.0, "int8": 35.0}
INT8_KINDS = ("unet", "anr")  # the style UNet's baked modulated weights lose too much (33-35 dB)


def _conv_nodes(model):
    return [n for n in model.get_ordered_ops() if n.get_type_name() == "Convolution"]


def calibrate_int8(ov_model, inputs) -> list:
    """The activation ranges :func:`quantize_int8` uses: for every convolution's data input, in
    graph order, ``(lo, hi)`` = the 0.01-99.99 % percentiles of what reaches it on ``inputs`` (a
    list of arrays, one call's inputs), 0 as the lower end where nothing is negative (after a
    ReLU)."""
    import openvino as ov

    cal = ov_model.clone()
    n_out = len(cal.outputs)
    for n in _conv_nodes(cal):
        cal.add_outputs([n.input_value(0)])
    cm = ov.Core().compile_model(cal, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = cm(inputs)
    ranges = []
    for o in cm.outputs[n_out:]:
        a = np.asarray(res[o], np.float32).ravel()
        lo = float(np.percentile(a, 0.01)) if float(a.min()) < 0.0 else 0.0
        hi = float(np.percentile(a, 99.99))
        ranges.append((lo, max(hi, lo + 1e-6)))
    return ranges


def quantize_int8(ov_model, ranges) -> "object":
    """An int8 copy of an exported network: a FakeQuantize (256 levels) before every
    convolution's data input over its calibrated range (``ranges``, from :func:`calibrate_int8`),
    and one (255 levels, symmetric) on its weights per output channel. OpenVINO's CPU plugin runs
    such convolutions in u8 x i8 (VNNI), the rest in the precision hint's. ``ov_model`` is not
    changed."""
    import openvino.opset13 as ops

    q = ov_model.clone()
    convs = _conv_nodes(q)
    if len(convs) != len(ranges):
        raise RuntimeError("the network's convolutions changed while calibrating")

    def c(v):
        return ops.constant(np.asarray(v, np.float32).reshape(1, 1, 1, 1))

    for n, (lo, hi) in zip(convs, ranges):
        fq = ops.fake_quantize(n.input_value(0), c(lo), c(hi), c(lo), c(hi), 256)
        n.input(0).replace_source_output(fq.output(0))
        w = n.input_value(1)
        if w.get_node().get_type_name() != "Constant":
            continue  # weights computed at run time stay as they are
        W = np.asarray(w.get_node().get_data(), np.float32)
        m = (np.abs(W).reshape(W.shape[0], -1).max(1) + 1e-12).reshape((-1,) + (1,) * (W.ndim - 1))
        fqw = ops.fake_quantize(w, ops.constant(-m), ops.constant(m), ops.constant(-m), ops.constant(m), 255)
        n.input(1).replace_source_output(fqw.output(0))
    q.validate_nodes_and_infer_types()
    return q


def _output_psnr(kind: str, a: list, b: list) -> float:
    """PSNR (dB) between two runs' pictures: the premultiplied RGB (what the engine pastes; the
    colour where the mask is 0 is never seen) and the soft mask (sigmoid of its logit)."""
    def planes(o):
        y = np.asarray(o[0], np.float64)
        if kind == "anr":
            m = 1.0 / (1.0 + np.exp(-np.asarray(o[1], np.float64)))
            return np.concatenate([y * m, m], 1)
        if y.shape[1] > 3:  # SMPLpix: sigmoid RGB, then the mask logit
            m = 1.0 / (1.0 + np.exp(-y[:, 3:4]))
            return np.concatenate([y[:, :3] * m, m], 1)
        return y
    mse = float(np.mean((planes(a) - planes(b)) ** 2))
    return 100.0 if mse <= 1e-20 else min(100.0, 10.0 * math.log10(1.0 / mse))


class OpenVinoNetwork(nn.Module):
    """Stands in for an avatar's ``net``: the same call and outputs, computed by OpenVINO. The
    precision is set per render (:meth:`set_precision`); one compiled model per precision.

    int8 (``auto`` and ``int8`` requests on the SMPLpix UNet and ANR's R1→R2): on the first call
    the network is calibrated on that call's input (:func:`calibrate_int8`, :func:`quantize_int8`), and kept only if its
    output is within ``INT8_MIN_PSNR_DB`` of Float32 on that input and on its mirror image;
    otherwise this network stays at the bf16/fp32 precision for good (``int8_state``). The
    calibration and its PSNR are cached in ``int8_cache`` (beside the exported IR): later sessions
    rebuild the same int8 network and reach the same decision without calibrating again."""

    def __init__(self, ov_model, kind: str, threads: int, int8_cache: str | None = None):
        super().__init__()
        self.ov_model = ov_model
        self.int8_cache = int8_cache  # JSON beside the cached IR: the calibration and its PSNR
        self.kind = kind
        self.threads = threads
        self.precision = "fp32"
        self.requested = "fp32"
        self._compiled = {}
        self.int8_state = "unused"  # "active" | "refused" (PSNR below the bar) | "failed" | "unused"
        self.int8_psnr_db = None

    def set_precision(self, precision: str, requested: str | None = None) -> None:
        self.precision = "bf16" if precision == "bf16" else "fp32"
        self.requested = requested if requested is not None else precision

    @property
    def precision_used(self) -> str:
        return "int8" if self._wants_int8() and self.int8_state == "active" else self.precision

    def _wants_int8(self) -> bool:
        return (self.requested in INT8_MIN_PSNR_DB and self.kind in INT8_KINDS
                and os.environ.get(INT8_ENV, "") != "0")

    def _compile(self, model, hint: str):
        import openvino as ov

        return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                      "INFERENCE_NUM_THREADS": str(self.threads)})

    def _model(self):
        if self.precision not in self._compiled:
            self._compiled[self.precision] = self._compile(self.ov_model, "bf16" if self.precision == "bf16" else "f32")
        return self._compiled[self.precision]

    def _read_int8_cache(self):
        """``(ranges, psnr_db)`` from this network's int8 cache file, or None when there is none
        or it does not fit this network exactly (a damaged or foreign file is ignored)."""
        if not self.int8_cache or not os.path.isfile(self.int8_cache):
            return None
        try:
            if os.path.getsize(self.int8_cache) > 1 << 20:
                return None
            with open(self.int8_cache, encoding="utf-8") as f:
                d = json.load(f)
            if not isinstance(d, dict) or d.get("version") != 1:
                return None
            ranges, psnr = d.get("ranges"), d.get("psnr_db")
            if (not isinstance(ranges, list) or len(ranges) != len(_conv_nodes(self.ov_model))
                    or not isinstance(psnr, (int, float)) or not math.isfinite(psnr)):
                return None
            out = []
            for r in ranges:
                if not (isinstance(r, list) and len(r) == 2 and all(isinstance(v, (int, float)) for v in r)):
                    return None
                lo, hi = float(r[0]), float(r[1])
                if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                    return None
                out.append((lo, hi))
            return out, float(psnr)
        except (OSError, ValueError):
            return None

    def _write_int8_cache(self, ranges, psnr_db: float) -> None:
        if not self.int8_cache:
            return
        try:
            tmp = f"{self.int8_cache}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"version": 1, "psnr_db": psnr_db, "ranges": [list(r) for r in ranges]}, f)
            os.replace(tmp, self.int8_cache)
        except OSError:
            pass  # a read-only cache only costs the calibration next time

    def _try_int8(self, arrays) -> None:
        """Calibrate, check against Float32 (this input and its mirror) and keep or refuse. The
        calibration and the PSNR it reached are cached beside the exported network, so every later
        session makes the same decision without calibrating (the first frame ever rendered decides)."""
        try:
            cached = self._read_int8_cache()
            ranges, worst = cached if cached is not None else (calibrate_int8(self.ov_model, arrays), None)
            cq = None  # (a cached refusal builds nothing)
            if worst is None or worst >= INT8_MIN_PSNR_DB[self.requested]:
                # the layers left in float stay float32 (better PSNR, as fast here)
                cq = self._compile(quantize_int8(self.ov_model, ranges), "f32")
            if worst is None:  # no cached decision: check against Float32 and record it
                if "fp32" not in self._compiled:
                    self._compiled["fp32"] = self._compile(self.ov_model, "f32")
                ref = self._compiled["fp32"]
                worst = 100.0
                for arr in (arrays, [np.ascontiguousarray(a[..., ::-1]) for a in arrays]):
                    r, o = ref(arr), cq(arr)
                    worst = min(worst, _output_psnr(self.kind, [r[x] for x in ref.outputs], [o[x] for x in cq.outputs]))
                worst = round(worst, 2)
                self._write_int8_cache(ranges, worst)
            self.int8_psnr_db = worst
            if worst >= INT8_MIN_PSNR_DB[self.requested]:
                self._compiled["int8"] = cq
                self.int8_state = "active"
            else:
                self.int8_state = "refused"
        except Exception:  # noqa: BLE001 - the float model always works
            self.int8_state = "failed"

    def forward(self, x, normals=None, background=None):
        # ("style": the second argument is the appearance, baked into the exported network)
        args = [x] + ([normals] if self.kind == "anr" and normals is not None else [])
        arrays = [a.float().contiguous().cpu().numpy() for a in args]
        cm = None
        if self._wants_int8():
            if self.int8_state == "unused":
                self._try_int8(arrays)
            if self.int8_state == "active":
                cm = self._compiled["int8"]
        if cm is None:
            cm = self._model()
        res = cm(arrays)
        outs = [torch.from_numpy(np.ascontiguousarray(res[o])) for o in cm.outputs]
        if self.kind in ("unet", "style"):
            return outs[0]
        return {"rgb_fg": outs[0], "mask_logit": outs[1], "aux_rgb": outs[2]}


def openvino_available() -> bool:
    if os.environ.get(OPENVINO_ENV, "") == "0":
        return False
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def _cache_dir() -> str:
    base = os.environ.get("NEURAL_AVATAR_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "neural_avatar")
    return os.path.join(base, "openvino")


def attach_openvino(avatar, bundle_path: str, warn=None) -> bool:
    """Replace ``avatar.net`` by an :class:`OpenVinoNetwork` (VERTEX_PROJECTION, NEURAL_TEXTURE on
    the CPU), exporting the network the first time a bundle is used and caching the IR under
    ``~/.cache/neural_avatar/openvino/`` keyed by the weights' hash. Any failure keeps torch."""

    if avatar.device.type != "cpu" or not openvino_available():
        return False
    mode = avatar.config.mode
    if mode not in ("VERTEX_PROJECTION", "NEURAL_TEXTURE", "GAUSSIAN_BONES"):
        return False
    try:
        import openvino as ov

        from pathlib import Path

        from .bundle import _sha256, bundle_paths, read_bundle_meta

        # The weights' hash the bundle's JSON records (load_bundle has just checked it against the
        # file); hashed here only for a bundle that records none.
        digest = read_bundle_meta(bundle_path).get("tensors_sha256") or _sha256(Path(bundle_paths(bundle_path)[0]))
        key = f"{digest[:24]}-{mode.lower()}-ov{ov.__version__.split('-')[0]}-nb"  # nb: any batch size
        appearance = None
        if mode == "GAUSSIAN_BONES":  # one exported network per person (their appearance is baked in)
            import hashlib

            appearance = avatar._appearance(1).detach().float().cpu().contiguous()
            key += "-" + hashlib.sha256(appearance.numpy().tobytes()).hexdigest()[:16]
        xml = os.path.join(_cache_dir(), key + ".xml")
        core = ov.Core()
        if os.path.exists(xml):
            model = core.read_model(xml)
        else:
            net = avatar.net.float().eval()
            if mode == "VERTEX_PROJECTION":
                c = avatar.config.unet.in_ch
                module, example = net, (torch.rand(1, c, 64, 64),)
                shapes = [ov.PartialShape([-1, c, -1, -1])]
            elif mode == "GAUSSIAN_BONES":
                c = avatar.config.style.appearance_dim
                module, example = _StyleCore(net, appearance), (torch.rand(1, c, 64, 64),)
                shapes = [ov.PartialShape([-1, c, -1, -1])]
            else:
                a = avatar.config.anr
                module = _AnrCore(net)
                example = (torch.rand(1, a.texture_channels, 64, 64),) + \
                    ((torch.rand(1, 3, 64, 64),) if a.use_normals else ())
                shapes = [ov.PartialShape([-1, a.texture_channels, -1, -1])] + \
                    ([ov.PartialShape([-1, 3, -1, -1])] if a.use_normals else [])
            with torch.no_grad():
                model = ov.convert_model(module, example_input=example, input=shapes)
            os.makedirs(_cache_dir(), exist_ok=True)
            tmp = xml + f".{os.getpid()}.tmp.xml"
            ov.save_model(model, tmp, compress_to_fp16=False)
            os.replace(tmp[:-4] + ".bin", xml[:-4] + ".bin")  # weights first: an .xml always has its .bin
            os.replace(tmp, xml)
        kind = {"VERTEX_PROJECTION": "unet", "NEURAL_TEXTURE": "anr", "GAUSSIAN_BONES": "style"}[mode]
        avatar.net = OpenVinoNetwork(model, kind, torch.get_num_threads(), int8_cache=xml[:-4] + ".int8.json")
        avatar.backend = "openvino"
        return True
    except Exception as e:  # noqa: BLE001 - the torch path always works
        if warn is not None:
            warn(f"OpenVINO could not take {os.path.basename(os.fspath(bundle_path))}: {type(e).__name__}: {e}; "
                 "using PyTorch.")
        return False
