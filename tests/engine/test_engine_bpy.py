"""The NEURAL_AVATAR engine in headless Blender: F12 in each mode paints a person where the
body is, poses change the picture, animations write every frame, errors are readable and
recorded (never a silent grey image), cancelling stops cleanly."""
import os

import numpy as np
import pytest

pytestmark = pytest.mark.bpy

bpy = pytest.importorskip("bpy")

from neural_avatar.engine import avatars, final, state  # noqa: E402
from neural_avatar.errors import CancelledError  # noqa: E402

MODES = ("VERTEX_PROJECTION", "NEURAL_TEXTURE", "GAUSSIAN_BONES")
RES = 96


def _scene(addon, res=RES, transparent=True):
    from neural_avatar.common.paths import bundled_walk
    from neural_avatar.lab.scene_setup import add_camera, add_default_body, setup_render
    from neural_avatar.blender.motion_import import import_motions

    scene = bpy.context.scene
    arm = add_default_body()
    import_motions(bpy.context, arm, [bundled_walk()], target_fps=30.0)
    scene.frame_set(scene.frame_start + 5)
    pelvis = np.array(arm.matrix_world @ arm.pose.bones[0].head)
    add_camera(scene, target=(pelvis[0], pelvis[1], 0.85), distance=2.6, height=1.0, yaw_deg=25.0)
    setup_render(scene, res=res, transparent=transparent)
    return scene, arm


def _render(scene, path):
    scene.render.filepath = str(path)
    state.clear_error()
    bpy.ops.render.render(write_still=True)
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, f"nothing written (last error: {state.LAST_ERROR})"
    return img


def _alpha(img):
    return img[..., 3].astype(np.float32) / 255.0


def _workbench_silhouette(scene, tmp_path):
    scene.render.engine = "BLENDER_WORKBENCH"
    img = _render(scene, tmp_path / "wb.png")
    scene.render.engine = "NEURAL_AVATAR"
    return _alpha(img) > 0.5


def _render_fails(expect, write_still=True):
    """F12 that must fail: the engine reports the error (the operator raises with it in
    background mode) and records it for tests/UI."""
    state.clear_error()
    with pytest.raises(RuntimeError) as e:
        bpy.ops.render.render(write_still=write_still)
    assert expect in str(e.value) and expect in state.LAST_ERROR, (str(e.value), state.LAST_ERROR)


def _iou(a, b):
    return float((a & b).sum()) / max(1.0, float((a | b).sum()))


def _have_default_avatars():
    return all(os.path.exists(avatars.default_avatar_path(m)) for m in MODES)


def test_f12_each_mode_paints_the_body(addon, tmp_path):
    assert _have_default_avatars(), "the shipped default avatars are missing from data/avatars"
    scene, arm = _scene(addon)
    sil = _workbench_silhouette(scene, tmp_path)
    assert sil.sum() > 200
    for mode in MODES:
        scene.neural_avatar.mode = mode
        img = _render(scene, tmp_path / f"{mode}.png")
        assert state.LAST_ERROR == ""
        fg = _alpha(img) > 0.5
        iou = _iou(fg, sil)
        assert iou >= 0.7, f"{mode}: IoU with the Workbench silhouette {iou:.2f}"
        rgb = img[..., :3][fg].astype(np.float32)
        assert rgb.std() > 5.0, f"{mode}: foreground is flat (std {rgb.std():.1f})"


def test_pose_change_changes_image_and_animation_writes_every_frame(addon, tmp_path):
    scene, arm = _scene(addon, transparent=False)
    scene.neural_avatar.mode = "VERTEX_PROJECTION"
    action = arm.animation_data.action
    arm.animation_data.action = None  # pose by hand (the imported action would override it)
    a = _render(scene, tmp_path / "a.png").astype(np.float32)
    arm.pose.bones["left_shoulder"].rotation_quaternion = (0.707, 0.0, 0.0, 0.707)
    arm.pose.bones["right_knee"].rotation_quaternion = (0.8, 0.6, 0.0, 0.0)
    b = _render(scene, tmp_path / "b.png").astype(np.float32)
    assert np.abs(a - b).mean() > 0.5
    arm.animation_data.action = action
    if hasattr(arm.animation_data, "action_slot") and action.slots:
        arm.animation_data.action_slot = action.slots[0]
    scene.frame_start, scene.frame_end = 1, 3
    scene.render.filepath = str(tmp_path / "anim" / "f_")
    state.clear_error()
    bpy.ops.render.render(animation=True)
    assert state.LAST_ERROR == ""
    assert sorted(os.listdir(tmp_path / "anim")) == ["f_0001.png", "f_0002.png", "f_0003.png"]


def _tiny_bundle(tmp_path, mode):
    from neural_avatar import body
    from neural_avatar.neural.avatar import build_avatar
    from neural_avatar.neural.bundle import save_bundle
    from neural_avatar.neural.config import AvatarConfig

    path = tmp_path / f"{mode.lower()}.safetensors"
    save_bundle(build_avatar(AvatarConfig.default(mode, resolution=64), body.load_default()), path)
    return path


def test_untrained_bundle_renders_and_passes_are_written(addon, tmp_path):
    scene, arm = _scene(addon, res=48)
    arm.neural_avatar.avatar = str(_tiny_bundle(tmp_path, "NEURAL_TEXTURE"))
    scene.neural_avatar.mode = "NEURAL_TEXTURE"
    for flag in ("pass_input", "pass_mask", "pass_depth"):
        setattr(scene.neural_avatar, flag, True)
    _render(scene, tmp_path / "x.png")
    assert state.LAST_ERROR == ""
    assert final.TIMINGS["total"] > 0 and 0 <= final.TIMINGS["io"] <= final.TIMINGS["total"]
    res = bpy.data.images["Render Result"]
    assert res is not None


@pytest.mark.parametrize("case", ["ortho_camera", "missing_bundle", "corrupt_bundle", "no_body"])
def test_errors_are_shown_and_recorded(addon, tmp_path, case):
    scene, arm = _scene(addon, res=32)
    scene.neural_avatar.mode = "VERTEX_PROJECTION"
    if case == "ortho_camera":
        scene.camera.data.type = "ORTHO"
        expect = "perspective"
    elif case == "missing_bundle":
        arm.neural_avatar.avatar = str(tmp_path / "nope.safetensors")
        expect = "not found"
    elif case == "corrupt_bundle":
        path = _tiny_bundle(tmp_path, "GAUSSIAN_BONES")
        path.with_suffix(".json").write_text("{not json")
        arm.neural_avatar.avatar = str(path)
        expect = "not valid JSON"
    else:
        bpy.data.objects.remove(arm.children[0])
        bpy.data.objects.remove(arm)
        expect = "No Neural Avatar body"
    scene.render.filepath = str(tmp_path / "err.png")
    _render_fails(expect)
    assert not os.path.exists(tmp_path / "err.png")  # a failed frame is never saved


def test_each_body_renders_in_its_avatars_mode(addon, tmp_path):
    """The scene's mode only picks the shipped default; two bodies whose avatars are of other,
    different modes render together in one frame."""
    from neural_avatar.lab.scene_setup import add_default_body

    scene, arm = _scene(addon, res=48)
    scene.neural_avatar.mode = "VERTEX_PROJECTION"
    arm.neural_avatar.avatar = str(_tiny_bundle(tmp_path, "NEURAL_TEXTURE"))
    arm2 = add_default_body()
    arm2.location = (0.6, 0.0, 0.0)
    arm2.neural_avatar.avatar = str(_tiny_bundle(tmp_path, "GAUSSIAN_BONES"))
    _render(scene, tmp_path / "two.png")
    assert state.LAST_ERROR == ""
    assert sorted(final.LAST_BODY_MODES.values()) == ["GAUSSIAN_BONES", "NEURAL_TEXTURE"], final.LAST_BODY_MODES
    arm2.neural_avatar.avatar = ""  # falls back to the scene's mode (shipped default)
    _render(scene, tmp_path / "two_b.png")
    assert sorted(final.LAST_BODY_MODES.values()) == ["NEURAL_TEXTURE", "VERTEX_PROJECTION"]


def test_multi_identity_bundle_each_body_picks_its_identity(addon, tmp_path):
    """One ANR bundle with two people: the body shows the identity chosen in its panel (the
    menu lists the bundle's names), so the engine loads the shared renderer with that identity's
    texture (try-on); an unknown name is reported as an ERROR and no frame is written."""
    import torch
    from neural_avatar import body
    from neural_avatar.neural.avatar import build_avatar
    from neural_avatar.neural.bundle import save_bundle
    from neural_avatar.neural.config import AvatarConfig

    torch.manual_seed(0)
    av = build_avatar(AvatarConfig.default("NEURAL_TEXTURE", resolution=64), body.load_default())
    other = {k: torch.rand_like(v) * 4 - 2 for k, v in av.state_dict().items()
             if k.startswith("identity.") and v.is_floating_point()}
    path = tmp_path / "pair.safetensors"
    save_bundle(av, path, identities=[("ann", {}), ("ben", other)])
    scene, arm = _scene(addon, res=48)
    arm.neural_avatar.avatar = str(path)
    assert arm.neural_avatar.identity_menu == "ann"
    _render(scene, tmp_path / "ann.png")
    arm.neural_avatar.identity_menu = "ben"
    assert arm.neural_avatar.identity == "ben"
    _render(scene, tmp_path / "ben.png")
    assert state.LAST_ERROR == ""
    # the engine loaded the bundle once per identity, each with that identity's texture (that a
    # texture change changes the picture is tested on the pure side, test_bundle.py)
    from neural_avatar.engine import cache

    loaded = {k[4]: av_ for k, av_ in cache.models()._items.items() if k[0].endswith("pair")}
    assert set(loaded) == {"", "ben"}
    tex = {k: v.identity.texture() for k, v in loaded.items()}
    assert not torch.allclose(tex[""], tex["ben"])
    want = other["identity.texture.levels.0"]
    assert torch.allclose(loaded["ben"].state_dict()["identity.texture.levels.0"], want)
    arm.neural_avatar.identity = "carl"
    scene.render.filepath = str(tmp_path / "carl.png")
    _render_fails("no identity 'carl'")
    assert not os.path.exists(tmp_path / "carl.png")


def test_bodies_sharing_an_avatar_and_window_size_run_as_one_batch(addon, tmp_path):
    """Two bodies with the same avatar and window size: one network call for both, and the same
    picture as rendering each alone (BatchNorm in eval mode: no batch statistics)."""
    from neural_avatar.lab.scene_setup import add_default_body

    scene, arm = _scene(addon, res=64)
    scene.neural_avatar.mode = "VERTEX_PROJECTION"
    scene.neural_avatar.precision = "FP32"
    path = str(_tiny_bundle(tmp_path, "VERTEX_PROJECTION"))
    arm.neural_avatar.avatar = path
    arm2 = add_default_body()
    arm2.location = (arm.location[0] + 0.7, arm.location[1], arm.location[2])
    arm2.neural_avatar.avatar = path
    both = _render(scene, tmp_path / "both.png")
    assert state.LAST_ERROR == ""
    sizes = {n: c.res for n, c in final.LAST_CROPS.items()}
    if sizes[arm.name] == sizes[arm2.name]:
        assert sorted(map(sorted, final.LAST_BATCHES)) == [sorted([arm.name, arm2.name])], final.LAST_BATCHES
    else:  # different window sizes: one call each
        assert len(final.LAST_BATCHES) == 2
    # each body alone (the other hidden) gives the same pixels in its own window
    for keep, hide in ((arm, arm2), (arm2, arm)):
        for o in [hide] + list(hide.children):
            o.hide_render = True
        alone = _render(scene, tmp_path / f"alone_{keep.name}.png")
        for o in [hide] + list(hide.children):
            o.hide_render = False
        xa, ya, xb, yb = final.LAST_CROPS[keep.name].visible(64, 64)
        a, b = both[ya:yb, xa:xb].astype(int), alone[ya:yb, xa:xb].astype(int)
        assert len(final.LAST_BATCHES) == 1 and final.LAST_BATCHES[0] == [keep.name]
        assert np.median(np.abs(a - b)) <= 1


def test_no_camera_message(addon):
    from neural_avatar.engine import scene_io
    from neural_avatar.errors import NeuralAvatarError

    scene, _ = _scene(addon, res=32)
    scene.camera = None  # Blender itself refuses F12 without a camera; our reader says why too
    with pytest.raises(NeuralAvatarError, match="no camera"):
        scene_io.camera_frame(scene)


def test_body_model_mismatch_is_refused(addon, tmp_path):
    from neural_avatar import body

    path = body.write_synthetic_model(tmp_path, "smpl", "neutral")
    assert bpy.ops.neural_avatar.add_body(model="SMPL", filepath=str(path)) == {"FINISHED"}
    scene = bpy.context.scene
    from neural_avatar.lab.scene_setup import add_camera, setup_render

    add_camera(scene)
    setup_render(scene, res=32)
    _render_fails("train an avatar", write_still=False)  # no avatar set + non-default body
    arm = bpy.context.view_layer.objects.active
    arm.neural_avatar.avatar = str(_tiny_bundle(tmp_path, "VERTEX_PROJECTION"))
    _render_fails("body", write_still=False)


def test_cancel_stops_between_bodies(addon, tmp_path):
    scene, arm = _scene(addon, res=32)
    from neural_avatar.engine import scene_io

    cam = scene_io.camera_frame(scene)
    bodies = scene_io.body_frames(bpy.context.evaluated_depsgraph_get())
    with pytest.raises(CancelledError):
        final.run_bodies(bodies, cam, "VERTEX_PROJECTION", "cpu", "fp32", test_break=lambda: True)

    class FakeEngine:
        """Stands in for a RenderEngine whose user pressed Esc."""

        written = False

        def test_break(self):
            return True

        def begin_result(self, *a, **k):
            FakeEngine.written = True
            raise AssertionError("must not write after cancel")

        def update_stats(self, *a):
            pass

        def update_progress(self, *a):
            pass

        def error_set(self, msg):
            raise AssertionError("cancel is not an error")

        def report(self, *a):
            pass

    final.render_frame(FakeEngine(), bpy.context.evaluated_depsgraph_get())
    assert "cancelled" in state.LAST_ERROR.lower() and not FakeEngine.written


def test_body_frames_joints_are_in_model_order(addon):
    """Networks expect joints in the model's order; Blender iterates bones by hierarchy."""
    from neural_avatar import body
    from neural_avatar.engine import scene_io

    scene, arm = _scene(addon, res=32)
    bf = scene_io.body_frames(bpy.context.evaluated_depsgraph_get())[0]
    mw = arm.matrix_world
    expect = np.array([mw @ arm.pose.bones[n].head for n in body.SMPL_JOINT_NAMES], dtype=np.float32)
    np.testing.assert_allclose(bf.joints, expect, atol=1e-5)


@pytest.mark.parametrize("exc", [RecursionError("maximum recursion depth exceeded"), MemoryError(),
                                 np.linalg.LinAlgError("Singular matrix"),
                                 RuntimeError("DefaultCPUAllocator: can't allocate memory"),
                                 ValueError("anything else")], ids=lambda e: type(e).__name__)
def test_any_failure_is_an_error_and_writes_no_frame(addon, tmp_path, monkeypatch, exc):
    """Not only project errors: whatever escapes the pipeline is reported as an ERROR, so Blender
    saves no (black) frame and an animation stops."""
    scene, arm = _scene(addon, res=32)

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(final, "run_bodies", boom)
    scene.render.filepath = str(tmp_path / "still.png")
    expect = "out of memory" if isinstance(exc, MemoryError) else type(exc).__name__
    _render_fails(expect)
    assert not os.path.exists(tmp_path / "still.png")
    scene.frame_start, scene.frame_end = 1, 3
    scene.render.filepath = str(tmp_path / "anim" / "f_")
    with pytest.raises(RuntimeError):
        bpy.ops.render.render(animation=True)
    assert not (tmp_path / "anim").exists() or not os.listdir(tmp_path / "anim")
    assert len([e for e in state.ERRORS if expect in e]) >= 2


def test_cancelled_frame_is_not_saved(addon, tmp_path, monkeypatch):
    scene, arm = _scene(addon, res=32)
    real = final.run_bodies

    def cancel_midway(*a, **k):
        k["test_break"] = lambda: True
        return real(*a, **k)

    monkeypatch.setattr(final, "run_bodies", cancel_midway)
    scene.render.filepath = str(tmp_path / "c.png")
    _render_fails("cancelled")
    assert not os.path.exists(tmp_path / "c.png")


def test_huge_frame_is_refused_with_the_memory_it_needs(addon, tmp_path):
    scene, arm = _scene(addon, res=32)
    scene.render.resolution_x = scene.render.resolution_y = 16000
    scene.render.filepath = str(tmp_path / "huge.png")
    _render_fails("would need")
    assert "GB" in state.LAST_ERROR and not os.path.exists(tmp_path / "huge.png")


def test_each_body_is_rendered_in_its_window_and_outside_is_exactly_background(addon, tmp_path):
    scene, arm = _scene(addon, res=96)
    scene.camera.data.lens = 18.0  # a wide view: the body's window is a part of the frame
    scene.render.film_transparent = True
    scene.render.filepath = str(tmp_path / "w.png")
    state.clear_error()
    bpy.ops.render.render(write_still=True)
    assert state.LAST_ERROR == ""
    win = final.LAST_CROPS[arm.name]
    assert win is not None and win.res <= 128  # the shipped avatars were trained at 128²
    import cv2

    a = cv2.imread(str(tmp_path / "w.png"), cv2.IMREAD_UNCHANGED)[..., 3]  # row 0 = top, like the window
    xa, ya, xb, yb = win.visible(96, 96)
    outside = np.ones(a.shape, bool)
    outside[ya:yb, xa:xb] = False
    assert outside.any() and int(a[outside].max()) == 0
    assert int(a[ya:yb, xa:xb].max()) > 200  # the body is painted inside


def test_close_up_runs_at_the_trained_scale(addon, tmp_path):
    scene, arm = _scene(addon, res=160)
    cam = scene.camera
    cam.data.lens = 200.0  # the body is far larger than the avatar's training framing
    scene.render.filepath = str(tmp_path / "c.png")
    state.clear_error()
    bpy.ops.render.render(write_still=True)
    assert state.LAST_ERROR == ""
    win = final.LAST_CROPS[arm.name]
    from neural_avatar.engine.avatars import default_avatar_path
    from neural_avatar.neural.bundle import read_bundle_meta

    trained = read_bundle_meta(default_avatar_path(scene.neural_avatar.mode))["resolution"]
    assert win is not None and win.side > trained and win.res == trained


@pytest.mark.skipif(not _have_default_avatars(), reason="shipped avatars not present")
@pytest.mark.parametrize("mode", ["VERTEX_PROJECTION", "NEURAL_TEXTURE"])
def test_fully_convolutional_avatars_run_on_the_body_region_with_the_same_picture(addon, tmp_path, monkeypatch, mode):
    """SMPLpix and ANR run on the body's region of its window (about half of it for a standing
    body) on the window's downsampling grid: the frame matches the whole-window render to
    ≥ 45 dB PSNR (the bar for fast paths is 40 dB; the shipped SMPLpix on the subdivided topology
    gives 49.8 dB at 160², its per-vertex predecessor 50+: the region's edge is zero-padded where
    the window holds background, and the newer network reaches slightly farther)."""
    scene, arm = _scene(addon, res=160)
    scene.neural_avatar.mode = mode
    scene.neural_avatar.precision = "FP32"
    monkeypatch.setattr(final, "USE_REGIONS", False)
    whole = _render(scene, tmp_path / "whole.png").astype(np.float64) / 255.0
    r = final.LAST_CROPS[arm.name].res
    assert final.LAST_NETWORK_SIZES[arm.name] == (r, r)
    monkeypatch.setattr(final, "USE_REGIONS", True)
    region = _render(scene, tmp_path / "region.png").astype(np.float64) / 255.0
    h, w = final.LAST_NETWORK_SIZES[arm.name]
    assert h == r and w < r, (h, w, r)
    mse = float(((whole - region) ** 2).mean())
    psnr = 10 * np.log10(1.0 / max(mse, 1e-12))
    print(mode, "region", (h, w), "window", r, "PSNR", psnr)
    assert psnr >= 45.0, psnr
