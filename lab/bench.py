"""``python -m neural_avatar bench --engine``: F12 per neural mode next to Cycles (64 samples) and
Workbench on the same scene and resolutions, in one run; Blender I/O share; animation frames/s;
peak memory. Ratios are against Cycles (absolute times only mean something on the same machine).

JSON: ``{"device", "f12_ms": {NAME: {"256": ms, "512": ms}}, "io_share": {NAME: fraction},
"anim_fps": {NAME: fps}, "peak_mem_mb", "speedup_vs_cycles": {NAME: {"256": x, "512": x}}}``.
"""
from __future__ import annotations

import os
import resource

from ..common.deps import np
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


def peak_gflops(n: int = 2048, repeats: int = 5) -> dict:
    """Measured matmul throughput of this machine (GFLOP/s) in fp32 and bf16, and int8 (GOP/s,
    ``torch._int_mm``, where this torch has it on the CPU), same threads as rendering: the
    reference for how close the networks run to peak in the precision they run in."""
    import torch

    from ..neural.inference import set_threads

    set_threads()
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.rand(n, n).to(dtype)
        b = torch.rand(n, n).to(dtype)
        a @ b
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ b
        dt = (time.perf_counter() - t0) / repeats
        out[name] = round(2.0 * n ** 3 / dt / 1e9, 1)
    try:
        a = torch.randint(-128, 127, (n, n), dtype=torch.int8)
        b = torch.randint(-128, 127, (n, n), dtype=torch.int8)
        torch._int_mm(a, b)
        t0 = time.perf_counter()
        for _ in range(repeats):
            torch._int_mm(a, b)
        out["int8"] = round(2.0 * n ** 3 / ((time.perf_counter() - t0) / repeats) / 1e9, 1)
    except (RuntimeError, AttributeError, NotImplementedError):
        pass  # no CPU int8 matmul in this torch: int8 networks are compared with bf16's peak
    return out


def network_gflops(mode: str, res: int, precision: str) -> float:
    """Achieved GFLOP/s of ``mode``'s shipped network (BN folded, channels-last) on a ``res``²
    window: FLOPs counted by torch's FlopCounterMode over one render, divided by its time."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .. import body as body_lib
    from ..body import kinematics
    from ..engine import avatars
    from ..neural.avatar import FrameInputs

    from ..neural.bundle import load_bundle
    from ..neural.inference import prepare_for_inference

    av = avatars.load(avatars.default_avatar_path(mode), mode, "default-neutral-v1", "cpu")  # the backend in use
    ref = load_bundle(avatars.default_avatar_path(mode))  # torch, for counting FLOPs
    prepare_for_inference(ref)
    model = body_lib.load_default()
    v, j = kinematics.forward(model)
    f = 1.2 * res
    frame = FrameInputs(verts=torch.as_tensor(np.asarray(v, np.float32)).reshape(1, -1, 3),
                        joints=torch.as_tensor(np.asarray(j, np.float32)).reshape(1, -1, 3),
                        K=torch.tensor([[[f, 0, res / 2], [0, f, res / 2], [0, 0, 1.0]]]),
                        R=torch.tensor([[[1.0, 0, 0], [0, -1, 0], [0, 0, -1]]]), t=torch.tensor([[0.0, 0.3, 2.6]]),
                        size=(res, res))
    inputs = av.make_input(av.prepare(frame))
    if getattr(av, "channels_last", False):
        inputs = {k: (x.contiguous(memory_format=torch.channels_last) if torch.is_tensor(x) and x.ndim == 4
                      and x.is_floating_point() else x) for k, x in inputs.items()}
    from ..neural.avatar import autocast_context

    if hasattr(av.net, "set_precision"):  # the OpenVINO backend: int8 where it holds for auto / int8
        from ..neural.inference import resolve_precision

        av.net.set_precision(resolve_precision(precision, "cpu"), requested=precision)
    with torch.inference_mode(), autocast_context(av.device, precision):
        counter = FlopCounterMode(display=False)
        with counter:
            ref.run_network(inputs, frame)
        av.run_network(inputs, frame)
        t0 = time.perf_counter()
        for _ in range(3):
            av.run_network(inputs, frame)
        dt = (time.perf_counter() - t0) / 3
    return round(counter.get_total_flops() / dt / 1e9, 1)


def run_dressed(resolutions=(256, 512), repeats: int = 3, log=print) -> dict:
    """F12 on the dressed demo subject the shipped avatars were trained on (walk pose, the
    capture's framing), per neural mode next to ``CYCLES_GT`` (the ground-truth settings of the
    shipped avatars: Cycles, ``subject.CYCLES_SAMPLES`` samples, no denoiser), ``CYCLES_16`` and
    Workbench; the body at full versus half screen height; precision and GFLOP/s."""
    import bpy

    from ..blender.motion_import import import_motions
    from ..common.paths import bundled_walk
    from ..engine import final, state
    from ..neural.inference import resolve_precision
    from . import subject
    from .scene_setup import add_camera, ensure_registered, setup_render

    bpy.ops.wm.read_factory_settings(use_empty=True)
    ensure_registered()
    scene = bpy.context.scene
    subj = subject.build_demo_subject(bpy.context, texture_size=512)
    arm = subj["armature"]
    import_motions(bpy.context, arm, [bundled_walk()], target_fps=30.0)
    scene.frame_set(scene.frame_start + 10)
    pelvis = np.array(arm.matrix_world @ arm.pose.bones[0].head)
    add_camera(scene, target=(pelvis[0], pelvis[1], 0.9), distance=2.9, height=1.1, yaw_deg=20.0)
    scene.camera = bpy.data.objects["Camera"]
    out = {"f12_ms": {}, "body_scale_ms": {}, "network_gflops": {}, "precision_used": {}}
    names = MODES + ("CYCLES_GT", "CYCLES_16", "WORKBENCH")
    for name in names:
        out["f12_ms"][name] = {}
        for res in resolutions:
            if name in MODES:
                setup_render(scene, res=res)
                scene.neural_avatar.mode = name
                state.clear_error()
                bpy.ops.render.render(write_still=False)
                if state.LAST_ERROR:
                    raise RuntimeError(f"{name}: {state.LAST_ERROR}")
            elif name.startswith("CYCLES"):
                samples = subject.CYCLES_SAMPLES if name == "CYCLES_GT" else 16
                subject.setup_ground_truth_render(scene, res, "CYCLES", samples=samples)
            else:
                subject.setup_ground_truth_render(scene, res, "WORKBENCH")
            ms = _f12(bpy, scene, 1 if name.startswith("CYCLES") else repeats)
            out["f12_ms"][name][str(res)] = round(ms, 2)
            log(f"dressed F12 {name:<18} {res}²: {ms:9.1f} ms")
    for name in MODES:
        requested = scene.neural_avatar.precision.lower()
        from ..engine import avatars as _avatars

        _av = _avatars.load(_avatars.default_avatar_path(name), name, "default-neutral-v1", "cpu")
        # what the F12s above ran: the OpenVINO network reports int8 where it was kept
        out["precision_used"][name] = getattr(_av.net, "precision_used", None) or resolve_precision(requested, "cpu")
        if getattr(_av.net, "int8_psnr_db", None) is not None:
            out.setdefault("int8_psnr_db", {})[name] = _av.net.int8_psnr_db
        out.setdefault("backend", {})[name] = getattr(_av, "backend", "torch")
        out["network_gflops"][name] = {"512": network_gflops(name, 512 if 512 in resolutions else 64, requested)}
    # Body at full and at half screen height (SMPLpix, 512²): the window's side scaled by the lens.
    setup_render(scene, res=resolutions[-1])
    scene.neural_avatar.mode = "VERTEX_PROJECTION"
    cam = scene.camera.data
    for frac in (1.0, 0.5):
        bpy.ops.render.render(write_still=False)
        win = final.LAST_CROPS.get(arm.name)
        if win is not None:
            cam.lens *= frac * resolutions[-1] / (win.side * 0.87)
        bpy.ops.render.render(write_still=False)  # warm-up at the new window size, as for every F12 figure
        ms = _f12(bpy, scene, repeats)
        out["body_scale_ms"][str(frac)] = round(ms, 2)
        log(f"dressed body at {frac:.1f} of the height: {ms:9.1f} ms")
    done = list(MODES)
    pa = _bench_pixel_aligned(bpy, scene, arm, resolutions, repeats, log)
    if pa:
        out["f12_ms"]["PIXEL_ALIGNED"] = pa
        done.append("PIXEL_ALIGNED")
    out["vs"] = {name: {r: {"CYCLES_GT": round(out["f12_ms"]["CYCLES_GT"][r] / out["f12_ms"][name][r], 2),
                            "CYCLES_16": round(out["f12_ms"]["CYCLES_16"][r] / out["f12_ms"][name][r], 2)}
                        for r in out["f12_ms"][name]} for name in done}
    return out


def _bench_pixel_aligned(bpy, scene, arm, resolutions, repeats, log) -> dict:
    """F12 of the shipped PIXEL_ALIGNED avatar given 3 synchronised views of the dressed subject
    (captured first, 128², not timed); {} when the bundle is not shipped."""
    from ..engine import avatars, state
    from .new_people import capture_views
    from .scene_setup import setup_render

    if not os.path.isfile(avatars.default_avatar_path("PIXEL_ALIGNED")):
        log("dressed F12 PIXEL_ALIGNED: no shipped bundle, skipped")
        return {}
    src = tempfile.mkdtemp(prefix="na_bench_views_")
    capture_views(bpy.context, arm, src, views=3, res=128)
    arm.neural_avatar.source_views = src
    out = {}
    try:
        for res in resolutions:
            setup_render(scene, res=res)
            scene.neural_avatar.mode = "PIXEL_ALIGNED"
            state.clear_error()
            bpy.ops.render.render(write_still=False)
            if state.LAST_ERROR:
                raise RuntimeError(f"PIXEL_ALIGNED: {state.LAST_ERROR}")
            ms = _f12(bpy, scene, repeats)
            out[str(res)] = round(ms, 2)
            log(f"dressed F12 {'PIXEL_ALIGNED':<18} {res}²: {ms:9.1f} ms")
    finally:
        arm.neural_avatar.source_views = ""
    return out
