"""Shared test set-up.

* A temporary ``BLENDER_USER_RESOURCES`` is set before anything imports bpy, so tests never
  touch the user's Blender configuration.
* ``clean_bpy`` resets Blender to factory settings (empty scene) for each bpy-tier test.
* ``addon`` registers the extension (from this checkout) once per test and unregisters it after.
"""
import os
import sys
import tempfile

_TMP_RES = tempfile.mkdtemp(prefix="na_blender_res_")
os.environ.setdefault("BLENDER_USER_RESOURCES", _TMP_RES)
os.environ.setdefault("PYTHONHASHSEED", "0")
os.environ.setdefault("NEURAL_AVATAR_CACHE", tempfile.mkdtemp(prefix="na_cache_"))  # OpenVINO exports

import pytest  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bpy():
    return pytest.importorskip("bpy")


@pytest.fixture
def clean_bpy():
    bpy = _bpy()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield bpy
    bpy.ops.wm.read_factory_settings(use_empty=True)


@pytest.fixture
def addon(clean_bpy):
    """The extension registered from this checkout (as the ``neural_avatar`` package)."""
    bpy = clean_bpy
    import neural_avatar

    neural_avatar.register()
    try:
        yield bpy
    finally:
        neural_avatar.unregister()
