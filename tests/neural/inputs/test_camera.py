"""Camera conversion and projection helpers (pure, no bpy)."""

import math

import numpy as np
import pytest
import torch

from neural_avatar.errors import NeuralAvatarError
from neural_avatar.neural.inputs.camera import (
    blender_camera_to_krt,
    camera_center,
    crop_krt,
    effective_resolution,
    krt_to_torch,
    look_at_krt,
    project_points,
    scale_krt,
)

EYE4 = np.eye(4)


def krt(**kw):
    args = dict(
        matrix_world=EYE4, lens_mm=50.0, sensor_width=36.0, sensor_height=24.0,
        sensor_fit="AUTO", shift_x=0.0, shift_y=0.0, res_x=1920, res_y=1080,
    )
    args.update(kw)
    return blender_camera_to_krt(**args)


def test_50mm_on_36mm_sensor_landscape():
    K, R, t = krt()
    f = 50.0 * 1920 / 36.0
    np.testing.assert_allclose(K, [[f, 0, 960], [0, f, 540], [0, 0, 1]], rtol=0, atol=1e-9)
    # Identity Blender camera looks down -Z with +Y up: OpenCV R = diag(1,-1,-1).
    np.testing.assert_allclose(R, np.diag([1.0, -1.0, -1.0]))
    np.testing.assert_allclose(t, 0.0)
    assert K.dtype == np.float64


def test_sensor_fit_rules_portrait():
    # AUTO on a portrait frame fits the *sensor width* across the (larger) height.
    K, _, _ = krt(res_x=1080, res_y=1920)
    assert K[0, 0] == pytest.approx(50.0 * 1920 / 36.0)
    # VERTICAL uses the sensor height across the height.
    K, _, _ = krt(res_x=1080, res_y=1920, sensor_fit="VERTICAL")
    assert K[0, 0] == pytest.approx(50.0 * 1920 / 24.0)
    # HORIZONTAL uses the sensor width across the width.
    K, _, _ = krt(res_x=1080, res_y=1920, sensor_fit="HORIZONTAL")
    assert K[0, 0] == pytest.approx(50.0 * 1080 / 36.0)
    assert K[1, 1] == pytest.approx(K[0, 0])
    # VERTICAL on a landscape frame.
    K, _, _ = krt(sensor_fit="VERTICAL")
    assert K[0, 0] == pytest.approx(50.0 * 1080 / 24.0)


def test_square_frame_auto_is_horizontal():
    K, _, _ = krt(res_x=500, res_y=500, sensor_width=30.0, sensor_height=10.0)
    assert K[0, 0] == pytest.approx(50.0 * 500 / 30.0)


def test_shift_in_units_of_the_larger_dimension():
    K, _, _ = krt(shift_x=0.1, shift_y=0.1)
    assert K[0, 2] == pytest.approx(960 - 0.1 * 1920)
    assert K[1, 2] == pytest.approx(540 + 0.1 * 1920)
    K, _, _ = krt(res_x=1080, res_y=1920, shift_x=-0.2, shift_y=0.05)
    assert K[0, 2] == pytest.approx(540 + 0.2 * 1920)
    assert K[1, 2] == pytest.approx(960 + 0.05 * 1920)


def test_pixel_aspect():
    # Pixels twice as wide: fewer pixels per unit horizontally, fy = 2 fx.
    K, _, _ = krt(res_x=100, res_y=100, pixel_aspect_x=2.0, pixel_aspect_y=1.0)
    fx = 50.0 * 100 / 36.0
    assert K[0, 0] == pytest.approx(fx)
    assert K[1, 1] == pytest.approx(2 * fx)
    # Tall pixels: the aspect-corrected height wins in AUTO, viewfac = ycor * H.
    K, _, _ = krt(res_x=100, res_y=100, pixel_aspect_x=1.0, pixel_aspect_y=3.0, shift_y=0.1)
    viewfac = 3.0 * 100
    assert K[0, 0] == pytest.approx(50.0 * viewfac / 36.0)
    assert K[1, 1] == pytest.approx(K[0, 0] / 3.0)
    assert K[1, 2] == pytest.approx(50 + 0.1 * viewfac / 3.0)


def test_resolution_percentage():
    assert effective_resolution(1920, 1080, 50) == (960, 540)
    K, _, _ = krt(resolution_percentage=50)
    np.testing.assert_allclose(K, scale_krt(krt()[0], 0.5))


def test_extrinsics_and_scale_ignored():
    M = np.eye(4)
    ang = 0.3
    M[:3, :3] = [[math.cos(ang), -math.sin(ang), 0], [math.sin(ang), math.cos(ang), 0], [0, 0, 1]]
    M[:3, 3] = [1.0, 2.0, 3.0]
    K, R, t = krt(matrix_world=M)
    Ms = M.copy()
    Ms[:3, :3] = Ms[:3, :3] * np.array([2.0, 0.5, 3.0])  # per-axis object scale
    K2, R2, t2 = krt(matrix_world=Ms)
    np.testing.assert_allclose(R, R2, atol=1e-12)
    np.testing.assert_allclose(t, t2, atol=1e-12)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(camera_center(R, t), [1.0, 2.0, 3.0], atol=1e-12)
    # A point 5 m in front of the camera (Blender -Z local) projects to the principal point.
    p = M @ np.array([0.0, 0.0, -5.0, 1.0])
    x = R @ p[:3] + t
    assert x[2] == pytest.approx(5.0)
    uv = (K @ x)[:2] / x[2]
    np.testing.assert_allclose(uv, [960, 540], atol=1e-9)
    # Blender local +X is image right, +Y is image up (smaller row).
    for local, sign_u, sign_v in (([1.0, 0, -5], 1, 0), ([0, 1.0, -5], 0, -1)):
        q = R @ (M @ np.array([*local, 1.0]))[:3] + t
        uvq = (K @ q)[:2] / q[2]
        assert np.sign(round(uvq[0] - 960, 6)) == sign_u
        assert np.sign(round(uvq[1] - 540, 6)) == sign_v


def test_invalid_cameras():
    with pytest.raises(NeuralAvatarError):
        krt(camera_type="ORTHO")
    with pytest.raises(NeuralAvatarError):
        krt(sensor_fit="DIAGONAL")
    with pytest.raises(NeuralAvatarError):
        krt(lens_mm=0.0)
    with pytest.raises(NeuralAvatarError):
        krt(res_x=1, resolution_percentage=10)


def test_krt_to_torch_and_project_points():
    K, R, t = look_at_krt([0.3, 0.2, 3.0], [0, 0, 0], [0, 1, 0], 45.0, 64, 48)
    Kt, Rt, tt = krt_to_torch(K, R, t, batch_size=2)
    assert Kt.shape == (2, 3, 3) and Rt.shape == (2, 3, 3) and tt.shape == (2, 3)
    assert Kt.dtype == torch.float32
    X = torch.randn(2, 7, 3, dtype=torch.float64)
    uv, z = project_points(X, *krt_to_torch(K, R, t, dtype=torch.float64))
    assert uv.shape == (2, 7, 2) and z.shape == (2, 7)
    Xn = X.numpy()
    for b in range(2):
        xc = Xn[b] @ R.T + t
        ref = (xc @ K.T)[:, :2] / xc[:, 2:]
        np.testing.assert_allclose(uv[b].numpy(), ref, atol=1e-9)
        np.testing.assert_allclose(z[b].numpy(), xc[:, 2], atol=1e-12)
    with pytest.raises(NeuralAvatarError):
        krt_to_torch(np.stack([K, K, K]), np.stack([R, R]), t)


def test_look_at():
    K, R, t = look_at_krt([2.0, 1.0, 3.0], [0.1, 0.2, -0.3], [0, 1, 0], 60.0, 80, 40)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    x = R @ np.array([0.1, 0.2, -0.3]) + t
    np.testing.assert_allclose((K @ x)[:2] / x[2], [40, 20], atol=1e-9)
    # World up appears upward (smaller row) in the image.
    y = R @ np.array([0.1, 1.2, -0.3]) + t
    assert (K @ y)[1] / y[2] < 20
    # The field of view spans the larger dimension.
    assert K[0, 0] == pytest.approx(40 / math.tan(math.radians(30)))
    with pytest.raises(NeuralAvatarError):
        look_at_krt([0, 0, 1], [0, 0, 0], [0, 0, 1], 60.0, 8, 8)


def test_crop_and_scale_krt():
    K, R, t = look_at_krt([0.0, 0.0, 4.0], [0, 0, 0], [0, 1, 0], 50.0, 100, 60)
    X = torch.tensor([[[0.3, -0.2, 0.1], [-0.5, 0.4, 0.2]]], dtype=torch.float64)
    uv, _ = project_points(X, *krt_to_torch(K, R, t, dtype=torch.float64))
    uvc, _ = project_points(X, *krt_to_torch(crop_krt(K, 10, 7), R, t, dtype=torch.float64))
    np.testing.assert_allclose((uv - uvc).numpy(), np.broadcast_to([10, 7], (1, 2, 2)), atol=1e-9)
    uvs, _ = project_points(X, *krt_to_torch(scale_krt(K, (0.5, 0.25)), R, t, dtype=torch.float64))
    np.testing.assert_allclose(uvs.numpy(), (uv * torch.tensor([0.5, 0.25], dtype=torch.float64)).numpy(), atol=1e-9)
    # Torch input keeps its type.
    Kt = torch.as_tensor(K)
    assert torch.is_tensor(scale_krt(Kt, 2.0)) and torch.is_tensor(crop_krt(Kt, 1, 1))
