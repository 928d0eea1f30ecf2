"""ZJU-MoCap -> capture-folder converter on a tiny synthetic sequence written in ZJU's layout
(pickled annots/params, millimetre T, lens distortion, CoreView-style image names)."""
import json
import math
import os

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from neural_avatar.errors import DatasetError  # noqa: E402
from neural_avatar.neural.training import convert_zju as cz  # noqa: E402

S = 64  # source image size
NV = 4  # views
NT = 5  # time frames


def _look_at(eye, target=(0, 0, 0)):
    eye = np.asarray(eye, float)
    f = np.asarray(target, float) - eye
    f /= np.linalg.norm(f)
    r = np.cross(f, [0, 0, 1.0])
    r /= np.linalg.norm(r)
    d = np.cross(f, r)
    R = np.stack([r, d, f])
    return R, -R @ eye


def _points(t):
    rng = np.random.default_rng(7)
    p = rng.uniform(-0.6, 0.6, (60, 3))
    return p + np.array([0.02 * t, 0.0, 0.0])


def _colors():
    # per-vertex albedo: x > 0 at time 0 red, else blue (the converter must recover it)
    return np.where(_points(0)[:, :1] > 0, [[0.9, 0.1, 0.1]], [[0.1, 0.2, 0.9]])


def _write_zju(root, pickled=True, coreview=True):
    K = np.array([[45.0, 0, S / 2], [0, 45.0, S / 2], [0, 0, 1]])
    Ks, Rs, Ts, Ds = [], [], [], []
    for v in range(NV):
        a = 2 * math.pi * v / NV
        R, t = _look_at([1.6 * math.sin(a), -1.6 * math.cos(a), 0.2])
        Ks.append(K.copy())
        Rs.append(R)
        Ts.append((t * 1000.0).reshape(3, 1))  # ZJU: millimetres
        Ds.append(np.array([[0.6], [-0.1], [0.0], [0.0], [0.0]]) if v % 2 else np.zeros((5, 1)))
    ims = []
    os.makedirs(os.path.join(root, "new_params"))
    os.makedirs(os.path.join(root, "new_vertices"))
    for ti in range(NT):
        k = ti + 1 if coreview else ti  # CoreView_313/315 number their params from 1
        row = []
        for v in range(NV):
            name = (f"Camera ({v + 1})/CoreView_313_Camera_({v + 1})_{k:04d}_2019-08-23_16-08-50.592.png"
                    if coreview else f"Camera_B{v + 1}/{ti:06d}.png")
            row.append(name)
            p = _points(ti)
            rv, _ = cv2.Rodrigues(Rs[v])
            uv, _ = cv2.projectPoints(p, rv, Ts[v] / 1000.0, Ks[v], Ds[v])
            z = (p @ Rs[v].T + Ts[v].ravel() / 1000.0)[:, 2]
            img = np.zeros((S, S, 3), np.uint8)
            msk = np.zeros((S, S), np.uint8)
            col = _colors()
            for j in np.argsort(-z):  # painter: far to near
                c = (int(round(uv[j, 0, 0] - 0.5)), int(round(uv[j, 0, 1] - 0.5)))
                cv2.circle(img, c, 2, tuple(int(255 * x) for x in col[j][::-1]), -1)
                cv2.circle(msk, c, 2, 255, -1)
            for d, m in (("mask", msk), ("mask_cihp", np.zeros_like(msk))):
                mp = os.path.join(root, d, os.path.splitext(name)[0] + ".png")
                os.makedirs(os.path.dirname(mp), exist_ok=True)
                cv2.imwrite(mp, m)
            ip = os.path.join(root, name)
            os.makedirs(os.path.dirname(ip), exist_ok=True)
            cv2.imwrite(ip, img)
        ims.append({"ims": row})
        prm = {"poses": np.full((1, 72), 0.01 * ti), "Rh": np.array([[0.1, 0.2 * ti, 0.0]]),
               "Th": np.array([[0.0, 0.1, 0.9]]), "shapes": np.full((1, 10), 0.5)}
        if pickled:
            np.save(os.path.join(root, "new_params", f"{k}.npy"), prm, allow_pickle=True)
        else:
            np.savez(os.path.join(root, "new_params", f"{k}.npz"), **prm)
        np.save(os.path.join(root, "new_vertices", f"{k}.npy"), _points(ti))
    ann = {"cams": {"K": Ks, "R": Rs, "T": Ts, "D": Ds}, "ims": ims}
    if pickled:
        np.save(os.path.join(root, "annots.npy"), ann, allow_pickle=True)
    else:
        with open(os.path.join(root, "annots.json"), "w") as f:
            json.dump(cz._to_list(ann), f)
    return ann


@pytest.fixture
def zju(tmp_path):
    root = tmp_path / "CoreView_313"
    _write_zju(str(root))
    return str(root)


def test_pickles_are_refused_without_trust(zju, tmp_path):
    with pytest.raises(DatasetError, match="--trust-pickle"):
        cz.convert_zju(zju, str(tmp_path / "out"), train_views=(0, 2))


def test_rodrigues_matches_opencv():
    for r in ([0, 0, 0], [0.3, -1.2, 2.0], [1e-9, 0, 0], [math.pi, 0, 0]):
        np.testing.assert_allclose(cz.rodrigues(r), cv2.Rodrigues(np.asarray(r, float))[0], atol=1e-12)


def test_param_index_rules():
    assert cz.param_index("Camera (1)/CoreView_313_Camera_(1)_0007_2019-08-23_16-08-50.592.jpg", "CoreView_313") == 7
    assert cz.param_index("Camera_B1/000012.jpg", "CoreView_377") == 12
    with pytest.raises(DatasetError):
        cz.param_index("Camera_B1/frame.jpg")


def test_convert_cameras_masks_body_colors(zju, tmp_path):
    out = str(tmp_path / "out")
    meta = cz.convert_zju(zju, out, res=48, train_views=(0, 2), holdout=0.4, trust_pickle=True,
                          background=(1.0, 1.0, 1.0))
    ann = np.load(os.path.join(zju, "annots.npy"), allow_pickle=True).item()
    # --- dataset.json / splits: train views only in train, test = last 2 times, no overlap
    n = meta["num_frames"]
    assert meta["resolution"] == [48, 48] and meta["format"] == "neural_avatar.capture/1"
    cams = json.load(open(os.path.join(out, "cameras.json")))["frames"]
    body = np.load(os.path.join(out, "body.npz"), allow_pickle=False)
    sp = meta["splits"]
    allidx = sp["train"] + sp["val"] + sp["test"]
    assert sorted(allidx) == list(range(n)) and len(set(allidx)) == n
    assert {cams[i]["camera_id"] for i in sp["train"]} == {"cam00", "cam02"}
    assert not {cams[i]["camera_id"] for i in sp["val"] + sp["test"]} & {"cam00", "cam02"}
    assert set(body["frame_in_motion"][sp["test"]]) == {3, 4}
    assert not set(body["frame_in_motion"][sp["train"]]) & {3, 4}
    assert len(os.listdir(os.path.join(out, "images"))) == n == len(os.listdir(os.path.join(out, "masks")))
    # --- body: object_matrix = [R(Rh) | Th], poses/shapes carried over, transl 0
    for i in range(n):
        ti = int(body["frame_in_motion"][i])
        np.testing.assert_allclose(body["object_matrix"][i][:3, :3],
                                   cv2.Rodrigues(np.array([0.1, 0.2 * ti, 0.0]))[0], atol=1e-12)
        np.testing.assert_allclose(body["object_matrix"][i][:3, 3], [0.0, 0.1, 0.9])
        np.testing.assert_allclose(body["poses"][i], np.full((24, 3), 0.01 * ti))
    assert body["betas"].shape == (n, 10) and np.all(body["transl"] == 0)
    # --- cameras: t is metres (T/1000), K rescaled; every world point lands in the mask after
    # undistortion (odd views have lens distortion) and resizing
    for i in range(n):
        c = cams[i]
        v = int(c["camera_id"][3:])
        np.testing.assert_allclose(c["t"], np.asarray(ann["cams"]["T"][v]).ravel() / 1000.0)
        K, R, t = (np.asarray(c[k]) for k in ("K", "R", "t"))
        assert K[0, 0] == pytest.approx(45.0 * 48 / S)
        p = _points(int(body["frame_in_motion"][i]))
        xc = p @ R.T + t
        uv = (xc @ K.T)[:, :2] / xc[:, 2:]
        m = cv2.imread(os.path.join(out, "masks", f"{i:06d}.png"), cv2.IMREAD_GRAYSCALE) > 127
        inside = [m[int(y), int(x)] for x, y in uv if 0 <= x < 48 and 0 <= y < 48]
        assert np.mean(inside) > 0.95, (i, np.mean(inside))
        img = cv2.imread(os.path.join(out, "images", f"{i:06d}.png"))
        assert np.all(img[~m] == 255)  # composited over the white background
    # --- vertex colours recovered from the photographs (x>0 red, else blue)
    vc = np.load(os.path.join(out, "vertex_colors.npy"))
    assert vc.shape == (60, 3) and vc.dtype == np.float32
    want = _colors()
    red = want[:, 0] > 0.5
    agree = np.where(red, vc[:, 0] > vc[:, 2], vc[:, 2] > vc[:, 0])
    assert agree.mean() > 0.85, agree.mean()


def test_json_export_then_safe_conversion(zju, tmp_path):
    written = cz.export_json(zju, trust_pickle=True)
    assert any(p.endswith("annots.json") for p in written) and len(written) == 1 + NT
    for p in written:
        if p.endswith(".json") and "new_params" in p:
            os.remove(p[:-5] + ".npy")  # the pickles are no longer needed
    os.remove(os.path.join(zju, "annots.npy"))
    meta = cz.convert_zju(zju, str(tmp_path / "out"), views=(0, 1, 2), train_views=(0,), holdout=0.2)
    assert meta["num_frames"] == 4 * 1 + 4 * 2 + 1 * 2
    assert meta["cameras"] == ["cam00", "cam01", "cam02"]


def test_npz_params_and_plain_names(tmp_path):
    root = tmp_path / "CoreView_377"
    _write_zju(str(root), pickled=False, coreview=False)
    meta = cz.convert_zju(str(root), str(tmp_path / "out"), step=2, train_views=(1,))
    body = np.load(str(tmp_path / "out" / "body.npz"))
    assert sorted(set(body["frame_in_motion"].tolist())) == [0, 2, 4]
    assert meta["motions"] == ["CoreView_377"]


def test_bad_inputs(tmp_path, zju):
    with pytest.raises(DatasetError, match="does not exist"):
        cz.convert_zju(str(tmp_path / "nope"), str(tmp_path / "o"))
    with pytest.raises(DatasetError, match="training views"):
        cz.convert_zju(zju, str(tmp_path / "o"), train_views=(9,), trust_pickle=True)
    with pytest.raises(DatasetError, match="No frames"):
        cz.convert_zju(zju, str(tmp_path / "o"), begin=3, end=2, trust_pickle=True)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DatasetError, match="Cannot create"):
        cz.convert_zju(zju, str(blocker / "sub"), trust_pickle=True)


def test_cli(zju, tmp_path, capsys):
    assert cz.main([zju, "--out", str(tmp_path / "o"), "--res", "32", "--train-views", "0"]) == 1
    assert "--trust-pickle" in capsys.readouterr().err
    assert cz.main([zju, "--out", str(tmp_path / "o"), "--res", "32", "--train-views", "0",
                    "--trust-pickle", "--end", "2"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["num_frames"] == 1 * 1 + 1 * 3 + 1 * 3
