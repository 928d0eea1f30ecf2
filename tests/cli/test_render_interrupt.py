"""Ctrl+C during ``python -m neural_avatar render --anim`` finishes the current frame, then stops
with a non-zero exit code (130), as ``blender -b`` does; the frames written are complete PNGs."""
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.bpy


def test_ctrl_c_stops_an_animation_render(tmp_path):
    pytest.importorskip("bpy")
    out = tmp_path / "f_"
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "res"))
    proc = subprocess.Popen([sys.executable, "-m", "neural_avatar", "render", "--anim", "--res", "48", "--end", "400",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 240
    while time.time() < deadline and not any(n.startswith("f_") for n in os.listdir(tmp_path)):
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=240)
    frames = sorted(n for n in os.listdir(tmp_path) if n.startswith("f_"))
    assert proc.returncode == 130, (proc.returncode, stderr[-2000:])
    assert "interrupted" in stderr.lower()
    assert 1 <= len(frames) < 400, len(frames)
    import cv2

    for n in frames:
        assert cv2.imread(str(tmp_path / n)) is not None, n
