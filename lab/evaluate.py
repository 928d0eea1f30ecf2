"""``python -m neural_avatar eval``: compare avatars with the classical baseline against the
demo subject's ground truth on held-out motions and cameras (SMPLpix Table 1 protocol, extended
with SSIM, both image regions and temporal flicker).

Protocol
--------
* **Frames.** Each ``--motion`` (any AMASS SMPL-H/SMPL-X or SMPL ``.npz``) is resampled by time
  to ``--fps`` (slerp, :func:`..motion.resample`); from it ``--frames`` consecutive frames are
  taken, starting at a frame drawn uniformly from the clip with ``--seed`` (or at ``--start``
  seconds). The same frames are seen from every view.
* **Held-out cameras.** ``--views`` static cameras per motion, drawn from ``--seed``: yaw
  U[0, 360) deg around the body relative to the direction it faces in the sequence's first
  frame, height ``elev`` U[-0.15, 0.45] (camera height above the centre as a fraction of the
  distance), distance ``1.02 r / tan(fov/2)`` times U[1, 1.25] with ``r`` half the diagonal of
  the bounding box of the body over the *whole* sequence, looking at that box's centre
  (50 mm lens on a 36 mm sensor, as the capture). A camera stays fixed over its sequence.
  These cameras are new draws, not the training capture's (the training capture's own
  held-out sector is not recorded in a bundle).
* **Ground truth.** The dressed demo subject (:func:`..operators.subject.build_demo_subject`)
  rendered with Cycles (default; ``--engine WORKBENCH`` for fast checks) by
  :class:`..operators.capture.CaptureJob` into a capture folder (``--gt-dir``, reused when
  its evaluation plan matches, else a temporary folder): images, masks, ``cameras.json``,
  ``body.npz``, ``vertex_colors.npy``. Every method is then evaluated on exactly those frames:
  world vertices/joints from ``body.npz`` through :func:`..body.kinematics.forward` and
  ``object_matrix``, cameras from ``cameras.json``, the capture's background.
* **Methods.** ``CLASSICAL`` — the body mesh rasterized with the subject's baked per-vertex
  colours (SMPLpix Table 1 "per-verts", :mod:`..neural.baseline`, 2x2 supersampled); then
  every neural mode given by ``--avatar`` (or, without it, the shipped default avatars of
  every mode that exist in ``data/avatars``).
* **Metrics** (:mod:`..neural.metrics`), per frame then averaged over all frames:
  PSNR (infinite values capped at 100 dB), SSIM (pytorch-msssim, 11x11 Gaussian) and the
  LPIPS (ST-LPIPS AlexNet, a network the training loss does not use;
  :data:`..neural.metrics.LPIPS_SOURCE` names the weights) and NVIDIA FLIP, each
  ``*_full`` on the whole image and ``*_mask`` inside the ground-truth body's bounding box
  grown by ``round(res / 32)`` px (PSNR averages the error over the box, SSIM/LPIPS/FLIP run
  on the image cropped to it); ``haze``: the share of the frame outside the ground-truth
  silhouette dilated by 1 % of the frame side where the predicted alpha exceeds 0.05.
* **Flicker.** For a static-camera sequence ``f_1..f_T`` the mean frame-to-frame change is
  ``D(f) = mean_t mean_pixels |f_t - f_{t-1}|`` over the whole image (RGB in [0, 1]); the
  JSON's ``flicker`` is ``mean_sequences |D(method) - D(ground truth)|``: 0 when a method
  changes between frames exactly as much as the real render does, larger when it flickers
  (or freezes). ``details.json`` of the report also holds ``D`` of every method and of the
  ground truth.

Output: ``--json OUT`` ``{"frames": n, "methods": {name: {"psnr_mask", "psnr_full",
"ssim_mask", "ssim_full", "lpips_mask", "lpips_full", "flip_mask", "flip_full", "haze",
"flicker"}}}`` (floats); ``--report
DIR``: table, image grid, plots, ``details.json`` and ``index.html`` (:mod:`..neural.report`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from ..errors import BundleError, DatasetError, MotionFileError, NeuralAvatarError
from ..common.guards import float_in, int_in

CLASSICAL = "CLASSICAL"
METRIC_KEYS = ("psnr_mask", "psnr_full", "ssim_mask", "ssim_full", "lpips_mask", "lpips_full", "flip_mask",
               "flip_full", "haze", "flicker")
PLAN_FILE = "eval_plan.json"
PSNR_CAP = 100.0
ELEV_RANGE = (-0.15, 0.45)
DIST_SCALE_RANGE = (1.0, 1.25)


def _log(msg: str):
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ inputs
def resolve_avatars(paths, allow_pixel_aligned: bool = False) -> dict:
    """``{mode: bundle path}`` for the ``--avatar`` paths, or the shipped defaults of every mode
    that exist. Raises :class:`BundleError` for a missing/invalid bundle, two bundles of one mode,
    or no default avatar at all."""
    from ..neural.bundle import bundle_paths, read_bundle_meta
    from ..neural.config import IMAGE_MODES as MODES  # PIXEL_ALIGNED needs a person's views: --unseen-subjects
    from ..engine.avatars import default_avatar_path

    out = {}
    if paths:
        for p in paths:
            st, js = bundle_paths(p)
            if not st.is_file() and not js.is_file():
                raise BundleError(f"Avatar bundle '{p}' not found (expected {st.name} and {js.name}).")
            meta = read_bundle_meta(p)
            mode = meta["mode"]
            if mode not in MODES and not (allow_pixel_aligned and mode == "PIXEL_ALIGNED"):
                raise BundleError(f"{os.path.basename(str(p))} is a {mode} avatar: it renders a person from their "
                                  "source views, so it is evaluated by eval --unseen-subjects.")
            if mode in out:
                raise BundleError(f"Two avatars of mode {mode} were given ({out[mode]} and {p}); "
                                  "evaluate one bundle per mode at a time.")
            out[mode] = str(p)
        return out
    missing = []
    for mode in MODES:
        p = default_avatar_path(mode)
        if os.path.isfile(p):
            out[mode] = p
        else:
            missing.append(os.path.basename(p))
    if not out:
        raise BundleError("No shipped default avatars found in data/avatars "
                          f"({', '.join(missing)} missing): pass --avatar BUNDLE.")
    if missing:
        _log(f"warning: shipped default avatars missing, not evaluated: {', '.join(missing)}")
    return out


def load_motions(paths) -> list:
    """Load every ``--motion`` file (:class:`MotionFileError` with the file's name on failure)."""
    from .. import motion as motion_lib

    if not paths:
        raise MotionFileError("Give at least one --motion file (an AMASS/SMPL .npz).")
    return [motion_lib.load_motion(p) for p in paths]


# ------------------------------------------------------------------------------ plan
def make_eval_plan(model, motions, views: int, frames: int, fps: float, seed: int, start=None, betas=None) -> dict:
    """Which pose and which static camera every evaluated frame gets (module docstring).

    Frames are ordered motion-major, then view, then time, so each (motion, view) sequence is
    contiguous. Returns a dict in the layout of :func:`..operators.capture.make_plan`
    (``split``, ``motion_index``, ``frame_in_motion``, ``poses``, ``transl``, ``yaw_rel``,
    ``cam_world``, ``target``, ``sector``) plus ``sequence``, ``view``, ``time`` (seconds) per
    frame and ``sequences``: one dict per sequence (motion name, view, first frame, yaw, ...)."""
    from .. import motion as motion_lib
    from ..body import kinematics
    from .capture import LENS_MM, SENSOR_MM, _heading, _look_at_matrix

    for name, v in (("views", views), ("frames", frames)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise NeuralAvatarError(f"--{name} must be a positive integer, got {v!r}.")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise NeuralAvatarError(f"--fps must be a positive number, got {fps!r}.")
    J = model.num_joints
    b = np.zeros(model.num_betas) if betas is None else np.asarray(betas, np.float64)
    rng = np.random.default_rng(int(seed))
    half_fov = math.atan(0.5 * SENSOR_MM / LENS_MM)
    cols = {k: [] for k in ("motion_index", "frame_in_motion", "poses", "transl", "yaw_rel", "cam_world",
                            "target", "sequence", "view", "time")}
    seqs = []
    for mi, m in enumerate(motions):
        r = motion_lib.resample(m, float(fps))
        n = r.num_frames
        T = min(int(frames), n)
        if start is None:
            f0 = int(rng.integers(0, n - T + 1))
        else:
            f0 = int(min(max(round(float(start) * fps), 0), n - T))
        if T < frames:
            _log(f"warning: motion '{m.name}' has only {n} frames at {fps:g} fps; using {T}")
        poses = r.pose_aa(J)[f0:f0 + T]
        trans = np.asarray(r.trans[f0:f0 + T], np.float64)
        v, _ = kinematics.forward(model, np.broadcast_to(b, (T, b.shape[0])), poses, trans)
        lo, hi = v.reshape(-1, 3).min(0), v.reshape(-1, 3).max(0)
        centre = 0.5 * (lo + hi)
        radius = 0.5 * float(np.linalg.norm(hi - lo))
        heading = _heading(poses[0, 0])
        for vi in range(int(views)):
            yaw = float(rng.uniform(0.0, 360.0))
            elev = float(rng.uniform(*ELEV_RANGE))
            scale = float(rng.uniform(*DIST_SCALE_RANGE))
            dist = 1.02 * radius / math.tan(half_fov) * scale
            a = heading + math.radians(yaw)
            d = np.array([math.cos(a), math.sin(a), elev])
            eye = centre + dist * d / np.linalg.norm(d)
            cam = _look_at_matrix(eye, centre)
            s = len(seqs)
            seqs.append({"motion": m.name, "motion_index": mi, "view": vi, "first_frame": f0, "frames": T,
                         "start_s": round(f0 / fps, 6), "yaw_deg": round(yaw, 4), "elev": round(elev, 4),
                         "distance_m": round(dist, 4)})
            for k in range(T):
                cols["motion_index"].append(mi)
                cols["frame_in_motion"].append(f0 + k)
                cols["poses"].append(poses[k])
                cols["transl"].append(trans[k])
                cols["yaw_rel"].append(yaw)
                cols["cam_world"].append(cam)
                cols["target"].append(centre)
                cols["sequence"].append(s)
                cols["view"].append(vi)
                cols["time"].append((f0 + k) / fps)
    N = len(cols["sequence"])
    plan = {k: np.asarray(v) for k, v in cols.items()}
    plan["motion_index"] = plan["motion_index"].astype(np.int64)
    plan["frame_in_motion"] = plan["frame_in_motion"].astype(np.int64)
    plan["split"] = np.asarray(["test"] * N)
    plan["sector"] = 0.0
    plan["sequences"] = seqs
    return plan


def plan_digest(plan: dict, settings: dict) -> str:
    """SHA-256 over the plan's poses/cameras and the render settings (reuse check of --gt-dir)."""
    h = hashlib.sha256()
    for k in ("poses", "transl", "cam_world"):
        h.update(np.ascontiguousarray(plan[k], np.float64).round(9).tobytes())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------ ground truth (bpy)
def render_ground_truth(plan: dict, gt_dir: str, res: int, engine: str, samples: int, seed: int,
                        motion_paths, texture_size: int = 1024, progress=None, spec=None) -> dict:
    """Render the demo subject for every planned frame into ``gt_dir`` (a capture folder).

    Starts from factory settings (the current Blender session's scene is replaced). When
    ``gt_dir`` already holds a finished capture of the same plan (``eval_plan.json``), nothing
    is rendered. Returns ``{"rendered": n, "seconds_per_frame": s, "engine": e}``."""
    from . import capture, subject

    settings = {"res": int(res), "engine": str(engine).upper(), "samples": int(samples),
                "texture_size": int(texture_size)}
    if spec is not None:  # a zoo subject instead of the demo subject (the unseen-subjects protocol)
        settings["subject"] = spec.to_dict()
    digest = plan_digest(plan, settings)
    plan_path = os.path.join(gt_dir, PLAN_FILE)
    if os.path.isfile(plan_path):
        try:
            with open(plan_path, "r", encoding="utf-8") as f:
                old = json.load(f)
        except (OSError, ValueError, RecursionError):
            old = {}
        if not isinstance(old, dict):
            old = {}
        if old.get("digest") != digest:
            raise DatasetError(f"'{gt_dir}' holds the ground truth of another evaluation (other motions, "
                               "views, seed, frames or render settings); choose another --gt-dir.")
        if os.path.isfile(os.path.join(gt_dir, "dataset.json")):
            return {"rendered": 0, "seconds_per_frame": 0.0, "engine": settings["engine"], "reused": True}
    elif os.path.isdir(gt_dir) and os.listdir(gt_dir):
        raise DatasetError(f"'{gt_dir}' is not empty and holds no evaluation ground truth; choose an empty "
                           "or new --gt-dir.")
    os.makedirs(gt_dir, exist_ok=True)
    with open(plan_path, "w", encoding="utf-8") as f:
        json.dump({"digest": digest, "settings": settings, "sequences": plan["sequences"],
                   "sequence": plan["sequence"].tolist(), "time": plan["time"].tolist()}, f, indent=1)

    from .scene_setup import factory_scene

    with factory_scene() as ctx:
        subj = subject.build_demo_subject(ctx, texture_size=int(texture_size),
                                          spec=spec if spec is not None else subject.DEMO)
        N = len(plan["sequence"])
        job = capture.CaptureJob(ctx, subj["armature"], gt_dir, N, int(res), settings["engine"], int(seed),
                                 [str(p) for p in motion_paths], samples=int(samples),
                                 vertex_colors=subj["vertex_colors"])
        job.plan = {k: plan[k] for k in ("split", "motion_index", "frame_in_motion", "poses", "transl",
                                         "yaw_rel", "cam_world", "target", "sector")}
        job.run(progress)
        secs = job.frame_seconds
        return {"rendered": job.rendered, "seconds_per_frame": float(np.mean(secs)) if secs else 0.0,
                "engine": settings["engine"], "reused": False}


def load_ground_truth(gt_dir: str, model) -> dict:
    """Read a capture folder back: ``rgb (N,3,H,W)``, ``mask (N,1,H,W)`` float32 tensors,
    ``verts (N,V,3)``, ``joints (N,J,3)`` world space (forward + object_matrix), ``K, R, t``,
    ``background (3,)``, ``vertex_colors (V,3)``."""
    import cv2
    import torch

    from ..body import kinematics

    try:
        from ..common.guards import load_json, load_npy, load_npz

        meta = load_json(os.path.join(gt_dir, "dataset.json"), "dataset.json", DatasetError)
        cams = load_json(os.path.join(gt_dir, "cameras.json"), "cameras.json", DatasetError)["frames"]

        body = {k: np.asarray(v) for k, v in load_npz(os.path.join(gt_dir, "body.npz"), "body.npz",
                                                       DatasetError).items()}
        vc = load_npy(os.path.join(gt_dir, "vertex_colors.npy"), "vertex_colors.npy", DatasetError)
    except (OSError, ValueError, KeyError) as e:
        raise DatasetError(f"The ground truth in '{gt_dir}' is incomplete: {e}") from e
    N = int(meta["num_frames"])
    cams = sorted(cams, key=lambda c: int(c["index"]))
    if len(cams) != N or body["poses"].shape[0] != N:
        raise DatasetError(f"The ground truth in '{gt_dir}' is inconsistent ({len(cams)} cameras, "
                           f"{body['poses'].shape[0]} poses, {N} frames).")
    v, j = kinematics.forward(model, body["betas"], body["poses"], body["transl"])
    M = body["object_matrix"]
    v = np.einsum("nab,nvb->nva", M[:, :3, :3], v) + M[:, None, :3, 3]
    j = np.einsum("nab,nvb->nva", M[:, :3, :3], j) + M[:, None, :3, 3]
    rgb, msk = [], []
    for i in range(N):
        from ..common.guards import check_image

        for sub in ("images", "masks"):
            check_image(os.path.join(gt_dir, sub, f"{i:06d}.png"), f"{sub}/{i:06d}.png", DatasetError)
        img = cv2.imread(os.path.join(gt_dir, "images", f"{i:06d}.png"), cv2.IMREAD_COLOR)
        m = cv2.imread(os.path.join(gt_dir, "masks", f"{i:06d}.png"), cv2.IMREAD_GRAYSCALE)
        if img is None or m is None:
            raise DatasetError(f"Ground-truth frame {i} in '{gt_dir}' cannot be read.")
        rgb.append(img[:, :, ::-1].astype(np.float32).transpose(2, 0, 1) / 255.0)
        msk.append(m.astype(np.float32)[None] / 255.0)
    f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))  # noqa: E731
    return {"rgb": f32(np.stack(rgb)), "mask": f32(np.stack(msk)), "verts": f32(v), "joints": f32(j),
            "K": f32([c["K"] for c in cams]), "R": f32([c["R"] for c in cams]), "t": f32([c["t"] for c in cams]),
            "background": f32(meta["background"]), "vertex_colors": f32(np.clip(vc, 0, 1)),
            "size": (int(meta["resolution"][0]), int(meta["resolution"][1])), "engine": meta.get("engine")}


# ------------------------------------------------------------------------------ evaluation (pure torch)
def evaluate_methods(gt: dict, methods: dict, sequence: np.ndarray, margin: int, batch: int = 4,
                     grid_frames=None, precision: str = "fp32") -> dict:
    """Render every method on every ground-truth frame and measure it (module docstring).

    ``methods``: ``{name: renderer}`` with ``render(FrameInputs) -> {"rgb", ...}``;
    ``sequence (N,)``: the static-camera sequence of each frame (contiguous runs).
    Returns ``{"result": the JSON dict, "per_frame": {metric: {name: [..]}},
    "flicker_raw": {name: [D per sequence]}, "flicker_gt": [..], "grid": {...},
    "flicker_curves": {...}}``."""
    import torch

    from ..neural.evaluation import metrics as M
    from ..neural.avatar import FrameInputs

    N = gt["rgb"].shape[0]
    sequence = np.asarray(sequence)
    if sequence.shape != (N,):
        raise NeuralAvatarError(f"{sequence.shape[0]} sequence labels for {N} ground-truth frames.")
    grid_frames = list(grid_frames or [])
    names = list(methods)
    per = {k: {n: [] for n in names} for k in METRIC_KEYS if k != "flicker"}
    radius = M.haze_radius(gt["size"])
    fl_raw = {n: [] for n in names}
    fl_gt = []
    curves = {}
    grid_imgs = {i: {} for i in grid_frames}
    starts = [0] + [i for i in range(1, N) if sequence[i] != sequence[i - 1]] + [N]
    for s0, s1 in zip(starts[:-1], starts[1:]):
        gt_seq = gt["rgb"][s0:s1]
        box = M.bbox_mask(gt["mask"][s0:s1], margin)
        fl_gt.append(float(M.temporal_flicker(gt_seq)))
        if s0 == 0:
            curves["GT"] = (gt_seq[1:] - gt_seq[:-1]).abs().flatten(1).mean(1).tolist()
        for i in range(s0, s1):
            if i in grid_imgs:
                grid_imgs[i]["GT"] = gt["rgb"][i].permute(1, 2, 0).numpy()
        for name, meth in methods.items():
            outs, alphas = [], []
            for b0 in range(s0, s1, batch):
                b1 = min(b0 + batch, s1)
                frame = FrameInputs(verts=gt["verts"][b0:b1], joints=gt["joints"][b0:b1], K=gt["K"][b0:b1],
                                    R=gt["R"][b0:b1], t=gt["t"][b0:b1], size=gt["size"],
                                    background=gt["background"])
                r = meth.render(frame, precision=precision)
                outs.append(r["rgb"].detach().float().cpu().clamp(0, 1))
                # a method without an alpha (an opaque renderer) covers the whole frame
                alphas.append(r["mask"].detach().float().cpu() if r.get("mask") is not None
                              else torch.ones_like(r["rgb"][:, :1]).float().cpu())
            pred = torch.cat(outs)
            per["haze"][name] += M.haze(torch.cat(alphas), gt["mask"][s0:s1], radius).tolist()
            for suffix, m in (("full", None), ("mask", box)):
                per[f"psnr_{suffix}"][name] += M.psnr(pred, gt_seq, m).clamp(max=PSNR_CAP).tolist()
                per[f"ssim_{suffix}"][name] += M.ssim(pred, gt_seq, m).tolist()
                per[f"lpips_{suffix}"][name] += M.lpips_distance(pred, gt_seq, m).tolist()
                per[f"flip_{suffix}"][name] += M.flip_distance(pred, gt_seq, m).tolist()
            fl_raw[name].append(float(M.temporal_flicker(pred)))
            if s0 == 0:
                curves[name] = (pred[1:] - pred[:-1]).abs().flatten(1).mean(1).tolist()
            for i in range(s0, s1):
                if i in grid_imgs:
                    grid_imgs[i][name] = pred[i - s0].permute(1, 2, 0).numpy()
    res = {"frames": int(N), "methods": {}}
    for name in names:
        mres = {k: float(np.mean(per[k][name])) for k in per}
        mres["flicker"] = float(np.mean(np.abs(np.asarray(fl_raw[name]) - np.asarray(fl_gt))))
        res["methods"][name] = {k: mres[k] for k in METRIC_KEYS}
    cols = ["GT"] + names
    grid = {"tiles": [[grid_imgs[i][c] for c in cols] for i in grid_frames], "col_labels": cols,
            "row_labels": [f"frame {i}" for i in grid_frames]}
    return {"result": res, "per_frame": per, "flicker_raw": fl_raw, "flicker_gt": fl_gt, "grid": grid,
            "flicker_curves": curves}


def _grid_frames(sequence: np.ndarray, k: int = 4) -> list:
    """Up to ``k`` frames for the image grid: the middle frame of evenly chosen sequences."""
    seqs = sorted(set(int(s) for s in sequence))
    pick = [seqs[int(round(x))] for x in np.linspace(0, len(seqs) - 1, min(k, len(seqs)))]
    out = []
    for s in dict.fromkeys(pick):
        idx = np.nonzero(sequence == s)[0]
        out.append(int(idx[len(idx) // 2]))
    return out


def _write_json(path: str, data: dict):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".eval_", suffix=".json", dir=d)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ CLI
