"""A stock Blender has none of our pip packages. With torch, smplx, safetensors, cv2 and the rest
hidden by an import blocker (and, in a second run, numpy too, as in Debian's Blender), the built
extension installs and enables, offers the installer in the preferences and the sidebar, adds a
body, refuses F12/animation/training with the dependencies message and writes no frame, and
survives disable/enable twice."""
import os
import subprocess
import sys
import tempfile

import pytest

pytestmark = pytest.mark.bpy

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PIP_PACKAGES = ("torch", "smplx", "safetensors", "cv2", "pytorch_msssim", "scipy", "openvino", "lpips",
                "stlpips_pytorch", "hypothesis", "anny", "pybullet")


@pytest.fixture(scope="module")
def zip_path(tmp_path_factory):
    pytest.importorskip("bpy")
    from neural_avatar.cli import extension as extension_build

    return extension_build.build(str(tmp_path_factory.mktemp("dist")), source_dir=REPO)


@pytest.mark.parametrize("hide_numpy", [False, True], ids=["no-pip-packages", "no-numpy-either"])
def test_stock_blender(zip_path, tmp_path, hide_numpy):
    hide = PIP_PACKAGES + (("numpy",) if hide_numpy else ())
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, BLENDER_USER_RESOURCES=tempfile.mkdtemp(prefix="na_stock_", dir=str(tmp_path)))
    env.pop("NEURAL_AVATAR_DEPS", None)
    proc = subprocess.run([sys.executable, os.path.join(HERE, "stock_blender_check.py"), zip_path, str(out),
                           ",".join(hide)], capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert "STOCK_OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
