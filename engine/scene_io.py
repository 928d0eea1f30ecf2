"""Reading what the neural render needs out of Blender's evaluated depsgraph, and writing
pixels back. All bpy access of the render path lives here, so its cost (the "Blender I/O"
share the benchmark reports) is measured in one place."""
from __future__ import annotations

from dataclasses import dataclass

from ..common.deps import lazy, np

from ..errors import NeuralAvatarError
from ..blender.rig import body_mesh

_camera = lazy("..neural.inputs.camera", __package__)  # torch: imported at the first render


@dataclass
class BodyFrame:
    """One body as the networks see it (world space, metres, float32)."""

    name: str
    verts: np.ndarray  # (V,3) evaluated (posed, shaped, corrective-applied) vertices
    joints: np.ndarray  # (J,3) posed joint positions (bone heads)
    model_id: str
    avatar_path: str  # as set on the body ('' → the shipped default)
    identity: str = ""  # the person of a multi-identity bundle ('' → its first)
    sources: str = ""  # PIXEL_ALIGNED: the source-views capture folder of the person (absolute)


@dataclass
class CameraFrame:
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    width: int  # full frame size in pixels (after resolution %)
    height: int
    border: tuple  # (x0, y0, w, h) in top-left-origin pixels of the region to render


def render_size(scene) -> tuple[int, int]:
    r = scene.render
    return _camera.effective_resolution(r.resolution_x, r.resolution_y, r.resolution_percentage)


def camera_frame(scene, camera_obj=None, size=None) -> CameraFrame:
    cam = camera_obj or scene.camera
    if cam is None:
        raise NeuralAvatarError("The scene has no camera. Add a camera and make it the active camera "
                                "(Scene Properties → Camera).")
    if cam.type != "CAMERA":
        raise NeuralAvatarError(f"The scene camera '{cam.name}' is not a camera object.")
    data = cam.data
    if data.type != "PERSP":
        raise NeuralAvatarError(f"Neural Avatar renders through perspective cameras; '{cam.name}' is "
                                f"{data.type.lower()}.")
    r = scene.render
    W, H = size or render_size(scene)
    K, R, t = _camera.blender_camera_to_krt(
        np.array(cam.matrix_world, dtype=np.float64), data.lens, data.sensor_width, data.sensor_height,
        data.sensor_fit, data.shift_x, data.shift_y, W, H, r.pixel_aspect_x, r.pixel_aspect_y)
    border = (0, 0, W, H)
    if r.use_border and size is None:
        x0, x1 = int(r.border_min_x * W), int(r.border_max_x * W)
        # Blender's border is bottom-up; ours is top-down.
        y0, y1 = int((1.0 - r.border_max_y) * H), int((1.0 - r.border_min_y) * H)
        if x1 > x0 and y1 > y0:
            border = (x0, y0, x1 - x0, y1 - y0)
    return CameraFrame(K, R, t, W, H, border)


def body_frames(depsgraph) -> list[BodyFrame]:
    """Evaluated bodies: every armature flagged as a Neural Avatar body with a visible mesh."""
    out = []
    scene = depsgraph.scene
    for obj in scene.objects:
        if obj.type != "ARMATURE" or not obj.neural_avatar.is_body:
            continue
        if obj.hide_render:
            continue
        mesh_obj = body_mesh(obj)
        if mesh_obj is None or mesh_obj.hide_render:
            continue
        arm_eval = obj.evaluated_get(depsgraph)
        me_eval_obj = mesh_obj.evaluated_get(depsgraph)
        me = me_eval_obj.to_mesh()
        try:
            n = len(me.vertices)
            co = np.empty(n * 3, dtype=np.float32)
            me.vertices.foreach_get("co", co)
        finally:
            me_eval_obj.to_mesh_clear()
        mw = np.array(me_eval_obj.matrix_world, dtype=np.float32)
        verts = co.reshape(n, 3) @ mw[:3, :3].T + mw[:3, 3]
        aw = np.array(arm_eval.matrix_world, dtype=np.float32)
        # In the model's joint order (pose.bones iterates the hierarchy, not the model's order).
        pbs = arm_eval.pose.bones
        names = joint_order(obj)
        heads = np.array([pbs[n].head for n in names], dtype=np.float32).reshape(-1, 3)
        joints = heads @ aw[:3, :3].T + aw[:3, 3]
        s = obj.neural_avatar
        if s.source_views:
            import bpy

            src = bpy.path.abspath(s.source_views)
        else:
            src = ""
        out.append(BodyFrame(obj.name, verts, joints, s.model_id, s.avatar, s.identity if s.avatar else "", src))
    return out


def joint_order(arm_obj) -> list:
    """Bone names in the body model's joint order (the order networks and bundles expect)."""
    from ..blender.rig import model_for

    try:
        names = list(model_for(arm_obj).joint_names)
    except Exception:  # noqa: BLE001 - a rig whose model file is gone: fall back to its bones
        names = [b.name for b in arm_obj.data.bones]
    return [n for n in names if n in arm_obj.pose.bones]


def world_color(scene) -> np.ndarray:
    """The world's background colour (linear RGB)."""
    w = scene.world
    if w is None:
        return np.array([0.05, 0.05, 0.05], dtype=np.float32)
    if w.use_nodes and w.node_tree is not None:
        for node in w.node_tree.nodes:
            if node.type == "BACKGROUND":
                c = node.inputs["Color"].default_value
                s = node.inputs["Strength"].default_value
                return np.array(c[:3], dtype=np.float32) * float(s)
    return np.array(w.color[:3], dtype=np.float32)


def write_result(engine, x0: int, y0_bottom: int, rgba_top_down: np.ndarray, extra: dict | None = None,
                 layer_name: str = ""):
    """Write an (h,w,4) float32 image (row 0 = top) into the render result at (x0, y0_bottom).

    Uses ``foreach_set`` on the pass rect (the fast path; see field notes)."""
    h, w = rgba_top_down.shape[:2]
    result = engine.begin_result(x0, y0_bottom, w, h, layer=layer_name)
    try:
        layer = result.layers[0]
        combined = np.ascontiguousarray(rgba_top_down[::-1], dtype=np.float32)
        layer.passes["Combined"].rect.foreach_set(combined.ravel())
        for name, img in (extra or {}).items():
            p = layer.passes.find_by_name(name, "") if hasattr(layer.passes, "find_by_name") else None
            if p is None:
                p = next((q for q in layer.passes if q.name == name), None)
            if p is None:
                continue
            arr = np.ascontiguousarray(img[::-1], dtype=np.float32)
            if arr.ndim == 2:
                arr = arr[..., None]
            if arr.shape[-1] != p.channels:
                arr = np.ascontiguousarray(np.resize(arr, (h, w, p.channels)) if arr.shape[-1] < p.channels
                                           else arr[..., : p.channels])
            p.rect.foreach_set(arr.ravel())
    finally:
        engine.end_result(result)
