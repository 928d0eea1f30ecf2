"""Capture dataset reader (format ``neural_avatar.capture/1``, see ``DATASET_FORMAT.md``),
ANR keyframe selection and a synthetic dataset writer for tests.

* :class:`CaptureDataset` validates a capture folder up front (clear :class:`DatasetError`
  messages), loads images/masks, runs the body forward per frame to get world-space vertices
  and joints, rescales the camera to the requested resolution and, for training, applies
  ANR's augmentation (random rescale by f ~ U[0.5, 1.25] + random crop, sec. 4.1) with K
  adjusted accordingly. :meth:`CaptureDataset.batch` returns ``(FrameInputs, targets)``.
* :func:`keyframes_by_coverage` - ANR sec. 3.4 greedy keyframe choice maximising the
  cumulative texel coverage of the body's UV map (rasterizer UV output), or of visible
  vertices when the body has no UVs.
* :func:`write_synthetic_dataset` - a tiny procedural subject rendered with the project's
  z-buffer rasterizer (per-vertex colours interpolated, Lambert shading), no Blender needed.
* :func:`capsule_body` - a ~900-vertex SMPL-layout body (one capsule per bone, UV atlas)
  as a real :class:`body.BodyModel`, so tests run in seconds.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ...errors import DatasetError

MIN_SIDE, MAX_SIDE = 8, 16384  # pixels: a training resolution / a capture's image side

__all__ = [
    "FORMAT",
    "CaptureDataset",
    "FrameTargets",
    "keyframes_by_coverage",
    "write_synthetic_dataset",
    "read_dataset_meta",
    "capsule_body",
]

FORMAT = "neural_avatar.capture/1"
SPLITS = ("train", "val", "test")
_BODY_KEYS = ("poses", "betas", "transl", "object_matrix", "motion_index", "frame_in_motion")
_MODEL_TYPES = ("default", "smpl", "smplh", "smplx")


def _cv2():
    import cv2

    return cv2


@dataclass
class FrameTargets:
    """Ground truth of a batch: ``rgb (B,3,H,W)`` in [0,1] (composited over the background),
    ``mask (B,1,H,W)`` in [0,1], ``index (B,)`` dataset frame indices, ``identity (B,)``."""

    rgb: torch.Tensor
    mask: torch.Tensor
    index: torch.Tensor
    identity: torch.Tensor


# ------------------------------------------------------------------------ validation


def _rescale(rgb: np.ndarray, m: np.ndarray, K, f: float):
    """Image and mask resized by ``f`` (area filter down, linear up) and K scaled to match."""
    from ..inputs.camera import scale_krt

    cv2 = _cv2()
    H, W = m.shape
    h2, w2 = max(1, round(H * f)), max(1, round(W * f))
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    return (cv2.resize(rgb, (w2, h2), interpolation=interp), cv2.resize(m, (w2, h2), interpolation=interp),
            scale_krt(K, (w2 / W, h2 / H)))


def _load_json(path: str, what: str) -> dict:
    if not os.path.isfile(path):
        raise DatasetError(f"The dataset has no {what} ({os.path.basename(path)} is missing).")
    from ...common.guards import load_json

    return load_json(path, os.path.basename(path), DatasetError)


def read_dataset_meta(root: str) -> dict:
    """Read and check ``dataset.json`` (format, counts, splits); returns the dict."""
    if not os.path.isdir(root):
        raise DatasetError(f"Dataset folder '{root}' does not exist.")
    meta = _load_json(os.path.join(root, "dataset.json"), "description")
    if not isinstance(meta, dict):
        raise DatasetError("dataset.json must hold a JSON object.")
    if meta.get("format") != FORMAT:
        raise DatasetError(f"dataset.json has format {meta.get('format')!r}; this version reads {FORMAT!r}.")
    for key in ("body_model", "num_frames", "resolution", "splits", "background"):
        if key not in meta:
            raise DatasetError(f"dataset.json lacks the '{key}' entry.")
    n = meta["num_frames"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise DatasetError(f"dataset.json: num_frames must be a positive integer, got {n!r}.")
    res = meta["resolution"]
    if not (isinstance(res, list) and len(res) == 2
            and all(type(v) is int and 0 < v <= MAX_SIDE for v in res)):  # noqa: E721 - bool is not a size
        raise DatasetError(f"dataset.json: resolution must be [H, W] with sides of 1–{MAX_SIDE} pixels, got {res!r}.")
    bg = meta["background"]
    if not (isinstance(bg, list) and len(bg) == 3 and all(isinstance(c, (int, float)) and 0 <= c <= 1 for c in bg)):
        raise DatasetError(f"dataset.json: background must be 3 numbers in [0, 1], got {bg!r}.")
    if meta.get("model_type", "default") not in _MODEL_TYPES:
        raise DatasetError(f"dataset.json: model_type must be one of {_MODEL_TYPES}, got {meta.get('model_type')!r}.")
    splits = meta["splits"]
    if not isinstance(splits, dict) or "train" not in splits:
        raise DatasetError("dataset.json: 'splits' must be an object with at least a 'train' list.")
    seen: Dict[int, str] = {}
    for name, idx in splits.items():
        if not isinstance(idx, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
            raise DatasetError(f"dataset.json: split '{name}' must be a list of frame indices.")
        for i in idx:
            if not 0 <= i < n:
                raise DatasetError(f"dataset.json: split '{name}' lists frame {i}, but there are {n} frames.")
            if i in seen:
                raise DatasetError(f"dataset.json: frame {i} is in both the '{seen[i]}' and '{name}' splits.")
            seen[i] = name
    if not splits["train"]:
        raise DatasetError("dataset.json: the 'train' split is empty.")
    ids = meta.get("identities")
    if ids is not None and not (isinstance(ids, list) and ids and all(isinstance(s, str) for s in ids)):
        raise DatasetError("dataset.json: 'identities' must be a non-empty list of names.")
    if ids is not None:
        from ...common.guards import safe_name

        for s in ids:  # they become parts of output file names (avatar_<identity>.safetensors)
            safe_name(s, "dataset.json: identity", DatasetError)
        if len(set(ids)) != len(ids):
            raise DatasetError("dataset.json: the 'identities' names must be different.")
    return meta


def _check_finite(name: str, a: np.ndarray) -> None:
    if not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1)).ravel()
        raise DatasetError(f"{name} contains NaN or infinite values (frames {bad[:5].tolist()}).")


def _read_cameras(root: str, n: int, res: Sequence[int]):
    cams = _load_json(os.path.join(root, "cameras.json"), "camera file")
    frames = cams.get("frames") if isinstance(cams, dict) else None
    if not isinstance(frames, list):
        raise DatasetError("cameras.json must hold {\"frames\": [...]}.")
    if len(frames) != n:
        raise DatasetError(f"cameras.json has {len(frames)} cameras but dataset.json declares {n} frames.")
    K = np.zeros((n, 3, 3))
    R = np.zeros((n, 3, 3))
    t = np.zeros((n, 3))
    cam_ids = [""] * n
    got = np.zeros(n, bool)
    H, W = res
    for f in frames:
        try:
            i = int(f["index"])
            k, r, tt = (np.asarray(f[key], dtype=np.float64) for key in ("K", "R", "t"))
            w, h = int(f["width"]), int(f["height"])
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"cameras.json: a frame entry is incomplete or malformed ({e}).") from e
        if not 0 <= i < n or got[i]:
            raise DatasetError(f"cameras.json: camera index {i} is out of range or repeated.")
        if k.shape != (3, 3) or r.shape != (3, 3) or tt.shape != (3,):
            raise DatasetError(f"cameras.json: frame {i} has K/R/t of shapes {k.shape}/{r.shape}/{tt.shape}.")
        if (h, w) != (H, W):
            raise DatasetError(f"cameras.json: frame {i} is {w}x{h}, dataset.json says {W}x{H}.")
        K[i], R[i], t[i] = k, r, tt
        cam_ids[i] = str(f.get("camera_id", ""))
        got[i] = True
    for name, a in (("cameras.json K", K), ("cameras.json R", R), ("cameras.json t", t)):
        _check_finite(name, a)
    if np.any(np.abs(np.linalg.det(R) - 1.0) > 1e-3):
        bad = np.argwhere(np.abs(np.linalg.det(R) - 1.0) > 1e-3).ravel()
        raise DatasetError(f"cameras.json: R of frames {bad[:5].tolist()} is not a rotation.")
    if np.any(K[:, 0, 0] <= 0) or np.any(K[:, 1, 1] <= 0):
        raise DatasetError("cameras.json: focal lengths must be positive.")
    return K, R, t, cam_ids


def _read_body(root: str, n: int) -> Dict[str, np.ndarray]:
    path = os.path.join(root, "body.npz")
    if not os.path.isfile(path):
        raise DatasetError("The dataset has no body parameters (body.npz is missing).")
    from ...common.guards import load_npz

    data = {k: np.asarray(v) for k, v in load_npz(path, "body.npz", DatasetError).items()}
    for k in _BODY_KEYS:
        if k not in data:
            raise DatasetError(f"body.npz lacks '{k}'.")
        if data[k].shape[0] != n:
            raise DatasetError(f"body.npz '{k}' has {data[k].shape[0]} frames but dataset.json declares {n}.")
    p = data["poses"]
    if p.ndim != 3 or p.shape[2] != 3:
        raise DatasetError(f"body.npz poses must be (N,J,3) axis-angle, got {p.shape}.")
    if data["betas"].ndim != 2:
        raise DatasetError(f"body.npz betas must be (N,B), got {data['betas'].shape}.")
    if data["transl"].shape != (n, 3) or data["object_matrix"].shape != (n, 4, 4):
        raise DatasetError("body.npz transl must be (N,3) and object_matrix (N,4,4).")
    for k in ("poses", "betas", "transl", "object_matrix"):
        data[k] = data[k].astype(np.float64)
        _check_finite(f"body.npz {k}", data[k])
    for k in ("motion_index", "frame_in_motion") + tuple(o for o in ("identity_index", "pose_group") if o in data):
        if data[k].shape != (n,) or not np.issubdtype(data[k].dtype, np.integer):
            raise DatasetError(f"body.npz '{k}' must be (N,) integers.")
    if "pose_group" in data:
        g = data["pose_group"]
        if n and (g.min() < 0 or g.max() >= n):
            raise DatasetError("body.npz pose_group must number the synchronised groups 0 … N-1.")
        _, first, inv = np.unique(g, return_index=True, return_inverse=True)
        for k in ("poses", "transl", "object_matrix"):  # a group is one instant: one pose
            if not np.allclose(data[k][first[inv]], data[k], atol=1e-6):
                raise DatasetError(f"body.npz pose_group joins frames whose {k} differ: a group is one instant.")
    return data


def _model_verts_count(body) -> int:
    vt = getattr(body, "v_template", None)
    if vt is not None:
        return int(np.asarray(vt).shape[0])
    return int(getattr(body, "num_verts"))


def _model_joint_count(body) -> int:
    parents = getattr(body, "parents", None)
    if parents is not None:
        return int(len(parents))
    return int(getattr(body, "num_joints"))


# ------------------------------------------------------------------------ dataset


def _resolve_forward(forward_fn):
    if forward_fn is not None:
        return forward_fn
    from ...body import kinematics

    return kinematics.forward


class CaptureDataset(torch.utils.data.Dataset):
    """A capture folder's split as a torch ``Dataset``.

    Args:
        root: the capture folder (``dataset.json``, ``cameras.json``, ``body.npz``,
            ``vertex_colors.npy``, ``images/``, ``masks/``).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        body_model: the :class:`BodyModel` to pose (default: ``body.load_default()``); its
            ``model_id`` must equal dataset.json's ``body_model``.
        res: output resolution: an int (longer side; aspect kept) or ``(H, W)``; None keeps the
            captured size. Images are area-resampled (no aliasing), K scaled exactly.
        device: where :meth:`batch` puts its tensors.
        augment: ANR augmentation: rescale by ``f ~ U[scale_range]`` then random crop/pad back
            to the output size, K adjusted (``scale_krt`` then ``crop_krt``).
        patch: train at the scale the engine renders at without paying for whole frames: each
            sample is a ``patch`` x ``patch`` window of the (rescaled, with ``augment``) frame whose
            centre lies uniformly in the body's mask box, K shifted to the window (the network is
            fully convolutional, so it learns the capture's pixel scale from patches). None =
            whole frames.
        cache: keep decoded images and posed bodies in memory.
        seed: seed of the augmentation generators.
        forward_fn: ``forward(model, betas, poses, transl) -> (verts, joints)`` in the model
            frame; default ``neural_avatar.body.kinematics.forward``.
    """

    def __init__(self, root: str, split: str = "train", body_model=None,
                 res: Union[int, Tuple[int, int], None] = None, device: Union[str, torch.device] = "cpu",
                 augment: bool = False, scale_range: Tuple[float, float] = (0.5, 1.25),
                 cache: bool = True, seed: int = 0, forward_fn=None, patch: Optional[int] = None):
        self.root = str(root)
        self._forward_fn = forward_fn
        meta = read_dataset_meta(self.root)
        self.meta = meta
        n = meta["num_frames"]
        self.num_frames_total = n
        if split == "all":
            self.indices = list(range(n))
        else:
            if split not in meta["splits"]:
                raise DatasetError(f"The dataset has no '{split}' split (it has {sorted(meta['splits'])}).")
            self.indices = list(meta["splits"][split])
        if not self.indices:
            raise DatasetError(f"The '{split}' split of the dataset is empty.")
        self.split = split
        self.capture_size = (int(meta["resolution"][0]), int(meta["resolution"][1]))
        self.background = tuple(float(c) for c in meta["background"])

        if body_model is None:
            from ...body import load_default

            body_model = load_default()
        self.body = body_model
        mid = getattr(body_model, "model_id", None)
        if mid != meta["body_model"]:
            raise DatasetError(f"The dataset was captured with body model '{meta['body_model']}', "
                               f"but the loaded body model is '{mid}'.")

        self.K0, self.R, self.t, self.camera_ids = _read_cameras(self.root, n, self.capture_size)
        self.params = _read_body(self.root, n)
        J = _model_joint_count(body_model)
        if self.params["poses"].shape[1] != J:
            raise DatasetError(f"body.npz poses have {self.params['poses'].shape[1]} joints, "
                               f"the body model has {J}.")
        if meta.get("num_joints", J) != J:
            raise DatasetError(f"dataset.json declares {meta['num_joints']} joints, the body model has {J}.")
        nb = int(getattr(body_model, "num_betas", self.params["betas"].shape[1]))
        b = self.params["betas"]
        if b.shape[1] > nb and np.any(np.abs(b[:, nb:]) > 1e-8):
            raise DatasetError(f"body.npz has {b.shape[1]} shape coefficients, the body model only {nb}.")
        self.params["betas"] = np.pad(b, ((0, 0), (0, max(0, nb - b.shape[1]))))[:, :nb]

        V = _model_verts_count(body_model)
        vc_path = os.path.join(self.root, "vertex_colors.npy")
        if not os.path.isfile(vc_path):
            raise DatasetError("The dataset has no vertex colours (vertex_colors.npy is missing).")
        from ...common.guards import load_npy

        vc = load_npy(vc_path, "vertex_colors.npy", DatasetError)
        if vc.ndim == 2:
            vc = vc[None]
        if vc.ndim != 3 or vc.shape[1:] != (V, 3):
            raise DatasetError(f"vertex_colors.npy has shape {vc.shape}; expected ({V}, 3) for this body model "
                               f"(or (identities, {V}, 3)).")
        if not np.all(np.isfinite(vc)):
            raise DatasetError("vertex_colors.npy contains NaN or infinite values.")
        #: (identities, V, 3) float32 albedo per identity (SMPLpix input colours)
        self.vertex_colors_all = torch.from_numpy(np.clip(vc, 0, 1).astype(np.float32))
        #: (V, 3) colours of the first identity
        self.vertex_colors = self.vertex_colors_all[0]

        # Image/mask files: counts must match, and every frame must have both.
        for sub in ("images", "masks"):
            d = os.path.join(self.root, sub)
            if not os.path.isdir(d):
                raise DatasetError(f"The dataset has no {sub}/ folder.")
            files = [f for f in os.listdir(d) if f.lower().endswith(".png")]
            if len(files) != n:
                raise DatasetError(f"{sub}/ holds {len(files)} PNG files but dataset.json declares {n} frames.")
            missing = [i for i in range(n) if not os.path.isfile(os.path.join(d, f"{i:06d}.png"))]
            if missing:
                raise DatasetError(f"{sub}/{missing[0]:06d}.png is missing.")

        ids = meta.get("identities") or ["subject"]
        self.identities = list(ids)
        ident = self.params.get("identity_index")
        if ident is None:
            ident = np.zeros(n, np.int64)
        if ident.min() < 0 or ident.max() >= len(self.identities):
            raise DatasetError(f"body.npz identity_index refers to identities outside {self.identities}.")
        self.identity_index = ident.astype(np.int64)
        pg = self.params.get("pose_group")
        # frames seen at the same instant by several cameras (the capture's --views; ZJU's cameras)
        self.pose_group = np.arange(n, dtype=np.int64) if pg is None else pg.astype(np.int64)
        if self.vertex_colors_all.shape[0] not in (1, len(self.identities)):
            raise DatasetError(f"vertex_colors.npy holds {self.vertex_colors_all.shape[0]} colour sets for "
                               f"{len(self.identities)} identities.")

        # Output size and camera scale.
        H0, W0 = self.capture_size
        if res is None:
            self.size = (H0, W0)
        elif type(res) is int:  # noqa: E721 - bool is not a resolution
            if not MIN_SIDE <= res <= MAX_SIDE:
                raise DatasetError(f"The training resolution must be {MIN_SIDE}–{MAX_SIDE} pixels, got {res}.")
            s = res / max(H0, W0)
            self.size = (max(1, round(H0 * s)), max(1, round(W0 * s)))
        else:
            try:
                self.size = (int(res[0]), int(res[1]))
            except (TypeError, ValueError, IndexError):
                raise DatasetError(f"The training resolution must be a number of pixels, got {res!r}.") from None
            if not all(MIN_SIDE <= v <= MAX_SIDE for v in self.size):
                raise DatasetError(f"The training resolution must be {MIN_SIDE}–{MAX_SIDE} pixels, got {res!r}.")
        self.device = torch.device(device)
        self.augment = bool(augment)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        if patch is not None and (type(patch) is not int or not MIN_SIDE <= patch <= MAX_SIDE):  # noqa: E721
            raise DatasetError(f"The training patch must be {MIN_SIDE}–{MAX_SIDE} pixels, got {patch!r}.")
        self.patch = patch
        #: size of the samples :meth:`batch` returns (the patch, or the whole frame)
        self.sample_size = (patch, patch) if patch else self.size
        self.cache = cache
        self._img_cache: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}
        self._body_cache: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}
        self.seed = int(seed)
        self.rng = np.random.default_rng(seed)

    # -------------------------------------------------------------- basics
    def __len__(self) -> int:
        return len(self.indices)

    @property
    def num_identities(self) -> int:
        return len(self.identities)

    def camera(self, i: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """K, R, t of dataset frame ``i`` at the output size (no augmentation)."""
        from ..inputs.camera import scale_krt

        H0, W0 = self.capture_size
        H, W = self.size
        return scale_krt(self.K0[i], (W / W0, H / H0)), self.R[i], self.t[i]

    def posed_body(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        """World-space ``verts (V,3)``, ``joints (J,3)`` float32 of dataset frame ``i``:
        ``forward(model, betas[i], poses[i], transl[i])`` then ``object_matrix[i]``."""
        if i in self._body_cache:
            return self._body_cache[i]
        p = self.params
        v, j = _resolve_forward(self._forward_fn)(self.body, p["betas"][i], p["poses"][i][None], p["transl"][i][None])
        M = p["object_matrix"][i]
        v = np.asarray(v)[0] @ M[:3, :3].T + M[:3, 3]
        j = np.asarray(j)[0] @ M[:3, :3].T + M[:3, 3]
        out = (v.astype(np.float32), j.astype(np.float32))
        if self.cache:
            self._body_cache[i] = out
        return out

    def load_image(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        """Frame ``i`` at the output size: rgb (H,W,3) float32 [0,1], mask (H,W) float32."""
        if i in self._img_cache:
            return self._img_cache[i]
        cv2 = _cv2()
        ip = os.path.join(self.root, "images", f"{i:06d}.png")
        mp = os.path.join(self.root, "masks", f"{i:06d}.png")
        from ...common.guards import check_image

        for path, label in ((ip, f"images/{i:06d}.png"), (mp, f"masks/{i:06d}.png")):
            check_image(path, label, DatasetError, expect=self.capture_size)  # before the decoder allocates
        img = cv2.imread(ip, cv2.IMREAD_COLOR)
        msk = cv2.imread(mp, cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise DatasetError(f"images/{i:06d}.png cannot be decoded.")
        if msk is None:
            raise DatasetError(f"masks/{i:06d}.png cannot be decoded.")
        H0, W0 = self.capture_size
        if img.shape[:2] != (H0, W0) or msk.shape[:2] != (H0, W0):
            raise DatasetError(f"Frame {i}: image {img.shape[1]}x{img.shape[0]} / mask {msk.shape[1]}x{msk.shape[0]} "
                               f"differ from the dataset resolution {W0}x{H0}.")
        rgb = img[:, :, ::-1].astype(np.float32) / 255.0
        m = msk.astype(np.float32) / 255.0
        H, W = self.size
        if (H, W) != (H0, W0):
            interp = cv2.INTER_AREA if H < H0 else cv2.INTER_LINEAR
            rgb = cv2.resize(rgb, (W, H), interpolation=interp)
            m = cv2.resize(m, (W, H), interpolation=interp)
        out = (np.ascontiguousarray(rgb), np.ascontiguousarray(m))
        if self.cache:
            self._img_cache[i] = out
        return out

    def _augment(self, rgb: np.ndarray, m: np.ndarray, K: np.ndarray, rng: np.random.Generator):
        """ANR sec. 4.1: rescale by f ~ U[a,b], random crop (f>1) or pad with the background
        (f<1) back to the output size; returns the new rgb, mask and K."""
        H, W = self.size
        f = float(rng.uniform(*self.scale_range))
        rgb2, m2, K2 = _rescale(rgb, m, K, f)
        h2, w2 = m2.shape
        # offset of the output window's top-left corner in the rescaled image
        x0 = int(rng.integers(min(0, w2 - W), max(0, w2 - W) + 1))
        y0 = int(rng.integers(min(0, h2 - H), max(0, h2 - H) + 1))
        return self._window(rgb2, m2, K2, y0, x0, H, W)

    def _window(self, rgb, m, K, y0: int, x0: int, h: int, w: int):
        """The ``h`` x ``w`` window of ``rgb``/``m`` with top-left ``(x0, y0)`` (background and
        mask 0 where it leaves the image) and the window's K."""
        from ..inputs.camera import crop_krt

        out_rgb = np.empty((h, w, 3), np.float32)
        out_rgb[:] = np.asarray(self.background, np.float32)
        out_m = np.zeros((h, w), np.float32)
        ya, xa = max(0, y0), max(0, x0)
        yb, xb = min(m.shape[0], y0 + h), min(m.shape[1], x0 + w)
        if yb > ya and xb > xa:
            out_rgb[ya - y0:yb - y0, xa - x0:xb - x0] = rgb[ya:yb, xa:xb]
            out_m[ya - y0:yb - y0, xa - x0:xb - x0] = m[ya:yb, xa:xb]
        return out_rgb, out_m, crop_krt(K, x0, y0)

    def _patch(self, rgb: np.ndarray, m: np.ndarray, K: np.ndarray, rng: np.random.Generator):
        """A ``patch``-sided window (see the class docstring) of the frame, rescaled first by
        ``f ~ U[scale_range]`` when augmenting; outside the frame it is background."""
        P = self.patch
        if self.augment:
            f = float(rng.uniform(*self.scale_range))
            if abs(f - 1.0) > 1e-6:
                rgb, m, K = _rescale(rgb, m, K, f)
        H, W = m.shape
        ys, xs = np.nonzero(m > 0.5)
        if len(ys):
            cy = float(rng.uniform(ys.min(), ys.max() + 1))
            cx = float(rng.uniform(xs.min(), xs.max() + 1))
        else:
            cy, cx = float(rng.uniform(0, H)), float(rng.uniform(0, W))
        y0, x0 = int(round(cy - P / 2)), int(round(cx - P / 2))
        return self._window(rgb, m, K, y0, x0, P, P)

    def get(self, k: int, step: Optional[int] = None) -> dict:
        """Sample at split position ``k``. With augmentation the random rescale/crop is drawn
        from a generator keyed by ``(seed, step, k)`` (``step=None``: the dataset's own
        generator), so training is reproducible, resumable and independent of the number of
        processes."""
        i = self.indices[k]
        rgb, m = self.load_image(i)
        K, R, t = self.camera(i)
        if self.augment or self.patch:
            rng = self.rng if step is None else np.random.default_rng([self.seed, int(step), int(k)])
        if self.patch:
            rgb, m, K = self._patch(rgb, m, K, rng)
        elif self.augment:
            rgb, m, K = self._augment(rgb, m, K, rng)
        v, j = self.posed_body(i)
        return {
            "index": i,
            "identity": int(self.identity_index[i]),
            "rgb": torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))),
            "mask": torch.from_numpy(m)[None],
            "K": torch.from_numpy(np.asarray(K, np.float32)),
            "R": torch.from_numpy(np.asarray(R, np.float32)),
            "t": torch.from_numpy(np.asarray(t, np.float32)),
            "verts": torch.from_numpy(v),
            "joints": torch.from_numpy(j),
        }

    def __getitem__(self, k: int) -> dict:
        return self.get(k)

    def collate(self, samples: List[dict]):
        """Stack samples into ``(FrameInputs, FrameTargets)`` on :attr:`device`."""
        from ..avatar import FrameInputs

        dev = self.device
        st = lambda key: torch.stack([s[key] for s in samples]).to(dev)  # noqa: E731
        bg = torch.tensor(self.background, dtype=torch.float32, device=dev)
        frame = FrameInputs(verts=st("verts"), joints=st("joints"), K=st("K"), R=st("R"), t=st("t"),
                            size=self.sample_size, background=bg)
        tgt = FrameTargets(rgb=st("rgb"), mask=st("mask"),
                           index=torch.tensor([s["index"] for s in samples], device=dev),
                           identity=torch.tensor([s["identity"] for s in samples], device=dev))
        return frame, tgt

    def sources(self, positions: Sequence[int], views_per_item: int = 1):
        """Source views (:class:`..inputs.source.SourceViews`, full frames at the output size, no
        augmentation) of the split positions ``positions``: ``views_per_item`` consecutive
        positions per batch item, which must show one instant (one pose group)."""
        from ..inputs.source import SourceViews

        pos = [int(p) for p in positions]
        V = int(views_per_item)
        if V < 1 or len(pos) % V:
            raise DatasetError(f"{len(pos)} source frames do not split into items of {V} views.")
        items = [pos[k:k + V] for k in range(0, len(pos), V)]
        rgb, msk, K, R, t, vs, js = [], [], [], [], [], [], []
        for it in items:
            idx = [self.indices[p] for p in it]
            if len({int(self.pose_group[i]) for i in idx}) != 1:
                raise DatasetError("The source views of one item must show the same instant (one pose group).")
            ims = [self.load_image(i) for i in idx]
            cams = [self.camera(i) for i in idx]
            rgb.append(np.stack([im[0].transpose(2, 0, 1) for im in ims]))
            msk.append(np.stack([im[1][None] for im in ims]))
            K.append(np.stack([c[0] for c in cams]))
            R.append(np.stack([c[1] for c in cams]))
            t.append(np.stack([c[2] for c in cams]))
            v, j = self.posed_body(idx[0])
            vs.append(v)
            js.append(j)
        f32 = lambda a: torch.from_numpy(np.ascontiguousarray(np.stack(a), np.float32)).to(self.device)  # noqa: E731
        return SourceViews(rgb=f32(rgb), mask=f32(msk), K=f32(K), R=f32(R), t=f32(t), verts=f32(vs), joints=f32(js),
                           background=torch.tensor(self.background, dtype=torch.float32, device=self.device))

    def pick_sources(self, positions: Sequence[int], rng: np.random.Generator) -> List[int]:
        """For each split position a source position of the same identity showing another
        instant (another pose group) where the split has one, else any other frame of it."""
        ident = self.identity_index[np.asarray(self.indices)]
        group = self.pose_group[np.asarray(self.indices)]
        out = []
        for p in positions:
            same = np.nonzero(ident == ident[p])[0]
            other = same[group[same] != group[p]]
            pool = other if len(other) else same
            out.append(int(rng.choice(pool)))
        return out

    def pick_view_groups(self, positions: Sequence[int], rng: np.random.Generator, views: int) -> List[int]:
        """For each split position, ``views`` positions showing one other instant of the same
        identity (a synchronised group with at least ``views`` frames): AniPixel's source views."""
        ident = self.identity_index[np.asarray(self.indices)]
        group = self.pose_group[np.asarray(self.indices)]
        out = []
        for p in positions:
            cands = [g for g in np.unique(group[ident == ident[p]]) if g != group[p]
                     and int((group == g).sum()) >= views]
            if not cands:
                raise DatasetError(f"The capture has no other instant of this person seen by {views} cameras: "
                                   f"capture it with --views {views} or more.")
            g = cands[int(rng.integers(len(cands)))]
            members = np.nonzero(group == g)[0]
            out += [int(x) for x in rng.choice(members, size=views, replace=False)]
        return out

    def batch(self, positions: Sequence[int], step: Optional[int] = None):
        """``(FrameInputs, FrameTargets)`` of the split positions ``positions`` (``step`` keys
        the augmentation, see :meth:`get`)."""
        return self.collate([self.get(int(p), step) for p in positions])


# ------------------------------------------------------------------------ keyframes


def _coverage_sets(ds: CaptureDataset, positions: Sequence[int], texels: int, device) -> np.ndarray:
    """(len(positions), E) bool: which UV texels (or vertices) each frame shows."""
    from ..inputs.raster import rasterize

    body = ds.body
    faces = torch.as_tensor(np.array(body.faces, np.int64), device=device)
    vt = getattr(body, "vt", None)
    ft = getattr(body, "ft", None)
    use_uv = vt is not None and ft is not None and len(vt) > 0
    V = _model_verts_count(body)
    E = texels * texels if use_uv else V
    cov = np.zeros((len(positions), E), bool)
    for r, p in enumerate(positions):
        i = ds.indices[int(p)]
        v, _ = ds.posed_body(i)
        K, R, t = ds.camera(i)
        args = dict(size=ds.size, compute_normals=False)
        if use_uv:
            args.update(uv=torch.as_tensor(np.array(vt), dtype=torch.float32, device=device),
                        uv_faces=torch.as_tensor(np.array(ft, np.int64), device=device))
        with torch.no_grad():
            ras = rasterize(torch.from_numpy(v)[None].to(device), faces,
                            torch.as_tensor(K, dtype=torch.float32, device=device)[None],
                            torch.as_tensor(R, dtype=torch.float32, device=device)[None],
                            torch.as_tensor(t, dtype=torch.float32, device=device)[None], **args)
        fid = ras.face_id[0]
        vis = fid >= 0
        if use_uv:
            uv = ras.uv[0][vis].clamp(0, 1 - 1e-6).cpu().numpy()
            cells = (np.floor(uv[:, 1] * texels).astype(np.int64) * texels
                     + np.floor(uv[:, 0] * texels).astype(np.int64))
            cov[r, cells] = True
        else:
            vids = faces[fid[vis]].reshape(-1).cpu().numpy()
            cov[r, vids] = True
    return cov


def keyframes_by_coverage(ds: CaptureDataset, k: Optional[int] = None, fraction: float = 0.1,
                          texels: int = 64, device: Union[str, torch.device] = "cpu") -> List[int]:
    """ANR sec. 3.4 keyframes: greedily add the frame that adds the most not-yet-covered
    texels of the body's UV map (a ``texels x texels`` grid over the rasterizer's UV output;
    visible vertices when the body has no UVs) until ``k`` frames (default
    ``max(1, round(fraction * len(ds)))``, ANR uses < 10 %) are chosen or nothing new is
    gained. Returns split positions (indices into ``ds``), in the order chosen."""
    n = len(ds)
    if k is None:
        k = max(1, int(round(fraction * n)))
    k = max(1, min(int(k), n))
    cov = _coverage_sets(ds, list(range(n)), texels, torch.device(device))
    covered = np.zeros(cov.shape[1], bool)
    chosen: List[int] = []
    for _ in range(k):
        gain = (cov & ~covered).sum(1)
        gain[chosen] = -1
        best = int(np.argmax(gain))
        if gain[best] <= 0 and chosen:
            break
        chosen.append(best)
        covered |= cov[best]
    return chosen


# ------------------------------------------------------------------------ synthetic


def _procedural_colors(rest: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smooth, clearly structured albedo from rest-pose positions: coloured bands along the
    body's height, a checker over the limbs, random hue offsets per seed."""
    p = rest - rest.mean(0)
    h = (p[:, 1] - p[:, 1].min()) / max(np.ptp(p[:, 1]), 1e-6)
    phase = rng.uniform(0, 2 * np.pi, 3)
    c = 0.5 + 0.35 * np.sin(2 * np.pi * (3.0 * h)[:, None] + phase[None, :])
    checker = (np.floor(p[:, 0] * 12) + np.floor(p[:, 1] * 12) + np.floor(p[:, 2] * 12)) % 2
    c = c * (0.75 + 0.25 * checker[:, None])
    return np.clip(c, 0, 1).astype(np.float32)


def write_synthetic_dataset(root: str, n: int = 6, res: int = 48, seed: int = 0, body_model=None,
                            background: Sequence[float] = (1.0, 1.0, 1.0),
                            identities: int = 1, forward_fn=None, views: int = 1) -> str:
    """Write a tiny capture in the ``neural_avatar.capture/1`` format (for tests and demos).

    The subject is the body model with procedural per-vertex albedo, posed with small random
    joint rotations, seen by cameras orbiting it; frames are rendered with the project's
    z-buffer rasterizer (perspective-correct per-vertex colour interpolation, Lambert shading
    with a head light), composited over ``background``. Frames ``0..n-3`` form the train
    split (motion 0, cameras ``cam0..``), ``n-2`` val (motion 1, ``cam_val``), ``n-1`` test
    (motion 2, ``cam_test``): no frame, motion or camera is shared between splits.
    ``identities > 1`` writes several subjects (different albedo) with ``identity_index``.
    ``views > 1``: the train frames come in synchronised groups of ``views`` (one pose and one
    subject per group, ``pose_group`` in body.npz), as ``capture --views``.
    """
    from ..inputs.camera import look_at_krt
    from ..inputs.raster import rasterize

    if n < 3:
        raise DatasetError("A synthetic dataset needs at least 3 frames (train, val, test).")
    cv2 = _cv2()
    if body_model is None:
        from ...body import load_default

        body_model = load_default()
    body = body_model
    forward = _resolve_forward(forward_fn)
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "masks"), exist_ok=True)
    J = _model_joint_count(body)
    nb = int(getattr(body, "num_betas", 10))
    rest = np.asarray(body.v_template, np.float64)
    colors = [_procedural_colors(rest, np.random.default_rng(seed + 1000 * k)) for k in range(identities)]
    faces = torch.as_tensor(np.array(body.faces, np.int64))
    H = W = int(res)
    # model Y-up -> Blender Z-up, as a freshly added body's armature object (ARCHITECTURE.md)
    M = np.eye(4)
    M[:3, :3] = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], np.float64)
    poses = np.zeros((n, J, 3))
    poses[:, 1:] = rng.normal(0, 0.12, (n, J - 1, 3))
    betas = np.zeros((n, nb))
    betas[:, : min(nb, 2)] = rng.normal(0, 0.3, min(nb, 2))  # one subject: same betas every frame
    transl = np.zeros((n, 3))
    motion = np.array([0] * (n - 2) + [1, 2], np.int64)
    fim = np.array(list(range(n - 2)) + [0, 0], np.int64)
    group = np.arange(n, dtype=np.int64)
    if views > 1:
        group[: n - 2] = np.arange(n - 2) // views
        group[n - 2:] = group[n - 3] + 1 + np.arange(2)
        first = np.array([int(np.nonzero(group == g)[0][0]) for g in group])
        poses = poses[first]
    ident = group % identities
    bg = np.asarray(background, np.float32)
    cam_frames = []
    cam_ids = []
    for i in range(n):
        v, _ = forward(body, betas[i], poses[i][None], transl[i][None])
        v = np.asarray(v)[0] @ M[:3, :3].T + M[:3, 3]
        centre = 0.5 * (v.min(0) + v.max(0))
        height = float(np.ptp(v[:, 2]))
        az = 2 * np.pi * i / max(n - 2, 1) + (0.4 if i >= n - 2 else 0.0) * (i - n + 3)
        dist = 2.2 * max(height, 0.5)
        eye = centre + dist * np.array([math.sin(az), -math.cos(az), 0.15])
        K, R, t = look_at_krt(eye, centre, (0, 0, 1), 2 * math.degrees(math.atan(0.62 * height / dist)), W, H)
        cid = f"cam{i}" if i < n - 2 else ("cam_val" if i == n - 2 else "cam_test")
        cam_ids.append(cid)
        cam_frames.append({"index": i, "camera_id": cid, "K": K.tolist(), "R": R.tolist(),
                           "t": t.tolist(), "width": W, "height": H})
        vt = torch.from_numpy(v.astype(np.float32))[None]
        Kt, Rt, tt = (torch.from_numpy(np.asarray(a, np.float32))[None] for a in (K, R, t))
        ras = rasterize(vt, faces, Kt, Rt, tt, (H, W), compute_normals=True)
        fid = ras.face_id[0]
        vis = (fid >= 0).numpy()
        col = torch.from_numpy(colors[ident[i]])
        tri = faces[fid.clamp_min(0)]  # (H,W,3)
        albedo = (col[tri] * ras.bary[0][..., None]).sum(-2).numpy()  # (H,W,3)
        n_cam = ras.normals[0].permute(1, 2, 0).numpy()
        shade = 0.35 + 0.65 * np.clip(-n_cam[..., 2], 0, 1)
        img = np.where(vis[..., None], np.clip(albedo * shade[..., None], 0, 1), bg)
        cv2.imwrite(os.path.join(root, "images", f"{i:06d}.png"),
                    np.round(img[:, :, ::-1] * 255).astype(np.uint8))
        cv2.imwrite(os.path.join(root, "masks", f"{i:06d}.png"), (vis * 255).astype(np.uint8))
    np.savez(os.path.join(root, "body.npz"), poses=poses, betas=betas, transl=transl,
             object_matrix=np.repeat(M[None], n, 0), motion_index=motion, frame_in_motion=fim,
             **({"identity_index": ident} if identities > 1 else {}),
             **({"pose_group": group} if views > 1 else {}))
    np.save(os.path.join(root, "vertex_colors.npy"), colors[0] if identities == 1 else np.stack(colors))
    meta = {
        "format": FORMAT, "body_model": getattr(body, "model_id", "unknown"),
        "model_type": "default", "gender": "neutral", "num_joints": J,
        "resolution": [H, W], "num_frames": n, "engine": "SYNTHETIC",
        "background": [float(c) for c in bg],
        "splits": {"train": list(range(n - 2)), "val": [n - 2], "test": [n - 1]},
        "motions": ["synthetic_train", "synthetic_val", "synthetic_test"],
        "cameras": cam_ids,
    }
    if identities > 1:
        meta["identities"] = [f"subject{k}" for k in range(identities)]
    with open(os.path.join(root, "dataset.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
    with open(os.path.join(root, "cameras.json"), "w", encoding="utf-8") as f:
        json.dump({"frames": cam_frames}, f, indent=1)
    return root


# SMPL-like T-pose joint positions (model frame, Y-up, metres) for :func:`capsule_body`.
_CAPSULE_JOINTS = np.array([
    [0, 0.9, 0], [0.09, 0.82, 0], [-0.09, 0.82, 0], [0, 1.0, 0], [0.1, 0.45, 0], [-0.1, 0.45, 0],
    [0, 1.13, 0], [0.1, 0.08, 0], [-0.1, 0.08, 0], [0, 1.2, 0], [0.1, 0.02, 0.1], [-0.1, 0.02, 0.1],
    [0, 1.42, 0], [0.08, 1.35, 0], [-0.08, 1.35, 0], [0, 1.52, 0], [0.18, 1.38, 0], [-0.18, 1.38, 0],
    [0.45, 1.38, 0], [-0.45, 1.38, 0], [0.7, 1.38, 0], [-0.7, 1.38, 0], [0.78, 1.38, 0], [-0.78, 1.38, 0]])


def capsule_body(segments: int = 8, rings: int = 4, num_betas: int = 4):
    """A small SMPL-layout (24 joints) :class:`~neural_avatar.body.BodyModel`: one open
    cylinder per bone (``segments`` around, ``rings`` along), rigidly skinned to the bone's
    parent joint, a UV atlas with one cell per bone, random small shape directions, zero pose
    correctives. ``J_regressor`` averages the ring of vertices centred on each joint, so
    it regresses the joints exactly. ``model_id = "capsules-test-v1"``."""
    from ...body import SMPL_PARENTS, validate

    parents = np.asarray(SMPL_PARENTS, np.int64)
    J = len(parents)
    verts, faces, weights, vt, ft = [], [], [], [], []
    ring_of_joint: Dict[int, List[int]] = {}
    cols = 5
    for b in range(1, J):
        p = parents[b]
        a, c = _CAPSULE_JOINTS[p], _CAPSULE_JOINTS[b]
        d = c - a
        length = float(np.linalg.norm(d))
        d = d / length
        u = np.cross(d, [0.0, 0.0, 1.0])
        u = u / np.linalg.norm(u) if np.linalg.norm(u) > 1e-6 else np.array([1.0, 0.0, 0.0])
        w = np.cross(d, u)
        r = 0.12 if b in (3, 6, 9) else 0.05
        base, tbase = len(verts), len(vt)
        cu, cv = (b - 1) % cols, (b - 1) // cols
        for i in range(rings + 1):
            ring = []
            for j in range(segments + 1):
                ang = 2 * np.pi * j / segments
                if j < segments:
                    ring.append(len(verts))
                    verts.append(a + d * length * i / rings + r * (np.cos(ang) * u + np.sin(ang) * w))
                    weights.append(p)
                vt.append([(cu + 0.05 + 0.9 * j / segments) / cols, (cv + 0.05 + 0.9 * i / rings) / cols])
            if i == 0:
                ring_of_joint.setdefault(int(p), ring)
            if i == rings:
                ring_of_joint.setdefault(int(b), ring)
        for i in range(rings):
            for j in range(segments):
                v00 = base + i * segments + j
                v01 = base + i * segments + (j + 1) % segments
                t00 = tbase + i * (segments + 1) + j
                t10 = t00 + segments + 1
                faces += [[v00, v01, v01 + segments], [v00, v01 + segments, v00 + segments]]
                ft += [[t00, t00 + 1, t10 + 1], [t00, t10 + 1, t10]]
    V = len(verts)
    W = np.zeros((V, J))
    W[np.arange(V), weights] = 1.0
    Jreg = np.zeros((J, V))
    for j in range(J):
        Jreg[j, ring_of_joint[j]] = 1.0 / len(ring_of_joint[j])
    kintree = np.stack([np.where(parents < 0, 4294967295, parents), np.arange(J)]).astype(np.int64)
    data = {"v_template": np.asarray(verts), "shapedirs": np.random.default_rng(0).normal(0, 0.01, (V, 3, num_betas)),
            "posedirs": np.zeros((V, 3, 9 * (J - 1))), "J_regressor": Jreg, "weights": W,
            "kintree_table": kintree, "f": np.asarray(faces, np.int64), "vt": np.asarray(vt),
            "ft": np.asarray(ft, np.int64)}
    return validate(data, model_type="smpl", model_id="capsules-test-v1", source="capsule body")


# ------------------------------------------------------------------------ multi-subject captures


def merge_captures(parts: Sequence[str], out: str, names: Sequence[str], extra: Optional[dict] = None) -> dict:
    """Merge single-subject captures (each a valid ``neural_avatar.capture/1`` folder of the same
    body model, resolution and background) into one multi-identity capture in ``out``: frames
    renumbered part after part, ``identities = names`` with ``body.npz["identity_index"]``,
    ``vertex_colors.npy`` of shape ``(identities, V, 3)``, splits and motions united, camera ids
    prefixed by the subject's name. Image files are hard-linked where the file system allows
    (copied otherwise). Re-running it rewrites the merged files (the parts are the resumable
    unit). Returns the merged ``dataset.json``."""
    import shutil

    from ...common.guards import load_npy, load_npz, safe_name

    if len(parts) != len(names) or not parts:
        raise DatasetError("merge_captures needs one name per part (and at least one part).")
    for n in names:
        safe_name(n, "subject name", DatasetError)
    if len(set(names)) != len(names):
        raise DatasetError("Subject names must be distinct.")
    metas = [read_dataset_meta(p) for p in parts]
    m0 = metas[0]
    for p, m in zip(parts, metas):
        for key in ("body_model", "resolution", "background", "num_joints"):
            if m.get(key) != m0.get(key):
                raise DatasetError(f"Capture '{os.path.basename(p)}' has another {key} ({m.get(key)!r} vs {m0.get(key)!r}).")
        if m.get("identities") and len(m["identities"]) > 1:
            raise DatasetError(f"Capture '{os.path.basename(p)}' already holds several identities.")
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    os.makedirs(os.path.join(out, "masks"), exist_ok=True)
    motions: List[str] = []
    frames, cams, splits = [], [], {"train": [], "val": [], "test": []}
    arrays: Dict[str, list] = {}
    colors = []
    offset = 0
    for k, (p, m, name) in enumerate(zip(parts, metas, names)):
        n = int(m["num_frames"])
        with open(os.path.join(p, "cameras.json"), encoding="utf-8") as f:
            cj = json.load(f)
        for fr in cj["frames"]:
            fr = dict(fr)
            fr["index"] = int(fr["index"]) + offset
            fr["camera_id"] = f"{name}/{fr['camera_id']}"
            cams.append(fr)
        body = load_npz(os.path.join(p, "body.npz"), "body.npz", DatasetError)
        remap = []
        for mname in m.get("motions", []):
            if mname not in motions:
                motions.append(mname)
            remap.append(motions.index(mname))
        for key in ("poses", "betas", "transl", "object_matrix", "frame_in_motion"):
            arrays.setdefault(key, []).append(np.asarray(body[key]))
        mi = np.asarray(body["motion_index"]) if "motion_index" in body else np.zeros(n, np.int64)
        arrays.setdefault("motion_index", []).append(np.asarray(remap, np.int64)[mi] if remap else mi)
        arrays.setdefault("identity_index", []).append(np.full(n, k, np.int64))
        pg = np.asarray(body["pose_group"], np.int64) if "pose_group" in body else np.arange(n, dtype=np.int64)
        arrays.setdefault("pose_group", []).append(pg + offset)
        vc = load_npy(os.path.join(p, "vertex_colors.npy"), "vertex_colors.npy", DatasetError)
        colors.append(vc.reshape(-1, vc.shape[-1]) if vc.ndim == 3 else vc)
        for s, idx in m["splits"].items():
            splits.setdefault(s, []).extend(int(i) + offset for i in idx)
        for sub in ("images", "masks"):
            for i in range(n):
                src = os.path.join(p, sub, f"{i:06d}.png")
                dst = os.path.join(out, sub, f"{i + offset:06d}.png")
                if os.path.lexists(dst):
                    os.remove(dst)
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)
        frames.append(n)
        offset += n
    N = offset
    for sub in ("images", "masks"):  # frames of an earlier, larger merge
        for f in os.listdir(os.path.join(out, sub)):
            stem = f[:-4]
            if f.endswith(".png") and stem.isdigit() and int(stem) >= N:
                os.remove(os.path.join(out, sub, f))
    cat = {k: np.concatenate(v, 0) for k, v in arrays.items()}
    np.savez(os.path.join(out, "body.npz"), **cat)
    np.save(os.path.join(out, "vertex_colors.npy"), np.stack(colors).astype(np.float32))
    with open(os.path.join(out, "cameras.json"), "w", encoding="utf-8") as f:
        json.dump({"frames": cams}, f)
    meta = {k: v for k, v in m0.items() if k not in ("splits", "num_frames", "motions", "cameras", "identities",
                                                      "capture")}
    meta.update({"num_frames": N, "splits": splits, "motions": motions,
                 "cameras": sorted({c["camera_id"] for c in cams}), "identities": list(names),
                 "subjects": {"frames": frames, **(extra or {})}})
    with open(os.path.join(out, "dataset.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f)
    read_dataset_meta(out)  # the merged folder passes the reader's checks
    return meta
