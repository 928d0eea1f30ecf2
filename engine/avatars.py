"""Which avatar paints which body, and loading it (cached per device)."""
from __future__ import annotations

import os

from ..errors import BundleError
from . import cache

DATA_AVATARS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "avatars")
DEFAULT_BODY_ID = "default-neutral-v1"


def zoo_avatar_path(mode: str) -> str:
    """The shipped generalizable bundle of ``mode``, trained on the subject zoo (data/avatars/zoo)."""
    return os.path.join(DATA_AVATARS, "zoo", f"{mode.lower()}.safetensors")


def default_avatar_path(mode: str) -> str:
    """The shipped bundle of ``mode``: the demo subject's for the three per-person modes; the
    generalizable AniPixel bundle (trained on the subject zoo) for PIXEL_ALIGNED."""
    if mode == "PIXEL_ALIGNED":
        return zoo_avatar_path(mode)
    return os.path.join(DATA_AVATARS, f"{mode.lower()}.safetensors")


def resolve_path(avatar_setting: str, mode: str, model_id: str, abspath=None) -> str:
    """Bundle for a body: its own setting (``//`` relative to the .blend) or the shipped default."""
    if avatar_setting:
        path = abspath(avatar_setting) if abspath else avatar_setting
        if not os.path.exists(path):
            raise BundleError(f"Avatar file not found: {path}. Check the body's Avatar setting "
                              "(relative '//' paths are relative to the saved .blend file).")
        return path
    if model_id and not model_id.startswith("default-"):
        raise BundleError(f"The body uses the '{model_id}' model and has no avatar set. The shipped "
                          "avatars are trained on the default body: train an avatar for this body "
                          "(Neural Avatar → Training) and set it as the body's Avatar.")
    path = default_avatar_path(mode)
    if not os.path.exists(path):
        raise BundleError(f"No shipped default avatar for {mode} ({os.path.basename(path)} is missing "
                          "from the extension's data/avatars).")
    return path


def resolve(avatar_setting: str, scene_mode: str, model_id: str, abspath=None) -> tuple[str, str]:
    """``(bundle path, mode)`` for a body. A body with its own avatar renders with the mode that
    avatar was trained for (read from its JSON); the scene's mode only picks the shipped default
    for bodies without one."""
    path = resolve_path(avatar_setting, scene_mode, model_id, abspath)
    if not avatar_setting:
        return path, scene_mode
    from ..neural.bundle import read_bundle_meta

    return path, read_bundle_meta(path)["mode"]


def load(path: str, mode: str, model_id: str, device: str, identity: str = "", sources: str = ""):
    """Load (or reuse) the bundle at ``path`` for ``mode`` on ``device`` showing ``identity`` (of
    a multi-identity bundle; '' = its first) or, for PIXEL_ALIGNED, the person of the source-views
    folder ``sources``; the mode and body checks run on every call, a changed file is reloaded."""
    return cache.models().get(path, device=device, expected_mode=mode, expected_body=model_id or None,
                              identity=identity or None, sources=sources or None)
