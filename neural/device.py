"""Compute-device choice and a per-device cache of loaded avatars.

``pick_device("AUTO")`` prefers CUDA, then Apple MPS, then the CPU. Asking for a device that
is not available falls back to the best available one and reports why (the engine shows
the message as a warning instead of failing the render). :class:`ModelCache` keeps loaded
bundles keyed by (path, modification time, device, precision) so an animation render loads
each bundle once, reloads it when the file changes, and frees GPU memory on ``clear()``.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Optional

import torch

from ..errors import NeuralAvatarError

DEVICE_PREFS = ("AUTO", "CUDA", "MPS", "CPU")


def cuda_available() -> bool:
    return torch.cuda.is_available()


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(pref: str = "AUTO") -> tuple[torch.device, Optional[str]]:
    """``(device, warning)``: the device for the preference ``AUTO | CUDA | MPS | CPU`` and a
    message when the requested one is unavailable (``None`` when it was honoured)."""
    p = str(pref).upper()
    if p not in DEVICE_PREFS:
        raise NeuralAvatarError(f"Unknown compute device {pref!r}; choose one of {', '.join(DEVICE_PREFS)}.")
    best = torch.device("cuda") if cuda_available() else torch.device("mps") if mps_available() else torch.device("cpu")
    if p == "AUTO":
        return best, None
    if p == "CPU":
        return torch.device("cpu"), None
    if p == "CUDA":
        if cuda_available():
            return torch.device("cuda"), None
        why = ("this PyTorch build has no CUDA support" if torch.version.cuda is None
               else "no CUDA GPU was found (driver missing or GPU busy)")
        return best, f"CUDA was requested but {why}; rendering on {best.type.upper()} instead."
    if mps_available():
        return torch.device("mps"), None
    return best, f"Apple Metal (MPS) was requested but is not available here; rendering on {best.type.upper()} instead."


def pick_device(pref: str = "AUTO", warn: Optional[Callable[[str], None]] = None) -> torch.device:
    """The torch device for ``pref`` with fallbacks. An unavailable request falls back to the
    best available device; the message goes to ``warn(msg)`` when given, else to
    ``warnings.warn``. Use :func:`resolve_device` to get the message as a value."""
    device, msg = resolve_device(pref)
    if msg:
        if warn is not None:
            warn(msg)
        else:
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
    return device


def _bundle_mtime(path) -> int:
    from .bundle import bundle_paths

    st, js = bundle_paths(path)
    try:
        return max(st.stat().st_mtime_ns, js.stat().st_mtime_ns)
    except OSError:
        return -1  # let load_bundle report the missing file


class ModelCache:
    """Loaded avatars keyed by ``(path, mtime, device, precision)``, least recently used
    first out (``max_entries``). Thread-safe. ``clear()`` drops every model and empties the
    CUDA/MPS allocator caches so VRAM is given back."""

    def __init__(self, max_entries: int = 2):
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._items: "OrderedDict[tuple, object]" = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  #: number of bundle loads performed (cache misses)

    @staticmethod
    def key(path, device, precision: str = "fp32", identity: str | None = None, sources: str | None = None) -> tuple:
        p = str(Path(path).expanduser().resolve())
        for suf in (".safetensors", ".json"):
            if p.endswith(suf):
                p = p[: -len(suf)]
        who = identity or ""
        if sources:  # PIXEL_ALIGNED: the person is a source-views folder (reloaded when it changes)
            sp = str(Path(sources).expanduser().resolve())
            try:
                mt = os.path.getmtime(os.path.join(sp, "dataset.json"))
            except OSError:
                mt = 0.0
            who = f"{who}|sources:{sp}:{mt}"
        return (p, _bundle_mtime(p), str(torch.device(device)), precision, who)

    def get(self, path, device="cpu", precision: str = "fp32", expected_mode: str | None = None,
            expected_body=None, identity: str | None = None, sources: str | None = None):
        """The avatar of the bundle at ``path`` on ``device`` showing ``identity`` (a person of a
        multi-identity bundle; None = its first), loaded on a miss, in eval mode. The mode/body
        checks of :func:`neural.bundle.load_bundle` run on every call."""
        from .avatar import PRECISIONS
        from .bundle import check_meta, load_bundle, read_bundle_meta

        if precision not in PRECISIONS and precision != "auto":
            raise NeuralAvatarError(f"Unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
        k = self.key(path, device, precision, identity, sources)
        with self._lock:
            avatar = self._items.get(k)
            if avatar is not None:
                self._items.move_to_end(k)
        if avatar is not None:
            if expected_mode is not None or expected_body is not None:
                check_meta(read_bundle_meta(path), expected_mode, expected_body, Path(k[0]).name)
            return avatar
        avatar = load_bundle(path, device=device, expected_mode=expected_mode, expected_body=expected_body,
                             identity=identity)
        from .inference import attach_openvino, prepare_for_inference

        if getattr(avatar, "mode", "") == "PIXEL_ALIGNED":
            from .pixel_aligned import source_views_from_capture

            if not sources:
                raise NeuralAvatarError("A PIXEL_ALIGNED avatar renders a person from source views: set the body's "
                                        "Source Views folder (Neural Avatar → Avatar from Views).")
            from .. import body as body_lib

            avatar.set_sources(source_views_from_capture(sources, body_lib.load_default(),
                                                         avatar.config.pixel.source_views, device=device))
        prepare_for_inference(avatar)  # BN folded, channels-last: the cache serves rendering only
        attach_openvino(avatar, path, warn=warnings.warn)  # the optional CPU backend, when installed
        with self._lock:
            self.loads += 1
            # drop stale versions of the same file on the same device
            for old in [o for o in self._items if o[0] == k[0] and o[2] == k[2] and o[4] == k[4] and o != k]:
                del self._items[old]
            self._items[k] = avatar
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        return avatar

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
        if cuda_available():
            torch.cuda.empty_cache()
        if mps_available() and hasattr(torch, "mps"):
            torch.mps.empty_cache()


__all__ = ["DEVICE_PREFS", "resolve_device", "pick_device", "ModelCache", "cuda_available", "mps_available"]
