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
