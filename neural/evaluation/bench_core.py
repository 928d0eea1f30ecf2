"""``python -m neural_avatar bench --core [--json OUT]``: per-stage timings of the three
avatar pipelines (untrained networks of the shipping default configs) on this machine.

Measures, with warm-up and the median of ``--repeats`` runs, batch 1, fp32, inference mode:

* for each mode at 256² and 512²: the input stage (vertex projection / rasterisation +
  texture sampling / Gaussian feature rendering) and the network stage;
* the cost of vertex projection + network at 256² against the vertex count (7k, 27k, 110k
  vertices). SMPLpix (sec. 4, run times) notes that its neural stage "is agnostic to the
  number of projected points": the network column should be flat, only the projection grows.

JSON layout (``--json OUT``)::

    {"device": str,
     "stages_ms": {MODE: {"256": {"input": ms, "network": ms}, "512": {...}}},
     "vertex_scaling_ms": {"7000": ms, "27000": ms, "110000": ms}}

Bodies are procedural (a UV-mapped ellipsoid "torso" with a fixed SMPL-like 24-joint
skeleton), except the 27k body, which is the packaged default body when
``neural_avatar.body.load_default()`` works.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch

from ..config import IMAGE_MODES as MODES, VERTEX_PROJECTION, AvatarConfig

SIZES = (256, 512)
VERTEX_COUNTS = (7000, 27000, 110000)

#: SMPL kinematic tree (parents of the 24 joints, root -1).
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
#: Approximate SMPL rest (T-pose) joint positions in the model frame (Y-up, metres).
_SMPL_JOINTS = np.array([
    [0.0, 0.0, 0.0], [0.06, -0.09, 0.0], [-0.06, -0.09, 0.0], [0.0, 0.11, 0.0],
    [0.10, -0.47, 0.0], [-0.10, -0.47, 0.0], [0.0, 0.25, 0.0], [0.09, -0.87, -0.04],
    [-0.09, -0.87, -0.04], [0.0, 0.30, 0.02], [0.12, -0.93, 0.08], [-0.12, -0.93, 0.08],
    [0.0, 0.51, 0.0], [0.08, 0.42, 0.0], [-0.08, 0.42, 0.0], [0.0, 0.60, 0.05],
    [0.18, 0.45, 0.0], [-0.18, 0.45, 0.0], [0.44, 0.43, 0.0], [-0.44, 0.43, 0.0],
    [0.69, 0.43, 0.0], [-0.69, 0.43, 0.0], [0.77, 0.42, 0.0], [-0.77, 0.42, 0.0],
], dtype=np.float32)


def procedural_body(num_verts: int) -> SimpleNamespace:
    """A closed-ish UV-mapped ellipsoid (lat-long grid with a UV seam) of about
    ``num_verts`` vertices, 1.9 m tall, centred at the pelvis, with the SMPL skeleton.
    Attributes: ``verts, faces, vt, ft, joints, parents, num_verts, model_id``."""
    n_lon = max(8, int(round(math.sqrt(num_verts / 2.0))))
    n_lat = max(4, int(round(num_verts / (n_lon + 1))) - 1)
    th = np.linspace(0.0, np.pi, n_lat + 1)
    ph = np.linspace(0.0, 2.0 * np.pi, n_lon + 1)
    T, P = np.meshgrid(th, ph, indexing="ij")
    verts = np.stack([0.45 * np.sin(T) * np.cos(P), 0.95 * np.cos(T), 0.18 * np.sin(T) * np.sin(P)], -1)
    verts = verts.reshape(-1, 3).astype(np.float32)
    uv = np.stack([P / (2 * np.pi), 1.0 - T / np.pi], -1).reshape(-1, 2).astype(np.float32)
    i, j = np.meshgrid(np.arange(n_lat), np.arange(n_lon), indexing="ij")
    a = (i * (n_lon + 1) + j).ravel()
    b = a + n_lon + 1
    faces = np.concatenate([np.stack([a, b, a + 1], 1), np.stack([a + 1, b, b + 1], 1)]).astype(np.int64)
    return SimpleNamespace(verts=verts, faces=faces, vt=uv, ft=faces, joints=_SMPL_JOINTS.copy(),
                           parents=np.array(SMPL_PARENTS), num_verts=len(verts), model_id=f"procedural-{len(verts)}")


def default_or_procedural(num_verts: int) -> SimpleNamespace:
    """The packaged default body (if ``neural_avatar.body.load_default`` works), else procedural."""
    try:
        from ...body import load_default# type: ignore[attr-defined]

        body = load_default()
        verts = next(np.asarray(getattr(body, n), np.float32) for n in ("v_template", "template", "verts")
                     if getattr(body, n, None) is not None)
        joints = getattr(body, "j_template", None)
        if joints is None:
            joints = getattr(body, "joints", None)
        if joints is None:
            joints = np.asarray(body.J_regressor) @ verts
        return SimpleNamespace(verts=verts, faces=np.asarray(body.faces, np.int64), vt=body.vt, ft=body.ft,
                               joints=np.asarray(joints, np.float32)[:len(body.parents)],
                               parents=np.asarray(body.parents), num_verts=int(body.num_verts),
                               model_id=str(body.model_id))
    except Exception:  # noqa: BLE001 - any failure means "no usable default body here"
        return procedural_body(num_verts)


def make_frame(body, size: int):
    """Batch-1 :class:`FrameInputs` of ``body`` seen from the front, filling the frame."""
    from ..avatar import FrameInputs
    from ..inputs.camera import look_at_krt

    v = np.asarray(body.verts, np.float32)
    centre = 0.5 * (v.min(0) + v.max(0))
    height = float(v[:, 1].max() - v[:, 1].min())
    fov = 40.0
    dist = 0.6 * height / math.tan(math.radians(fov / 2))
    K, R, t = look_at_krt(centre + np.array([0, 0, dist]), centre, [0, 1, 0], fov, size, size)
    f32 = lambda x: torch.as_tensor(np.asarray(x, np.float32))[None]  # noqa: E731
    return FrameInputs(verts=f32(v), joints=f32(body.joints), K=f32(K), R=f32(R), t=f32(t), size=(size, size))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_stages(avatar, frame, repeats: int, warmup: int = 1) -> tuple[float, float]:
    """Median (input ms, network ms) of ``repeats`` runs after ``warmup`` runs."""
    dev = avatar.device
    avatar.eval()
    frame = frame.to(dev)
    t_in, t_net = [], []
    with torch.inference_mode():
        for k in range(warmup + repeats):
            _sync(dev)
            t0 = time.perf_counter()
            inputs = avatar.make_input(frame)
            _sync(dev)
            t1 = time.perf_counter()
            avatar.run_network(inputs, frame)
            _sync(dev)
            t2 = time.perf_counter()
            if k >= warmup:
                t_in.append((t1 - t0) * 1e3)
                t_net.append((t2 - t1) * 1e3)
    return statistics.median(t_in), statistics.median(t_net)


def run_core(device: torch.device, repeats: int = 3, log=print) -> dict:
    """Run the benchmark; returns the JSON-layout dict."""
    from ..avatar import build_avatar

    torch.manual_seed(0)
    body27 = default_or_procedural(27000)
    result = {"device": describe_device(device), "stages_ms": {}, "vertex_scaling_ms": {}}
    log(f"neural_avatar bench --core  device: {result['device']}  body: {body27.model_id} "
        f"({body27.num_verts} vertices)  median of {repeats}")
    log(f"{'mode':<20}{'size':>6}{'input ms':>12}{'network ms':>12}{'total ms':>12}")
    for mode in MODES:
        avatar = build_avatar(AvatarConfig.default(mode), body27).to(device)
        result["stages_ms"][mode] = {}
        for size in SIZES:
            t_in, t_net = time_stages(avatar, make_frame(body27, size), repeats)
            result["stages_ms"][mode][str(size)] = {"input": round(t_in, 3), "network": round(t_net, 3)}
            log(f"{mode:<20}{size:>6}{t_in:>12.1f}{t_net:>12.1f}{t_in + t_net:>12.1f}")
        del avatar
    log("vertex projection + network at 256² against the vertex count:")
    log(f"{'vertices':>20}{'':>6}{'input ms':>12}{'network ms':>12}{'total ms':>12}")
    for n in VERTEX_COUNTS:
        body = body27 if n == 27000 else procedural_body(n)
        avatar = build_avatar(AvatarConfig.default(VERTEX_PROJECTION), body).to(device)
        t_in, t_net = time_stages(avatar, make_frame(body, 256), repeats)
        result["vertex_scaling_ms"][str(n)] = round(t_in + t_net, 3)
        log(f"{body.num_verts:>20}{'':>6}{t_in:>12.1f}{t_net:>12.1f}{t_in + t_net:>12.1f}")
    return result


def run(quick: bool = False, device: str = "AUTO", repeats: int | None = None) -> dict:
    """Entry used by the ``bench`` dispatcher: pick the device, print the table, return the
    JSON-layout dict. ``quick``: one timed run per measurement (smoke test)."""
    from ..device import pick_device

    dev = pick_device(device, warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    return run_core(dev, repeats or (1 if quick else 3))


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


def main(argv=None) -> int:
    """Entry point of ``python -m neural_avatar bench --core [--json OUT]``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        argv = argv[1:]
    ap = argparse.ArgumentParser(prog="python -m neural_avatar bench",
                                 description="Per-stage timings of the three neural avatar pipelines.")
    ap.add_argument("--core", action="store_true", help="time input renderers and networks (untrained defaults)")
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    ap.add_argument("--device", default="AUTO", help="AUTO, CUDA, MPS or CPU (default AUTO)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median; default 3)")
    ap.add_argument("--quick", action="store_true", help="one timed run per measurement (smoke test)")
    args = ap.parse_args(argv)
    if not args.core:
        ap.error("only 'bench --core' is available here")
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    from ...errors import NeuralAvatarError

    try:
        result = run(device=args.device, repeats=1 if args.quick else args.repeats)
    except NeuralAvatarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return 0


__all__ = ["main", "run", "run_core", "procedural_body", "make_frame", "time_stages", "SMPL_PARENTS"]
