"""AMASS import onto a body rig: exact joints vs smplx, resampling by time, both fps key
spellings, bytes gender, one action per file, clear errors with nothing left behind."""
import numpy as np
import pytest

pytestmark = pytest.mark.bpy

bpy = pytest.importorskip("bpy")
torch = pytest.importorskip("torch")

from neural_avatar import body  # noqa: E402
from neural_avatar.blender import rig  # noqa: E402


def _write_smplh(path, n, fps, seed=0, gender=b"female", fps_key="mocap_framerate"):
    rng = np.random.default_rng(seed)
    poses = rng.normal(0, 0.3, (n, 156))
    poses[:, :3] = np.array([np.pi / 2, 0, 0]) + rng.normal(0, 0.1, (n, 3))  # stand up (Y-up → Z-up)
    trans = np.cumsum(rng.normal(0, 0.01, (n, 3)), axis=0) + np.array([0.2, -0.1, 0.95])
    np.savez(path, poses=poses, trans=trans, betas=np.zeros(16), dmpls=np.zeros((n, 8)), gender=np.array(gender),
             **{fps_key: np.array(fps)})
    return poses, trans


def _add_body():
    assert bpy.ops.neural_avatar.add_body(model="DEFAULT") == {"FINISHED"}
    return bpy.context.view_layer.objects.active


def _joints_world(arm):
    dg = bpy.context.evaluated_depsgraph_get()
    ev = arm.evaluated_get(dg)
    aw = np.array(ev.matrix_world)
    heads = np.array([ev.pose.bones[n].head for n in body.SMPL_JOINT_NAMES])
    return heads @ aw[:3, :3].T + aw[:3, 3]


def _smplx_joints(pose72, trans):
    model = body.load_default()
    m = body.make_smplx_model(model)
    out = m(global_orient=torch.tensor(pose72[None, :3]), body_pose=torch.tensor(pose72[None, 3:]),
            transl=torch.tensor(trans[None]), betas=torch.zeros(1, model.num_betas, dtype=torch.float64))
    return out.joints[0, :24].detach().numpy()


def test_exact_joints_and_120_to_30(addon, tmp_path):
    path = tmp_path / "sample_poses.npz"
    poses, trans = _write_smplh(path, 13, 120.0)
    arm = _add_body()
    scene = bpy.context.scene
    scene.frame_start = 5
    r = bpy.ops.neural_avatar.import_motion(filepath=str(path), target_fps=30.0)
    assert r == {"FINISHED"}
    assert scene.render.fps / scene.render.fps_base == pytest.approx(30.0)
    assert scene.frame_end - scene.frame_start + 1 == 4  # round(12/120*30) + 1
    assert arm.animation_data.action.name == "sample_poses"
    for k in range(4):
        scene.frame_set(scene.frame_start + k)
        src = 4 * k
        pose72 = np.concatenate([poses[src, :66], np.zeros(6)])  # SMPL hands at rest for SMPL-H files
        np.testing.assert_allclose(_joints_world(arm), _smplx_joints(pose72, trans[src]), atol=1e-4)
        # pelvis world position = trans + J_pelvis (smplx rotates about the root joint)
        J0 = body.shape(body.load_default())[1][0]
        np.testing.assert_allclose(_joints_world(arm)[0], trans[src] + J0, atol=1e-4)


def test_50_to_30_preserves_duration_and_mocap_frame_rate_spelling(addon, tmp_path):
    path = tmp_path / "fifty_stageii.npz"
    rng = np.random.default_rng(1)
    n = 51  # 1 s at 50 fps
    np.savez(path, poses=rng.normal(0, 0.2, (n, 165)), trans=np.zeros((n, 3)), gender=np.array("neutral"),
             mocap_frame_rate=np.array(50.0), surface_model_type=np.array("smplx"))
    _add_body()
    assert bpy.ops.neural_avatar.import_motion(filepath=str(path), target_fps=30.0) == {"FINISHED"}
    s = bpy.context.scene
    assert s.frame_end - s.frame_start + 1 == 31


def test_quaternions_continuous(addon, tmp_path):
    path = tmp_path / "spin_poses.npz"
    n = 40
    poses = np.zeros((n, 156))
    poses[:, 2] = np.linspace(0, 4 * np.pi, n)  # root spins twice: raw quaternions would flip sign
    np.savez(path, poses=poses, trans=np.zeros((n, 3)), mocap_framerate=np.array(30.0), gender=np.array("male"))
    arm = _add_body()
    bpy.ops.neural_avatar.import_motion(filepath=str(path))
    from bpy_extras import anim_utils

    act = arm.animation_data.action
    bag = anim_utils.action_get_channelbag_for_slot(act, arm.animation_data.action_slot) if hasattr(act, "slots") else act
    curves = [fc for fc in bag.fcurves if fc.data_path == 'pose.bones["pelvis"].rotation_quaternion']
    q = np.stack([[kp.co[1] for kp in fc.keyframe_points] for fc in sorted(curves, key=lambda c: c.array_index)], 1)
    assert (np.sum(q[1:] * q[:-1], axis=1) >= 0).all()


def test_several_files_one_action_each(addon, tmp_path):
    paths = []
    for i in range(2):
        p = tmp_path / f"clip{i}_poses.npz"
        _write_smplh(p, 10, 30.0, seed=i)
        paths.append(p)
    _add_body()
    r = bpy.ops.neural_avatar.import_motion(directory=str(tmp_path), files=[{"name": p.name} for p in paths])
    assert r == {"FINISHED"}
    assert {"clip0_poses", "clip1_poses"} <= set(bpy.data.actions.keys())


@pytest.mark.parametrize("bad", ["no_fps", "wide", "nan", "zero", "pickle"])
def test_bad_files_report_and_leave_nothing(addon, tmp_path, bad):
    path = tmp_path / f"{bad}_poses.npz"
    n = 5
    kw = dict(poses=np.zeros((n, 156)), trans=np.zeros((n, 3)), mocap_framerate=np.array(30.0))
    if bad == "no_fps":
        del kw["mocap_framerate"]
    elif bad == "wide":
        kw["poses"] = np.zeros((n, 157))
    elif bad == "nan":
        kw["poses"][2, 5] = np.nan
    elif bad == "zero":
        kw["poses"], kw["trans"] = np.zeros((0, 156)), np.zeros((0, 3))
    elif bad == "pickle":
        kw["gender"] = np.array([{"evil": 1}], dtype=object)
    np.savez(path, **kw)
    arm = _add_body()
    n_actions = len(bpy.data.actions)
    with pytest.raises(RuntimeError) as e:
        bpy.ops.neural_avatar.import_motion(filepath=str(path))
    assert path.name in str(e.value) or "motion" in str(e.value).lower()
    assert len(bpy.data.actions) == n_actions and arm.animation_data is None


def test_non_body_selected(addon, tmp_path):
    path = tmp_path / "ok_poses.npz"
    _write_smplh(path, 5, 30.0)
    empty = bpy.data.objects.new("Empty", None)
    bpy.context.scene.collection.objects.link(empty)
    bpy.context.view_layer.objects.active = empty
    with pytest.raises(RuntimeError, match="Select a Neural Avatar body"):
        bpy.ops.neural_avatar.import_motion(filepath=str(path))
    assert len(bpy.data.actions) == 0
