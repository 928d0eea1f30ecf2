"""``python -m neural_avatar train-defaults``: the recipe that makes the shipped default avatars.

One command trains all three modes on a capture of the demo subject (made beforehand with
``python -m neural_avatar capture --res 512 ...``), side by side, and optionally installs the
bundles as the defaults (``data/avatars/<mode>.json|.safetensors`` and the training curves under
``data/avatars/training/<mode>/``). Two presets:

* ``cpu`` — what fits a 2-core CPU in about two hours in the background: 128-px patches at the
  capture's pixel scale (random rescale 0.5–1 so 256² and 512² renders are both in range), bf16
  autocast where the CPU has native bf16, started from the previous default avatars
  (coarse-to-fine), the papers' losses (SMPLpix stage 2 and ANR with their adversarial terms),
  the haze penalty; the three runs share the cores.
* ``gpu`` — the papers' schedule at 512² on one GPU within ``--minutes`` (default 10) of wall
  clock: 256-px patches (batch 8) of the 512² frames, from scratch, bf16, every run ending
  normally at its time limit; the three runs share the GPU.

The generalizable avatars (issues "new people" and AniPixel) have their own presets, run on a
multi-subject zoo capture (``capture --subjects 12 --views 4 --res 128 ...``) and installed into
``data/avatars/zoo/``: SMPLpix for every subject, HVS with its appearance encoder (eq. 4) and
PIXEL_ALIGNED (AniPixel):

* ``zoo-cpu`` — about 55 min (SMPLpix, HVS) and 100 min (AniPixel) side by side on a 2-core CPU,
  128², warm-started from the single-subject defaults where the weights fit;
* ``zoo-gpu`` — every run within ``--minutes`` (default 10) on one GPU.

Each run is a ``python -m neural_avatar train`` process (resumable with ``--resume``); its log is
``OUT/<mode>/train.log``. Each bundle's JSON records where and how it was trained.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from ..common.guards import float_in, int_in

MODES = ("VERTEX_PROJECTION", "NEURAL_TEXTURE", "GAUSSIAN_BONES")
ZOO_MODES = ("VERTEX_PROJECTION", "GAUSSIAN_BONES", "PIXEL_ALIGNED")
_ENCODER = ["--avatar-json", '{"style": {"encoder": true}}']
#: SMPLpix beside eq. 6: the mask BCE at 10 (at 1 the alpha had holes inside the body, ~3.6 dB of
#: box PSNR) and an image L1 at 10 (eq. 6 alone let the skirt take the shirt's colours)
_VP_ALPHA_COLOUR = ["--mask-weight", "10", "--pixel-weight", "10"]

#: per-preset, per-mode ``train`` flags (the recipe; README "Default avatars" gives the figures)
PRESETS = {
    "cpu": {
        "common": ["--patch", "128", "--batch", "4", "--val-every", "250", "--ckpt-every", "50",
                   "--val-frames", "4", "--log-every", "10"],
        "VERTEX_PROJECTION": ["--steps", "1800", "--stage1-fraction", "0.5"] + _VP_ALPHA_COLOUR,
        "NEURAL_TEXTURE": ["--steps", "1600"],
        "GAUSSIAN_BONES": ["--steps", "1800"],
    },
    "gpu": {
        "common": ["--patch", "256", "--batch", "8", "--val-every", "500", "--ckpt-every", "250",
                   "--val-frames", "8", "--log-every", "25", "--precision", "bf16"],
        "VERTEX_PROJECTION": ["--steps", "6000", "--stage1-fraction", "0.5"] + _VP_ALPHA_COLOUR,
        "NEURAL_TEXTURE": ["--steps", "6000"],
        "GAUSSIAN_BONES": ["--steps", "6000"],
    },
    "zoo-cpu": {
        "common": ["--res", "128", "--val-every", "300", "--ckpt-every", "100", "--val-frames", "2",
                   "--log-every", "10"],
        "VERTEX_PROJECTION": ["--steps", "2400", "--batch", "4", "--stage1-fraction", "0.5", "--time-limit", "3300"]
        + _VP_ALPHA_COLOUR,
        "GAUSSIAN_BONES": ["--steps", "2400", "--batch", "4", "--time-limit", "3300"] + _ENCODER,
        "PIXEL_ALIGNED": ["--steps", "3000", "--batch", "1", "--patch", "32", "--val-every", "0",
                          "--time-limit", "6000"],
    },
    "zoo-gpu": {
        "common": ["--res", "128", "--val-every", "1000", "--ckpt-every", "250", "--val-frames", "4",
                   "--log-every", "25", "--precision", "bf16"],
        "VERTEX_PROJECTION": ["--steps", "8000", "--batch", "16", "--stage1-fraction", "0.5"] + _VP_ALPHA_COLOUR,
        "GAUSSIAN_BONES": ["--steps", "8000", "--batch", "16"] + _ENCODER,
        "PIXEL_ALIGNED": ["--steps", "6000", "--batch", "4", "--patch", "64"],
    },
}


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_has_bf16() -> bool:
    from ..neural.inference import cpu_has_bf16 as has

    return bool(has())


def plan(preset: str, modes, data: str, out: str, device: str, minutes: float, init_dir: str | None,
         resume: bool, threads: int) -> list:
    """The ``train`` command line of every mode (a list of ``(mode, argv)``)."""
    spec = PRESETS[preset]
    runs = []
    for mode in modes:
        argv = ["--data", data, "--mode", mode, "--out", os.path.join(out, mode.lower()), "--device", device]
        if mode not in spec:
            from ..errors import NeuralAvatarError

            raise NeuralAvatarError(f"The {preset} preset has no recipe for {mode}; its modes: "
                                    f"{', '.join(k for k in spec if k != 'common')}.")
        argv += spec["common"] + spec[mode]
        if preset in ("cpu", "zoo-cpu") and "--precision" not in argv:
            argv += ["--precision", "bf16" if device == "cpu" and cpu_has_bf16() else "fp32"]
        if threads:
            argv += ["--threads", str(threads)]
        if minutes > 0 and "--time-limit" not in argv:
            argv += ["--time-limit", f"{max(1.0, minutes * 60):g}"]
        if init_dir:
            init = os.path.join(init_dir, mode.lower() + ".json")
            if os.path.isfile(init):
                argv += ["--init", init]
        if resume:
            argv.append("--resume")
        runs.append((mode, argv))
    return runs


def install(out: str, mode: str, dest: str) -> list:
    """Copy a finished run's bundle and curves into ``dest`` (data/avatars)."""
    run = os.path.join(out, mode.lower())
    copied = []
    for ext in (".json", ".safetensors"):
        src = os.path.join(run, "avatar" + ext)
        if not os.path.isfile(src):
            raise FileNotFoundError(src)
        shutil.copy2(src, os.path.join(dest, mode.lower() + ext))
        copied.append(mode.lower() + ext)
    tdir = os.path.join(dest, "training", mode.lower())
    os.makedirs(tdir, exist_ok=True)
    for name in ("loss.png", "metrics.jsonl"):
        if os.path.isfile(os.path.join(run, name)):
            shutil.copy2(os.path.join(run, name), os.path.join(tdir, name))
    vals = sorted(os.listdir(os.path.join(run, "val"))) if os.path.isdir(os.path.join(run, "val")) else []
    if vals:
        shutil.copy2(os.path.join(run, "val", vals[-1]), os.path.join(tdir, "validation_last.png"))
    return copied


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m neural_avatar train-defaults",
                                 description="Train the three default avatars (the shipped recipe) on a capture.")
    ap.add_argument("--data", required=True, help="capture folder of the demo subject (capture --res 512)")
    ap.add_argument("--out", required=True, help="output folder (one sub-folder per mode)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--modes", nargs="+", choices=sorted(set(MODES) | set(ZOO_MODES)), default=None,
                    help="default: the preset's (three single-subject modes; zoo: SMPLpix, HVS+encoder, AniPixel)")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda for --preset gpu)")
    ap.add_argument("--minutes", type=float_in(0.0, 10000.0, "--minutes"), default=None,
                    help="wall-clock budget of every run (default: 10 for gpu, none for cpu)")
    ap.add_argument("--init-dir", default=None,
                    help="start each mode from <dir>/<mode>.json (default for cpu: the shipped data/avatars)")
    ap.add_argument("--threads", type=int_in(0, 1024, "--threads"), default=None,
                    help="torch threads per run (default: the cores shared between the runs)")
    ap.add_argument("--resume", action="store_true", help="continue each run from its last.ckpt")
    ap.add_argument("--install", action="store_true", help="copy the bundles into data/avatars when all finish")
    ap.add_argument("--install-dir", default=None, help="where --install copies to (default: the add-on's data/avatars)")
    ap.add_argument("--dry-run", action="store_true", help="print the train commands and exit")
    ap.add_argument("--train-args", default="", metavar="ARGS",
                    help='extra `train` flags appended to every run (later flags win), e.g. "--batch 2"')
    a = ap.parse_args(argv)
    zoo = a.preset.startswith("zoo")
    a.modes = a.modes or list(ZOO_MODES if zoo else MODES)
    gpu = a.preset in ("gpu", "zoo-gpu")
    device = a.device or ("cuda" if gpu else "cpu")
    minutes = a.minutes if a.minutes is not None else (10.0 if gpu else 0.0)
    init_dir = a.init_dir if a.init_dir is not None else (
        os.path.join(_repo_root(), "data", "avatars") if a.preset in ("cpu", "zoo-cpu") else None)
    threads = a.threads if a.threads is not None else (
        max(1, (os.cpu_count() or 2) // len(a.modes)) if device == "cpu" else 0)
    runs = plan(a.preset, a.modes, a.data, a.out, device, minutes, init_dir, a.resume, threads)
    if a.train_args:
        import shlex

        runs = [(m, args + shlex.split(a.train_args)) for m, args in runs]
    if a.dry_run:
        for mode, args in runs:
            print(" ".join(["python", "-m", "neural_avatar", "train"] + args))
        return 0
    os.makedirs(a.out, exist_ok=True)
    procs = []
    t0 = time.time()
    for mode, args in runs:
        os.makedirs(os.path.join(a.out, mode.lower()), exist_ok=True)
        log = open(os.path.join(a.out, mode.lower(), "train.log"), "a", encoding="utf-8")
        cmd = [sys.executable, "-m", __spec__.parent.rsplit(".", 1)[0] if __spec__ else "neural_avatar", "train"] + args
        procs.append((mode, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
        print(json.dumps({"event": "started", "mode": mode, "log": os.path.join(a.out, mode.lower(), "train.log")}),
              flush=True)
    import signal

    def stop_children(signum, _frame):  # Ctrl+C / kill: every run writes its checkpoint and stops
        for _, child, _ in procs:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(sig, stop_children)
        except (ValueError, OSError):
            pass
    failed = []
    for mode, p, log in procs:
        rc = p.wait()
        log.close()
        print(json.dumps({"event": "finished", "mode": mode, "rc": rc, "minutes": round((time.time() - t0) / 60, 1)}),
              flush=True)
        if rc != 0:
            failed.append(mode)
    if failed:
        print(json.dumps({"event": "error", "failed": failed}), flush=True)
        return 2
    if a.install:
        dest = a.install_dir or os.path.join(_repo_root(), "data", "avatars", *(("zoo",) if zoo else ()))
        os.makedirs(dest, exist_ok=True)
        for mode, _ in runs:
            print(json.dumps({"event": "installed", "mode": mode, "files": install(a.out, mode, dest)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
