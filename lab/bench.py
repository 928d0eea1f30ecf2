"""``python -m neural_avatar bench --engine``: F12 per neural mode next to Cycles (64 samples) and
Workbench on the same scene and resolutions, in one run; Blender I/O share; animation frames/s;
peak memory. Ratios are against Cycles (absolute times only mean something on the same machine).

JSON: ``{"device", "f12_ms": {NAME: {"256": ms, "512": ms}}, "io_share": {NAME: fraction},
"anim_fps": {NAME: fps}, "peak_mem_mb", "speedup_vs_cycles": {NAME: {"256": x, "512": x}}}``.
"""
from __future__ import annotations

import os
import resource
import statistics
import tempfile
import time

MODES = ("VERTEX_PROJECTION", "NEURAL_TEXTURE", "GAUSSIAN_BONES")


def _f12(bpy, scene, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        bpy.ops.render.render(write_still=False)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def run(quick: bool = False, resolutions=(256, 512), anim_frames=None, log=print) -> dict:
    import bpy

    from ..common.paths import bundled_walk
    from ..engine import final, state
    from ..engine.final import resolve_device
    from .scene_setup import demo_scene

    repeats = 1 if quick else 3
    anim_frames = anim_frames or (10 if quick else 100)
    scene, body = demo_scene(res=resolutions[0], motion_path=bundled_walk(), frames=anim_frames)
    scene.frame_set(scene.frame_start + anim_frames // 2)
    out = {"device": resolve_device(scene.neural_avatar), "f12_ms": {}, "io_share": {}, "anim_fps": {},
           "peak_mem_mb": 0.0, "speedup_vs_cycles": {}}
    for name in MODES + ("CYCLES", "WORKBENCH"):
        out["f12_ms"][name] = {}
        for res in resolutions:
            scene.render.resolution_x = scene.render.resolution_y = res
            if name in MODES:
                scene.render.engine = "NEURAL_AVATAR"
                scene.neural_avatar.mode = name
                state.clear_error()
                bpy.ops.render.render(write_still=False)  # warm-up: model load, allocator
                if state.LAST_ERROR:
                    raise RuntimeError(f"{name}: {state.LAST_ERROR}")
            elif name == "CYCLES":
                scene.render.engine = "CYCLES"
                scene.cycles.samples = 64
                scene.cycles.device = "CPU"
                scene.cycles.use_denoising = False
            else:
                scene.render.engine = "BLENDER_WORKBENCH"
            ms = _f12(bpy, scene, 1 if name == "CYCLES" else repeats)
            out["f12_ms"][name][str(res)] = round(ms, 2)
            if name in MODES and final.TIMINGS:
                out["io_share"][name] = round(final.TIMINGS["io"] / max(final.TIMINGS["total"], 1e-9), 4)
            log(f"F12 {name:<18} {res}²: {ms:9.1f} ms")
    for name in MODES:
        out["speedup_vs_cycles"][name] = {
            r: round(out["f12_ms"]["CYCLES"][r] / out["f12_ms"][name][r], 2) for r in out["f12_ms"][name]}
    # Animation frames/s at the first resolution, written to disk like a user's render.
    scene.render.resolution_x = scene.render.resolution_y = resolutions[0]
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODES + ("WORKBENCH",):
            if name in MODES:
                scene.render.engine = "NEURAL_AVATAR"
                scene.neural_avatar.mode = name
            else:
                scene.render.engine = "BLENDER_WORKBENCH"
            scene.render.filepath = os.path.join(tmp, name, "f_")
            t0 = time.perf_counter()
            bpy.ops.render.render(animation=True)
            dt = time.perf_counter() - t0
            out["anim_fps"][name] = round(anim_frames / dt, 3)
            log(f"animation {name:<18} {anim_frames} frames: {out['anim_fps'][name]:.2f} frames/s")
    out["import_10k_frames_s"] = round(_import_speed(bpy, body), 3)
    log(f"AMASS import, 10,000-frame SMPL-H file: {out['import_10k_frames_s']:.2f} s")
    out["peak_mem_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    return out


def _import_speed(bpy, body, n=10000) -> float:
    """Seconds to import a synthetic 10,000-frame AMASS SMPL-H file (120 fps, native rate)."""
    import numpy as np

    from ..blender.motion_import import import_motions

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench_poses.npz")
        np.savez(path, poses=rng.normal(0, 0.3, (n, 156)), trans=rng.normal(0, 0.1, (n, 3)),
                 mocap_framerate=np.array(120.0), gender=np.array("male"), betas=np.zeros(16))
        t0 = time.perf_counter()
        import_motions(bpy.context, body, [path])
        return time.perf_counter() - t0
