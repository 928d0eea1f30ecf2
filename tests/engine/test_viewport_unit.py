"""What the viewport's ``view_draw`` relies on, tested without a real 3D view (bpy tier).

The ``bpy`` module never calls ``view_update``/``view_draw`` (that is checked in a real Blender
by ``make test-viewport``), so this file checks the pieces they call:

* :func:`viewport.view_krt` turns a 3D view's OpenGL matrices into OpenCV ``K, R, t``
  (ARCHITECTURE.md camera convention). A fake region/region-data pair is built from a Blender
  camera (``calc_matrix_camera`` as the window matrix, ``matrix_world.inverted()`` as the view
  matrix): world points projected with ``K, R, t`` (``neural.camera.project_points``) must land
  where the GL matrices put them, and ``K`` must equal ``blender_camera_to_krt``'s.
* The worker thread, with ``final.run_bodies`` stubbed: composited sRGB image, adaptive
  resolution, errors kept (not raised), coalescing of queued views, and the main-thread redraw
  poll that replaces timers registered from the worker.
"""

import math
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

pytestmark = pytest.mark.bpy
bpy = pytest.importorskip("bpy")

import torch  # noqa: E402
from mathutils import Euler, Vector  # noqa: E402

from neural_avatar.engine import final, scene_io, viewport  # noqa: E402
from neural_avatar.errors import BundleError  # noqa: E402
from neural_avatar.neural.inputs.camera import blender_camera_to_krt, camera_center, project_points  # noqa: E402
from neural_avatar.neural.composite import linear_to_srgb, srgb_to_linear  # noqa: E402

# lens, sensor (w, h), fit, shift (x, y), region (w, h), scale
VIEWS = [
    (50.0, (36.0, 24.0), "AUTO", (0.0, 0.0), (640, 480), 1.0),
    (35.0, (36.0, 24.0), "AUTO", (0.12, -0.07), (500, 700), 1.0),
    (24.0, (36.0, 24.0), "VERTICAL", (-0.2, 0.15), (800, 450), 0.5),
    (85.0, (23.5, 15.6), "HORIZONTAL", (0.05, 0.3), (333, 517), 0.37),
    (18.0, (30.0, 40.0), "AUTO", (0.0, -0.1), (1021, 769), 0.23),
]


def _camera(lens, sensor, fit, shift, seed):
    cam_data = bpy.data.cameras.new("ViewCam")
    cam = bpy.data.objects.new("ViewCam", cam_data)
    bpy.context.scene.collection.objects.link(cam)
    cam_data.lens = lens
    cam_data.sensor_width, cam_data.sensor_height = sensor
    cam_data.sensor_fit = fit
    cam_data.shift_x, cam_data.shift_y = shift
    rng = np.random.default_rng(seed)
    cam.location = Vector(rng.uniform(-4, 4, 3))
    cam.rotation_euler = Euler(rng.uniform(-math.pi, math.pi, 3))
    bpy.context.view_layer.update()
    return cam


def _fake_view(cam, width, height, perspective=True):
    """A (region, region_data) pair as ``view_draw`` sees them, from a Blender camera."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    window = cam.calc_matrix_camera(depsgraph, x=width, y=height)
    region = SimpleNamespace(width=width, height=height)
    rv3d = SimpleNamespace(is_perspective=perspective, window_matrix=window,
                           view_matrix=cam.matrix_world.inverted())
    return region, rv3d


def _gl_pixels(rv3d, X, W, H):
    """Project world points with the GL matrices to top-left-origin pixel coordinates."""
    P = np.array(rv3d.window_matrix, dtype=np.float64)
    V = np.array(rv3d.view_matrix, dtype=np.float64)
    Xh = np.concatenate([X, np.ones((len(X), 1))], axis=1)
    clip = Xh @ (P @ V).T
    ndc = clip[:, :3] / clip[:, 3:4]
    u = (ndc[:, 0] + 1.0) * 0.5 * W
    v = (1.0 - ndc[:, 1]) * 0.5 * H  # NDC y up, image rows down
    return np.stack([u, v], axis=1), -(Xh @ V.T)[:, 2]


@pytest.mark.parametrize("view", VIEWS, ids=[f"view{i}" for i in range(len(VIEWS))])
def test_view_krt_projects_like_the_gl_matrices(clean_bpy, view):
    lens, sensor, fit, shift, (rw, rh), scale = view
    cam = _camera(lens, sensor, fit, shift, seed=VIEWS.index(view))
    region, rv3d = _fake_view(cam, rw, rh)

    K, R, t, W, H = viewport.view_krt(region, rv3d, scale)
    assert (W, H) == (max(8, int(rw * scale)), max(8, int(rh * scale)))
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-6) and np.linalg.det(R) == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(camera_center(R, t), np.array(cam.matrix_world.translation), atol=1e-5)

    # Points spread over (and beyond) the view frustum, 0.5–20 m in front of the camera.
    rng = np.random.default_rng(7)
    n = 200
    z = rng.uniform(0.5, 20.0, n)
    x_cam = np.stack([rng.uniform(-0.8, 0.8, n) * z, rng.uniform(-0.8, 0.8, n) * z, z], axis=1)
    X = (x_cam - t) @ R  # R^T (x_cam - t), row vectors
    uv_gl, depth_gl = _gl_pixels(rv3d, X, W, H)

    uv, d = project_points(torch.tensor(X, dtype=torch.float64)[None],
                           torch.tensor(K)[None], torch.tensor(R)[None], torch.tensor(t)[None])
    np.testing.assert_allclose(d[0].numpy(), depth_gl, rtol=1e-6, atol=1e-6)
    # float32 window matrix from Blender: allow a few thousandths of a pixel
    np.testing.assert_allclose(uv[0].numpy(), uv_gl, atol=2e-3 * max(W, H) / 100 + 1e-3)


@pytest.mark.parametrize("view", VIEWS[:4], ids=[f"view{i}" for i in range(4)])
def test_view_krt_equals_blender_camera_to_krt(clean_bpy, view):
    """At scale 1 a view through a camera has the camera's own K, R, t (neural.camera)."""
    lens, sensor, fit, shift, (rw, rh), _ = view
    cam = _camera(lens, sensor, fit, shift, seed=10 + VIEWS.index(view))
    region, rv3d = _fake_view(cam, rw, rh)
    K, R, t, W, H = viewport.view_krt(region, rv3d, 1.0)
    K2, R2, t2 = blender_camera_to_krt(np.array(cam.matrix_world), lens, sensor[0], sensor[1], fit,
                                       shift[0], shift[1], rw, rh)
    np.testing.assert_allclose(K, K2, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(R, R2, atol=1e-5)
    np.testing.assert_allclose(t, t2, atol=1e-5)


def test_view_krt_orthographic_and_tiny_regions(clean_bpy):
    cam = _camera(50.0, (36.0, 24.0), "AUTO", (0.0, 0.0), seed=3)
    region, rv3d = _fake_view(cam, 300, 200, perspective=False)
    assert viewport.view_krt(region, rv3d, 1.0) is None
    region, rv3d = _fake_view(cam, 30, 20, perspective=True)
    K, R, t, W, H = viewport.view_krt(region, rv3d, 0.1)
    assert (W, H) == (8, 8)  # never below 8 px, K still maps the whole view onto it
    uv, _ = _gl_pixels(rv3d, np.array(cam.matrix_world @ Vector((0.0, 0.0, -5.0)))[None], W, H)
    np.testing.assert_allclose(uv[0], [K[0, 2], K[1, 2]], atol=1e-4)


# ---------------------------------------------------------------- worker (run_bodies stubbed)

FG_SRGB = np.array([0.8, 0.4, 0.1], np.float32)


def _job(key, W=24, H=16, bg=(0.2, 0.3, 0.4)):
    K = np.array([[20.0, 0, W / 2], [0, 20.0, H / 2], [0, 0, 1]])
    cam = scene_io.CameraFrame(K, np.eye(3), np.zeros(3), W, H, (0, 0, W, H))
    return {"bodies": ["b"], "cam": cam, "mode": "VERTEX_PROJECTION", "device": "cpu", "precision": "fp32",
            "bg": np.array(bg, np.float32), "abspath": None, "key": key}


def _layers(cam):
    mask = np.zeros((cam.height, cam.width), np.float32)
    mask[:, : cam.width // 2] = 1.0  # left half: the body, right half: background
    rgb = np.broadcast_to(FG_SRGB, (cam.height, cam.width, 3)).copy()
    return [{"rgb": rgb, "mask": mask, "input": None, "depth": 3.0, "name": "b"}]


class StubRun:
    """Stands in for final.run_bodies: records the jobs it ran, can block, sleep or fail."""

    def __init__(self, delay=0.0, fail_keys=(), gate=None):
        self.delay, self.fail_keys, self.gate = delay, set(fail_keys), gate
        self.ran = []
        self.started = threading.Event()

    def __call__(self, bodies, cam, mode, device, precision, abspath=None, **kw):
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(5.0)
        if self.delay:
            time.sleep(self.delay)
        self.ran.append(cam.K[0, 0])
        if cam.K[0, 0] in self.fail_keys:
            raise BundleError("Avatar file not found: /nowhere/x.safetensors.")
        return _layers(cam)


def _finish(st, timeout=5.0):
    t0 = time.perf_counter()
    while viewport.busy(st):
        assert time.perf_counter() - t0 < timeout, "viewport worker did not finish"
        time.sleep(0.005)
    st.thread.join(timeout)


def _job_k(fx, key):
    job = _job(key)
    job["cam"].K[0, 0] = fx
    return job


def test_worker_composites_display_image(monkeypatch):
    monkeypatch.setattr(final, "run_bodies", StubRun())
    st = viewport._ViewState()
    viewport._submit(st, _job("k1", W=24, H=16))
    _finish(st)
    assert st.error == "" and st.key == "k1" and st.finished == 1 and st.submitted == 1
    img = st.image
    assert img.shape == (16, 24, 4) and img.dtype == np.float32
    np.testing.assert_allclose(img[..., 3], 1.0)
    # Scene-linear like the F12 result (Blender's view transform makes it display values):
    # body pixels = the network's sRGB foreground decoded, the rest = the linear world colour.
    np.testing.assert_allclose(img[0, 0, :3], srgb_to_linear(FG_SRGB), atol=1e-5)
    np.testing.assert_allclose(linear_to_srgb(img[0, 0, :3]), FG_SRGB, atol=1e-5)
    np.testing.assert_allclose(img[-1, -1, :3], [0.2, 0.3, 0.4], atol=1e-6)
    np.testing.assert_allclose(img[5, 20, :3], [0.2, 0.3, 0.4], atol=1e-6)


def test_adaptive_scale_follows_job_time(monkeypatch):
    st = viewport._ViewState()
    st.scale = 0.5
    # Slow jobs (4x the target): the scale shrinks by the clamp 0.7 per job, never below MIN_SCALE.
    monkeypatch.setattr(viewport, "TARGET_S", 0.01)
    monkeypatch.setattr(final, "run_bodies", StubRun(delay=0.04))
    viewport._submit(st, _job("slow"))
    _finish(st)
    assert st.last_job_s >= 0.04
    assert st.scale == pytest.approx(0.5 * 0.7, rel=1e-6)
    for i in range(6):
        viewport._submit(st, _job(f"slow{i}"))
        _finish(st)
    assert st.scale == pytest.approx(viewport.MIN_SCALE)
    # Fast jobs: the scale grows by at most 1.3 per job and stops at the full region.
    monkeypatch.setattr(viewport, "TARGET_S", 5.0)
    monkeypatch.setattr(final, "run_bodies", StubRun())
    viewport._submit(st, _job("fast"))
    _finish(st)
    assert st.scale == pytest.approx(viewport.MIN_SCALE * 1.3, rel=1e-6)
    for i in range(12):
        viewport._submit(st, _job(f"fast{i}"))
        _finish(st)
    assert st.scale == 1.0


def test_adaptive_scale_settles_near_target(monkeypatch):
    """A job whose cost is proportional to its pixel count converges to ~TARGET_S per job."""
    target = 0.02
    monkeypatch.setattr(viewport, "TARGET_S", target)
    st = viewport._ViewState()
    st.scale = 1.0

    def cost_by_pixels(bodies, cam, *a, **kw):
        time.sleep(0.08 * st.scale ** 2)  # full region costs 4x the target → scale → 0.5
        return _layers(cam)

    monkeypatch.setattr(final, "run_bodies", cost_by_pixels)
    for i in range(10):
        viewport._submit(st, _job(i))
        _finish(st)
    assert 0.35 < st.scale < 0.7
    assert st.last_job_s < 3 * target


def test_worker_error_is_kept_not_raised(monkeypatch):
    run = StubRun(fail_keys={99.0})
    monkeypatch.setattr(final, "run_bodies", run)
    st = viewport._ViewState()
    viewport._submit(st, _job_k(20.0, "ok"))
    _finish(st)
    good, scale = st.image, st.scale
    viewport._submit(st, _job_k(99.0, "bad"))
    _finish(st)
    assert "Avatar file not found" in st.error
    assert st.scale == scale  # an instant failure must not push the next real job to full size
    assert st.image is good  # the last good picture stays on screen under the message
    assert st.key == "bad"  # the failed view is not resubmitted on every redraw
    assert st.finished == 2 and not st.thread.is_alive()
    viewport._submit(st, _job_k(20.0, "ok again"))
    _finish(st)
    assert st.error == "" and st.image is not good


def test_queued_views_coalesce_to_the_newest(monkeypatch):
    gate = threading.Event()
    run = StubRun(gate=gate)
    monkeypatch.setattr(final, "run_bodies", run)
    st = viewport._ViewState()
    viewport._submit(st, _job_k(1.0, "a"))
    assert run.started.wait(5.0)
    for fx, key in ((2.0, "b"), (3.0, "c"), (4.0, "d")):
        viewport._submit(st, _job_k(fx, key))
    assert viewport.busy(st)
    gate.set()
    _finish(st)
    assert run.ran == [1.0, 4.0]  # the worker skipped the views that were already stale
    assert st.key == "d" and st.submitted == 4 and st.finished == 2


def test_redraw_poll_runs_on_main_thread_until_idle(monkeypatch):
    gate = threading.Event()
    monkeypatch.setattr(final, "run_bodies", StubRun(gate=gate))
    st = viewport._ViewState()
    tags = []
    st.polling = True
    poll = viewport.make_poll(st, lambda: tags.append(threading.current_thread()))
    viewport._submit(st, _job("a"))
    assert poll() == viewport.POLL_S and tags == []  # job in flight: keep polling, nothing new
    gate.set()
    _finish(st)
    assert poll() is None  # result arrived: one redraw, then the timer unregisters itself
    assert tags == [threading.current_thread()] and st.polling is False
    assert poll() is None and len(tags) == 1  # no spurious redraws afterwards
