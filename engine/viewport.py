"""Viewport (Rendered shading): reduced, adaptive resolution, inference off the main thread,
drawn with the ``gpu`` module.

``view_update``/``view_draw`` run on Blender's main thread and stay cheap: they read the
evaluated bodies and the view's camera (bpy work, main thread), hand the torch work to one
worker thread, and draw the newest finished image. A timer redraws the viewport when a job
finishes. The resolution adapts so a job takes about ``TARGET_S``; it never exceeds
``scene.neural_avatar.viewport_scale`` of the region.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from . import scene_io, state

TARGET_S = 0.15
MIN_SCALE = 0.1


class _ViewState:
    def __init__(self):
        self.lock = threading.Lock()
        self.thread = None
        self.image = None  # (h, w, 4) float32 display-referred RGBA, row 0 = top
        self.key = None  # what the current image shows
        self.pending = None  # newest job waiting for the worker
        self.scale = 0.5
        self.last_job_s = 0.0
        self.error = ""
        self.texture = None
        self.texture_key = None


_STATES: dict = {}


def _state(engine) -> _ViewState:
    key = engine.as_pointer()
    st = _STATES.get(key)
    if st is None:
        st = _STATES[key] = _ViewState()
    return st


def release(engine) -> None:
    _STATES.pop(engine.as_pointer(), None)


def release_all() -> None:
    _STATES.clear()


def view_krt(region, rv3d, scale: float):
    """K, R, t (OpenCV) of a 3D view at ``scale`` × its region size; None for orthographic views."""
    if not rv3d.is_perspective:
        return None
    W = max(8, int(region.width * scale))
    H = max(8, int(region.height * scale))
    P = np.array(rv3d.window_matrix, dtype=np.float64)
    V = np.array(rv3d.view_matrix, dtype=np.float64)
    flip = np.diag([1.0, -1.0, -1.0])
    # OpenGL projection → pixels (row 0 at the top), see ARCHITECTURE.md for the camera convention.
    K = np.array([[W / 2 * P[0, 0], 0.0, W / 2 * (1 - P[0, 2])],
                  [0.0, H / 2 * P[1, 1], H / 2 * (1 + P[1, 2])],
                  [0.0, 0.0, 1.0]])
    return K, flip @ V[:3, :3], flip @ V[:3, 3], W, H


def view_update(engine, context, depsgraph) -> None:
    st = _state(engine)
    st.key = None  # scene changed: the next draw submits a new job


def _submit(st: _ViewState, job) -> None:
    with st.lock:
        st.pending = job
        if st.thread is not None and st.thread.is_alive():
            return
        st.thread = threading.Thread(target=_worker, args=(st,), daemon=True)
        st.thread.start()


def _worker(st: _ViewState) -> None:
    from ..neural.composite import composite_layers, linear_to_srgb
    from .final import run_bodies

    while True:
        with st.lock:
            job = st.pending
            st.pending = None
        if job is None:
            return
        t0 = time.perf_counter()
        try:
            layers = run_bodies(job["bodies"], job["cam"], job["mode"], job["device"], job["precision"],
                                abspath=job["abspath"])
            comp = composite_layers(layers, job["bg"], False, (job["cam"].height, job["cam"].width))
            rgb = linear_to_srgb(comp["rgba"][..., :3])
            img = np.concatenate([rgb, np.ones_like(rgb[..., :1])], axis=-1)
            err = ""
        except Exception as e:  # noqa: BLE001 - shown in the viewport, never raised into Blender
            img, err = None, str(e)
        dt = time.perf_counter() - t0
        with st.lock:
            if img is not None:
                st.image = img
            st.error = err
            st.key = job["key"]
            st.last_job_s = dt
            # Adapt the resolution towards TARGET_S per frame (cost ~ pixel count).
            ratio = (TARGET_S / max(dt, 1e-3)) ** 0.5
            st.scale = float(np.clip(st.scale * np.clip(ratio, 0.7, 1.3), MIN_SCALE, 1.0))
        _request_redraw()


def _request_redraw():
    import bpy

    def redraw():
        for win in bpy.context.window_manager.windows:
            for area in win.screen.areas:
                if area.type == "VIEW_3D":
                    area.tag_redraw()
        return None

    bpy.app.timers.register(redraw, first_interval=0.0)


def view_draw(engine, context, depsgraph) -> None:
    import bpy

    st = _state(engine)
    scene = depsgraph.scene
    settings = scene.neural_avatar
    region, rv3d = context.region, context.region_data
    scale = min(st.scale, settings.viewport_scale)
    krt = view_krt(region, rv3d, scale)
    if krt is not None:
        K, R, t, W, H = krt
        bodies = scene_io.body_frames(depsgraph)
        key = (np.round(K, 4).tobytes(), np.round(R, 5).tobytes(), np.round(t, 4).tobytes(),
               tuple(float(b.verts.sum()) for b in bodies), settings.mode, settings.precision)
        if key != st.key and bodies:
            from ..ui.preferences import get_prefs
            from .final import resolve_device

            try:
                device = resolve_device(settings, get_prefs())
                cam = scene_io.CameraFrame(K, R, t, W, H, (0, 0, W, H))
                _submit(st, {"bodies": bodies, "cam": cam, "mode": settings.mode, "device": device,
                             "precision": settings.precision.lower(), "bg": scene_io.world_color(scene),
                             "abspath": bpy.path.abspath, "key": key})
            except Exception as e:  # noqa: BLE001
                st.error = str(e)
    _draw_image(engine, context, st)
    if st.error:
        state.record_error(st.error)


def _draw_image(engine, context, st: _ViewState) -> None:
    import gpu
    from gpu_extras.presets import draw_texture_2d

    with st.lock:
        img = st.image
    region = context.region
    if img is None:
        return
    h, w = img.shape[:2]
    if st.texture is None or st.texture_key != id(img):
        flipped = np.ascontiguousarray(img[::-1], dtype=np.float32)  # GPU textures start at the bottom
        buf = gpu.types.Buffer("FLOAT", w * h * 4, flipped.ravel())
        st.texture = gpu.types.GPUTexture((w, h), format="RGBA16F", data=buf)
        st.texture_key = id(img)
    gpu.state.blend_set("ALPHA")
    draw_texture_2d(st.texture, (0, 0), region.width, region.height)
    gpu.state.blend_set("NONE")
