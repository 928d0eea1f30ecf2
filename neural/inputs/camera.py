"""Pinhole cameras for the neural input renderers (no bpy here).

Convention (ARCHITECTURE.md): OpenCV. A world point ``X`` maps to the camera frame by
``x_cam = R @ X + t``; the camera looks along ``+z``, image ``x`` points right and ``y`` down.
Pixel ``(row i, col j)`` covers ``[j, j+1) x [i, i+1)`` so its centre is ``(j + 0.5, i + 0.5)``,
and ``u = fx * x/z + cx``, ``v = fy * y/z + cy``. This is SMPLpix eq. 3,
``(u, v, d)^T = K (R x + t)`` followed by the perspective division.

:func:`blender_camera_to_krt` converts a Blender perspective camera by replicating Blender's
own viewplane rules (``BKE_camera_params_compute_viewplane``): sensor fit, shift, pixel
aspect and resolution percentage, so that a point lands on the pixel that
``bpy_extras.object_utils.world_to_camera_view`` predicts (checked in
``tests/engine/test_camera_bpy.py``).

numpy helpers return float64 arrays; torch helpers are batched and device-agnostic.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple, Union

import numpy as np
import torch

from ...errors import NeuralAvatarError

__all__ = [
    "blender_camera_to_krt",
    "effective_resolution",
    "krt_to_torch",
    "project_points",
    "look_at_krt",
    "crop_krt",
    "scale_krt",
    "camera_center",
]

# Blender -> OpenCV camera axes: Blender cameras look along -Z with +Y up.
_BLENDER_TO_CV = np.diag([1.0, -1.0, -1.0])

ArrayLike = Union[np.ndarray, Sequence[float], torch.Tensor]


def effective_resolution(res_x: int, res_y: int, percentage: float = 100.0) -> Tuple[int, int]:
    """Pixel size Blender renders at: ``res * percentage / 100`` truncated like Blender's
    ``BKE_render_resolution`` (integer division of ``xsch * size / 100``)."""
    w = int(int(res_x) * float(percentage) / 100.0)
    h = int(int(res_y) * float(percentage) / 100.0)
    if w < 1 or h < 1:
        raise NeuralAvatarError(
            f"Render resolution {res_x}x{res_y} at {percentage}% gives an empty image."
        )
    return w, h


def blender_camera_to_krt(
    matrix_world: ArrayLike,
    lens_mm: float,
    sensor_width: float,
    sensor_height: float,
    sensor_fit: str,
    shift_x: float,
    shift_y: float,
    res_x: int,
    res_y: int,
    pixel_aspect_x: float = 1.0,
    pixel_aspect_y: float = 1.0,
    clip_start: float = 0.1,
    clip_end: float = 1000.0,
    resolution_percentage: float = 100.0,
    camera_type: str = "PERSP",
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intrinsics ``K`` and extrinsics ``R, t`` (OpenCV, float64) of a Blender perspective camera.

    Implements SMPLpix eq. 3's ``K (R x + t)`` for the camera Blender renders with, following
    Blender's viewplane rules exactly:

    * sensor fit ``AUTO`` uses ``sensor_width`` across the *larger* of ``res_x*pixel_aspect_x``
      and ``res_y*pixel_aspect_y`` (ties count as horizontal); ``HORIZONTAL`` uses
      ``sensor_width`` across the width, ``VERTICAL`` ``sensor_height`` across the height;
    * ``viewfac`` = ``W`` (horizontal fit) or ``H * aspect_y/aspect_x`` (vertical fit);
      ``fx = lens * viewfac / sensor``, ``fy = fx * aspect_x / aspect_y``;
    * shift is in units of the fitted dimension: ``cx = W/2 - shift_x * viewfac``,
      ``cy = H/2 + shift_y * viewfac * aspect_x/aspect_y`` (``y`` down);
    * the camera's world matrix is column-normalised (object scale ignored) and inverted, as
      ``world_to_camera_view`` does; ``R = diag(1,-1,-1) @ inv(M)[:3,:3]``.

    ``res_x, res_y`` are the scene's resolution; ``resolution_percentage`` scales them to the
    rendered size (``W, H`` = :func:`effective_resolution`). ``clip_start``/``clip_end`` only
    validate the camera: a pinhole ``K`` does not depend on them.
    Returns ``K (3,3)``, ``R (3,3)``, ``t (3,)``.
    """
    if str(camera_type).upper() != "PERSP":
        raise NeuralAvatarError(
            f"Camera type '{camera_type}' is not supported: use a perspective camera."
        )
    fit = str(sensor_fit).upper()
    if fit not in ("AUTO", "HORIZONTAL", "VERTICAL"):
        raise NeuralAvatarError(f"Unknown sensor fit '{sensor_fit}'.")
    if lens_mm <= 0 or sensor_width <= 0 or sensor_height <= 0:
        raise NeuralAvatarError("Camera lens and sensor size must be positive.")
    if pixel_aspect_x <= 0 or pixel_aspect_y <= 0:
        raise NeuralAvatarError("Pixel aspect must be positive.")
    if not (0 < clip_start < clip_end):
        raise NeuralAvatarError("Camera clip start must be positive and below clip end.")
    W, H = effective_resolution(res_x, res_y, resolution_percentage)

    ycor = float(pixel_aspect_y) / float(pixel_aspect_x)
    # BKE_camera_sensor_size: only VERTICAL uses the sensor height.
    sensor = float(sensor_height) if fit == "VERTICAL" else float(sensor_width)
    # BKE_camera_sensor_fit: AUTO picks the larger of aspect-corrected width and height.
    if fit == "AUTO":
        fit = "HORIZONTAL" if pixel_aspect_x * W >= pixel_aspect_y * H else "VERTICAL"
    viewfac = float(W) if fit == "HORIZONTAL" else ycor * float(H)

    fx = float(lens_mm) * viewfac / sensor
    fy = fx / ycor
    cx = 0.5 * W - float(shift_x) * viewfac
    cy = 0.5 * H + float(shift_y) * viewfac / ycor
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)

    M = np.asarray(matrix_world, dtype=np.float64).reshape(4, 4).copy()
    norms = np.linalg.norm(M[:3, :3], axis=0)
    if np.any(norms < 1e-12):
        raise NeuralAvatarError("The camera's transform has a zero scale axis.")
    M[:3, :3] = M[:3, :3] / norms
    try:
        world_to_cam = np.linalg.inv(M)
    except np.linalg.LinAlgError as exc:  # pragma: no cover - guarded by the norm check
        raise NeuralAvatarError("The camera's transform cannot be inverted.") from exc
    R = _BLENDER_TO_CV @ world_to_cam[:3, :3]
    t = _BLENDER_TO_CV @ world_to_cam[:3, 3]
    return K, R, t


def krt_to_torch(
    K: ArrayLike,
    R: ArrayLike,
    t: ArrayLike,
    device: Union[str, torch.device, None] = None,
    dtype: torch.dtype = torch.float32,
    batch_size: int | None = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch camera parameters as torch tensors ``K (B,3,3)``, ``R (B,3,3)``, ``t (B,3)``.

    Accepts numpy arrays, tensors or nested sequences, unbatched (``(3,3)``/``(3,)``) or batched.
    Unbatched inputs get ``B = 1`` (or ``batch_size`` copies when given)."""

    def conv(x, tail):
        x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
        x = x.to(device=device, dtype=dtype)
        if x.dim() == len(tail):
            x = x.unsqueeze(0)
        if tuple(x.shape[1:]) != tail:
            raise NeuralAvatarError(f"Camera parameter has shape {tuple(x.shape)}, expected (B,{tail}).")
        return x

    Kt, Rt, tt = conv(K, (3, 3)), conv(R, (3, 3)), conv(t, (3,))
    B = max(Kt.shape[0], Rt.shape[0], tt.shape[0], batch_size or 1)
    out = []
    for x in (Kt, Rt, tt):
        if x.shape[0] not in (1, B):
            raise NeuralAvatarError("Camera parameters have mismatched batch sizes.")
        out.append(x.expand(B, *x.shape[1:]).contiguous())
    return out[0], out[1], out[2]


def _batch_cam(K, R, t, B, ref: torch.Tensor):
    """Broadcast camera tensors to batch ``B`` on ``ref``'s device/dtype."""
    K = torch.as_tensor(K, device=ref.device, dtype=ref.dtype)
    R = torch.as_tensor(R, device=ref.device, dtype=ref.dtype)
    t = torch.as_tensor(t, device=ref.device, dtype=ref.dtype)
    if K.dim() == 2:
        K = K.unsqueeze(0)
    if R.dim() == 2:
        R = R.unsqueeze(0)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    return K.expand(B, 3, 3), R.expand(B, 3, 3), t.expand(B, 3)


def to_camera(X: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """World points ``X (B,N,3)`` to the camera frame: ``x_cam = R X + t`` (SMPLpix eq. 3)."""
    B = X.shape[0]
    _, R, t = _batch_cam(torch.eye(3), R, t, B, X)
    return X @ R.transpose(1, 2) + t[:, None, :]


def project_points(
    X: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pinhole projection, SMPLpix eq. 3: ``(u d, v d, d)^T = K (R X + t)``.

    ``X (B,N,3)`` world points, ``K (B|1,3,3)``, ``R (B|1,3,3)``, ``t (B|1,3)``.
    Returns pixel coordinates ``uv (B,N,2)`` (continuous, pixel centres at ``+0.5``) and camera
    depth ``z (B,N)``. Points with ``z <= 0`` get non-finite or mirrored ``uv``; callers mask them.
    """
    if X.dim() != 3 or X.shape[-1] != 3:
        raise NeuralAvatarError(f"Points must have shape (B,N,3), got {tuple(X.shape)}.")
    B = X.shape[0]
    K, R, t = _batch_cam(K, R, t, B, X)
    xc = X @ R.transpose(1, 2) + t[:, None, :]
    z = xc[..., 2]
    p = xc @ K.transpose(1, 2)
    uv = p[..., :2] / z.unsqueeze(-1)
    return uv, z


def camera_center(R: ArrayLike, t: ArrayLike) -> np.ndarray:
    """World position of the pinhole, ``C = -R^T t`` (for a rotation ``R``)."""
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    return -np.linalg.solve(R, t)


def look_at_krt(
    eye: ArrayLike,
    target: ArrayLike,
    up: ArrayLike,
    fov_deg: float,
    W: int,
    H: int,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV camera at ``eye`` looking at ``target`` with ``up`` pointing up in the image.

    ``fov_deg`` spans the larger image dimension (Blender's AUTO sensor fit with square
    pixels), principal point at the image centre. Returns float64 ``K (3,3), R (3,3), t (3,)``.
    """
    eye = np.asarray(eye, dtype=np.float64).reshape(3)
    target = np.asarray(target, dtype=np.float64).reshape(3)
    up = np.asarray(up, dtype=np.float64).reshape(3)
    if not (0.0 < fov_deg < 180.0):
        raise NeuralAvatarError("Field of view must be between 0 and 180 degrees.")
    fwd = target - eye
    n = np.linalg.norm(fwd)
    if n < 1e-12:
        raise NeuralAvatarError("Camera eye and target coincide.")
    fwd /= n
    right = np.cross(fwd, up)
    nr = np.linalg.norm(right)
    if nr < 1e-9:
        raise NeuralAvatarError("Camera 'up' is parallel to the viewing direction.")
    right /= nr
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd], axis=0)
    t = -R @ eye
    f = 0.5 * max(W, H) / math.tan(math.radians(fov_deg) * 0.5)
    K = np.array([[f, 0.0, 0.5 * W], [0.0, f, 0.5 * H], [0.0, 0.0, 1.0]], dtype=np.float64)
    return K, R, t


def crop_krt(K, x0: float, y0: float):
    """Intrinsics of the crop whose top-left pixel corner is ``(x0, y0)`` of the full image:
    ``cx - x0, cy - y0``. Works on numpy ``(3,3)`` or torch ``(...,3,3)``."""
    K2 = K.clone() if torch.is_tensor(K) else np.array(K, dtype=np.float64, copy=True)
    K2[..., 0, 2] = K2[..., 0, 2] - x0
    K2[..., 1, 2] = K2[..., 1, 2] - y0
    return K2


def scale_krt(K, s):
    """Intrinsics after resizing the image by ``s`` (scalar or ``(sx, sy)``), e.g. a
    resolution percentage. With pixel corners on integer coordinates this is exact:
    ``fx, cx`` scale by ``sx`` and ``fy, cy`` by ``sy``."""
    if isinstance(s, (tuple, list)):
        sx, sy = float(s[0]), float(s[1])
    else:
        sx = sy = float(s)
    if sx <= 0 or sy <= 0:
        raise NeuralAvatarError("Image scale must be positive.")
    K2 = K.clone() if torch.is_tensor(K) else np.array(K, dtype=np.float64, copy=True)
    K2[..., 0, :] = K2[..., 0, :] * sx
    K2[..., 1, :] = K2[..., 1, :] * sy
    return K2
