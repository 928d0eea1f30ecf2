"""Building ready-to-render scenes (demo, benchmarks, tests): a default body, optionally a
bundled motion, a camera framing the body, a plain world, and the Neural Avatar engine."""
from __future__ import annotations

import contextlib
import math

import bpy
from ..common.deps import np
from mathutils import Vector


def ensure_registered():
    """Register the extension from this package if Blender does not have it yet."""
    if not hasattr(bpy.types.Scene, "neural_avatar"):
        from .. import register

        register()


@contextlib.contextmanager
def factory_scene():
    """Blender's factory settings (the session's scene is replaced) with the extension
    registered; yields the context. Registered here -> unregistered on the way out."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    registered_here = not hasattr(bpy.types.Scene, "neural_avatar")
    ensure_registered()
    try:
        yield bpy.context
    finally:
        if registered_here:
            from .. import unregister

            unregister()


def add_default_body(context=None, name="Body"):
    context = context or bpy.context
    r = bpy.ops.neural_avatar.add_body(model="DEFAULT", name=name)
    if r != {"FINISHED"}:
        from ..errors import NeuralAvatarError

        raise NeuralAvatarError("Could not add the default body.")
    return context.view_layer.objects.active


def look_at(cam_obj, target, eye):
    cam_obj.location = Vector(eye)
    direction = Vector(target) - Vector(eye)
    cam_obj.rotation_mode = "QUATERNION"
    cam_obj.rotation_quaternion = direction.to_track_quat("-Z", "Y")


def add_camera(scene, target=(0, 0, 0.9), distance=3.2, height=1.0, yaw_deg=0.0, lens=50.0, name="Camera"):
    cam_data = bpy.data.cameras.new(name)
    cam_data.lens = lens
    cam = bpy.data.objects.new(name, cam_data)
    scene.collection.objects.link(cam)
    yaw = math.radians(yaw_deg)
    eye = (target[0] + distance * math.sin(yaw), target[1] - distance * math.cos(yaw), height)
    look_at(cam, target, eye)
    scene.camera = cam
    return cam


def setup_render(scene, res=256, engine="NEURAL_AVATAR", transparent=False, world_rgb=(0.8, 0.8, 0.8)):
    scene.render.engine = engine
    scene.render.resolution_x = res
    scene.render.resolution_y = res
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = transparent
    scene.render.dither_intensity = 0.0
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA" if transparent else "RGB"
    if scene.world is None:
        scene.world = bpy.data.worlds.new("World")
    scene.world.color = world_rgb
    if scene.world.node_tree is not None:
        for node in scene.world.node_tree.nodes:
            if node.type == "BACKGROUND":
                node.inputs["Color"].default_value = (*world_rgb, 1.0)
                node.inputs["Strength"].default_value = 1.0


def pelvis_world(arm_obj) -> np.ndarray:
    pb = arm_obj.pose.bones[0]
    return np.array(arm_obj.matrix_world @ pb.head)


TRAINED_RES = 128  # capture resolution of the shipped default avatars (data/avatars/*.json)


def body_centre(arm_obj) -> np.ndarray:
    """Centre of the body's bounding box (world), from the posed joints (cheap)."""
    heads = np.array([arm_obj.matrix_world @ pb.head for pb in arm_obj.pose.bones])
    return 0.5 * (heads.min(0) + heads.max(0))


def follow_camera(scene, cam, arm_obj, yaw_deg=25.0, elev=0.15, radius=0.95, margin=1.1):
    """Key the camera so it frames the body like the capture does (body radius ``radius`` m
    fills the frame with ``margin``), following the body centre over the frame range."""
    half_fov = math.atan(0.5 * cam.data.sensor_width / cam.data.lens)
    dist = 1.02 * radius / math.tan(half_fov) * margin
    yaw = math.radians(yaw_deg)
    d = np.array([math.sin(yaw), -math.cos(yaw), elev])
    d /= np.linalg.norm(d)
    for f in range(scene.frame_start, scene.frame_end + 1):
        scene.frame_set(f)
        c = body_centre(arm_obj)
        look_at(cam, c, c + dist * d)
        cam.keyframe_insert("location", frame=f)
        cam.keyframe_insert("rotation_quaternion", frame=f)
    scene.frame_set(scene.frame_start)


def demo_scene(res=256, motion_path=None, frames=None, mode="VERTEX_PROJECTION", fps=30.0, yaw_deg=25.0):
    """Empty factory scene → default body (+ motion) + a camera that follows the body, framed
    like the training captures; returns (scene, body)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    ensure_registered()
    scene = bpy.context.scene
    body = add_default_body()
    if motion_path:
        from ..blender.motion_import import import_motions

        import_motions(bpy.context, body, [str(motion_path)], target_fps=fps, set_scene_fps=True)
        if frames:
            scene.frame_end = scene.frame_start + frames - 1
    scene.frame_set(scene.frame_start)
    cam = add_camera(scene)
    # Frame the body at the pixel scale the shipped avatars were trained at (bodies filling a
    # 128² capture): at larger resolutions the camera steps back instead of magnifying the body.
    follow_camera(scene, cam, body, yaw_deg=yaw_deg, margin=1.1 * max(1.0, res / TRAINED_RES))
    setup_render(scene, res=res)
    scene.neural_avatar.mode = mode
    return scene, body
