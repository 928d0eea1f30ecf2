"""The engine's avatar cache: one :class:`..neural.device.ModelCache` (thread-safe, per file
version and device, least recently used out), released on unregister and when an avatar changes."""
from __future__ import annotations

MAX_AVATARS = 8  # distinct bundles kept loaded (several bodies × modes in one scene)

_CACHE = None


def models():
    global _CACHE
    if _CACHE is None:
        from ..neural.device import ModelCache

        _CACHE = ModelCache(max_entries=MAX_AVATARS)
    return _CACHE


def clear() -> None:
    """Drop every loaded model and give device memory back."""
    if _CACHE is not None:
        _CACHE.clear()
