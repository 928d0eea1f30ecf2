"""``python -m neural_avatar eval --unseen-subjects K``: the papers' new-people protocol.

Each paper's headline application renders people its network never saw. This protocol gives
every method what its paper gives it for a new person and measures it against Cycles on a
held-out motion and held-out cameras:

* **Subjects.** ``K`` zoo subjects (:meth:`.subject.SubjectSpec.random`) with seeds
  ``UNSEEN_SEED_BASE + 100 * seed + k``. Every training seed of every evaluated bundle (the
  ``zooNNNN`` identities its training recorded) is refused, so no subject was trained on.
* **Ground truth.** Per subject the usual evaluation plan (:func:`.evaluate.make_eval_plan`:
  ``--motion`` clips x ``--views`` static cameras x ``--frames`` consecutive frames, drawn from
  ``seed + k``, the subject's own body shape) rendered with Cycles into ``GT/<name>/gt``.
* **Reference.** What a method may know of the person: a small capture of them
  (``GT/<name>/reference``, :func:`.capture.capture_dataset`, ``REFERENCE_FRAMES`` frames in
  synchronised groups of ``REFERENCE_VIEWS`` views) posed only with the bundled clips that are
  *not* among the ``--motion`` clips, from cameras drawn with another seed.
* **Methods.**
  - ``CLASSICAL``: the body mesh with the subject's baked vertex colours (SMPLpix Table 1).
  - ``VERTEX_PROJECTION``: a multi-subject SMPLpix bundle given those same vertex colours
    (SMPLpix sec. 4: one network, the new subject's coloured vertices as input).
  - ``GAUSSIAN_BONES``: an HVS bundle with an appearance encoder given *one* image of the
    person (the reference's first training frame) and its camera and pose (HVS eq. 4).
  - ``NEURAL_TEXTURE``: the ANR renderer frozen, a new neural texture fitted on
    ``FIT_FRAMES`` reference frames (ANR sec. 4, "new identities") for ``--fit-steps`` steps.
  - ``PIXEL_ALIGNED`` (when its bundle is given): AniPixel given ``SOURCE_VIEWS`` synchronised
    reference views of one instant, no training.
* **Metrics.** :func:`.evaluate.evaluate_methods` per subject (PSNR/SSIM/LPIPS/FLIP in the box
  and on the whole image, haze, flicker), then the mean over subjects.

The JSON: ``{"protocol": "unseen_subjects", "subjects": [...], "frames": n, "methods":
{METHOD: {metric: mean}}, "per_subject": {name: {METHOD: {metric}}}, "inputs": {METHOD: what
it was given}, "metrics": {...}}``.
"""
from __future__ import annotations

import json
import os
import re
import time

import numpy as np

from ..errors import BundleError, DatasetError, NeuralAvatarError
from .evaluate import CLASSICAL, METRIC_KEYS, _log, evaluate_methods, load_ground_truth, make_eval_plan

UNSEEN_SEED_BASE = 50_000
REFERENCE_FRAMES = 40
REFERENCE_VIEWS = 4
FIT_FRAMES = 8
SOURCE_VIEWS = 3
_ZOO_NAME = re.compile(r"^zoo(\d+)$")

INPUTS = {
    CLASSICAL: "the subject's baked vertex colours",
    "VERTEX_PROJECTION": "the subject's baked vertex colours (one network for every subject)",
    "GAUSSIAN_BONES": "one image of the subject with its camera and pose (appearance encoder, eq. 4)",
    "NEURAL_TEXTURE": f"a neural texture fitted on {FIT_FRAMES} frames with the renderer frozen",
    "PIXEL_ALIGNED": f"{SOURCE_VIEWS} synchronised views of the subject, no training",
}


def default_bundles() -> dict:
    """The shipped generalizable bundles (``data/avatars/zoo/<mode>``); NEURAL_TEXTURE falls back
    on the single-subject default (its renderer is frozen for fitting anyway)."""
    from ..engine.avatars import default_avatar_path, zoo_avatar_path
    from ..neural.config import MODES

    out = {}
    for mode in MODES:
        p = zoo_avatar_path(mode)
        if os.path.isfile(p):
            out[mode] = p
    if "NEURAL_TEXTURE" not in out and os.path.isfile(default_avatar_path("NEURAL_TEXTURE")):
        out["NEURAL_TEXTURE"] = default_avatar_path("NEURAL_TEXTURE")
    if not out:
        raise BundleError("No generalizable avatars in data/avatars/zoo: pass --avatar BUNDLE.")
    return out


def training_seeds(bundle_paths) -> set:
    """Every zoo seed a bundle's training saw (its recorded identities named ``zooNNNN``)."""
    from ..neural.bundle import read_bundle_meta

    seeds = set()
    for p in bundle_paths:
        meta = read_bundle_meta(p)
        tr = (meta.get("info") or {}).get("training") or meta.get("training") or {}
        names = list(tr.get("identities") or []) + list(meta.get("identities") or [])
        for n in names:
            m = _ZOO_NAME.match(str(n))
            if m:
                seeds.add(int(m.group(1)))
    return seeds


def unseen_specs(k: int, seed: int, exclude) -> list:
    """``k`` zoo subjects whose seeds avoid ``exclude`` (:class:`NeuralAvatarError` otherwise)."""
    from .subject import SubjectSpec

    seeds = [UNSEEN_SEED_BASE + 100 * int(seed) + i for i in range(int(k))]
    clash = sorted(set(seeds) & set(exclude))
    if clash:
        raise NeuralAvatarError(f"Zoo seeds {clash} were used to train an evaluated avatar; choose another --seed.")
    return [SubjectSpec.random(s) for s in seeds]


def reference_motions(eval_paths) -> list:
    """The bundled clips that are not evaluation clips (by file name)."""
    from .. import motion as motion_lib

    held = {os.path.basename(str(p)) for p in eval_paths}
    out = [str(p) for p in motion_lib.bundled_motion_paths() if os.path.basename(str(p)) not in held]
    if not out:
        raise NeuralAvatarError("Every bundled clip is an evaluation clip: no motion is left for the reference capture.")
    return out


def capture_reference(spec, ref_dir: str, res: int, engine: str, samples: int, seed: int, motions,
                      texture_size: int = 1024, progress=None) -> dict:
    """The reference capture of ``spec`` (resumable: an identical capture on disk is kept)."""
    from . import subject
    from .capture import capture_dataset
    from .scene_setup import factory_scene

    if os.path.isfile(os.path.join(ref_dir, "dataset.json")):
        return {"rendered": 0, "reused": True}
    with factory_scene() as ctx:
        subj = subject.build_demo_subject(ctx, texture_size=int(texture_size), spec=spec)
        return capture_dataset(ctx, ref_dir, REFERENCE_FRAMES, int(res), engine, int(seed) + 7919, motions,
                               arm=subj["armature"], samples=int(samples), vertex_colors=subj["vertex_colors"],
                               views=REFERENCE_VIEWS, progress=progress)


class _Fixed:
    """A loaded avatar given a new person's data, rendering like any method. Like the engine
    (which paints each body in a window at its avatar's trained scale), a frame smaller than the
    avatar's training resolution is rendered ``s = resolution / side`` times larger and
    area-averaged back down, so every avatar sees bodies at the scale it learnt."""

    def __init__(self, avatar, mode: str):
        self.avatar, self.mode = avatar, mode

    def render(self, frame, precision: str = "fp32"):
        import dataclasses

        import torch.nn.functional as F

        s = int(round(self.avatar.config.resolution / max(frame.size)))
        if s <= 1:
            return self.avatar.render(frame, precision=precision)
        K = frame.K.clone()
        K[:, :2] = K[:, :2] * s
        big = dataclasses.replace(frame, K=K, size=(frame.size[0] * s, frame.size[1] * s))
        out = self.avatar.render(big, precision=precision)
        return {k: (F.avg_pool2d(v, s) if k in ("rgb", "mask", "rgb_fg") and v is not None else None)
                for k, v in out.items()}


def reference_resolution(bundles: dict, res: int) -> int:
    """The reference capture's side: the evaluation's, or the NEURAL_TEXTURE bundle's training
    resolution when larger (its texture is fitted at the scale its renderer learnt)."""
    from ..neural.bundle import read_bundle_meta

    out = int(res)
    if "NEURAL_TEXTURE" in bundles:
        out = max(out, int(read_bundle_meta(bundles["NEURAL_TEXTURE"])["config"].get("resolution", res)))
    return out


def prepare_method(mode: str, bundle: str, ref_dir: str, name: str, vertex_colors, device, model,
                   work_dir: str, res: int, fit_steps: int = 300):
    """The method ``mode`` of ``bundle`` readied for the new person ``name`` (module docstring)."""
    import torch

    from ..neural.bundle import load_bundle
    from ..neural.training.dataset import CaptureDataset

    if mode == "VERTEX_PROJECTION":
        av = load_bundle(bundle, device=device, expected_body=model)
        with torch.no_grad():
            av.identity.vertex_colors.data.copy_(torch.as_tensor(vertex_colors, dtype=torch.float32, device=device))
        return _Fixed(av.eval(), mode)
    if mode == "GAUSSIAN_BONES":
        av = load_bundle(bundle, device=device, expected_body=model).eval()
        if getattr(av, "encoder", None) is None:
            raise BundleError(f"{os.path.basename(bundle)} has no appearance encoder: the unseen-subjects protocol "
                              "needs a zoo-trained GAUSSIAN_BONES bundle (train with --avatar-json "
                              "'{\"style\": {\"encoder\": true}}').")
        ds = CaptureDataset(ref_dir, "train", model, device=device)
        with torch.no_grad():
            av.identity.appearance.data.copy_(av.encode_appearance(ds.sources([0]))[0])
        return _Fixed(av, mode)
    if mode == "NEURAL_TEXTURE":
        from ..neural.training.trainer import TrainConfig, train

        out = os.path.join(work_dir, f"fit_{name}")
        bundle_out = os.path.join(out, "avatar.safetensors")
        if not os.path.isfile(bundle_out):
            # at the reference's own scale; 128² patches when it is larger (the training recipe's)
            cfg = TrainConfig(data=ref_dir, mode=mode, out=out, init=bundle, fit_identity=name,
                              frames_limit=FIT_FRAMES, steps=int(fit_steps), batch=4, use_gan=False, val_every=0,
                              ckpt_every=100, split_optimization=False, resume=True, device=str(device),
                              patch=128 if res > 128 else None, precision="bf16" if str(device) == "cpu" else "fp32")
            t0 = time.perf_counter()
            r = train(cfg, body_model=model)
            _log(f"{name}: NEURAL_TEXTURE texture fitted on {FIT_FRAMES} frames, {r['step']} steps, "
                 f"{time.perf_counter() - t0:.0f} s")
        av = load_bundle(bundle_out, device=device, expected_body=model, identity=name).eval()
        return _Fixed(av, mode)
    if mode == "PIXEL_ALIGNED":
        from ..neural.pixel_aligned import load_source_avatar

        av = load_source_avatar(bundle, ref_dir, device=device, body_model=model, views=SOURCE_VIEWS)
        return _Fixed(av.eval(), mode)
    raise NeuralAvatarError(f"The unseen-subjects protocol has no rule for mode {mode}.")


def evaluate_unseen(bundles: dict, k: int, motion_paths, motions, views: int, frames: int, fps: float,
                    seed: int, start, res: int, engine: str, samples: int, gt_root: str, device, model,
                    texture_size: int = 1024, batch: int = 4, fit_steps: int = 300) -> dict:
    """Run the protocol (module docstring); ``bundles``: ``{mode: path}``. Returns
    ``{"result": JSON dict, "grid": first subject's grid, "evals": per-subject evaluate_methods}``."""
    from ..neural.evaluation.baseline import VertexColorBaseline
    from .evaluate import render_ground_truth

    specs = unseen_specs(k, seed, training_seeds(bundles.values()))
    ref_motions = reference_motions(motion_paths)
    ref_res = reference_resolution(bundles, res)
    per, evals, frames_total = {}, {}, 0
    for i, spec in enumerate(specs):
        base = os.path.join(gt_root, spec.name)
        gt_dir, ref_dir = os.path.join(base, "gt"), os.path.join(base, "reference")
        b = np.zeros(model.num_betas)
        b[: len(spec.betas)] = spec.betas
        plan = make_eval_plan(model, motions, views, frames, fps, int(seed) + i, start, betas=b)
        render_ground_truth(plan, gt_dir, res, engine, samples, int(seed) + i, motion_paths, texture_size,
                            progress=lambda info, n=spec.name: _log(f"{n}: ground truth {info['done']}/{info['of']}"),
                            spec=spec)
        capture_reference(spec, ref_dir, ref_res, engine, samples, int(seed) + i, ref_motions, texture_size,
                          progress=lambda info, n=spec.name: _log(f"{n}: reference {info['done']}/{info['of']}"))
        gt = load_ground_truth(gt_dir, model)
        methods = {CLASSICAL: VertexColorBaseline(model.faces, gt["vertex_colors"], gt["background"].tolist(),
                                                  supersample=2, device=device)}
        for mode, path in bundles.items():
            methods[mode] = prepare_method(mode, path, ref_dir, spec.name, gt["vertex_colors"], device, model,
                                           base, ref_res, fit_steps)
        margin = max(1, int(round(res / 32)))
        seq = plan["sequence"]
        from .evaluate import _grid_frames

        ev = evaluate_methods(gt, methods, seq, margin, batch, _grid_frames(seq, 2))
        per[spec.name] = ev["result"]["methods"]
        evals[spec.name] = ev
        frames_total += ev["result"]["frames"]
        _log(f"{spec.name}: " + ", ".join(f"{m} {v['psnr_mask']:.2f} dB" for m, v in per[spec.name].items()))
    names = list(next(iter(per.values())))
    mean = {m: {key: float(np.mean([per[s][m][key] for s in per])) for key in METRIC_KEYS} for m in names}
    result = {"protocol": "unseen_subjects", "subjects": [s.to_dict() for s in specs], "frames": frames_total,
              "methods": mean, "per_subject": per, "inputs": {m: INPUTS.get(m, "") for m in names},
              "avatars": {m: os.path.basename(p) for m, p in bundles.items()},
              "reference": {"frames": REFERENCE_FRAMES, "views_per_pose": REFERENCE_VIEWS, "resolution": ref_res,
                            "motions": [os.path.basename(p) for p in ref_motions]}}
    first = evals[specs[0].name]
    return {"result": result, "grid": first["grid"], "evals": evals}
