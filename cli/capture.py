"""``python -m neural_avatar capture``: capture a training dataset from the demo subject."""
from __future__ import annotations

import argparse
import json
import sys
import time

from ..common.guards import int_in
from ..lab import subject


def _ensure_registered():
    import bpy

    if not hasattr(bpy.types.Scene, "neural_avatar"):
        from .. import register

        register()


def main(argv=None) -> int:
    """``python -m neural_avatar capture --out DIR [--frames N] [--res R] [--engine E] [--seed S]
    [--motions FILE ...]``: factory scene, default body dressed as the demo subject, capture;
    prints one JSON line per frame and a summary line."""
    ap = argparse.ArgumentParser(prog="python -m neural_avatar capture",
                                 description="Capture a training dataset from the demo subject.")
    ap.add_argument("--out", required=True, help="dataset folder (created; resumable)")
    ap.add_argument("--frames", type=int_in(1, 1_000_000, "--frames"), default=200)
    ap.add_argument("--res", type=int_in(8, 16384, "--res"), default=256)
    ap.add_argument("--engine", default="CYCLES", choices=["CYCLES", "WORKBENCH", "BLENDER_WORKBENCH", "EEVEE"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=subject.CYCLES_SAMPLES, help="Cycles samples per pixel")
    ap.add_argument("--motions", nargs="+", default=None, help="AMASS/SMPL .npz clips (default: bundled clips)")
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--views", type=int_in(1, 64, "--views"), default=1,
                    help="synchronised views: each pose seen by V cameras spread around the body "
                         "(--frames must be a multiple of V); body.npz gains pose_group")
    ap.add_argument("--subjects", type=int_in(1, 10_000, "--subjects"), default=None,
                    help="capture N random zoo subjects (lab.subject.SubjectSpec.random) instead of the demo "
                         "subject: each into OUT/subjects/<name>/ (resumable), then merged into one "
                         "multi-identity capture in OUT (--frames per subject)")
    ap.add_argument("--subject-seed", type=int, default=1000,
                    help="seed of the first zoo subject (subject k uses SEED + k); keep training and "
                         "evaluation seeds disjoint")
    a = ap.parse_args(argv)
    import bpy

    from ..lab.capture import capture_dataset
    engine = "BLENDER_WORKBENCH" if a.engine == "WORKBENCH" else a.engine
    if a.subjects:
        return _capture_zoo(a, engine)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    _ensure_registered()
    ctx = bpy.context
    t0 = time.perf_counter()
    subj = subject.build_demo_subject(ctx, texture_size=a.texture_size)
    print(json.dumps({"subject": subj["armature"].name, "seconds": round(time.perf_counter() - t0, 2)}), flush=True)
    summary = capture_dataset(ctx, a.out, a.frames, a.res, engine, a.seed, a.motions, arm=subj["armature"],
                              samples=a.samples, vertex_colors=subj["vertex_colors"], views=a.views,
                              progress=lambda info: print(json.dumps(info), flush=True))
    print(json.dumps({"finished": summary}), flush=True)
    return 0


def _capture_zoo(a, engine: str) -> int:
    """``--subjects N``: one capture per zoo subject, then the merged multi-identity capture."""
    import os

    import bpy

    from ..lab.capture import capture_dataset
    from ..neural.training.dataset import merge_captures

    parts, names, specs = [], [], {}
    for k in range(a.subjects):
        spec = subject.SubjectSpec.random(a.subject_seed + k)
        part = os.path.join(a.out, "subjects", spec.name)
        bpy.ops.wm.read_factory_settings(use_empty=True)
        _ensure_registered()
        ctx = bpy.context
        t0 = time.perf_counter()
        subj = subject.build_demo_subject(ctx, texture_size=a.texture_size, spec=spec)
        print(json.dumps({"subject": spec.name, "spec": spec.to_dict(), "seconds": round(time.perf_counter() - t0, 2)}),
              flush=True)
        summary = capture_dataset(ctx, part, a.frames, a.res, engine, a.seed + k, a.motions, arm=subj["armature"],
                                  samples=a.samples, vertex_colors=subj["vertex_colors"], views=a.views,
                                  progress=lambda info, n=spec.name: print(json.dumps({"subject": n, **info}), flush=True))
        parts.append(part)
        names.append(spec.name)
        specs[spec.name] = spec.to_dict()
        print(json.dumps({"subject_finished": spec.name, **summary}), flush=True)
    meta = merge_captures(parts, a.out, names, extra={"specs": specs, "subject_seed": a.subject_seed})
    print(json.dumps({"finished": {"out_dir": a.out, "identities": names, "frames": meta["num_frames"]}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
