"""``python -m neural_avatar bench``: one entry for the benchmarks.

``--core``: neural stages per mode and vertex scaling (pure torch, :mod:`.neural.bench_core`).
``--engine``: F12 per mode vs Cycles and Workbench through Blender (:mod:`.engine.bench`).
With neither flag both run. ``--json OUT`` writes the combined results.
"""
from __future__ import annotations

import argparse
import json
import os


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m neural_avatar bench", description=__doc__)
    p.add_argument("--core", action="store_true", help="neural core stages (no Blender)")
    p.add_argument("--engine", action="store_true", help="F12 through Blender vs Cycles/Workbench")
    p.add_argument("--json", help="write results here")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    a, rest = p.parse_known_args(argv)
    run_core = a.core or not a.engine
    run_engine = a.engine or not a.core
    results = {}
    if run_core:
        from .neural import bench_core

        results["core"] = bench_core.run(quick=a.quick) if hasattr(bench_core, "run") else bench_core.main(
            rest + (["--quick"] if a.quick else []))
    if run_engine:
        from .engine import bench as engine_bench

        results["engine"] = engine_bench.run(quick=a.quick)
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        payload = results["core"] if (run_core and not run_engine) else (
            results["engine"] if (run_engine and not run_core) else results)
        with open(a.json, "w") as f:
            json.dump(payload, f, indent=2)
        print(f"wrote {a.json}")
    return 0
