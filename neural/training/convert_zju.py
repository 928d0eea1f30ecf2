"""Convert a ZJU-MoCap / Neural Body capture into the ``neural_avatar.capture/1`` folder format.

Pure (numpy + OpenCV, no bpy). Source layout (one sequence, e.g. ``CoreView_313/``)::

    annots.npy | annots.json   {"cams": {"K": [V x 3x3], "R": [V x 3x3], "T": [V x 3x1] (mm),
                                         "D": [V x 5x1]},
                                "ims": [{"ims": ["Camera (1)/xxx.jpg", ...one per view]}, ...]}
    new_params/<i>.npy|.npz|.json   (or params/<i>...) poses (1,72), Rh (1,3), Th (1,3), shapes (1,10)
    new_vertices/<i>.npy            (or vertices/<i>.npy) optional (6890,3) world-space SMPL vertices
    mask/<image path>.png, mask_cihp/<image path>.png   foreground masks (non-zero = person)

Conventions of the data, as Neural Body (``lib/datasets/light_stage/*``) and EasyMocap read it:

* cameras: ``x_cam = R X + T / 1000`` -- ``T`` is in **millimetres**, world in metres; OpenCV
  axes, which is already our convention, so ``R`` is kept and ``t = T / 1000``. Images carry
  lens distortion ``D`` (k1, k2, p1, p2, k3); Neural Body undistorts image and mask with
  ``cv2.undistort(img, K, D)`` keeping ``K``, and so do we (then an exact resize: ``scale_krt``).
* body: EasyMocap's SMPL ``forward(poses, shapes, Rh, Th)`` is
  ``V_world = Rodrigues(Rh) @ SMPL(poses, shapes) + Th`` (SMPL eq. 1-5 then a rigid motion
  about the SMPL origin; ``poses[:3]`` rotates about the root joint as always in SMPL). Our
  format's ``world = object_matrix @ forward(model, betas, poses, transl)`` reproduces it
  exactly with ``poses = poses``, ``betas = shapes``, ``transl = 0`` and
  ``object_matrix = [[Rodrigues(Rh), Th], [0, 1]]``.
* frame numbering: ``CoreView_313`` / ``CoreView_315`` name images ``..._<k>_<date>.jpg`` with
  parameter files numbered ``k`` (from 1); the other sequences name images ``<i>.jpg`` and number
  parameters from 0. :func:`param_index` follows Neural Body's rule (``split('_')[4]``).
* masks: non-zero = foreground; when both ``mask/`` and ``mask_cihp/`` exist they are OR-ed
  (Neural Body's ``msk = msk_zju | msk_cihp``).

**Pickles.** In the released data ``annots.npy`` and ``params/<i>.npy`` are pickled Python
dicts: reading them needs ``allow_pickle=True``, which can run arbitrary code from the file.
The converter therefore refuses them unless ``trust_pickle=True`` (CLI ``--trust-pickle``) is
given for data you trust. Without it, provide the same content as ``annots.json`` and
``params/<i>.json`` or ``.npz`` (plain arrays); :func:`export_json` writes those once from
trusted pickles (``--export-json``) so later conversions need no pickle at all.

**Vertex colours.** ``vertex_colors.npy`` (SMPLpix input colours) is estimated from the
photographs: every frame's world-space vertices (``new_vertices/`` or the body model's forward)
are projected into the training views, a vertex counts as seen where it lies inside the mask and
passes a point z-buffer test (the nearest splatted vertex depth in a ``cell``-pixel grid, within
``depth_tol`` metres), and its colour is the mean of the undistorted images there. Vertices
never seen take the mean colour of the seen ones.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ...errors import DatasetError, NeuralAvatarError

__all__ = [
    "ZjuSource",
    "rodrigues",
    "param_index",
    "read_annots",
    "read_params",
    "export_json",
    "convert_zju",
    "main",
]

FORMAT = "neural_avatar.capture/1"


def _cv2():
    import cv2

    return cv2


# ----------------------------------------------------------------------------- maths


def rodrigues(rvec) -> np.ndarray:
    """Rotation matrix of an axis-angle vector (Rodrigues' formula, ``cv2.Rodrigues``):
    ``R = I + sin(a) [k]x + (1 - cos(a)) [k]x^2`` with ``a = |r|``, ``k = r / a``."""
    r = np.asarray(rvec, dtype=np.float64).reshape(3)
    a = float(np.linalg.norm(r))
    if a < 1e-12:
        return np.eye(3)
    k = r / a
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(a) * kx + (1.0 - math.cos(a)) * (kx @ kx)


def param_index(image_path: str, sequence: str = "") -> int:
    """The parameter-file number of a ZJU image (Neural Body's rule): ``CoreView_313/315``
    images are ``..._<k>_<date>.jpg`` -> ``k``; all others ``<i>.jpg`` -> ``i``."""
    stem = os.path.splitext(os.path.basename(image_path))[0]
    try:
        if sequence in ("CoreView_313", "CoreView_315") or not stem.isdigit():
            return int(stem.split("_")[4])
        return int(stem)
    except (IndexError, ValueError):
        raise DatasetError(f"Cannot tell the frame number of image '{image_path}'.") from None


# ----------------------------------------------------------------------------- reading


def _refuse_pickle(path: str) -> DatasetError:
    return DatasetError(
        f"'{os.path.basename(path)}' is a pickled Python object (ZJU-MoCap stores annotations and "
        "SMPL parameters that way). Loading a pickle can run code hidden in the file, so it is refused "
        "by default. If you trust this data, run the converter with --trust-pickle (optionally with "
        "--export-json to write annots.json and params/*.json once), or convert the files to JSON/npz "
        "yourself.")


def _load_pickled_npy(path: str, trust_pickle: bool):
    """``np.load`` a ``.npy``: plain arrays always; a pickled object only when trusted."""
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" not in str(e).lower():
            raise DatasetError(f"Cannot read '{path}': {e}") from e
    if not trust_pickle:
        raise _refuse_pickle(path)
    obj = np.load(path, allow_pickle=True)  # trusted by the user (--trust-pickle)
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    return obj


def _to_list(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, dict):
        return {k: _to_list(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_list(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


@dataclass
class ZjuCameras:
    """Per-view calibration in metres: ``K (V,3,3)``, ``R (V,3,3)``, ``t (V,3)``, ``D (V,5)``."""

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    D: np.ndarray

    @property
    def num_views(self) -> int:
        return int(self.K.shape[0])


@dataclass
class ZjuSource:
    """A parsed ZJU-MoCap sequence: cameras and per-time image paths (``ims[time][view]``)."""

    root: str
    cams: ZjuCameras
    ims: List[List[str]]
    sequence: str = ""
    param_dir: str = ""
    vertex_dir: str = ""
    mask_dirs: List[str] = field(default_factory=list)


def read_annots(root: str, trust_pickle: bool = False) -> ZjuSource:
    """Read ``annots.json`` (preferred) or ``annots.npy`` (pickle: needs ``trust_pickle``)."""
    if not os.path.isdir(root):
        raise DatasetError(f"ZJU-MoCap folder '{root}' does not exist.")
    pj, pn = os.path.join(root, "annots.json"), os.path.join(root, "annots.npy")
    if os.path.isfile(pj):
        from ...common.guards import load_json

        ann = load_json(pj, "annots.json", DatasetError)
    elif os.path.isfile(pn):
        ann = _load_pickled_npy(pn, trust_pickle)
    else:
        raise DatasetError(f"'{root}' has no annots.json or annots.npy: is it a ZJU-MoCap sequence folder?")
    if not isinstance(ann, dict) or "cams" not in ann or "ims" not in ann:
        raise DatasetError("The annotations must be a dict with 'cams' and 'ims'.")
    c = ann["cams"]
    try:
        K = np.asarray(c["K"], dtype=np.float64).reshape(-1, 3, 3)
        R = np.asarray(c["R"], dtype=np.float64).reshape(-1, 3, 3)
        T = np.asarray(c["T"], dtype=np.float64).reshape(-1, 3)
        D = np.asarray(c["D"], dtype=np.float64).reshape(len(K), -1) if "D" in c else np.zeros((len(K), 5))
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"The annotations' cameras are malformed ({e}).") from e
    if not (len(K) == len(R) == len(T) == len(D)) or len(K) == 0:
        raise DatasetError("The annotations list different numbers of K, R, T and D.")
    if not (np.all(np.isfinite(K)) and np.all(np.isfinite(R)) and np.all(np.isfinite(T))):
        raise DatasetError("The annotations' cameras contain NaN or infinite values.")
    if np.any(np.abs(np.linalg.det(R) - 1.0) > 1e-3):
        raise DatasetError("A camera rotation in the annotations is not a rotation matrix.")
    ims = []
    for k, entry in enumerate(ann["ims"]):
        paths = entry.get("ims") if isinstance(entry, dict) else entry
        if not isinstance(paths, (list, tuple)) or len(paths) != len(K):
            raise DatasetError(f"Annotation frame {k} lists {len(paths) if isinstance(paths, (list, tuple)) else '?'}"
                               f" images for {len(K)} cameras.")
        from ...common.guards import safe_relpath

        ims.append([safe_relpath(str(p), "annots: image path", DatasetError) for p in paths])
    if not ims:
        raise DatasetError("The annotations list no frames.")
    # ZJU's T is in millimetres (Neural Body: cam_T = T / 1000).
    cams = ZjuCameras(K=K, R=R, t=T / 1000.0, D=D)
    param_dir = next((os.path.join(root, d) for d in ("new_params", "params")
                      if os.path.isdir(os.path.join(root, d))), "")
    vertex_dir = next((os.path.join(root, d) for d in ("new_vertices", "vertices")
                       if os.path.isdir(os.path.join(root, d))), "")
    mask_dirs = [os.path.join(root, d) for d in ("mask", "mask_cihp") if os.path.isdir(os.path.join(root, d))]
    return ZjuSource(root=root, cams=cams, ims=ims, sequence=os.path.basename(os.path.normpath(root)),
                     param_dir=param_dir, vertex_dir=vertex_dir, mask_dirs=mask_dirs)


def read_params(param_dir: str, index: int, trust_pickle: bool = False) -> Dict[str, np.ndarray]:
    """SMPL parameters of frame ``index``: ``poses (24,3)``, ``shapes (10,)``, ``Rh (3,)``, ``Th (3,)``.

    Looks for ``<index>.json``, ``<index>.npz`` (plain arrays) and ``<index>.npy`` (a pickled dict
    in the released data: needs ``trust_pickle``)."""
    base = os.path.join(param_dir, str(index))
    if os.path.isfile(base + ".json"):
        from ...common.guards import load_json

        d = load_json(base + ".json", f"{os.path.basename(base)}.json", DatasetError)
    elif os.path.isfile(base + ".npz"):
        from ...common.guards import load_npz

        d = load_npz(base + ".npz", f"{os.path.basename(base)}.npz", DatasetError)
    elif os.path.isfile(base + ".npy"):
        d = _load_pickled_npy(base + ".npy", trust_pickle)
    else:
        raise DatasetError(f"SMPL parameters of frame {index} are missing ({base}.npy/.npz/.json).")
    if not isinstance(d, dict):
        raise DatasetError(f"SMPL parameters of frame {index} are not a dict of arrays.")
    try:
        poses = np.asarray(d["poses"], dtype=np.float64).reshape(-1)
        shapes = np.asarray(d["shapes"], dtype=np.float64).reshape(-1)
        Rh = np.asarray(d.get("Rh", np.zeros(3)), dtype=np.float64).reshape(3)
        Th = np.asarray(d.get("Th", np.zeros(3)), dtype=np.float64).reshape(3)
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"SMPL parameters of frame {index} lack poses/shapes/Rh/Th ({e}).") from e
    if poses.size != 72:
        raise DatasetError(f"SMPL parameters of frame {index}: poses has {poses.size} numbers, expected 72.")
    out = {"poses": poses.reshape(24, 3), "shapes": shapes, "Rh": Rh, "Th": Th}
    for k, v in out.items():
        if not np.all(np.isfinite(v)):
            raise DatasetError(f"SMPL parameters of frame {index}: '{k}' contains NaN or infinite values.")
    return out


def export_json(root: str, trust_pickle: bool = False) -> List[str]:
    """Write ``annots.json`` and ``<param_dir>/<i>.json`` next to trusted pickles, so later
    conversions need no ``--trust-pickle``. Returns the files written."""
    if not trust_pickle:
        raise DatasetError("Exporting JSON reads the pickled files: pass --trust-pickle if you trust them.")
    written = []
    pn = os.path.join(root, "annots.npy")
    if os.path.isfile(pn):
        ann = _load_pickled_npy(pn, True)
        with open(os.path.join(root, "annots.json"), "w", encoding="utf-8") as f:
            json.dump(_to_list(ann), f)
        written.append(os.path.join(root, "annots.json"))
    for d in ("new_params", "params"):
        pd = os.path.join(root, d)
        if not os.path.isdir(pd):
            continue
        for name in sorted(os.listdir(pd)):
            if name.endswith(".npy"):
                obj = _load_pickled_npy(os.path.join(pd, name), True)
                if isinstance(obj, dict):
                    out = os.path.join(pd, name[:-4] + ".json")
                    with open(out, "w", encoding="utf-8") as f:
                        json.dump(_to_list(obj), f)
                    written.append(out)
    return written


def _read_vertices(vertex_dir: str, index: int) -> Optional[np.ndarray]:
    if not vertex_dir:
        return None
    p = os.path.join(vertex_dir, f"{index}.npy")
    if not os.path.isfile(p):
        return None
    try:
        v = np.load(p, allow_pickle=False)
    except ValueError as e:
        raise DatasetError(f"{p} cannot be read as a plain array: {e}") from e
    v = np.asarray(v, dtype=np.float64).reshape(-1, 3)
    if not np.all(np.isfinite(v)):
        raise DatasetError(f"{p} contains NaN or infinite values.")
    return v


# ----------------------------------------------------------------------------- images


def _read_image(path: str):
    from ...common.guards import check_image

    cv2 = _cv2()
    check_image(path, f"Image '{path}'", DatasetError)
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"Image '{path}' is missing or cannot be decoded.")
    return img


def _read_mask(src: ZjuSource, rel: str, shape) -> np.ndarray:
    """OR of the ``mask/`` and ``mask_cihp/`` masks of image ``rel`` (non-zero = foreground)."""
    cv2 = _cv2()
    stem = os.path.splitext(rel)[0]
    m = None
    for d in src.mask_dirs:
        for ext in (".png", ".jpg"):
            p = os.path.join(d, stem + ext)
            if os.path.isfile(p):
                a = cv2.imread(p, cv2.IMREAD_GRAYSCALE)
                if a is None:
                    raise DatasetError(f"Mask '{p}' cannot be decoded.")
                if a.shape != tuple(shape):
                    raise DatasetError(f"Mask '{p}' is {a.shape[1]}x{a.shape[0]}, its image {shape[1]}x{shape[0]}.")
                m = (a != 0) if m is None else (m | (a != 0))
                break
    if m is None:
        raise DatasetError(f"No mask for image '{rel}' (looked in mask/ and mask_cihp/).")
    return m


def _undistort_resize(img, mask, K, D, out_hw):
    """Undistort image and mask with ``K, D`` (Neural Body), then area-resize to ``out_hw``
    with ``K`` scaled exactly (pixel corners on integer coordinates)."""
    cv2 = _cv2()
    from ..inputs.camera import scale_krt

    if np.any(np.abs(D) > 0):
        img = cv2.undistort(img, K, D)
        mask = cv2.undistort(mask.astype(np.uint8) * 255, K, D) > 127
    H0, W0 = img.shape[:2]
    H, W = out_hw
    if (H, W) != (H0, W0):
        img = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask.astype(np.float32), (W, H), interpolation=cv2.INTER_AREA) > 0.5
        K = scale_krt(K, (W / W0, H / H0))
    return img, mask, K


# ----------------------------------------------------------------------------- colours


def _accumulate_colors(acc: np.ndarray, cnt: np.ndarray, verts: np.ndarray, K, R, t, rgb: np.ndarray,
                       mask: np.ndarray, cell: int, depth_tol: float) -> None:
    """Add the colours of the vertices ``verts`` (V,3, world) seen in one view (point z-buffer)."""
    H, W = mask.shape
    xc = verts @ R.T + t
    z = xc[:, 2]
    ok = z > 1e-6
    uv = (xc @ K.T)[:, :2] / np.where(ok, z, 1.0)[:, None]
    col = np.floor(uv[:, 0]).astype(np.int64)
    row = np.floor(uv[:, 1]).astype(np.int64)
    ok &= (col >= 0) & (col < W) & (row >= 0) & (row < H)
    if not np.any(ok):
        return
    gh, gw = (H + cell - 1) // cell, (W + cell - 1) // cell
    cid = (row // cell) * gw + (col // cell)
    zbuf = np.full(gh * gw, np.inf)
    np.minimum.at(zbuf, cid[ok], z[ok])
    vis = ok.copy()
    vis[ok] = z[ok] <= zbuf[cid[ok]] + depth_tol
    vis[vis] = mask[row[vis], col[vis]]
    acc[vis] += rgb[row[vis], col[vis]]
    cnt[vis] += 1


# ----------------------------------------------------------------------------- conversion


def _splits(times: Sequence[int], views: Sequence[int], train_views: Sequence[int], holdout: float):
    """(time, view, split) triples: train = train views x first times; val = other views x
    first times (novel view); test = other views x last times (novel view and pose)."""
    nt = len(times)
    n_test = int(round(holdout * nt)) if nt > 1 else 0
    n_test = min(max(n_test, 1 if nt > 1 and holdout > 0 else 0), nt - 1) if nt > 1 else 0
    first, last = list(times[: nt - n_test]), list(times[nt - n_test:])
    other = [v for v in views if v not in train_views]
    out = [(ti, v, "train") for ti in first for v in train_views]
    out += [(ti, v, "val") for ti in first for v in other]
    out += [(ti, v, "test") for ti in last for v in other]
    return out


def convert_zju(src_dir: str, out_dir: str, *, res: Optional[int] = None, begin: int = 0,
                end: Optional[int] = None, step: int = 1, train_views: Sequence[int] = (0, 6, 12, 18),
                views: Optional[Sequence[int]] = None, holdout: float = 0.2,
                background: Sequence[float] = (0.0, 0.0, 0.0), body_model_id: str = "smpl-neutral",
                model_type: str = "smpl", gender: str = "neutral", body_model=None,
                trust_pickle: bool = False, cell: int = 4, depth_tol: float = 0.03,
                progress: Optional[Callable[[int, int], None]] = None) -> dict:
    """Convert one ZJU-MoCap sequence ``src_dir`` into ``out_dir`` (``neural_avatar.capture/1``).

    ``res``: longer image side of the output (None keeps the source size). ``begin/end/step``
    choose the annotation frames; ``views`` the cameras used (default all) and ``train_views``
    those of the train split (Neural Body's ``[0, 6, 12, 18]``); ``holdout`` the fraction of the
    (last) frames kept for the test split. ``body_model`` (a BodyModel with ``faces``/
    ``v_template``) is only needed for vertex colours when the sequence has no ``new_vertices/``.
    Returns the written ``dataset.json`` dict.
    """
    cv2 = _cv2()
    src = read_annots(src_dir, trust_pickle)
    if not src.param_dir:
        raise DatasetError(f"'{src_dir}' has no new_params/ or params/ folder with SMPL parameters.")
    if not src.mask_dirs:
        raise DatasetError(f"'{src_dir}' has no mask/ or mask_cihp/ folder.")
    if step < 1 or begin < 0:
        raise DatasetError("Frame step must be >= 1 and begin >= 0.")
    nv = src.cams.num_views
    views = list(range(nv)) if views is None else [int(v) for v in views]
    if not views or any(not 0 <= v < nv for v in views):
        raise DatasetError(f"Views must be camera numbers 0..{nv - 1}.")
    train_views = [int(v) for v in train_views if int(v) in views]
    if not train_views:
        raise DatasetError("None of the training views is among the chosen views.")
    end = len(src.ims) if end is None else min(int(end), len(src.ims))
    times = list(range(begin, end, step))
    if not times:
        raise DatasetError(f"No frames in [{begin}, {end}) with step {step}.")
    if any(not 0 <= c <= 1 for c in background) or len(background) != 3:
        raise DatasetError("The background must be three numbers in [0, 1].")

    # check the output folder before heavy work
    try:
        os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
        os.makedirs(os.path.join(out_dir, "masks"), exist_ok=True)
    except OSError as e:
        raise DatasetError(f"Cannot create the dataset folder '{out_dir}': {e}") from e
    if not os.access(out_dir, os.W_OK):
        raise DatasetError(f"The dataset folder '{out_dir}' is not writable.")

    entries = _splits(times, views, train_views, holdout)
    params = {ti: read_params(src.param_dir, param_index(src.ims[ti][0], src.sequence), trust_pickle)
              for ti in times}
    nb = max(p["shapes"].size for p in params.values())
    bg = np.asarray(background, np.float64)

    poses, betas, objm, fim, cam_frames, cam_ids = [], [], [], [], [], []
    splits = {"train": [], "val": [], "test": []}
    acc = cnt = None
    out_hw = None
    for i, (ti, v, split) in enumerate(entries):
        rel = src.ims[ti][v]
        img = _read_image(os.path.join(src_dir, rel))
        msk = _read_mask(src, rel, img.shape[:2])
        if out_hw is None:
            H0, W0 = img.shape[:2]
            s = 1.0 if res is None else float(res) / max(H0, W0)
            out_hw = (max(1, int(round(H0 * s))), max(1, int(round(W0 * s))))
        img, msk, K = _undistort_resize(img, msk, src.cams.K[v], src.cams.D[v], out_hw)
        rgb = img[:, :, ::-1].astype(np.float64) / 255.0
        rgb = np.where(msk[..., None], rgb, bg)  # composite over the background (our format)
        cv2.imwrite(os.path.join(out_dir, "images", f"{i:06d}.png"),
                    np.round(rgb[:, :, ::-1] * 255).astype(np.uint8))
        cv2.imwrite(os.path.join(out_dir, "masks", f"{i:06d}.png"), msk.astype(np.uint8) * 255)

        p = params[ti]
        M = np.eye(4)
        M[:3, :3] = rodrigues(p["Rh"])
        M[:3, 3] = p["Th"]
        poses.append(p["poses"])
        betas.append(np.pad(p["shapes"], (0, nb - p["shapes"].size)))
        objm.append(M)
        fim.append(ti)
        cid = f"cam{v:02d}"
        cam_frames.append({"index": i, "camera_id": cid, "K": np.asarray(K).tolist(),
                           "R": src.cams.R[v].tolist(), "t": src.cams.t[v].tolist(),
                           "width": out_hw[1], "height": out_hw[0]})
        cam_ids.append(cid)
        splits[split].append(i)

        if split == "train":
            verts = _read_vertices(src.vertex_dir, param_index(src.ims[ti][0], src.sequence))
            if verts is None and body_model is not None:
                from ...body import kinematics

                vv, _ = kinematics.forward(body_model, betas[-1][: body_model.num_betas], p["poses"][None],
                                           np.zeros((1, 3)))
                verts = np.asarray(vv)[0] @ M[:3, :3].T + M[:3, 3]
            if verts is not None:
                if acc is None:
                    acc, cnt = np.zeros((len(verts), 3)), np.zeros(len(verts))
                if len(verts) == len(acc):
                    _accumulate_colors(acc, cnt, verts, np.asarray(K), src.cams.R[v], src.cams.t[v], rgb, msk,
                                       cell, depth_tol)
        if progress is not None:
            progress(i + 1, len(entries))

    n = len(entries)
    if acc is None:
        V = int(np.asarray(body_model.v_template).shape[0]) if body_model is not None else 6890
        colors = np.full((V, 3), 0.5, np.float32)
    else:
        seen = cnt > 0
        colors = np.empty_like(acc)
        colors[seen] = acc[seen] / cnt[seen, None]
        colors[~seen] = colors[seen].mean(0) if np.any(seen) else 0.5
        colors = colors.astype(np.float32)
    np.save(os.path.join(out_dir, "vertex_colors.npy"), np.clip(colors, 0, 1))
    np.savez(os.path.join(out_dir, "body.npz"), poses=np.asarray(poses), betas=np.asarray(betas),
             transl=np.zeros((n, 3)), object_matrix=np.asarray(objm),
             motion_index=np.zeros(n, np.int64), frame_in_motion=np.asarray(fim, np.int64))
    with open(os.path.join(out_dir, "cameras.json"), "w", encoding="utf-8") as f:
        json.dump({"frames": cam_frames}, f, indent=1)
    meta = {
        "format": FORMAT, "body_model": body_model_id, "model_type": model_type, "gender": gender,
        "num_joints": 24, "resolution": [int(out_hw[0]), int(out_hw[1])], "num_frames": n,
        "engine": "ZJU-MoCap", "background": [float(c) for c in bg],
        "splits": splits, "motions": [src.sequence or "sequence"],
        "cameras": sorted(set(cam_ids)),
        "source": {"kind": "zju_mocap", "sequence": src.sequence, "frames": [begin, end, step],
                   "train_views": train_views, "views": views,
                   "vertex_colors": "estimated from train views" if acc is not None else "none (grey)"},
    }
    with open(os.path.join(out_dir, "dataset.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
    return meta


# ----------------------------------------------------------------------------- CLI


def _ints(text: str) -> List[int]:
    return [int(x) for x in text.replace(",", " ").split()]


def main(argv=None) -> int:
    """``python -m neural_avatar.neural.training.convert_zju SRC --out DIR [options]``."""
    ap = argparse.ArgumentParser(prog="convert_zju", description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="ZJU-MoCap sequence folder (annots, params, images, masks)")
    ap.add_argument("--out", help="output dataset folder")
    ap.add_argument("--res", type=int, default=None, help="longer image side of the output (default: source)")
    ap.add_argument("--begin", type=int, default=0)
    ap.add_argument("--end", type=int, default=None)
    ap.add_argument("--step", type=int, default=1)
    ap.add_argument("--views", type=_ints, default=None, help="cameras to use, e.g. '0,3,6' (default all)")
    ap.add_argument("--train-views", type=_ints, default=[0, 6, 12, 18])
    ap.add_argument("--holdout", type=float, default=0.2, help="fraction of last frames for the test split")
    ap.add_argument("--background", type=float, nargs=3, default=[0.0, 0.0, 0.0])
    ap.add_argument("--body-model-id", default="smpl-neutral",
                    help="model_id of the SMPL body the data was fitted with (checked at training)")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="allow reading the pickled annots.npy / params/*.npy (only for data you trust)")
    ap.add_argument("--export-json", action="store_true",
                    help="with --trust-pickle: write annots.json and params/*.json next to the pickles")
    a = ap.parse_args(argv)
    try:
        if a.export_json:
            for p in export_json(a.src, a.trust_pickle):
                print(json.dumps({"written": p}))
            if not a.out:
                return 0
        if not a.out:
            raise DatasetError("Give the output folder with --out.")
        meta = convert_zju(a.src, a.out, res=a.res, begin=a.begin, end=a.end, step=a.step,
                           train_views=a.train_views, views=a.views, holdout=a.holdout,
                           background=a.background, body_model_id=a.body_model_id,
                           trust_pickle=a.trust_pickle,
                           progress=lambda i, n: print(json.dumps({"frame": i, "of": n}), flush=True))
    except NeuralAvatarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"done": a.out, "num_frames": meta["num_frames"],
                      "splits": {k: len(v) for k, v in meta["splits"].items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
