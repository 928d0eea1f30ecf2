"""Body rigs in Blender equal smplx: evaluated mesh vertices and bone heads in world space
match smplx's vertices and joints (mapped model (x,y,z) → Blender (x,−z,y)) within 1e-4 m,
for random shapes and poses, including a synthetic model with non-zero pose correctives."""
import numpy as np
import pytest

pytestmark = pytest.mark.bpy

bpy = pytest.importorskip("bpy")
torch = pytest.importorskip("torch")

from neural_avatar import body  # noqa: E402
from neural_avatar.blender import rig  # noqa: E402

TO_BLENDER = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64)


def _evaluated(arm):
    dg = bpy.context.evaluated_depsgraph_get()
    mesh_obj = rig.body_mesh(arm)
    ev = mesh_obj.evaluated_get(dg)
    me = ev.to_mesh()
    co = np.empty(len(me.vertices) * 3)
    me.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    mw = np.array(ev.matrix_world)
    verts = co.reshape(-1, 3) @ mw[:3, :3].T + mw[:3, 3]
    arm_ev = arm.evaluated_get(dg)
    aw = np.array(arm_ev.matrix_world)
    heads = np.array([arm_ev.pose.bones[n].head for n in rig.model_for(arm).joint_names])
    return verts, heads @ aw[:3, :3].T + aw[:3, 3]


def _smplx(model, betas, pose):
    m = body.make_smplx_model(model, num_betas=model.num_betas)
    J = model.num_joints
    kw = dict(betas=torch.tensor(betas[None]), global_orient=torch.tensor(pose[None, 0]),
              body_pose=torch.tensor(pose[None, 1:22].reshape(1, -1)))
    if model.model_type in ("smpl", "default"):
        kw["body_pose"] = torch.tensor(pose[None, 1:].reshape(1, -1))
    elif model.model_type == "smplh":
        kw["left_hand_pose"] = torch.tensor(pose[None, 22:37].reshape(1, -1))
        kw["right_hand_pose"] = torch.tensor(pose[None, 37:52].reshape(1, -1))
    elif model.model_type == "smplx":
        kw["jaw_pose"] = torch.tensor(pose[None, 22])
        kw["leye_pose"] = torch.tensor(pose[None, 23])
        kw["reye_pose"] = torch.tensor(pose[None, 24])
        kw["left_hand_pose"] = torch.tensor(pose[None, 25:40].reshape(1, -1))
        kw["right_hand_pose"] = torch.tensor(pose[None, 40:55].reshape(1, -1))
    out = m(**kw, return_verts=True)
    return out.vertices[0].detach().numpy(), out.joints[0, :J].detach().numpy()


def _pose_rig(arm, names, pose):
    for name, v in zip(names, pose):
        pb = arm.pose.bones[name]
        pb.rotation_mode = "QUATERNION"
        ang = float(np.linalg.norm(v))
        axis = v / ang if ang > 1e-12 else np.array([1.0, 0, 0])
        pb.rotation_quaternion = (np.cos(ang / 2), *(np.sin(ang / 2) * axis))


def _check(arm, model, rng, n_trials=2, pose_scale=0.4):
    for _ in range(n_trials):
        betas = rng.normal(0, 1.0, model.num_betas)
        pose = rng.normal(0, pose_scale, (model.num_joints, 3))
        arm.neural_avatar.betas = list(betas[: len(arm.neural_avatar.betas)]) + [0.0] * max(
            0, len(arm.neural_avatar.betas) - model.num_betas)
        _pose_rig(arm, model.joint_names, pose)
        rig.update_correctives(arm)
        bpy.context.view_layer.update()
        verts, heads = _evaluated(arm)
        v_ref, j_ref = _smplx(model, betas[: min(model.num_betas, 32)], pose)
        np.testing.assert_allclose(verts, v_ref @ TO_BLENDER.T, atol=1e-4)
        np.testing.assert_allclose(heads, j_ref @ TO_BLENDER.T, atol=1e-4)


def test_default_body_rig_layout(addon):
    assert bpy.ops.neural_avatar.add_body(model="DEFAULT") == {"FINISHED"}
    arm = bpy.context.view_layer.objects.active
    model = body.load_default()
    assert arm.type == "ARMATURE" and arm.neural_avatar.is_body
    assert sorted(b.name for b in arm.data.bones) == sorted(body.SMPL_JOINT_NAMES)
    for name, p in zip(body.SMPL_JOINT_NAMES, body.SMPL_PARENTS):
        b = arm.data.bones[name]
        assert (b.parent.name if b.parent else None) == (body.SMPL_JOINT_NAMES[p] if p >= 0 else None)
        # local frame == model frame: bone matrix (rest, armature space) is identity rotation
        np.testing.assert_allclose(np.array(b.matrix_local)[:3, :3], np.eye(3), atol=1e-6)
    mesh_obj = rig.body_mesh(arm)
    me = mesh_obj.data
    assert len(me.vertices) == model.num_verts and len(me.polygons) == len(model.faces)
    assert {g.name for g in mesh_obj.vertex_groups} == set(body.SMPL_JOINT_NAMES)
    assert mesh_obj.modifiers[0].type == "ARMATURE" and mesh_obj.modifiers[0].object == arm
    assert "UVMap" in me.uv_layers and rig.COLOR_ATTR in me.color_attributes
    assert arm.neural_avatar.num_betas == min(model.num_betas, 32) >= 10
    # stands Z-up: the head is above the pelvis in Blender's Z
    _, heads = _evaluated(arm)
    assert heads[15, 2] - heads[0, 2] > 0.4


def test_default_body_matches_smplx_random_shapes_and_poses(addon):
    bpy.ops.neural_avatar.add_body(model="DEFAULT")
    arm = bpy.context.view_layer.objects.active
    _check(arm, body.load_default(), np.random.default_rng(0))


@pytest.mark.parametrize("model_type,enum", [("smpl", "SMPL"), ("smplh", "SMPLH"), ("smplx", "SMPLX")])
def test_synthetic_models_with_correctives_match_smplx(addon, tmp_path, model_type, enum):
    # smplx's SMPL-X class reads a file and picks its extra keypoints by SMPL-X vertex ids,
    # so the SMPL-X stand-in needs a mesh at least that large (as in tests/body).
    n = 10000 if model_type == "smplx" else 300
    path = body.write_synthetic_model(tmp_path, model_type, "female", num_verts=n)
    r = bpy.ops.neural_avatar.add_body(model=enum, gender="FEMALE", filepath=str(path))
    assert r == {"FINISHED"}
    arm = bpy.context.view_layer.objects.active
    model = rig.model_for(arm)
    assert model.has_posedirs and len(arm.data.bones) == model.num_joints
    _check(arm, model, np.random.default_rng(1), n_trials=2, pose_scale=0.3)
    assert rig.STATS["correctives_ms"], "pose correctives were never applied"


def test_shape_sliders_move_joints_live(addon):
    bpy.ops.neural_avatar.add_body(model="DEFAULT")
    arm = bpy.context.view_layer.objects.active
    heads = lambda: np.array([arm.data.bones[n].head_local for n in body.SMPL_JOINT_NAMES])  # noqa: E731
    before = heads()
    arm.neural_avatar.betas[0] = 2.0
    after = heads()
    assert np.abs(after - before).max() > 1e-3, "joints did not follow the shape slider"
    _, j_ref = body.shape(body.load_default(), np.eye(body.load_default().num_betas)[0] * 2.0)
    np.testing.assert_allclose(after, j_ref, atol=1e-5)
    assert bpy.ops.neural_avatar.reset_shape() == {"FINISHED"}
    np.testing.assert_allclose(heads(), before, atol=1e-6)
    assert bpy.ops.neural_avatar.randomize_shape(seed=3) == {"FINISHED"}
    assert np.abs(np.array(arm.neural_avatar.betas[:10])).max() > 0


def test_missing_model_folder_is_a_clear_error_and_changes_nothing(addon, tmp_path):
    n_before = len(bpy.data.objects)
    with pytest.raises(RuntimeError) as e:  # operators that report ERROR raise in background mode
        bpy.ops.neural_avatar.add_body(model="SMPLX", filepath=str(tmp_path / "nope.npz"))
    assert "not" in str(e.value).lower() and "nope.npz" in str(e.value)
    assert len(bpy.data.objects) == n_before


def test_bad_model_file_is_a_clear_error(addon, tmp_path):
    bad = tmp_path / "smpl" / "SMPL_NEUTRAL.npz"
    bad.parent.mkdir()
    np.savez(bad, v_template=np.zeros((10, 3)))
    n_before = len(bpy.data.objects)
    with pytest.raises(RuntimeError) as e:
        bpy.ops.neural_avatar.add_body(model="SMPL", filepath=str(bad))
    assert "missing" in str(e.value).lower() or "key" in str(e.value).lower()
    assert len(bpy.data.objects) == n_before
