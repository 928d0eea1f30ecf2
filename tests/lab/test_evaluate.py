"""``python -m neural_avatar eval``: plan (held-out static cameras that frame the body), metric
aggregation against hand-made methods, the JSON layout end to end on a tiny Workbench
capture, ground-truth reuse, and the error paths (missing bundle, bad motion)."""
import json
import math
import os

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.bpy

KEYS = {"psnr_mask", "psnr_full", "ssim_mask", "ssim_full", "lpips_mask", "lpips_full", "flip_mask", "flip_full",
        "haze", "flicker"}


def _motion_path(k=0):
    from neural_avatar import motion

    paths = [str(p) for p in motion.bundled_motion_paths()]
    if len(paths) <= k:
        pytest.skip("bundled motion clips missing")
    return paths[k]


def test_plan_is_deterministic_static_per_sequence_and_frames_the_body():
    from neural_avatar import body, motion
    from neural_avatar.body import kinematics
    from neural_avatar.lab import evaluate
    from neural_avatar.neural.inputs.camera import blender_camera_to_krt
    from neural_avatar.lab.capture import LENS_MM, SENSOR_MM

    model = body.load_default()
    ms = [motion.load_motion(_motion_path(0)), motion.load_motion(_motion_path(1))]
    p = evaluate.make_eval_plan(model, ms, views=2, frames=5, fps=30.0, seed=7)
    assert len(p["sequence"]) == 2 * 2 * 5 and p["sequence"].tolist() == sorted(p["sequence"].tolist())
    q = evaluate.make_eval_plan(model, ms, views=2, frames=5, fps=30.0, seed=7)
    np.testing.assert_array_equal(p["cam_world"], q["cam_world"])
    np.testing.assert_array_equal(p["poses"], q["poses"])
    r = evaluate.make_eval_plan(model, ms, views=2, frames=5, fps=30.0, seed=8)
    assert not np.allclose(p["cam_world"], r["cam_world"])
    for s in range(4):
        idx = np.nonzero(p["sequence"] == s)[0]
        assert np.all(p["cam_world"][idx] == p["cam_world"][idx[0]])  # static camera
        assert np.all(np.diff(p["frame_in_motion"][idx]) == 1)  # consecutive frames
        np.testing.assert_allclose(np.diff(p["time"][idx]), 1 / 30.0)
    # both views of a motion see the same poses, from different places
    a, b = np.nonzero(p["sequence"] == 0)[0], np.nonzero(p["sequence"] == 1)[0]
    np.testing.assert_array_equal(p["poses"][a], p["poses"][b])
    assert not np.allclose(p["cam_world"][a[0]], p["cam_world"][b[0]])
    # every vertex of every frame projects inside a square image
    res = 64
    v, _ = kinematics.forward(model, None, p["poses"], p["transl"])
    for i in range(len(v)):
        K, R, t = blender_camera_to_krt(p["cam_world"][i], LENS_MM, SENSOR_MM, SENSOR_MM, "AUTO", 0.0, 0.0,
                                        res, res, 1.0, 1.0, 0.05, 200.0, 100.0, "PERSP")
        x = v[i] @ np.asarray(R).T + np.asarray(t)
        assert np.all(x[:, 2] > 0)
        uv = x @ np.asarray(K).T
        uv = uv[:, :2] / uv[:, 2:]
        assert uv.min() >= 0 and uv.max() <= res
    # --start is honoured; a clip shorter than --frames gives what it has
    s = evaluate.make_eval_plan(model, ms[:1], views=1, frames=3, fps=10.0, seed=0, start=0.5)
    assert s["frame_in_motion"].tolist() == [5, 6, 7]
    n10 = motion.resample(ms[0], 10.0).num_frames
    long = evaluate.make_eval_plan(model, ms[:1], views=1, frames=n10 + 50, fps=10.0, seed=0)
    assert len(long["sequence"]) == n10
    from neural_avatar.errors import NeuralAvatarError

    with pytest.raises(NeuralAvatarError, match="views"):
        evaluate.make_eval_plan(model, ms, views=0, frames=5, fps=30.0, seed=0)


class _Fixed:
    """A method that returns given images (indexed by the frames' x translation) and, when given,
    alphas; without one the method counts as opaque everywhere."""

    def __init__(self, fn, alpha=None):
        self.fn, self.alpha = fn, alpha

    def render(self, frame, precision="fp32"):
        idx = frame.verts[:, 0, 0].round().long()
        out = {"rgb": torch.stack([self.fn(int(i)) for i in idx])}
        if self.alpha is not None:
            out["mask"] = torch.stack([self.alpha(int(i)) for i in idx])
        return out


def test_evaluate_methods_aggregates_exactly():
    from neural_avatar.lab import evaluate

    torch.manual_seed(0)
    N, H, W = 6, 40, 40
    rgb = torch.rand(N, 3, H, W) * 0.8 + 0.1
    mask = torch.zeros(N, 1, H, W)
    mask[:, :, 10:30, 12:28] = 1
    verts = torch.zeros(N, 5, 3)
    verts[:, :, 0] = torch.arange(N, dtype=torch.float32)[:, None]
    gt = {"rgb": rgb, "mask": mask, "verts": verts, "joints": torch.zeros(N, 2, 3), "K": torch.eye(3).repeat(N, 1, 1),
          "R": torch.eye(3).repeat(N, 1, 1), "t": torch.zeros(N, 3), "size": (H, W), "background": torch.ones(3)}
    seq = np.array([0, 0, 0, 1, 1, 1])
    methods = {
        "SAME": _Fixed(lambda i: rgb[i], alpha=lambda i: mask[i]),
        "OFFSET": _Fixed(lambda i: rgb[i] + 0.1),                      # PSNR = 20 dB exactly
        "FROZEN": _Fixed(lambda i: rgb[0] if i < 3 else rgb[3]),       # never changes inside a sequence
    }
    ev = evaluate.evaluate_methods(gt, methods, seq, margin=2, batch=2, grid_frames=[1, 4])
    res = ev["result"]
    assert res["frames"] == N and list(res["methods"]) == ["SAME", "OFFSET", "FROZEN"]
    for m in res["methods"].values():
        assert set(m) == KEYS and all(isinstance(v, float) for v in m.values())
    same, off, frz = (res["methods"][k] for k in ("SAME", "OFFSET", "FROZEN"))
    assert same["psnr_full"] == 100.0 and same["psnr_mask"] == 100.0
    assert abs(same["ssim_full"] - 1) < 1e-5 and abs(same["lpips_mask"]) < 1e-6 and same["flicker"] == 0.0
    assert same["flip_full"] < 1e-6 and same["haze"] == 0.0
    # an opaque method (no alpha) covers the whole frame: haze = the frame outside the grown mask
    want = 1.0 - (20 + 2) * (16 + 2) / (H * W)  # the mask's box grown by the 1-px haze radius
    assert abs(off["haze"] - want) < 1e-6 and off["flip_full"] > 0
    assert abs(off["psnr_full"] - 20.0) < 1e-3 and abs(off["psnr_mask"] - 20.0) < 1e-3
    assert off["flicker"] < 1e-6 and off["lpips_full"] > 0
    d_gt = [float((rgb[s + 1:s + 3] - rgb[s:s + 2]).abs().mean()) for s in (0, 3)]
    np.testing.assert_allclose(ev["flicker_gt"], d_gt, rtol=1e-5)
    assert ev["flicker_raw"]["FROZEN"] == [0.0, 0.0]
    assert abs(frz["flicker"] - np.mean(d_gt)) < 1e-6
    # the box metric only sees the box: damage outside it leaves psnr_mask unchanged
    outside = rgb.clone()
    outside[:, :, :4, :] = 0
    ev2 = evaluate.evaluate_methods(gt, {"OUT": _Fixed(lambda i: outside[i])}, seq, margin=2, batch=4)
    assert ev2["result"]["methods"]["OUT"]["psnr_mask"] == 100.0
    assert ev2["result"]["methods"]["OUT"]["psnr_full"] < 30
    # grid: GT + methods for the chosen frames
    assert ev["grid"]["col_labels"] == ["GT", "SAME", "OFFSET", "FROZEN"]
    np.testing.assert_array_equal(ev["grid"]["tiles"][1][0], rgb[4].permute(1, 2, 0).numpy())
    assert len(ev["flicker_curves"]["GT"]) == 2


def _tiny_bundles(tmp_path):
    from neural_avatar import body
    from neural_avatar.neural.avatar import build_avatar
    from neural_avatar.neural.bundle import save_bundle
    from neural_avatar.neural.config import AnrConfig, AvatarConfig, StyleConfig, UNetConfig

    model = body.load_default()
    subs = {
        "VERTEX_PROJECTION": dict(unet=UNetConfig(width=4, depth=2)),
        "NEURAL_TEXTURE": dict(anr=AnrConfig(texture_size=16, pyramid_levels=2, latent_channels=5,
                                             r1_width=4, r1_depth=2, r2_width=4, r2_depth=2)),
        "GAUSSIAN_BONES": dict(style=StyleConfig(num_primitives=model.num_joints - 1, appearance_dim=4,
                                                 widths=(4, 8), w_dim=8)),
    }
    paths = []
    for mode, sub in subs.items():
        torch.manual_seed(0)
        av = build_avatar(AvatarConfig.default(mode, resolution=64, **sub), model)
        paths.append(str(save_bundle(av, tmp_path / mode.lower())[0]))
    return paths


def test_eval_cli_json_layout_report_and_gt_reuse(tmp_path, capsys):
    from neural_avatar.__main__ import main

    bundles = _tiny_bundles(tmp_path)
    out, rep, gtd = tmp_path / "m.json", tmp_path / "rep", tmp_path / "gt"
    args = ["eval", "--motion", _motion_path(0), "--views", "2", "--frames", "3", "--seed", "1", "--res", "48",
            "--engine", "WORKBENCH", "--texture-size", "64", "--json", str(out), "--gt-dir", str(gtd)]
    for b in bundles:
        args += ["--avatar", b]
    rc = main(args + ["--report", str(rep)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    data = json.loads(out.read_text())
    assert set(data) == {"frames", "methods", "metrics"} and data["frames"] == 6
    assert "AlexNet" in data["metrics"]["lpips"] and "FLIP" in data["metrics"]["flip"]
    assert list(data["methods"]) == ["CLASSICAL", "VERTEX_PROJECTION", "NEURAL_TEXTURE", "GAUSSIAN_BONES"]
    for m in data["methods"].values():
        assert set(m) == KEYS
        assert all(isinstance(v, float) and math.isfinite(v) for v in m.values())
    cl = data["methods"]["CLASSICAL"]
    # the classical render shows the real subject; untrained networks paint grey fog
    for mode in ("VERTEX_PROJECTION", "NEURAL_TEXTURE", "GAUSSIAN_BONES"):
        assert cl["psnr_full"] > data["methods"][mode]["psnr_full"] + 3.0
        assert cl["lpips_mask"] < data["methods"][mode]["lpips_mask"]
    assert 10.0 < cl["psnr_mask"] < cl["psnr_full"] < 60.0
    for f in ("index.html", "grid.png", "table.png", "psnr.png", "flicker.png", "details.json"):
        assert (rep / f).is_file(), f
    det = json.loads((rep / "details.json").read_text())
    assert det["result"] == data and len(det["flicker_gt"]) == 2 and "LPIPS" in det["lpips_source"]
    assert len(os.listdir(gtd / "images")) == 6
    # a second run reuses the ground truth (nothing rendered) and gives the same numbers
    out2 = tmp_path / "m2.json"
    args2 = [a if a != str(out) else str(out2) for a in args]
    assert main(args2) == 0
    err = capsys.readouterr().err
    assert "ground truth 1/" not in err
    assert json.loads(out2.read_text()) == data
    # another plan in the same folder is refused
    assert main([a if a != "1" else "2" for a in args2]) == 1
    assert "another evaluation" in capsys.readouterr().err


def test_eval_cli_errors_are_clear(tmp_path, capsys):
    from neural_avatar.__main__ import main

    out = tmp_path / "m.json"
    rc = main(["eval", "--avatar", str(tmp_path / "nope.safetensors"), "--motion", _motion_path(0),
               "--json", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "nope" in err and "not found" in err
    bad = tmp_path / "bad_poses.npz"
    bad.write_bytes(b"this is not a zip archive")
    rc = main(["eval", "--motion", str(bad), "--json", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "bad_poses.npz" in err
    rc = main(["eval", "--motion", str(tmp_path / "missing.npz"), "--json", str(out)])
    assert rc == 1 and "missing.npz" in capsys.readouterr().err
    assert not out.exists()


def test_default_avatars_and_duplicate_modes(tmp_path, monkeypatch, capsys):
    from neural_avatar.engine import avatars
    from neural_avatar.lab import evaluate
    from neural_avatar.errors import BundleError

    monkeypatch.setattr(avatars, "DATA_AVATARS", str(tmp_path / "none"))
    with pytest.raises(BundleError, match="--avatar"):
        evaluate.resolve_avatars(None)
    vp, nt, _ = _tiny_bundles(tmp_path)
    monkeypatch.setattr(avatars, "DATA_AVATARS", str(tmp_path))  # holds vertex_projection + neural_texture ...
    os.remove(tmp_path / "gaussian_bones.safetensors")           # ... and no gaussian_bones
    got = evaluate.resolve_avatars(None)
    assert got == {"VERTEX_PROJECTION": str(tmp_path / "vertex_projection.safetensors"),
                   "NEURAL_TEXTURE": str(tmp_path / "neural_texture.safetensors")}
    assert "gaussian_bones.safetensors" in capsys.readouterr().err
    assert evaluate.resolve_avatars([nt]) == {"NEURAL_TEXTURE": nt}
    with pytest.raises(BundleError, match="Two avatars of mode VERTEX_PROJECTION"):
        evaluate.resolve_avatars([vp, vp])
