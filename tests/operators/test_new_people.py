"""New people without training, in Blender: Avatar from Views (PIXEL_ALIGNED: the selected
dressed body captured from 3 cameras, then F12 through the engine), Avatar from Image
(GAUSSIAN_BONES with an appearance encoder) and their errors (scene unchanged)."""
import os

import numpy as np
import pytest

pytestmark = pytest.mark.bpy

bpy = pytest.importorskip("bpy")


def _bundle(tmp_path, mode, **sub):
    from neural_avatar import body
    from neural_avatar.neural.avatar import build_avatar
    from neural_avatar.neural.bundle import save_bundle
    from neural_avatar.neural.config import AvatarConfig

    d = AvatarConfig.default(mode, resolution=48).to_dict()
    key = {"PIXEL_ALIGNED": "pixel", "GAUSSIAN_BONES": "style"}[mode]
    d[key] = {**d[key], **sub}
    av = build_avatar(AvatarConfig.from_dict(d), body.load_default())
    st, _ = save_bundle(av, tmp_path / f"{mode.lower()}_{len(sub)}")
    return str(st)


def _dressed(addon):
    from neural_avatar.lab import subject

    out = subject.build_demo_subject(bpy.context, texture_size=64)
    bpy.context.view_layer.objects.active = out["armature"]
    out["armature"].select_set(True)
    return out["armature"]


def test_avatar_from_views_captures_sets_the_body_and_renders(addon, tmp_path):
    from neural_avatar.engine import state
    from neural_avatar.lab.scene_setup import add_camera, setup_render

    arm = _dressed(addon)
    s = bpy.context.scene.neural_avatar
    s.views_dir = str(tmp_path / "views")
    s.views_bundle = _bundle(tmp_path, "PIXEL_ALIGNED", hidden=16, samples=6, source_res=32, vertex_stride=8)
    s.capture_res = 48
    assert bpy.ops.neural_avatar.avatar_from_views() == {"FINISHED"}
    assert os.path.isfile(tmp_path / "views" / "dataset.json")
    assert arm.neural_avatar.avatar == s.views_bundle and arm.neural_avatar.source_views == s.views_dir
    scene = bpy.context.scene
    add_camera(scene, target=(0, 0, 0.9), distance=2.6, height=1.0, yaw_deg=20.0)
    setup_render(scene, res=40, transparent=True)
    scene.render.filepath = str(tmp_path / "pa.png")
    state.clear_error()
    bpy.ops.render.render(write_still=True)
    assert state.LAST_ERROR == ""
    import cv2

    img = cv2.imread(str(tmp_path / "pa.png"), cv2.IMREAD_UNCHANGED)
    assert img is not None and img[..., 3].max() > 0  # the body is painted
    # an animation: every frame written, the body moving between them
    from neural_avatar.blender.motion_import import import_motions
    from neural_avatar.common.paths import bundled_walk

    import_motions(bpy.context, arm, [bundled_walk()], target_fps=30.0)
    scene.frame_start, scene.frame_end = 1, 2
    scene.render.filepath = str(tmp_path / "anim" / "f_")
    state.clear_error()
    bpy.ops.render.render(animation=True)
    assert state.LAST_ERROR == ""
    frames = sorted(os.listdir(tmp_path / "anim"))
    assert len(frames) == 2
    a, b = (cv2.imread(str(tmp_path / "anim" / f), cv2.IMREAD_UNCHANGED) for f in frames)
    assert np.abs(a.astype(int) - b.astype(int)).sum() > 0
    # a body without source views: an ERROR, no frame
    arm.neural_avatar.source_views = ""
    state.clear_error()
    with pytest.raises(RuntimeError, match="source views"):
        bpy.ops.render.render(write_still=True)


def test_avatar_from_views_errors_leave_the_body_alone(addon, tmp_path):
    arm = _dressed(addon)
    s = bpy.context.scene.neural_avatar
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "note.txt").write_text("not a capture")
    s.views_dir = str(junk)
    s.views_bundle = _bundle(tmp_path, "PIXEL_ALIGNED", hidden=16, samples=6, source_res=32)
    with pytest.raises(RuntimeError, match="no capture"):
        bpy.ops.neural_avatar.avatar_from_views()
    assert arm.neural_avatar.avatar == "" and arm.neural_avatar.source_views == ""


def test_avatar_from_image_adds_an_identity_and_refuses_a_plain_bundle(addon, tmp_path):
    arm = _dressed(addon)
    s = bpy.context.scene.neural_avatar
    s.capture_res = 48
    s.image_dir = str(tmp_path / "img")
    s.image_name = "newcomer"
    plain = _bundle(tmp_path, "GAUSSIAN_BONES", widths=[8, 16], w_dim=16)
    arm.neural_avatar.avatar = plain
    with pytest.raises(RuntimeError, match="no appearance encoder"):
        bpy.ops.neural_avatar.avatar_from_image()
    assert arm.neural_avatar.avatar == plain and arm.neural_avatar.identity == ""
    enc = _bundle(tmp_path, "GAUSSIAN_BONES", widths=[8, 16], w_dim=16, encoder=True, encoder_width=8, encoder_res=32)
    arm.neural_avatar.avatar = enc
    assert bpy.ops.neural_avatar.avatar_from_image() == {"FINISHED"}
    from neural_avatar.neural.bundle import bundle_identities, read_bundle_meta

    assert arm.neural_avatar.identity == "newcomer"
    assert "newcomer" in bundle_identities(read_bundle_meta(arm.neural_avatar.avatar))


def test_avatar_from_image_takes_the_body_as_the_scene_camera_shows_it(addon, tmp_path):
    """With a scene camera, an empty Image Folder gets the body in its current pose and place
    through that camera, in the scene's frame shape; the image's silhouette is where the
    recorded pose and camera put the body, and the scene is left as it was."""
    import json
    from math import radians

    from mathutils import Euler  # noqa: F401  (arm.rotation_euler below)

    from neural_avatar import body
    from neural_avatar.lab.scene_setup import add_camera
    from neural_avatar.neural.training.dataset import CaptureDataset

    arm = _dressed(addon)
    scene = bpy.context.scene
    arm.location = (0.4, -0.3, 0.0)
    arm.rotation_euler = Euler((arm.rotation_euler.x, 0.0, radians(30.0)))
    arm.pose.bones[arm.pose.bones[0].name].location = (0.05, 0.0, 0.02)
    elbow = next(pb for pb in arm.pose.bones if "elbow" in pb.name)
    elbow.rotation_mode = "XYZ"
    elbow.rotation_euler = (0.0, radians(-70.0), 0.0)
    bpy.context.view_layer.update()
    pelvis = arm.matrix_world @ arm.pose.bones[0].head
    add_camera(scene, target=tuple(pelvis), distance=3.0, height=float(pelvis.z), yaw_deg=15.0)
    scene.camera = bpy.data.objects["Camera"]
    scene.render.resolution_x, scene.render.resolution_y = 64, 48
    before = (tuple(arm.location), elbow.rotation_mode, tuple(elbow.rotation_euler), scene.camera.name,
              scene.render.resolution_x, scene.render.resolution_y, scene.render.engine)
    s = scene.neural_avatar
    s.capture_res = 96
    s.image_dir = str(tmp_path / "img")
    s.image_name = "as_seen"
    arm.neural_avatar.avatar = _bundle(tmp_path, "GAUSSIAN_BONES", widths=[8, 16], w_dim=16, encoder=True,
                                       encoder_width=8, encoder_res=32)
    assert bpy.ops.neural_avatar.avatar_from_image() == {"FINISHED"}
    assert arm.neural_avatar.identity == "as_seen"
    after = (tuple(arm.location), elbow.rotation_mode, tuple(elbow.rotation_euler), scene.camera.name,
             scene.render.resolution_x, scene.render.resolution_y, scene.render.engine)
    assert after == before
    cap = tmp_path / "img"
    bz = np.load(cap / "body.npz")
    assert np.allclose(bz["object_matrix"][0], np.array(arm.matrix_world), atol=1e-5)
    names = list(body.load_default().joint_names)
    j = names.index(elbow.name)
    assert np.allclose(np.linalg.norm(bz["poses"][0, j]), radians(70.0), atol=1e-4)
    assert np.allclose(bz["transl"][0], (0.05, 0.0, 0.02), atol=1e-6)
    fr = json.load(open(cap / "cameras.json"))["frames"][0]
    assert (fr["width"], fr["height"]) == (96, 72)
    # the recorded pose and camera put the body on the image's silhouette
    ds = CaptureDataset(str(cap), "train", body.load_default())
    frame, tgt = ds.batch([0])
    from neural_avatar.neural.inputs.project import project_vertices

    _, hit = project_vertices(frame.verts, frame.verts.new_ones(frame.verts.shape[1], 3), frame.K, frame.R,
                              frame.t, (72, 96), return_mask=True)
    m = tgt.mask[0, 0] > 0.5
    h = hit[0, 0] > 0.5
    assert int(m.sum()) > 300
    iou = float((m & h).sum() / (m | h).sum())
    assert iou > 0.75, iou


def test_avatar_from_image_refuses_an_orthographic_scene_camera(addon, tmp_path):
    from neural_avatar.lab.scene_setup import add_camera

    arm = _dressed(addon)
    scene = bpy.context.scene
    add_camera(scene)
    scene.camera = bpy.data.objects["Camera"]
    scene.camera.data.type = "ORTHO"
    s = scene.neural_avatar
    s.image_dir = str(tmp_path / "img")
    enc = _bundle(tmp_path, "GAUSSIAN_BONES", widths=[8, 16], w_dim=16, encoder=True, encoder_width=8, encoder_res=32)
    arm.neural_avatar.avatar = enc
    with pytest.raises(RuntimeError, match="perspective camera"):
        bpy.ops.neural_avatar.avatar_from_image()
    assert arm.neural_avatar.avatar == enc and arm.neural_avatar.identity == ""
