"""``python -m neural_avatar bench``: one entry for the benchmarks.

``--core``: per-stage ms of each neural mode at 256²/512² and the cost against vertex count
(pure torch, :mod:`.neural.bench_core`; JSON ``{"device", "stages_ms", "vertex_scaling_ms"}``).
``--engine``: F12 per mode next to Cycles (64 samples) and Workbench through Blender, the
Blender I/O share, animation frames/s, peak memory and the AMASS import speed
(:mod:`.engine.bench`; JSON ``{"device", "f12_ms", "io_share", "anim_fps", "peak_mem_mb", …}``).
With neither flag both run in one process and the JSON holds both layouts' keys.
"""
from __future__ import annotations

import argparse
import json
import os


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m neural_avatar bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--core", action="store_true", help="neural core stages (no Blender)")
    p.add_argument("--engine", action="store_true", help="F12 through Blender vs Cycles/Workbench")
    p.add_argument("--json", help="write results here")
    p.add_argument("--device", default="AUTO", help="AUTO, CUDA, MPS or CPU")
    p.add_argument("--quick", action="store_true", help="one repetition, short animation (smoke test)")
    a = p.parse_args(argv)
    run_core = a.core or not a.engine
    run_engine = a.engine or not a.core
    results: dict = {}
    if run_core:
        from ..neural.evaluation import bench_core

        results.update(bench_core.run(quick=a.quick, device=a.device))
    if run_engine:
        from ..lab import bench as engine_bench

        eng = engine_bench.run(quick=a.quick)
        results["device"] = results.get("device", eng["device"])
        results.update({k: v for k, v in eng.items() if k != "device"})
        results["peak_gflops"] = engine_bench.peak_gflops()
        dressed = engine_bench.run_dressed(repeats=1 if a.quick else 3)
        results["dressed"] = {k: dressed[k] for k in ("f12_ms", "body_scale_ms", "vs")}
        results["network_gflops"] = dressed["network_gflops"]
        results["precision_used"] = dressed["precision_used"]
        results["backend"] = dressed.get("backend", {})
        results["int8_psnr_db"] = dressed.get("int8_psnr_db", {})  # int8 vs Float32 where it was tried
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {a.json}")
    return 0
