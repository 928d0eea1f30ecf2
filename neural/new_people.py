"""New people for the generalizable avatars, without training (no bpy here).

* :func:`avatar_from_image` — HumanViewSynthesis eq. 4: one image of a person (with its camera
  and the body's pose, e.g. a frame of a capture folder) -> their per-limb appearance vectors,
  added as a new identity to a copy of an encoder-equipped GAUSSIAN_BONES bundle. Pose and
  appearance are disentangled, so the new identity drives any body: novel views of the person,
  and motion transfer (their appearance on another body's motion).
* :func:`check_source_views` — a capture folder that can be a PIXEL_ALIGNED body's Source
  Views (``source_views`` synchronised views of one instant).
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from ..errors import BundleError, DatasetError, NeuralAvatarError


def _frame_source(capture_dir: str, frame: int, body_model, device):
    from .training.dataset import CaptureDataset, read_dataset_meta

    meta = read_dataset_meta(capture_dir)
    n = int(meta["num_frames"])
    if not 0 <= int(frame) < n:
        raise DatasetError(f"The capture has frames 0–{n - 1}; frame {frame} does not exist.")
    for split in ("train", "val", "test"):
        idx = [int(i) for i in meta["splits"].get(split, [])]
        if int(frame) in idx:
            ds = CaptureDataset(capture_dir, split, body_model, device=device)
            return ds.sources([[int(i) for i in ds.indices].index(int(frame))])
    raise DatasetError(f"Frame {frame} is in no split of the capture (it has no camera/pose the reader accepts).")


def avatar_from_image(bundle: str, capture_dir: str, frame: int, name: str, out: str,
                      body_model=None, device="cpu") -> dict:
    """Encode frame ``frame`` of ``capture_dir`` (image, mask, camera, pose) with the HVS
    appearance encoder of ``bundle`` and write ``out`` (``.safetensors`` + ``.json``): the
    bundle's people plus ``name``. Returns ``{"bundle", "identity", "identities"}``."""
    import torch

    from .. import body as body_lib
    from ..common.guards import safe_name
    from .bundle import identity_bank, load_bundle, read_bundle_meta, save_bundle

    safe_name(name, "identity name", NeuralAvatarError)
    body_model = body_model or body_lib.load_default()
    meta = read_bundle_meta(bundle)
    if meta["mode"] != "GAUSSIAN_BONES":
        raise BundleError(f"Avatar from Image needs a GAUSSIAN_BONES bundle with an appearance encoder; "
                          f"{os.path.basename(bundle)} is {meta['mode']}.")
    av = load_bundle(bundle, device=device, expected_body=body_model)
    if getattr(av, "encoder", None) is None:
        raise BundleError(f"{os.path.basename(bundle)} has no appearance encoder (it was trained for its own "
                          "people): use a generalizable GAUSSIAN_BONES bundle (data/avatars/zoo).")
    src = _frame_source(capture_dir, frame, body_model, device)
    with torch.no_grad():
        app = av.encode_appearance(src)[0]
    bank = identity_bank(bundle)
    if name in [n for n, _ in bank]:
        raise NeuralAvatarError(f"The bundle already has an identity '{name}'; choose another name.")
    own = {k: v.detach().clone() for k, v in bank[0][1].items()}
    new = {**own, "identity.appearance": app.detach().cpu()}
    idents = [(bank[0][0], {})] + bank[1:] + [(name, new)]
    info = {"training": dict(meta.get("training") or {}),
            "from_image": {"capture": os.path.basename(os.path.abspath(capture_dir)), "frame": int(frame),
                           "identity": name, "base": os.path.basename(bundle)}}
    st, _ = save_bundle(av, out, info, identities=idents)
    return {"bundle": str(st), "identity": name, "identities": [n for n, _ in idents]}


def check_source_views(folder: str, views: int = 3, body_model=None) -> dict:
    """The folder's first synchronised group of ``views`` frames (DatasetError naming the
    problem otherwise); returns ``{"views", "size"}`` (the views' ``[H, W]``)."""
    from .. import body as body_lib
    from .pixel_aligned import source_views_from_capture

    body_model = body_model or body_lib.load_default()
    src = source_views_from_capture(folder, body_model, views)
    return {"views": src.num_views, "size": list(src.size)}
