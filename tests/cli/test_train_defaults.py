"""The default avatars' recipe (``python -m neural_avatar train-defaults``): the command lines of
both presets, and a real (tiny, time-limited) run of the GPU preset on the CPU that installs its
bundle — the GPU recipe is tested here before it meets a GPU."""
import json
import os
import subprocess
import sys

import pytest

from neural_avatar.cli import train_defaults as TD


def _run(cmd, timeout=600):
    """Run the recipe in its own process group: on a timeout the train runs it started die too."""
    import signal

    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def test_presets_plan_the_papers_losses_at_the_capture_scale(tmp_path):
    init = tmp_path / "init"
    init.mkdir()
    (init / "vertex_projection.json").write_text("{}")
    runs = dict(TD.plan("cpu", TD.MODES, "DATA", "OUT", "cpu", 0, str(init), False, 1))
    vp = runs["VERTEX_PROJECTION"]
    assert vp[vp.index("--patch") + 1] == "128" and "--no-gan" not in vp and "--perceptual" not in vp
    assert vp[vp.index("--init") + 1] == str(init / "vertex_projection.json")
    assert "--init" not in runs["NEURAL_TEXTURE"]  # no bundle of that mode in the init folder
    assert vp[vp.index("--precision") + 1] in ("bf16", "fp32") and "--time-limit" not in vp
    gpu = dict(TD.plan("gpu", TD.MODES, "DATA", "OUT", "cuda", 10, None, True, 0))
    for mode, argv in gpu.items():
        assert argv[argv.index("--patch") + 1] == "256" and argv[argv.index("--device") + 1] == "cuda"
        assert float(argv[argv.index("--time-limit") + 1]) == 600 and "--resume" in argv and "--init" not in argv
        assert argv[argv.index("--out") + 1] == os.path.join("OUT", mode.lower())


def test_gpu_preset_runs_on_the_cpu_and_installs(tmp_path):
    from neural_avatar import body
    from neural_avatar.neural.training.dataset import write_synthetic_dataset

    data = tmp_path / "data"
    write_synthetic_dataset(str(data), n=6, res=32, seed=0, body_model=body.load_default())
    dest = tmp_path / "avatars"
    dest.mkdir()
    r = _run([sys.executable, "-m", "neural_avatar", "train-defaults", "--preset", "gpu", "--device", "cpu",
              "--data", str(data), "--out", str(tmp_path / "out"), "--modes", "GAUSSIAN_BONES",
              "--minutes", "0.01", "--install", "--install-dir", str(dest),
              "--train-args", "--patch 32 --batch 2 --val-frames 1"])
    assert r.returncode == 0, r.stdout + r.stderr + (tmp_path / "out" / "gaussian_bones" / "train.log").read_text()
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events] == ["started", "finished", "installed"]
    meta = json.loads((dest / "gaussian_bones.json").read_text())
    tr = meta["training"]
    assert tr["time_limited"] is True and tr["steps"] < tr["steps_planned"] == 6000
    assert tr["patch"] == 32 and tr["precision"] == "bf16" and tr["machine"]["device"] == "cpu"
    assert (dest / "gaussian_bones.safetensors").is_file()
    assert (dest / "training" / "gaussian_bones" / "metrics.jsonl").is_file()


def test_a_failed_run_is_reported(tmp_path):
    r = _run([sys.executable, "-m", "neural_avatar", "train-defaults", "--data", str(tmp_path / "none"),
              "--out", str(tmp_path / "out"), "--modes", "GAUSSIAN_BONES"])
    assert r.returncode == 2
    assert json.loads(r.stdout.splitlines()[-1]) == {"event": "error", "failed": ["GAUSSIAN_BONES"]}


def test_zoo_presets_train_the_generalizable_modes():
    from neural_avatar.errors import NeuralAvatarError

    runs = dict(TD.plan("zoo-gpu", TD.ZOO_MODES, "ZOO", "OUT", "cuda", 10, None, False, 0))
    assert set(runs) == {"VERTEX_PROJECTION", "GAUSSIAN_BONES", "PIXEL_ALIGNED"}
    hvs = runs["GAUSSIAN_BONES"]
    assert json.loads(hvs[hvs.index("--avatar-json") + 1]) == {"style": {"encoder": True}}
    for args in runs.values():
        assert args[args.index("--time-limit") + 1] == "600" and args.count("--time-limit") == 1
    cpu = dict(TD.plan("zoo-cpu", TD.ZOO_MODES, "ZOO", "OUT", "cpu", 0, None, False, 1))
    assert cpu["PIXEL_ALIGNED"][cpu["PIXEL_ALIGNED"].index("--time-limit") + 1] == "6000"
    with pytest.raises(NeuralAvatarError, match="no recipe for NEURAL_TEXTURE"):
        TD.plan("zoo-cpu", ["NEURAL_TEXTURE"], "ZOO", "OUT", "cpu", 0, None, False, 1)
