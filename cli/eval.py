"""``python -m neural_avatar eval``: evaluate avatars against the classical per-vertex-colour render."""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from ..common.deps import np
from ..common.guards import float_in, int_in
from ..errors import NeuralAvatarError
from ..lab.evaluate import CLASSICAL, _grid_frames, _log, _write_json, evaluate_methods, load_ground_truth, load_motions, make_eval_plan, render_ground_truth, resolve_avatars


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "(not installed)"


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    t_start = time.perf_counter()
    if a.res < 16:
        raise NeuralAvatarError(f"--res must be at least 16 pixels, got {a.res}.")
    if a.batch < 1:
        raise NeuralAvatarError(f"--batch must be at least 1, got {a.batch}.")
    from .. import body as body_lib
    from ..neural.evaluation import metrics as M
    from ..neural.evaluation.baseline import VertexColorBaseline
    from ..neural.bundle import load_bundle
    from ..neural.config import MODES
    from ..neural.device import resolve_device
    from ..lab import subject

    if M.LPIPS_SOURCE.startswith("unavailable"):
        raise NeuralAvatarError(f"The LPIPS metric is {M.LPIPS_SOURCE}. Install stlpips-pytorch==0.0.2 "
                                "(its AlexNet weights are read offline).")
    import importlib.util

    if importlib.util.find_spec("flip_evaluator") is None:
        raise NeuralAvatarError("The FLIP metric needs the flip-evaluator package: pip install flip-evaluator==1.7")
    device, warn = resolve_device(a.device)
    if warn:
        _log(f"warning: {warn}")
    model = body_lib.load_default()
    motions = load_motions(a.motion)
    if a.unseen_subjects:
        return _unseen(a, model, motions, device, t_start)
    bundles = resolve_avatars(a.avatar)
    avatars = {}
    for mode in MODES:
        if mode in bundles:
            avatars[mode] = load_bundle(bundles[mode], device=device, expected_body=model)
    plan = make_eval_plan(model, motions, a.views, a.frames, a.fps, a.seed, a.start)
    N = len(plan["sequence"])
    samples = subject.CYCLES_SAMPLES if a.samples is None else int(a.samples)
    engine = "BLENDER_WORKBENCH" if a.engine == "WORKBENCH" else a.engine
    _log(f"evaluating {', '.join([CLASSICAL] + list(avatars))} on {N} frames "
         f"({len(motions)} motion(s) x {a.views} view(s) x up to {a.frames} frames, {a.res}px, {a.engine})")

    own_tmp = a.gt_dir is None
    gt_dir = tempfile.mkdtemp(prefix="na_eval_gt_") if own_tmp else os.path.abspath(a.gt_dir)
    try:
        t0 = time.perf_counter()
        gt_info = render_ground_truth(
            plan, gt_dir, a.res, engine, samples, a.seed, a.motion, a.texture_size,
            progress=lambda info: _log(f"ground truth {info['done']}/{info['of']} ({info['seconds']} s)"))
        gt_seconds = time.perf_counter() - t0
        gt = load_ground_truth(gt_dir, model)
        methods = {CLASSICAL: VertexColorBaseline(model.faces, gt["vertex_colors"], gt["background"].tolist(),
                                                  supersample=2, device=device)}
        methods.update(avatars)
        margin = max(1, int(round(a.res / 32)))
        t1 = time.perf_counter()
        ev = evaluate_methods(gt, methods, plan["sequence"], margin, a.batch, _grid_frames(plan["sequence"]))
        eval_seconds = time.perf_counter() - t1
    finally:
        if own_tmp:
            shutil.rmtree(gt_dir, ignore_errors=True)
    result = ev["result"]
    result["metrics"] = {
        "lpips": M.LPIPS_SOURCE,
        "flip": "NVIDIA FLIP (LDR, 67 pixels per degree), flip-evaluator " + _version("flip-evaluator"),
        "haze": f"share of the frame outside the ground-truth silhouette dilated by {M.haze_radius((a.res, a.res))} px "
                "(1 % of the side) where the predicted alpha exceeds 0.05",
        "bbox_margin_px": margin}
    _write_json(a.json, result)
    from ..neural.evaluation import report

    print(report.table_markdown(result["methods"]), end="")
    flick = {n: float(np.mean(v)) for n, v in ev["flicker_raw"].items()}
    print(f"mean frame-to-frame change: GT {float(np.mean(ev['flicker_gt'])):.5f}, "
          + ", ".join(f"{n} {v:.5f}" for n, v in flick.items()))
    if a.report:
        details = {
            "frames": N, "settings": {"motions": [os.path.basename(p) for p in a.motion], "views": a.views,
                                      "frames_per_motion": a.frames, "fps": a.fps, "seed": a.seed, "res": a.res,
                                      "engine": a.engine, "samples": samples, "bbox_margin_px": margin,
                                      "baseline_supersample": 2, "device": str(device)},
            "avatars": {m: os.path.basename(p) for m, p in bundles.items()},
            "lpips_source": M.LPIPS_SOURCE, "sequences": plan["sequences"],
            "flicker_definition": "D = mean_t mean_pixels |f_t - f_(t-1)| per static-camera sequence; "
                                  "flicker = mean over sequences of |D(method) - D(GT)|",
            "flicker_method": ev["flicker_raw"], "flicker_gt": ev["flicker_gt"],
            "per_frame": ev["per_frame"], "timing_s": {"ground_truth": round(gt_seconds, 2),
                                                       "ground_truth_per_frame": round(gt_info["seconds_per_frame"], 3),
                                                       "evaluation": round(eval_seconds, 2)},
            "result": result,
        }
        notes = [
            f"{N} frames: {len(motions)} motion(s) ({', '.join(m.name for m in motions)}) x {a.views} held-out "
            f"static camera(s) x up to {a.frames} consecutive frames at {a.fps:g} fps, {a.res}x{a.res}, "
            f"ground truth rendered with {a.engine}" + (f" ({samples} samples)" if a.engine == "CYCLES" else "") + ".",
            f"bbox = the ground-truth body mask's bounding box grown by {margin} px; full = the whole image. "
            "PSNR is capped at 100 dB.",
            f"LPIPS: {M.LPIPS_SOURCE}. FLIP: {result['metrics']['flip']}. haze: {result['metrics']['haze']}.",
            "CLASSICAL: the body mesh rasterized with the subject's per-vertex colours (SMPLpix Table 1 "
            "'per-verts'), 2x2 supersampled, no lighting.",
            "flicker: per static-camera sequence D = mean over t of the mean |frame t - frame t-1|; the table "
            "shows mean |D(method) - D(ground truth)|. Raw values: GT "
            f"{float(np.mean(ev['flicker_gt'])):.5f}, " + ", ".join(f"{n} {v:.5f}" for n, v in flick.items()) + ".",
        ]
        files = report.write_report(a.report, result, grid=ev["grid"],
                                    per_frame={k: ev["per_frame"][k] for k in ("psnr_mask", "lpips_mask")},
                                    flicker_curves=ev["flicker_curves"], notes=notes, details=details)
        print(f"report: {files['index.html']}")
    print(f"metrics: {os.path.abspath(a.json)} ({time.perf_counter() - t_start:.1f} s)")
    return 0


def _unseen(a, model, motions, device, t_start) -> int:
    """``--unseen-subjects K``: lab/unseen.py's protocol."""
    from ..lab import subject, unseen
    from ..neural.evaluation import metrics as M
    from ..neural.evaluation import report

    bundles = resolve_avatars(a.avatar, allow_pixel_aligned=True) if a.avatar else unseen.default_bundles()
    samples = subject.CYCLES_SAMPLES if a.samples is None else int(a.samples)
    engine = "BLENDER_WORKBENCH" if a.engine == "WORKBENCH" else a.engine
    own_tmp = a.gt_dir is None
    gt_root = tempfile.mkdtemp(prefix="na_unseen_") if own_tmp else os.path.abspath(a.gt_dir)
    _log(f"unseen subjects: {a.unseen_subjects} x ({len(motions)} motion(s) x {a.views} view(s) x {a.frames} frames), "
         f"{a.res}px, methods {', '.join([CLASSICAL] + list(bundles))}")
    try:
        out = unseen.evaluate_unseen(bundles, a.unseen_subjects, a.motion, motions, a.views, a.frames, a.fps, a.seed,
                                     a.start, a.res, engine, samples, gt_root, device, model, a.texture_size,
                                     a.batch, a.fit_steps)
    finally:
        if own_tmp:
            shutil.rmtree(gt_root, ignore_errors=True)
    result = out["result"]
    result["metrics"] = {"lpips": M.LPIPS_SOURCE, "flip": "NVIDIA FLIP (LDR), flip-evaluator " + _version("flip-evaluator"),
                         "bbox_margin_px": max(1, int(round(a.res / 32)))}
    result["settings"] = {"motions": [os.path.basename(p) for p in a.motion], "views": a.views, "frames": a.frames,
                          "seed": a.seed, "res": a.res, "engine": a.engine, "samples": samples,
                          "fit_steps": a.fit_steps}
    _write_json(a.json, result)
    print(report.table_markdown(result["methods"]), end="")
    if a.report:
        notes = [f"Unseen-subjects protocol (lab/unseen.py): {a.unseen_subjects} zoo subjects never trained on, "
                 f"{result['frames']} frames in all, {a.res}x{a.res}, ground truth by {a.engine}."]
        notes += [f"{m}: {d}" for m, d in result["inputs"].items()]
        files = report.write_report(a.report, result, grid=out["grid"], notes=notes, details=result)
        print(f"report: {files['index.html']}")
    print(f"metrics: {os.path.abspath(a.json)} ({time.perf_counter() - t_start:.1f} s)")
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m neural_avatar eval",
        description="Evaluate avatars and the classical per-vertex-colour render against the demo "
                    "subject's ground truth (PSNR/SSIM/LPIPS in the body's box and on the whole image, "
                    "temporal flicker). See lab/evaluate.py for the protocol.")
    ap.add_argument("--avatar", action="append", default=None, metavar="BUNDLE",
                    help="model bundle (X, X.safetensors or X.json); repeat for several modes. "
                         "Default: the shipped default avatars of every mode")
    ap.add_argument("--motion", action="append", required=True, metavar="FILE",
                    help="AMASS / SMPL .npz motion (repeatable)")
    ap.add_argument("--views", type=int, default=2, help="held-out static cameras per motion")
    ap.add_argument("--frames", type=int_in(1, 100_000, "--frames"), default=8, help="consecutive frames per motion")
    ap.add_argument("--fps", type=float_in(1.0, 1000.0, "--fps"), default=30.0, help="frame rate the motion is resampled to")
    ap.add_argument("--start", type=float, default=None,
                    help="start time in seconds (default: drawn from --seed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--res", type=int_in(8, 16384, "--res"), default=256, help="square image size")
    ap.add_argument("--json", required=True, metavar="OUT", help="where to write the metrics JSON")
    ap.add_argument("--report", default=None, metavar="DIR", help="write table, grid, plots and index.html here")
    ap.add_argument("--engine", default="CYCLES", choices=["CYCLES", "WORKBENCH", "EEVEE"],
                    help="ground-truth renderer")
    ap.add_argument("--samples", type=int, default=None, help="Cycles samples per pixel (default: the capture's)")
    ap.add_argument("--texture-size", type=int, default=1024, help="demo subject's baked texture size")
    ap.add_argument("--gt-dir", default=None, help="keep (and reuse) the ground-truth capture here")
    ap.add_argument("--device", default="CPU", help="AUTO, CUDA, MPS or CPU for the networks")
    ap.add_argument("--batch", type=int, default=4, help="frames per network batch")
    ap.add_argument("--unseen-subjects", type=int_in(1, 1000, "--unseen-subjects"), default=None, metavar="K",
                    help="the new-people protocol (lab/unseen.py): K zoo subjects no avatar was trained on; "
                         "default avatars: the generalizable bundles in data/avatars/zoo")
    ap.add_argument("--fit-steps", type=int_in(1, 1_000_000, "--fit-steps"), default=300,
                    help="NEURAL_TEXTURE texture-fitting steps per unseen subject (renderer frozen)")
    return ap
