"""F12 / animation / ``blender -b`` renders: the module function the RenderEngine forwards to.

Data path: evaluated depsgraph → :mod:`.scene_io` (bodies: world-space vertices and joints;
camera: K, R, t for the render size) → per body: the avatar's input renderer + network
(:mod:`..neural.avatar`) on the configured device → :func:`..neural.composite.composite_layers`
(back to front, alpha from the predicted mask) → Combined (+ optional passes) via ``foreach_set``.
"""
from __future__ import annotations

import time

from ..common.deps import np

from ..errors import CancelledError, NeuralAvatarError
from . import avatars, scene_io, state

PASSES = {  # name → (channels, chan_id, type)
    "Neural Input": (3, "RGB", "COLOR"),
    "Neural Mask": (1, "X", "VALUE"),
    "Neural Depth": (1, "Z", "VALUE"),
}
TIMINGS: dict = {}  # last frame's stage timings (s), read by the benchmark
LAST_BODY_MODES: dict = {}  # body name → the mode it was rendered in (last frame; UI and tests)
LAST_CROPS: dict = {}  # body name → its neural.crop.Crop (None: not visible) in the last frame
LAST_BATCHES: list = []  # the body names of each network call of the last frame (batched bodies)
LAST_NETWORK_SIZES: dict = {}  # body name → (h, w) of the network image it was rendered in, last frame


def wanted_passes(settings) -> list[str]:
    out = []
    if settings.pass_input:
        out.append("Neural Input")
    if settings.pass_mask:
        out.append("Neural Mask")
    if settings.pass_depth:
        out.append("Neural Depth")
    return out


def resolve_device(settings, prefs=None) -> str:
    from ..neural.device import pick_device

    pref = settings.device
    if pref == "PREFERENCES":
        pref = prefs.device if prefs is not None else "AUTO"
    return str(pick_device(pref, warn=state.record_warning))


def _precision(settings) -> str:
    return settings.precision.lower()  # "auto": bf16 on a CPU with native bf16, else fp32


def _depth_map(body: "scene_io.BodyFrame", faces, cam, size) -> np.ndarray:
    import torch

    from ..neural.inputs.raster import rasterize

    K, R, t = (torch.as_tensor(x, dtype=torch.float32)[None] for x in (cam.K, cam.R, cam.t))
    ras = rasterize(torch.as_tensor(body.verts)[None], torch.as_tensor(faces, dtype=torch.long), K, R, t, size,
                    compute_normals=False)
    d = ras.depth[0].numpy()
    return np.where(np.isfinite(d), d, 0.0).astype(np.float32)


RENDER_MODULES = ("numpy", "torch", "safetensors")  # what a neural render imports
USE_REGIONS = True  # run fully convolutional avatars on the body's region of its window (neural/crop.py)


def run_bodies(bodies, cam, mode: str, device: str, precision: str, abspath=None, test_break=None,
               progress=None, faces_for=None, want_depth=False):
    """Run every body's avatar; returns per-body layers for :func:`composite_layers`.

    ``mode`` is the scene's: it picks the shipped default for bodies without an avatar; a body
    with its own avatar renders in that avatar's mode (:func:`.avatars.resolve`)."""
    import torch

    from ..neural import crop as crop_lib
    from ..neural.avatar import FrameInputs

    x0, y0, w, h = cam.border
    layers = []
    LAST_BODY_MODES.clear()
    LAST_CROPS.clear()
    LAST_BATCHES.clear()
    LAST_NETWORK_SIZES.clear()
    # 1. every body's avatar and window at the scale its avatar was trained at (neural/crop.py)
    jobs = []
    for b in bodies:
        if test_break is not None and test_break():
            raise CancelledError("Render cancelled.")
        path, body_mode = avatars.resolve(b.avatar_path, mode, b.model_id, abspath)
        avatar = _load_with_fallback(path, body_mode, b.model_id, device, b.identity, b.sources)
        K = np.array(cam.K, np.float64)
        K[0, 2] -= x0
        K[1, 2] -= y0
        # the body projected once a frame: the window, the region and the gate all read these
        uv = crop_lib.project_front(b.verts, K, cam.R, cam.t)
        win = crop_lib.body_crop(b.verts, K, cam.R, cam.t, w, h, int(avatar.config.resolution), uv=uv)
        zc = (b.verts @ np.asarray(cam.R, np.float32).T + np.asarray(cam.t, np.float32))[:, 2]
        if win is None:  # behind the camera or outside the frame: nothing to paint
            LAST_CROPS[b.name] = None
            continue
        LAST_CROPS[b.name] = win
        jobs.append({"b": b, "path": path, "mode": body_mode, "avatar": avatar, "win": win, "K": K, "zc": zc,
                     "K_win": crop_lib.crop_intrinsics(K, win), "uv_win": crop_lib.to_window(uv, win)})
    # 2. the networks: bodies that share an avatar and a window size run as one batch
    groups: dict = {}
    for j in jobs:
        groups.setdefault((id(j["avatar"]), j["win"].res), []).append(j)
    from ..common.guards import check_bytes

    def f32(a):
        return torch.as_tensor(np.asarray(a, np.float32))

    done = 0
    for grp in groups.values():
        if test_break is not None and test_break():
            raise CancelledError("Render cancelled.")
        avatar, r, n = grp[0]["avatar"], grp[0]["win"].res, len(grp)
        # Fully convolutional networks run on the part of the window the body can paint (its
        # projected box grown by the gate's reach): about half the window for a standing body.
        rh, rw = r, r
        if USE_REGIONS and avatar.config.mode in crop_lib.REGION_MODES:
            ext = [crop_lib.body_extent(j["b"].verts, j["K_win"], cam.R, cam.t, r, mode=avatar.config.mode,
                                        uv=j["uv_win"]) for j in grp]
            rh, rw = crop_lib.region_size(ext, r)
            for j, e in zip(grp, ext):
                ox, oy = crop_lib.place_region(e, rh, rw, r)
                j["region"] = (ox, oy, ox + rw, oy + rh)  # window pixels the network covers
        for j in grp:
            j["K_net"] = crop_lib.region_intrinsics(j["K_win"], *j.get("region", (0, 0))[:2])
        frame = FrameInputs(
            verts=torch.stack([f32(j["b"].verts) for j in grp]), joints=torch.stack([f32(j["b"].joints) for j in grp]),
            K=torch.stack([f32(j["K_net"]) for j in grp]), R=f32(cam.R)[None].expand(n, 3, 3).contiguous(),
            t=f32(cam.t)[None].expand(n, 3).contiguous(), size=(rh, rw))
        names = ", ".join(f"'{j['b'].name}'" for j in grp)
        check_bytes(n * avatar.render_bytes(rh, rw) + 64 * h * w, f"Rendering {names} at {w}×{h} pixels",
                    hint="Lower the resolution (Output Properties → Format), or render it in parts with a Border.")
        if hasattr(avatar, "should_stop"):  # seconds-long renders (AniPixel) stop between ray chunks
            avatar.should_stop = test_break
        try:
            out = avatar.render(frame, precision=precision)
        except torch.OutOfMemoryError:
            dev = avatar.device
            state.record_warning(f"Out of GPU memory on {dev}; rendering {names} on the CPU instead.")
            j0 = grp[0]
            avatar = avatars.load(j0["path"], j0["mode"], j0["b"].model_id, "cpu", j0["b"].identity, j0["b"].sources)
            out = avatar.render(frame, precision="fp32")
        finally:
            if hasattr(avatar, "should_stop"):  # the cached avatar keeps no reference to this render
                avatar.should_stop = None
        LAST_BATCHES.append([j["b"].name for j in grp])
        for j in grp:
            LAST_NETWORK_SIZES[j["b"].name] = (rh, rw)
        for k, j in enumerate(grp):
            j["out"] = {key: (v[k:k + 1] if torch.is_tensor(v) and v.ndim and v.shape[0] == n else v)
                        for key, v in out.items()}
        done += n
        if progress is not None:
            progress(done / max(1, len(bodies)))
    # 3. each body into the frame, in the bodies' order
    for j in jobs:
        b, win, out, K_win, r = j["b"], j["win"], j["out"], j["K_win"], j["win"].res
        # everything stays at the network's size: the region (gate, feather and paste read it at
        # its place in the window, which is background outside it) or the whole window
        ox, oy, rx1, ry1 = j.get("region", (0, 0, r, r))
        gate = crop_lib.silhouette_gate(b.verts, K_win, cam.R, cam.t, r, region=(ox, oy, rx1, ry1), uv=j["uv_win"])
        mask_c = crop_lib.feather(out["mask"][:1] * gate.to(out["mask"].device), res=r, offset=(ox, oy))
        if not bool(torch.isfinite(out["rgb_fg"]).all()) or not bool(torch.isfinite(mask_c).all()):
            raise NeuralAvatarError(f"The avatar for '{b.name}' produced invalid values (NaN/inf). "
                                    "The bundle may be corrupt or trained with a diverged run.")
        # Into the frame, RGB, mask and preview in one resampling: exactly background (alpha 0)
        # outside the window.
        has_input = out.get("input") is not None
        planes = [out["rgb_fg"][0].float(), mask_c[0].float()] + ([out["input"][0, :3].float()] if has_input else [])
        fill = [0.0] * 4 + ([1.0] * 3 if has_input else [])  # the input preview's background is 1
        pasted, vis = crop_lib.paste(torch.cat(planes, dim=0), win, w, h, rect=j.get("region"), fill=fill)
        LAST_BODY_MODES[b.name] = j["mode"]
        if pasted is None:  # the region lies outside the frame: nothing of this body shows
            continue
        xa, ya, xb, yb = vis
        # the layer holds the pixels of its crop only (composite_layers places them)
        layer = {"rgb": pasted[..., :3], "mask": pasted[..., 3], "input": pasted[..., 4:7] if has_input else None,
                 "depth": float(np.median(j["zc"])), "name": b.name,
                 "mode": j["mode"], "crop": (xa, ya, xb, yb), "network_size": r}
        if want_depth and faces_for is not None:
            cam_crop = scene_io.CameraFrame(j["K"], cam.R, cam.t, w, h, (0, 0, w, h))
            layer["zmap"] = _depth_map(b, faces_for(b), cam_crop, (h, w))
        layers.append(layer)
    return layers


def _load_with_fallback(path, mode, model_id, device, identity="", sources=""):
    import torch

    try:
        return avatars.load(path, mode, model_id, device, identity, sources)
    except torch.OutOfMemoryError:
        state.record_warning(f"Out of GPU memory loading the avatar on {device}; using the CPU.")
        return avatars.load(path, mode, model_id, "cpu", identity, sources)


def render_frame(engine, depsgraph) -> None:
    """RenderEngine.render: never raises; errors go to ``error_set`` and ``state``."""
    import bpy

    scene = depsgraph.scene
    settings = scene.neural_avatar
    state.clear_error()
    t_start = time.perf_counter()
    timings = {"io": 0.0, "neural": 0.0, "composite": 0.0}
    try:
        from ..common import deps

        if state.STOP_REQUESTED:  # Ctrl+C on the command line: the frame before this one was the last
            raise CancelledError("Render interrupted (Ctrl+C).")
        deps.require(*RENDER_MODULES, feature="Neural Avatar rendering")
        t0 = time.perf_counter()
        cam = scene_io.camera_frame(scene, scene.camera)
        bodies = scene_io.body_frames(depsgraph)
        bg = scene_io.world_color(scene)
        timings["io"] += time.perf_counter() - t0
        if not bodies:
            raise NeuralAvatarError("No Neural Avatar body to render. Add one with Add Body "
                                    "(3D Viewport → Sidebar → Neural Avatar).")
        from ..ui.preferences import get_prefs

        device = resolve_device(settings, get_prefs())
        from ..neural.inference import set_threads

        set_threads()
        engine.update_stats("Neural Avatar", f"{len(bodies)} bodies on {device}")
        t0 = time.perf_counter()
        want = wanted_passes(settings)
        mesh_faces = {}

        def faces_for(b):
            if b.name not in mesh_faces:
                mesh_faces[b.name] = _read_faces(bpy.data.objects[b.name])
            return mesh_faces[b.name]

        layers = run_bodies(bodies, cam, settings.mode, device, _precision(settings),
                            abspath=bpy.path.abspath, test_break=engine.test_break,
                            progress=lambda f: engine.update_progress(0.9 * f), faces_for=faces_for,
                            want_depth="Neural Depth" in want)
        timings["neural"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        from ..neural.composite import composite_layers

        x0, y0, w, h = cam.border
        comp = composite_layers(layers, bg, scene.render.film_transparent, (h, w),
                                with_input="Neural Input" in want)
        extra = {}
        if "Neural Input" in want:
            extra["Neural Input"] = comp["input"]
        if "Neural Mask" in want:
            extra["Neural Mask"] = comp["mask"]
        if "Neural Depth" in want:
            z = np.zeros((h, w), np.float32)
            for layer in sorted(layers, key=lambda d: -d["depth"]):
                zm = layer.get("zmap")
                if zm is not None:
                    z = np.where(zm > 0, zm, z)
            extra["Neural Depth"] = z
        timings["composite"] += time.perf_counter() - t0
        if engine.test_break():
            raise CancelledError("Render cancelled.")
        t0 = time.perf_counter()
        for name in extra:
            ch, ids, _ = PASSES[name]
            engine.add_pass(name, ch, ids)
        # Blender's result origin is bottom-left.
        scene_io.write_result(engine, x0, cam.height - (y0 + h), comp["rgba"], extra)
        timings["io"] += time.perf_counter() - t0
        engine.update_progress(1.0)
    except BaseException as e:  # noqa: BLE001 - every failure is reported; none leaves a saved frame
        fail(engine, e)
    timings["total"] = time.perf_counter() - t_start
    TIMINGS.clear()
    TIMINGS.update(timings)
    state.record_frame(scene.frame_current, timings)


def error_message(e: BaseException) -> str:
    """What the user reads for a failure: a project error's own words, otherwise its type and text."""
    if isinstance(e, NeuralAvatarError):
        return str(e)
    if isinstance(e, KeyboardInterrupt):
        return "Render interrupted."
    if isinstance(e, MemoryError):
        return "Neural Avatar ran out of memory rendering this frame. Lower the resolution or close other programs."
    return f"Neural Avatar render failed: {type(e).__name__}: {e}"


def fail(engine, e: BaseException) -> None:
    """Report a failed (or cancelled) frame as an ERROR: Blender then writes no file for it and
    stops an animation. Recorded in :mod:`.state` for the UI and tests."""
    msg = error_message(e)
    if not isinstance(e, NeuralAvatarError):
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__)
    state.record_error(msg)
    try:
        engine.error_set(msg)
        engine.report({"ERROR"}, msg)
    except Exception:  # noqa: BLE001 - the engine may already be freed
        pass


def _read_faces(arm_obj) -> np.ndarray:
    from ..blender.rig import body_mesh

    mesh_obj = body_mesh(arm_obj)
    me = mesh_obj.data
    me.calc_loop_triangles()
    tri = np.empty(len(me.loop_triangles) * 3, dtype=np.int32)
    me.loop_triangles.foreach_get("vertices", tri)
    return tri.reshape(-1, 3)


def update_render_passes(engine, scene, render_layer) -> None:
    engine.register_pass(scene, render_layer, "Combined", 4, "RGBA", "COLOR")
    for name in wanted_passes(scene.neural_avatar):
        ch, ids, kind = PASSES[name]
        engine.register_pass(scene, render_layer, name, ch, ids, kind)
