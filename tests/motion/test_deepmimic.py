"""DeepMimic → SMPL conversion (pure; pybullet is not needed: synthetic clips and sources)."""

import json
import tarfile
import zipfile

import numpy as np
import pytest

from neural_avatar.errors import MotionFileError
from neural_avatar.motion import (
    SMPL_JOINT_NAMES,
    bundled_motion_paths,
    load_motion,
    quat_from_axis_angle,
)
from neural_avatar.cli.build_data import motions_main
from neural_avatar.motion import deepmimic as dmc
from neural_avatar.motion.resample import quat_to_matrix

RNG = np.random.default_rng(3)
IDX = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}
DM_TO_SMPL = {"root": "pelvis", "chest": "spine3", "neck": "neck"}
for _s in ("left", "right"):
    for _k in ("hip", "knee", "ankle", "shoulder", "elbow", "wrist"):
        DM_TO_SMPL[f"{_s}_{_k}"] = f"{_s}_{_k}"


def _random_frames(n=12, dt=1 / 30):
    f = np.zeros((n, 44))
    f[:, 0] = dt
    f[-1, 0] = 0.0
    f[:, 1:4] = RNG.normal(scale=0.3, size=(n, 3)) + [0, 0.85, 0]
    for sl in (slice(4, 8), slice(8, 12), slice(12, 16), slice(16, 20), slice(21, 25),
               slice(25, 29), slice(30, 34), slice(35, 39), slice(39, 43)):
        q = RNG.normal(size=(n, 4))
        f[:, sl] = q / np.linalg.norm(q, axis=1, keepdims=True)
    f[:, [20, 34]] = RNG.uniform(-3.0, 0.0, size=(n, 2))  # knees
    f[:, [29, 43]] = RNG.uniform(0.0, 3.0, size=(n, 2))  # elbows
    return f


def _rest_frame(n=1):
    f = np.zeros((n, 44))
    f[:, 2] = dmc.DM_HIP_HEIGHT
    for c in (4, 8, 12, 16, 21, 25, 30, 35, 39):
        f[:, c] = 1.0
    return f


def test_fk_matches_deepmimic_exactly_on_its_own_skeleton():
    frames = _random_frames()
    rest, ref = dmc.deepmimic_rest_joints()
    m = dmc.convert_frames(frames, ref)
    pos = dmc.smpl_joint_positions(m.pose_aa(24), m.trans, rest)
    dm = dmc.deepmimic_joint_positions(frames, ref)
    for dm_name, smpl_name in DM_TO_SMPL.items():
        np.testing.assert_allclose(pos[:, IDX[smpl_name]], dm[dm_name], atol=1e-12,
                                   err_msg=dm_name)


def test_fk_matches_on_reference_skeleton_with_pelvis_above_hips():
    frames = _random_frames()
    ref = dmc.SMPL_REFERENCE
    m = dmc.convert_frames(frames, ref)
    pos = dmc.smpl_joint_positions(m.pose_aa(24), m.trans, dmc.reference_skeleton(ref))
    dm = dmc.deepmimic_joint_positions(frames, ref)
    for dm_name, smpl_name in DM_TO_SMPL.items():
        if dm_name == "root":
            continue
        np.testing.assert_allclose(pos[:, IDX[smpl_name]], dm[dm_name], atol=1e-12,
                                   err_msg=dm_name)
    # smplx's convention: pelvis world = rest pelvis + trans.
    np.testing.assert_allclose(pos[:, 0], np.asarray(ref.pelvis) + m.trans, atol=1e-15)


def test_rest_frame_is_standing_arms_down_facing_x_on_the_floor():
    m = dmc.convert_frames(_rest_frame())
    aa = m.pose_aa(24)[0]
    # Root: model Y-up/Z-forward → world Z-up/X-forward.
    R = quat_to_matrix(quat_from_axis_angle(aa[0]))
    np.testing.assert_allclose(R @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(R @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    # Shoulders bring SMPL's T-pose arms down: left −90° about z, right +90°.
    np.testing.assert_allclose(aa[IDX["left_shoulder"]], [0, 0, -np.pi / 2], atol=1e-12)
    np.testing.assert_allclose(aa[IDX["right_shoulder"]], [0, 0, np.pi / 2], atol=1e-12)
    others = [i for i in range(1, 24) if "shoulder" not in SMPL_JOINT_NAMES[i]]
    np.testing.assert_allclose(aa[others], 0.0, atol=1e-12)
    ref = dmc.SMPL_REFERENCE
    pos = dmc.smpl_joint_positions(m.pose_aa(24), m.trans, dmc.reference_skeleton(ref))[0]
    # Pelvis at the reference's standing height, wrists below the shoulders.
    assert pos[0, 2] == pytest.approx(ref.pelvis[1] - ref.sole_y, abs=1e-12)
    for side in ("left", "right"):
        assert pos[IDX[f"{side}_wrist"], 2] < pos[IDX[f"{side}_elbow"], 2] < \
            pos[IDX[f"{side}_shoulder"], 2]
    assert pos[IDX["left_hip"], 1] > pos[IDX["right_hip"], 1]  # facing +x: left is +y


def test_revolute_joints_bend_the_right_way():
    f = _rest_frame()
    f[0, 20] = f[0, 34] = -1.0  # knees (DeepMimic limits: [-3.14, 0])
    f[0, 29] = f[0, 43] = 1.0  # elbows ([0, 3.14])
    m = dmc.convert_frames(f)
    pos = dmc.smpl_joint_positions(m.pose_aa(24), m.trans, dmc.reference_skeleton())[0]
    for side in ("left", "right"):
        # Shin goes backwards (−x, the body faces +x), forearm forwards.
        assert pos[IDX[f"{side}_ankle"], 0] < pos[IDX[f"{side}_knee"], 0] - 0.1
        assert pos[IDX[f"{side}_wrist"], 0] > pos[IDX[f"{side}_elbow"], 0] + 0.1
    np.testing.assert_allclose(m.body_pose[0, IDX["left_knee"] - 1], [1.0, 0, 0], atol=1e-12)


def test_clip_rate_and_nonuniform_resampling():
    f = _random_frames(10, 0.033332)
    assert dmc.clip_rate(f) == (30.0, True)
    f2 = _random_frames(10, 0.0625)
    assert dmc.clip_rate(f2) == (16.0, True)
    g = _random_frames(9, 1 / 60)
    g[3, 0] = 2 / 60  # one frame lasts twice as long
    fps, uniform = dmc.clip_rate(g)
    assert fps == 60.0 and not uniform
    m = dmc.convert_clip(g)
    t = dmc.frame_times(g)
    assert m.num_frames == round(t[-1] * 60) + 1 == 10
    # Frames before the long one are copied; after it, times shift by one frame.
    direct = dmc.convert_frames(g)
    np.testing.assert_array_equal(m.trans[:4], direct.trans[:4])
    np.testing.assert_allclose(m.trans[5], direct.trans[4], atol=1e-12)
    np.testing.assert_allclose(m.trans[4], 0.5 * (direct.trans[3] + direct.trans[4]), atol=1e-12)


def test_read_clip_errors():
    with pytest.raises(MotionFileError):
        dmc.read_clip("not json")
    with pytest.raises(MotionFileError):
        dmc.read_clip(json.dumps({"Frames": [[1, 2, 3]]}))
    with pytest.raises(MotionFileError):
        dmc.read_clip(json.dumps({"Loop": "wrap"}))
    bad = _random_frames(3).tolist()
    bad[1][5] = float("nan")
    with pytest.raises(MotionFileError):
        dmc.read_clip(json.dumps({"Frames": bad}))


def _fake_urdf(change=None):
    joints = []
    for name, (parent, xyz) in dmc.DM_OFFSETS.items():
        if name == change:
            xyz = (xyz[0], xyz[1] + 0.5, xyz[2])
        joints.append(f'<joint name="{name}" type="spherical"><parent link="{parent}"/>'
                      f'<child link="{name}"/><origin rpy="0 0 0" xyz="{xyz[0]} {xyz[1]} '
                      f'{xyz[2]}"/></joint>')
    return ('<robot name="dumpUrdf">' + "".join(joints) + "</robot>\r\n\x00").encode()


def _fake_source(tmp_path, kind, urdf_change=None):
    files = {
        "pybullet_data/humanoid/humanoid.urdf": _fake_urdf(urdf_change),
        "pybullet_data/data/motions/humanoid3d_walk.txt": json.dumps(
            {"Loop": "wrap", "Frames": _random_frames(8).tolist()}).encode(),
        "pybullet_data/data/motions/humanoid3d_run.txt": json.dumps(
            {"Loop": "wrap", "Frames": _random_frames(5, 1 / 60).tolist()}).encode(),
    }
    if kind == "dir":
        root = tmp_path / "site"
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        return root / "pybullet_data"
    if kind == "zip":
        p = tmp_path / "pybullet-3.2.7-cp311.whl"
        with zipfile.ZipFile(p, "w") as z:
            for name, data in files.items():
                z.writestr(name, data)
        return p
    p = tmp_path / "pybullet-3.2.7.tar.gz"
    stage = tmp_path / "stage" / "pybullet-3.2.7" / "examples" / "pybullet" / "gym"
    for name, data in files.items():
        (stage / name).parent.mkdir(parents=True, exist_ok=True)
        (stage / name).write_bytes(data)
    with tarfile.open(p, "w:gz") as t:
        t.add(tmp_path / "stage" / "pybullet-3.2.7", arcname="pybullet-3.2.7")
    return p


@pytest.mark.parametrize("kind", ["dir", "zip", "tar"])
def test_main_builds_loadable_amass_files(tmp_path, kind, capsys):
    src = _fake_source(tmp_path, kind)
    out = tmp_path / "out"
    rc = motions_main(["--source", str(src), "--out", str(out), "--clips", "walk", "run",
                   "--smpl-landmarks"])
    assert rc == 0, capsys.readouterr().err
    walk = load_motion(out / "walk_poses.npz")
    run = load_motion(out / "run_poses.npz")
    assert walk.source_type == "smplh" and walk.num_frames == 8 and walk.fps == 30.0
    assert run.fps == 60.0 and run.num_frames == 5 and walk.gender == "neutral"
    with np.load(out / "walk_poses.npz", allow_pickle=False) as z:
        assert z["poses"].shape == (8, 156) and z["betas"].shape == (16,)
        assert "mocap_framerate" in z.files and z["dmpls"].shape == (8, 8)


def test_main_refuses_other_humanoid_and_missing_clip(tmp_path, capsys):
    src = _fake_source(tmp_path, "dir", urdf_change="left_knee")
    assert motions_main(["--source", str(src), "--out", str(tmp_path / "o"),
                     "--smpl-landmarks"]) == 1
    assert "left_knee" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    src2 = _fake_source(tmp_path / "b", "zip")
    assert motions_main(["--source", str(src2), "--out", str(tmp_path / "o"), "--clips",
                     "backflip", "--smpl-landmarks"]) == 1
    assert "backflip" in capsys.readouterr().err


# ---------------------------------------------------------------- bundled clips


def _bundled_reference():
    """The clips are fitted to the default body (``build-motions``' default)."""
    body_ref = dmc._load_reference_body()
    if body_ref is None:
        pytest.skip("the default body (data/bodies/neutral.npz) is not available")
    return body_ref[2]


def test_bundled_clips_load_with_sane_ranges():
    paths = bundled_motion_paths()
    names = {p.name for p in paths}
    assert {"walk_poses.npz", "run_poses.npz", "jump_poses.npz", "dance_a_poses.npz"} <= names
    ref = _bundled_reference()
    skel = dmc.reference_skeleton(ref)
    s = ref.hip_height / dmc.DM_HIP_HEIGHT
    for p in paths:
        m = load_motion(p)
        assert m.source_type == "smplh" and m.fps in (30.0, 60.0)
        assert 0.5 < m.duration < 10.0 and m.num_frames >= 20
        assert np.all(np.linalg.norm(m.pose_aa(52), axis=-1) <= np.pi + 1e-9)
        np.testing.assert_array_equal(m.hand_pose, 0.0)
        pos = dmc.smpl_joint_positions(m.pose_aa(24), m.trans, skel)
        lower = pos[:, [IDX["left_ankle"], IDX["right_ankle"]], 2].min(axis=1)
        # The lower ankle sits about a sole's depth (5 cm · s) above the floor in a typical
        # frame; the source's run clip dips 7 mm below in one frame (kept, not "fixed").
        assert 0.6 * 0.05 * s < np.median(lower) < 2.0 * 0.05 * s, (p.name, np.median(lower))
        assert lower.min() > -0.02, (p.name, lower.min())
        head = pos[:, IDX["head"], 2]
        assert np.all(head > 0.8) and np.all(head < 2.6), p.name
        # Upright on average: head above pelvis.
        assert np.mean(head - pos[:, 0, 2]) > 0.2


def test_bundled_walk_moves_forward_with_arms_down():
    ref = _bundled_reference()
    m = load_motion(next(p for p in bundled_motion_paths() if p.name == "walk_poses.npz"))
    pos = dmc.smpl_joint_positions(m.pose_aa(24), m.trans, dmc.reference_skeleton(ref))
    speed = (pos[-1, 0, 0] - pos[0, 0, 0]) / m.duration
    assert 0.6 < speed < 2.0  # m/s, along +x
    assert np.all(pos[:, IDX["left_wrist"], 2] < pos[:, IDX["left_shoulder"], 2] - 0.2)
    assert np.all(pos[:, IDX["right_wrist"], 2] < pos[:, IDX["right_shoulder"], 2] - 0.2)
    standing = ref.pelvis[1] - ref.sole_y
    assert np.all(np.abs(pos[:, 0, 2] - standing) < 0.1)


def test_fk_matches_smplx_convention():
    """Our joint FK (used for every check above) equals smplx's (root about the rest
    pelvis, then ``transl``), on a tiny synthetic SMPL whose vertices are its joints."""
    torch = pytest.importorskip("torch")
    smplx = pytest.importorskip("smplx")
    from smplx.utils import Struct
    from smplx.vertex_ids import vertex_ids

    J = dmc.reference_skeleton()
    data = dict(v_template=J.copy(), shapedirs=np.zeros((24, 3, 10)),
                posedirs=np.zeros((24, 3, 207)), J_regressor=np.eye(24), weights=np.eye(24),
                kintree_table=np.array([[4294967295] + list(dmc.SMPL_PARENTS[1:]),
                                        list(range(24))]),
                f=np.array([[0, 1, 2]]))
    model = smplx.SMPL(model_path="", data_struct=Struct(**data), create_transl=False,
                       vertex_ids={k: 0 for k in vertex_ids["smplh"]}, dtype=torch.float64)
    m = dmc.convert_frames(_random_frames(6))
    pose = m.pose_aa(24)
    out = model(global_orient=torch.tensor(pose[:, 0]),
                body_pose=torch.tensor(pose[:, 1:].reshape(6, -1)),
                transl=torch.tensor(m.trans), betas=torch.zeros(6, 10, dtype=torch.float64))
    got = out.joints[:, :24].detach().numpy()
    # smplx's Rodrigues adds 1e-8 to the angle, hence the tolerance.
    np.testing.assert_allclose(dmc.smpl_joint_positions(pose, m.trans, J), got, atol=1e-6)
