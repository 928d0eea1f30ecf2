"""Training from Blender: the operator runs the trainer in a separate process, reports errors,
and puts the finished bundle on the selected body; cancelling (SIGTERM) keeps a checkpoint."""
import json
import os
import signal
import subprocess
import time

import pytest

pytestmark = pytest.mark.bpy

bpy = pytest.importorskip("bpy")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from neural_avatar import body
    from neural_avatar.neural.training.dataset import write_synthetic_dataset

    root = tmp_path_factory.mktemp("tiny_capture")
    write_synthetic_dataset(str(root), n=4, res=32, seed=0, body_model=body.load_default())
    return str(root)


def test_train_operator_runs_in_a_subprocess_and_sets_the_avatar(addon, tiny_data, tmp_path):
    assert bpy.ops.neural_avatar.add_body(model="DEFAULT") == {"FINISHED"}
    arm = bpy.context.view_layer.objects.active
    s = bpy.context.scene.neural_avatar
    s.train_mode = "VERTEX_PROJECTION"
    s.train_data, s.train_out = tiny_data, str(tmp_path / "run")
    s.train_steps, s.train_res = 2, 32
    pid_before = os.getpid()
    assert bpy.ops.neural_avatar.train() == {"FINISHED"}
    from neural_avatar.operators import train_op

    assert train_op._JOB["proc"].pid != pid_before  # a separate process did the work
    bundle = arm.neural_avatar.avatar
    assert bundle.endswith("avatar.safetensors") and os.path.exists(bundle)
    recs = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    assert recs and all("step" in r and "loss" in r for r in recs if r.get("event", "train") == "train")
    assert "Done" in s.train_status and not s.train_running


def test_fit_identity_operator_adds_a_person_to_the_bodys_avatar(addon, tiny_data, tmp_path):
    """Fit Identity: the selected body's ANR avatar keeps its renderer; a new person is fitted on
    the Dataset in a background process and the body shows it. A body without a trained avatar
    or an SMPLpix avatar is refused with a message and nothing changes."""
    from neural_avatar.neural.bundle import read_bundle_meta

    assert bpy.ops.neural_avatar.add_body(model="DEFAULT") == {"FINISHED"}
    arm = bpy.context.view_layer.objects.active
    s = bpy.context.scene.neural_avatar
    s.train_data, s.train_res = tiny_data, 32
    with pytest.raises(RuntimeError, match="Select a body whose Avatar"):
        bpy.ops.neural_avatar.fit_identity()
    s.train_mode, s.train_out, s.train_steps = "NEURAL_TEXTURE", str(tmp_path / "base"), 2
    assert bpy.ops.neural_avatar.train() == {"FINISHED"}
    base = arm.neural_avatar.avatar
    s.train_out, s.fit_name, s.fit_frames, s.train_steps = str(tmp_path / "fit"), "guest", 2, 3
    assert bpy.ops.neural_avatar.fit_identity() == {"FINISHED"}
    assert arm.neural_avatar.avatar != base and arm.neural_avatar.identity == "guest"
    assert read_bundle_meta(arm.neural_avatar.avatar)["identities"] == ["subject", "guest"]
    assert arm.neural_avatar.identity_menu == "guest"
    s.fit_name = "../bad"
    with pytest.raises(RuntimeError, match="name"):
        bpy.ops.neural_avatar.fit_identity()
    assert arm.neural_avatar.identity == "guest"


def test_train_operator_reports_a_missing_dataset(addon, tmp_path):
    s = bpy.context.scene.neural_avatar
    s.train_data, s.train_out = str(tmp_path / "nothing"), str(tmp_path / "out")
    with pytest.raises(RuntimeError, match="No dataset"):
        bpy.ops.neural_avatar.train()


def test_sigterm_cancels_with_a_loadable_checkpoint(tiny_data, tmp_path):
    from neural_avatar.neural.training.trainer import load_checkpoint
    from neural_avatar.operators.train_op import trainer_command

    out = tmp_path / "cancel"
    cmd = trainer_command(tiny_data, str(out), "GAUSSIAN_BONES", 100000, 32, "CPU")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    for line in proc.stdout:  # wait until it is really training
        if '"progress"' in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=240)[0]
    assert proc.returncode == 1, rest[-2000:]
    assert '"cancelled"' in rest
    ck = load_checkpoint(out / "last.ckpt")
    assert ck["mode"] == "GAUSSIAN_BONES" and ck["step"] >= 1
