"""Per-device cache of loaded avatars (models), released on unregister and when avatars change."""
from __future__ import annotations

_CACHE: dict = {}


def get(key):
    return _CACHE.get(key)


def put(key, value):
    _CACHE[key] = value


def keys():
    return list(_CACHE)


def release_unused(keep=None) -> int:
    """Drop cached models whose key is not in ``keep`` (default: drop all). Returns how many."""
    keep = set(keep or ())
    drop = [k for k in _CACHE if k not in keep]
    for k in drop:
        del _CACHE[k]
    if drop:
        _empty_device_caches()
    return len(drop)


def clear():
    return release_unused()


def _empty_device_caches():
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if hasattr(torch, "mps") and torch.backends.mps.is_available():
            torch.mps.empty_cache()
    except Exception:  # noqa: BLE001
        pass
