"""Hardening against careless or hostile input, beyond the loaders' fuzz tier: files written
outside the chosen folder, disk full, leftovers after a kill, silent acceptance of nonsense."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from neural_avatar.common import guards
from neural_avatar.errors import BundleError, DatasetError, NeuralAvatarError, ResourceLimitError


def test_identity_names_cannot_leave_the_output_folder(tmp_path):
    from neural_avatar.neural.training.dataset import capsule_body, read_dataset_meta, write_synthetic_dataset

    root = tmp_path / "cap"
    write_synthetic_dataset(str(root), n=4, res=16, body_model=capsule_body(), identities=2)
    meta = json.loads((root / "dataset.json").read_text())
    for bad in ("x/../../..", "..", "/tmp/evil", "a\\b", "", "ok name"):
        meta["identities"] = ["subject", bad]
        (root / "dataset.json").write_text(json.dumps(meta))
        with pytest.raises(DatasetError, match="file name"):
            read_dataset_meta(str(root))
    meta["identities"] = ["a", "a"]
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="different"):
        read_dataset_meta(str(root))


def test_relative_paths_from_files_stay_inside():
    assert guards.safe_relpath("Camera (1)/000.jpg", "p") == "Camera (1)/000.jpg"
    for bad in ("../x.jpg", "/abs.jpg", "a/../../b", "C:/x", "\\\\server\\x", "a\x00b"):
        with pytest.raises(NeuralAvatarError):
            guards.safe_relpath(bad, "p")


def test_memory_budget_refuses_with_the_memory_needed(monkeypatch):
    monkeypatch.setenv(guards.LIMIT_ENV, "100")
    guards.check_elements((1000, 1000), 8, "ok")  # 8 MB
    with pytest.raises(ResourceLimitError, match=r"would need 7\.5 GB.*100\.0 MB"):
        guards.check_elements((1000, 1000, 1000), 8, "Something")
    with pytest.raises(ResourceLimitError):
        guards.check_elements((-1, 3), 8, "Negative")
    monkeypatch.delenv(guards.LIMIT_ENV)
    assert guards.available_memory() > 1 << 20


def test_disk_full_during_a_checkpoint_is_said_in_words(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    import torch

    from neural_avatar.neural.training import trainer as train

    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10 ** 9, 10 ** 9 - 1000, 1000))

    def full(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 5185920 vs 5185808")

    monkeypatch.setattr(torch, "save", full)
    (tmp_path / "last.ckpt").write_bytes(b"previous")
    with pytest.raises(NeuralAvatarError, match="disk is full") as e:
        train._atomic_torch_save({"x": 1}, tmp_path / "last.ckpt")
    assert "unexpected pos" not in str(e.value)
    assert (tmp_path / "last.ckpt").read_bytes() == b"previous"  # unchanged
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_resume_cleans_temp_files_and_duplicate_metrics(tmp_path):
    from neural_avatar.neural.training import trainer as train

    (tmp_path / ".last.ckpt.abc123.tmp").write_bytes(b"half")
    (tmp_path / ".avatar.safetensors.x.tmp").write_bytes(b"half")
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (10, 20, 30, 40)] + ['{"step": 5']
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert sorted(train.remove_stale_temp_files(tmp_path)) == [".avatar.safetensors.x.tmp", ".last.ckpt.abc123.tmp"]
    assert train.truncate_metrics(tmp_path / "metrics.jsonl", 20) == 3
    steps = [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20]


@pytest.mark.parametrize("res", ["0", "-5", "100000", "abc"])
def test_cli_resolutions_out_of_range_are_refused(res, tmp_path):
    out = subprocess.run([sys.executable, "-m", "neural_avatar", "train", "--data", str(tmp_path), "--mode",
                          "VERTEX_PROJECTION", "--out", str(tmp_path / "o"), "--res", res],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "--res must be" in out.stderr, out.stderr[-500:]


def test_training_resolution_is_checked(tmp_path):
    from neural_avatar.neural.training.dataset import CaptureDataset, capsule_body, write_synthetic_dataset

    model = capsule_body()
    write_synthetic_dataset(str(tmp_path / "c"), n=4, res=16, body_model=model)
    for res in (0, -5, 4, True, 10 ** 6):
        with pytest.raises(DatasetError, match="resolution"):
            CaptureDataset(str(tmp_path / "c"), "train", body_model=model, res=res)


def test_bundle_format_version_must_be_an_integer(tmp_path):
    from neural_avatar import body
    from neural_avatar.neural.avatar import build_avatar
    from neural_avatar.neural.bundle import read_bundle_meta, save_bundle
    from neural_avatar.neural.config import AvatarConfig

    p = tmp_path / "a.safetensors"
    save_bundle(build_avatar(AvatarConfig.default("VERTEX_PROJECTION", resolution=32), body.load_default()), p)
    meta = json.loads(p.with_suffix(".json").read_text())
    for bad in (True, 1.0, "1", None):
        meta["format_version"] = bad
        p.with_suffix(".json").write_text(json.dumps(meta))
        with pytest.raises(BundleError, match="format version"):
            read_bundle_meta(p)


def test_fp16_on_the_cpu_runs_in_fp32():
    import contextlib

    import torch

    from neural_avatar.neural.avatar import autocast_context

    assert isinstance(autocast_context(torch.device("cpu"), "fp16"), contextlib.nullcontext)
    assert not isinstance(autocast_context(torch.device("cpu"), "bf16"), contextlib.nullcontext)


def test_a_huge_resample_is_refused(monkeypatch):
    from neural_avatar.errors import MotionFileError
    from neural_avatar.motion import Motion, resample

    m = Motion(root_orient=np.zeros((100, 3)), body_pose=np.zeros((100, 69)), trans=np.zeros((100, 3)), fps=30.0,
               source_type="smpl")
    monkeypatch.setenv(guards.LIMIT_ENV, "64")
    with pytest.raises(MotionFileError, match="would need"):
        resample(m, 30000.0)


@pytest.mark.bpy
def test_import_at_a_rate_blender_cannot_hold_changes_nothing(addon, tmp_path):
    bpy = addon
    from neural_avatar.common.paths import bundled_walk
    from neural_avatar.lab.scene_setup import add_default_body
    from neural_avatar.errors import MotionFileError
    from neural_avatar.blender import motion_import as import_motion

    scene = bpy.context.scene
    arm = add_default_body()
    before = (scene.render.fps, scene.render.fps_base, scene.frame_end, len(bpy.data.actions),
              tuple(arm.location), tuple(arm.rotation_euler))
    with pytest.raises(MotionFileError, match="frame rates of"):
        import_motion.import_motions(bpy.context, arm, [bundled_walk()], target_fps=40000.0)
    after = (scene.render.fps, scene.render.fps_base, scene.frame_end, len(bpy.data.actions),
             tuple(arm.location), tuple(arm.rotation_euler))
    assert after == before


@pytest.mark.bpy
def test_a_failure_while_keying_rolls_the_import_back(addon, monkeypatch):
    bpy = addon
    from neural_avatar.common.paths import bundled_walk
    from neural_avatar.lab.scene_setup import add_default_body
    from neural_avatar.blender import motion_import as import_motion

    scene = bpy.context.scene
    arm = add_default_body()
    before = (scene.render.fps, scene.frame_end, len(bpy.data.actions), tuple(arm.rotation_euler))

    def boom(*a, **k):
        raise ValueError("kaboom")

    monkeypatch.setattr(import_motion, "_apply_import", boom)
    with pytest.raises(NeuralAvatarError, match="left unchanged"):
        import_motion.import_motions(bpy.context, arm, [bundled_walk()], target_fps=30.0)
    assert (scene.render.fps, scene.frame_end, len(bpy.data.actions), tuple(arm.rotation_euler)) == before


@pytest.mark.bpy
def test_nan_shape_values_are_not_stored(addon):
    bpy = addon
    from neural_avatar.lab.scene_setup import add_default_body

    arm = add_default_body()
    arm.neural_avatar.betas[0] = float("nan")
    b = list(arm.neural_avatar.betas)
    assert all(np.isfinite(b)) and b[0] == 0.0
    mesh = arm.children[0]
    co = np.empty(len(mesh.data.vertices) * 3)
    mesh.data.vertices.foreach_get("co", co)
    assert np.isfinite(co).all()
