"""Viewport (Rendered shading): reduced, adaptive resolution, inference off the main thread,
drawn with the ``gpu`` module. The drawn image is scene-linear: Blender's color management
(the scene's view transform) turns it into display values, as for the F12 result.

``view_update``/``view_draw`` run on Blender's main thread and stay cheap: they read the
evaluated bodies and the view's camera (bpy work, main thread), hand the torch work to one
worker thread, and draw the newest finished image. The worker never touches bpy: it bumps
``_ViewState.finished``, and a main-thread timer (:func:`make_poll`, registered by
``view_draw`` when it submits a job) sees that and tags the 3D views for redraw
(``bpy.app.timers`` is not thread-safe, so no timer is registered from the worker).
The resolution adapts so a job takes about ``TARGET_S``; it never exceeds
``scene.neural_avatar.viewport_scale`` of the region. Errors are drawn as text in the
viewport and recorded in :mod:`.state`, never raised into Blender.
"""
from __future__ import annotations

import functools
import os
import threading
import time

from ..common.deps import np

from . import scene_io, state

TARGET_S = 0.15
MIN_SCALE = 0.1
POLL_S = 1.0 / 30.0  # how often the main-thread timer looks for a finished job


class _ViewState:
    def __init__(self):
        self.lock = threading.Lock()
        self.thread = None
        self.image = None  # (h, w, 4) float32 scene-linear RGBA (opaque), row 0 = top
        self.key = None  # what the current image shows
        self.pending = None  # newest job waiting for the worker
        self.scale = 0.5
        self.last_job_s = 0.0
        self.error = ""
        self.reported_error = ""  # last error handed to state.record_error (avoid one per redraw)
        self.texture = None
        self.texture_key = None
        self.submitted = 0  # jobs handed to the worker (main thread)
        self.finished = 0  # jobs the worker completed, successfully or not (worker thread)
        self.polling = False  # a main-thread redraw timer is registered


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
    """Hand ``job`` to the worker; a job still waiting is replaced (only the newest view matters)."""
    with st.lock:
        st.pending = job
        st.submitted += 1
        if st.thread is not None and st.thread.is_alive():
            return
        st.thread = threading.Thread(target=_worker, args=(st,), daemon=True)
        st.thread.start()


def _worker(st: _ViewState) -> None:
    from ..neural.composite import composite_layers
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
            comp = composite_layers(layers, job["bg"], False, (job["cam"].height, job["cam"].width),
                                    with_input=False)
            # Scene-linear, like the F12 result: Blender applies the scene's view transform
            # (Standard, AgX, ...) to what view_draw draws (seen in Blender 4.3: pre-encoded sRGB
            # came out encoded twice).
            img = comp["rgba"]
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
            if img is not None:  # a failed job's time says nothing about the network's cost
                # Adapt the resolution towards TARGET_S per frame (cost ~ pixel count).
                ratio = (TARGET_S / max(dt, 1e-3)) ** 0.5
                st.scale = float(np.clip(st.scale * np.clip(ratio, 0.7, 1.3), MIN_SCALE, 1.0))
            st.finished += 1


def busy(st: _ViewState) -> bool:
    """Whether a job is waiting or running."""
    with st.lock:
        return st.pending is not None or (st.thread is not None and st.thread.is_alive())


def make_poll(st: _ViewState, tag_redraw):
    """A ``bpy.app.timers`` callback (main thread) that calls ``tag_redraw()`` whenever the worker
    finished a job since the last call, every ``POLL_S`` while a job is in flight, and
    unregisters itself (returns None) once the worker is idle and its result was shown."""
    seen = [st.finished]

    def poll():
        with st.lock:
            done = st.finished
        if done != seen[0]:
            seen[0] = done
            tag_redraw()
        if busy(st):
            return POLL_S
        with st.lock:
            if st.finished != seen[0]:  # finished between the two reads: one more round
                return 0.0
            st.polling = False
        return None

    return poll


def _ensure_poll(st: _ViewState) -> None:
    """Register the redraw timer (main thread only) unless one is running."""
    import bpy

    with st.lock:
        if st.polling:
            return
        st.polling = True
    from ..ui.properties import tag_redraw

    bpy.app.timers.register(make_poll(st, tag_redraw), first_interval=POLL_S)


def view_draw(engine, context, depsgraph) -> None:
    import bpy

    from ..common import deps
    from .final import RENDER_MODULES

    missing = deps.missing_modules(RENDER_MODULES)
    if missing:  # a stock Blender: say what to install instead of drawing
        _draw_text(context, deps.dependency_message(missing, "The Neural Avatar viewport"), error=True)
        return
    st = _state(engine)
    scene = depsgraph.scene
    settings = scene.neural_avatar
    region, rv3d = context.region, context.region_data
    scale = min(st.scale, settings.viewport_scale)
    krt = view_krt(region, rv3d, scale)
    info = ""
    if krt is None:
        with st.lock:  # an old perspective image would not match this view
            st.image, st.key = None, None
        info = "Neural Avatar draws perspective views only (View → Perspective/Orthographic)."
    else:
        K, R, t, W, H = krt
        try:
            bodies = scene_io.body_frames(depsgraph)
        except Exception as e:  # noqa: BLE001 - drawn, never raised
            bodies, read_error = [], f"Neural Avatar could not read the scene: {e}"
        else:
            read_error = ""
        if not bodies:  # nothing to paint: drop the old image and any stale job error
            with st.lock:
                st.image, st.key, st.error = None, None, read_error
            info = "No Neural Avatar body in the scene (Add Body in the sidebar)."
        key = (np.round(K, 4).tobytes(), np.round(R, 5).tobytes(), np.round(t, 4).tobytes(),
               tuple(float(b.verts.sum()) for b in bodies), settings.mode, settings.precision)
        if key != st.key and bodies:
            from ..ui.preferences import get_prefs
            from .final import resolve_device

            try:
                device = resolve_device(settings, get_prefs())
                cam = scene_io.CameraFrame(K, R, t, W, H, (0, 0, W, H))
                # Resolve '//' paths here: the worker must not read bpy data.
                abspath = functools.partial(bpy.path.abspath, start=os.path.dirname(bpy.data.filepath))
                _submit(st, {"bodies": bodies, "cam": cam, "mode": settings.mode, "device": device,
                             "precision": settings.precision.lower(), "bg": scene_io.world_color(scene),
                             "abspath": abspath, "key": key})
                _ensure_poll(st)
            except Exception as e:  # noqa: BLE001 - drawn, never raised
                st.error = str(e)
    _draw_image(engine, context, st)
    with st.lock:
        error = st.error
        waiting = st.image is None and (st.pending is not None or (st.thread is not None and st.thread.is_alive()))
    if error:
        _draw_text(context, error, error=True)
        if error != st.reported_error:
            state.record_error(error)
            st.reported_error = error
    elif info:
        _draw_text(context, info)
    elif waiting:
        _draw_text(context, "Neural Avatar: rendering…")
    else:
        st.reported_error = ""


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


def _draw_text(context, text: str, error: bool = False) -> None:
    """A message at the bottom left of the view (wrapped to the region's width)."""
    import blf

    region = context.region
    try:
        ui_scale = context.preferences.system.ui_scale
    except AttributeError:
        ui_scale = 1.0
    size = 13 * ui_scale
    font = 0
    blf.size(font, size)
    blf.color(font, *((1.0, 0.35, 0.3, 1.0) if error else (0.9, 0.9, 0.9, 1.0)))
    margin = 12 * ui_scale
    max_w = max(50.0, region.width - 2 * margin)
    lines = []
    for para in str(text).splitlines() or [""]:
        line = ""
        for word in para.split(" "):
            trial = f"{line} {word}" if line else word
            if line and blf.dimensions(font, trial)[0] > max_w:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    lines = lines[-8:]
    step = size * 1.4
    for i, line in enumerate(reversed(lines)):
        blf.position(font, margin, margin + i * step, 0)
        blf.draw(font, line)
