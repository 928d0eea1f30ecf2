"""Loading and writing AMASS / SMPL motion files (pure; tiny arrays)."""

import zipfile

import numpy as np
import pytest

from neural_avatar.errors import MotionFileError
from neural_avatar.motion import (
    SMPL_JOINT_NAMES,
    SMPLH_JOINT_NAMES,
    SMPLX_JOINT_NAMES,
    joint_names_for,
    load_motion,
    save_amass_smplh,
)

RNG = np.random.default_rng(0)
N = 7


def _poses(width, n=N):
    return RNG.normal(scale=0.3, size=(n, width))


def _trans(n=N):
    return RNG.normal(size=(n, 3))


def _write(tmp_path, name="clip_poses.npz", **arrays):
    p = tmp_path / name
    np.savez(p, **arrays)
    return p


# ---------------------------------------------------------------- layouts


def test_smplh_layout_with_str_gender_and_framerate_spelling(tmp_path):
    poses, trans = _poses(156), _trans()
    betas = RNG.normal(size=16)
    p = _write(tmp_path, poses=poses, trans=trans, betas=betas, dmpls=np.zeros((N, 8)),
               gender="female", mocap_framerate=np.array(120.00004577636719))
    m = load_motion(p)
    assert m.source_type == "smplh"
    assert m.name == "clip_poses"
    assert m.gender == "female"
    assert m.fps == pytest.approx(120.00004577636719, abs=0)
    np.testing.assert_array_equal(m.root_orient, poses[:, :3])
    np.testing.assert_array_equal(m.body_pose.reshape(N, 63), poses[:, 3:66])
    np.testing.assert_array_equal(m.hand_pose.reshape(N, 90), poses[:, 66:])
    np.testing.assert_array_equal(m.trans, trans)
    np.testing.assert_array_equal(m.betas, betas)
    assert m.jaw_pose is None and m.eye_pose is None and m.smpl_hand_pose is None
    assert m.duration == pytest.approx((N - 1) / 120.00004577636719)
    # 52-joint pose is the file's poses exactly; 24-joint SMPL keeps hands at rest.
    np.testing.assert_array_equal(m.pose_aa(52).reshape(N, 156), poses)
    p24 = m.pose_aa(24)
    np.testing.assert_array_equal(p24[:, :22].reshape(N, 66), poses[:, :66])
    np.testing.assert_array_equal(p24[:, 22:], 0.0)


def test_smplx_full_poses_with_bytes_gender_and_other_fps_spelling(tmp_path):
    poses, trans = _poses(165), _trans()
    p = _write(tmp_path, "x_stageii.npz", poses=poses, trans=trans, gender=np.bytes_(b"male"),
               mocap_frame_rate=np.array(59.94))
    m = load_motion(p)
    assert m.source_type == "smplx"
    assert m.gender == "male"  # decoded, not "b'male'"
    assert m.fps == 59.94
    assert m.name == "x_stageii"
    np.testing.assert_array_equal(m.jaw_pose, poses[:, 66:69])
    np.testing.assert_array_equal(m.eye_pose.reshape(N, 6), poses[:, 69:75])
    np.testing.assert_array_equal(m.hand_pose.reshape(N, 90), poses[:, 75:])
    np.testing.assert_array_equal(m.pose_aa(55).reshape(N, 165), poses)
    # SMPL-H rig: root, body, then the same 30 finger joints.
    p52 = m.pose_aa(52)
    np.testing.assert_array_equal(p52[:, :22].reshape(N, 66), poses[:, :66])
    np.testing.assert_array_equal(p52[:, 22:].reshape(N, 90), poses[:, 75:])


def test_smplx_split_keys(tmp_path):
    root, body, hand = _poses(3), _poses(63), _poses(90)
    jaw, eye, trans = _poses(3), _poses(6), _trans()
    p = _write(tmp_path, "s_stageii.npz", root_orient=root, pose_body=body, pose_hand=hand,
               pose_jaw=jaw, pose_eye=eye, trans=trans, gender="neutral",
               surface_model_type="smplx", mocap_frame_rate=np.array(60.0))
    m = load_motion(p)
    assert m.source_type == "smplx"
    full = np.concatenate([root, body, jaw, eye, hand], axis=1)
    np.testing.assert_array_equal(m.pose_aa(55).reshape(N, 165), full)


def test_split_keys_body_only_has_rest_hands(tmp_path):
    root, body = _poses(3), _poses(63)
    p = _write(tmp_path, root_orient=root, pose_body=body, trans=_trans(),
               mocap_frame_rate=np.array(30.0))
    m = load_motion(p)
    assert m.source_type == "smplh" and m.hand_pose is None and m.gender is None
    np.testing.assert_array_equal(m.pose_aa(52)[:, 22:], 0.0)


def test_plain_smpl_keeps_its_hand_joints(tmp_path):
    poses = _poses(72)
    p = _write(tmp_path, poses=poses, trans=_trans(), mocap_framerate=np.array(30.0))
    m = load_motion(p)
    assert m.source_type == "smpl" and m.hand_pose is None
    np.testing.assert_array_equal(m.pose_aa(24).reshape(N, 72), poses)
    # On an SMPL-H rig the fingers stay at rest (SMPL's one-bone hand has no finger map).
    np.testing.assert_array_equal(m.pose_aa(52)[:, 22:], 0.0)


def test_int_arrays_and_2d_betas_are_accepted(tmp_path):
    p = _write(tmp_path, poses=np.zeros((N, 156), np.int32), trans=np.ones((N, 3), np.int64),
               betas=np.tile(np.arange(10.0), (N, 1)), mocap_framerate=np.array(30, np.int16))
    m = load_motion(p)
    assert m.root_orient.dtype == np.float64 and m.fps == 30.0
    np.testing.assert_array_equal(m.betas, np.arange(10.0))


def test_joint_names_follow_smplx():
    smplx_names = pytest.importorskip("smplx.joint_names")
    assert list(SMPLX_JOINT_NAMES) == smplx_names.JOINT_NAMES[:55]
    assert list(SMPLH_JOINT_NAMES) == smplx_names.SMPLH_JOINT_NAMES[:52]
    assert list(SMPL_JOINT_NAMES[:22]) == smplx_names.JOINT_NAMES[:22]
    assert SMPL_JOINT_NAMES[22:] == ("left_hand", "right_hand")
    assert joint_names_for("smplh") == SMPLH_JOINT_NAMES
    assert joint_names_for(55) == SMPLX_JOINT_NAMES
    assert len(joint_names_for(24)) == 24
    with pytest.raises(MotionFileError):
        joint_names_for(30)
    with pytest.raises(MotionFileError):
        joint_names_for("mano")


def test_pose_aa_rejects_unknown_rig(tmp_path):
    p = _write(tmp_path, poses=_poses(156), trans=_trans(), mocap_framerate=np.array(30.0))
    with pytest.raises(MotionFileError, match="24"):
        load_motion(p).pose_aa(23)


def test_save_roundtrip(tmp_path):
    poses, trans = _poses(165), _trans()
    src = _write(tmp_path, "a.npz", poses=poses, trans=trans, gender=b"female",
                 betas=np.arange(20.0), mocap_frame_rate=np.array(50.0))
    m = load_motion(src)
    out = tmp_path / "b_poses.npz"
    save_amass_smplh(out, m)
    with np.load(out, allow_pickle=False) as z:
        assert set(z.files) == {"poses", "trans", "betas", "dmpls", "gender", "mocap_framerate"}
        assert z["poses"].shape == (N, 156) and z["dmpls"].shape == (N, 8)
        assert z["betas"].shape == (16,) and z["gender"].dtype.kind == "U"
        np.testing.assert_array_equal(z["betas"], np.arange(16.0))
    back = load_motion(out)
    assert back.source_type == "smplh" and back.gender == "female" and back.fps == 50.0
    np.testing.assert_array_equal(back.pose_aa(52), m.pose_aa(52))
    np.testing.assert_array_equal(back.trans, trans)


# ---------------------------------------------------------------- bad input


def _err(path, *match):
    with pytest.raises(MotionFileError) as ei:
        load_motion(path)
    msg = str(ei.value)
    for m in match:
        assert m in msg, msg
    return msg


def test_missing_fps_lists_keys_found(tmp_path):
    p = _write(tmp_path, poses=_poses(156), trans=_trans())
    _err(p, "mocap_framerate", "mocap_frame_rate", "poses, trans")


@pytest.mark.parametrize("fps", [0.0, -30.0, np.nan, np.inf])
def test_bad_fps(tmp_path, fps):
    p = _write(tmp_path, poses=_poses(156), trans=_trans(), mocap_framerate=np.array(fps))
    _err(p, "mocap_framerate")


def test_fps_not_scalar(tmp_path):
    p = _write(tmp_path, poses=_poses(156), trans=_trans(), mocap_framerate=np.ones(2))
    _err(p, "single number")


def test_missing_trans_and_missing_poses(tmp_path):
    _err(_write(tmp_path, poses=_poses(156), mocap_framerate=np.array(30.0)), "'trans'")
    _err(_write(tmp_path, trans=_trans(), mocap_framerate=np.array(30.0)), "no pose data",
         "trans")


@pytest.mark.parametrize("width", [0, 63, 69, 155, 157, 166])
def test_wrong_pose_width(tmp_path, width):
    p = _write(tmp_path, poses=np.zeros((N, width)), trans=_trans(),
               mocap_framerate=np.array(30.0))
    _err(p, "'poses'", "(N, 156)")


def test_wrong_ranks(tmp_path):
    _err(_write(tmp_path, poses=np.zeros(156), trans=_trans(), mocap_framerate=np.array(30.0)),
         "'poses'")
    _err(_write(tmp_path, poses=_poses(156), trans=np.zeros((N, 3, 1)),
                mocap_framerate=np.array(30.0)), "'trans'")
    _err(_write(tmp_path, poses=_poses(156), trans=_trans(), betas=np.zeros((2, 2, 2)),
                mocap_framerate=np.array(30.0)), "'betas'")


def test_mismatched_frame_counts(tmp_path):
    _err(_write(tmp_path, poses=_poses(156), trans=_trans(N + 1),
                mocap_framerate=np.array(30.0)), "number of frames")
    _err(_write(tmp_path, root_orient=_poses(3), pose_body=_poses(63, N - 1), trans=_trans(),
                mocap_frame_rate=np.array(30.0)), "number of frames")


def test_zero_frames(tmp_path):
    _err(_write(tmp_path, poses=np.zeros((0, 156)), trans=np.zeros((0, 3)),
                mocap_framerate=np.array(30.0)), "zero frames")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("key", ["poses", "trans", "betas"])
def test_non_finite(tmp_path, key, bad):
    arrays = dict(poses=_poses(156), trans=_trans(), betas=np.zeros(16),
                  mocap_framerate=np.array(30.0))
    arrays[key] = arrays[key].copy()
    arrays[key].flat[3] = bad
    _err(_write(tmp_path, **arrays), key, "NaN or infinite")


def test_pickled_object_array_refused(tmp_path):
    obj = np.empty(2, dtype=object)
    obj[0], obj[1] = {"a": 1}, [1, 2]
    p = tmp_path / "evil.npz"
    np.savez(p, poses=_poses(156), trans=_trans(), mocap_framerate=np.array(30.0), gender=obj)
    _err(p, "pickled", "gender")


def test_pickle_file_refused(tmp_path):
    import pickle

    p = tmp_path / "evil.npz"
    p.write_bytes(pickle.dumps({"poses": 1}))
    _err(p, "pickled")


def test_not_a_zip_and_damaged_zip(tmp_path):
    p = tmp_path / "junk.npz"
    p.write_bytes(b"this is not a zip file at all" * 10)
    _err(p, "junk.npz")
    good = _write(tmp_path, "good.npz", poses=_poses(156), trans=_trans(),
                  mocap_framerate=np.array(30.0))
    data = bytearray(good.read_bytes())
    data[len(data) // 3: len(data) // 3 + 200] = b"\x00" * 200  # corrupt a member's bytes
    bad = tmp_path / "damaged.npz"
    bad.write_bytes(bytes(data))
    _err(bad, "damaged.npz")


def test_non_npy_member_and_npy_file(tmp_path):
    p = tmp_path / "odd.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("poses.npy", b"not an npy header")
        z.writestr("trans.npy", b"x")
    _err(p, "odd.npz")
    npy = tmp_path / "single.npz"
    with open(npy, "wb") as f:
        np.save(f, np.zeros((3, 156)))
    _err(npy, "single array")


def test_missing_file_and_folder(tmp_path):
    _err(tmp_path / "nope.npz", "does not exist")
    _err(tmp_path, "not a file")


def test_string_or_complex_arrays_refused(tmp_path):
    _err(_write(tmp_path, poses=np.array([["a"] * 156] * N), trans=_trans(),
                mocap_framerate=np.array(30.0)), "'poses'", "numbers")
    _err(_write(tmp_path, poses=_poses(156) + 1j, trans=_trans(),
                mocap_framerate=np.array(30.0)), "'poses'", "numbers")
    _err(_write(tmp_path, poses=_poses(156), trans=_trans(), gender=np.array([1.0]),
                mocap_framerate=np.array(30.0)), "gender")


def test_varying_betas_refused(tmp_path):
    _err(_write(tmp_path, poses=_poses(156), trans=_trans(), betas=RNG.normal(size=(N, 10)),
                mocap_framerate=np.array(30.0)), "betas")


def test_tables_agree_with_body_package():
    body = pytest.importorskip("neural_avatar.body")
    from neural_avatar.motion import deepmimic

    assert SMPL_JOINT_NAMES == tuple(body.SMPL_JOINT_NAMES)
    assert SMPLH_JOINT_NAMES == tuple(body.SMPLH_JOINT_NAMES)
    assert SMPLX_JOINT_NAMES == tuple(body.SMPLX_JOINT_NAMES)
    assert tuple(deepmimic.SMPL_PARENTS) == tuple(body.SMPL_PARENTS)
