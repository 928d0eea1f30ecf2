"""Fast inference gives the same pictures: BatchNorm folding + channels-last match the fp32
eager output (≥ 60 dB PSNR), bf16 stays within 40 dB, for every mode; CPU fp16 means fp32."""
import copy

import numpy as np
import pytest
import torch

from neural_avatar import body
from neural_avatar.body import kinematics
from neural_avatar.neural.avatar import FrameInputs, build_avatar
from neural_avatar.neural.config import AvatarConfig
from neural_avatar.neural.inference import fold_batchnorm, prepare_for_inference, resolve_precision

MODES = ("VERTEX_PROJECTION", "NEURAL_TEXTURE", "GAUSSIAN_BONES")


def _frame(model, size=64):
    torch.manual_seed(0)
    pose = np.zeros((24, 3))
    pose[16, 2], pose[17, 2] = -1.0, 1.0
    verts, joints = kinematics.forward(model, pose_aa=pose)
    K = torch.tensor([[[size * 1.4, 0, size / 2], [0, size * 1.4, size / 2], [0, 0, 1]]], dtype=torch.float32)
    R = torch.tensor([[[1, 0, 0], [0, -1, 0], [0, 0, -1]]], dtype=torch.float32)
    t = torch.tensor([[0.0, 0.3, 2.6]])
    return FrameInputs(verts=torch.as_tensor(np.asarray(verts, np.float32)).reshape(1, -1, 3),
                       joints=torch.as_tensor(np.asarray(joints, np.float32)).reshape(1, -1, 3), K=K, R=R, t=t,
                       size=(size, size))


def _psnr(a, b):
    mse = float(((a.float() - b.float()) ** 2).mean())
    return 10 * np.log10(1.0 / max(mse, 1e-20))


def _randomise_batchnorm(av):
    """Non-trivial running statistics, as after training (fresh ones would make folding a no-op)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in av.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.2 - 0.1)


@pytest.mark.parametrize("mode", MODES)
def test_folded_channels_last_matches_fp32_and_bf16_within_40db(mode):
    model = body.load_default()
    av = build_avatar(AvatarConfig.default(mode, resolution=64), model).eval()
    _randomise_batchnorm(av)
    frame = _frame(model)
    ref = av.render(frame, precision="fp32")
    fast = copy.deepcopy(av)
    info = prepare_for_inference(fast)
    if mode != "GAUSSIAN_BONES":  # the style UNet has no BatchNorm
        assert info["batchnorm_folded"] > 0
    if mode == "VERTEX_PROJECTION":  # every BatchNorm of the UNet follows a conv: none is left
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    out = fast.render(frame, precision="fp32")
    assert _psnr(out["rgb"], ref["rgb"]) >= 60 and _psnr(out["mask"], ref["mask"]) >= 60
    out16 = fast.render(frame, precision="bf16")
    assert _psnr(out16["rgb"], ref["rgb"]) >= 40, _psnr(out16["rgb"], ref["rgb"])
    assert out16["rgb"].dtype == torch.float32


def test_fold_batchnorm_is_exact_on_a_conv_block():
    torch.manual_seed(0)
    seq = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU()).eval()
    with torch.no_grad():
        seq[1].running_mean.uniform_(-1, 1)
        seq[1].running_var.uniform_(0.5, 2)
    x = torch.rand(1, 3, 16, 16)
    ref = seq(x)
    assert fold_batchnorm(seq) == 1 and isinstance(seq[1], torch.nn.Identity)
    assert torch.allclose(seq(x), ref, atol=1e-5)


def test_precision_resolution():
    assert resolve_precision("fp16", "cpu") == "fp32"
    assert resolve_precision("auto", "cpu") in ("bf16", "fp32")
    assert resolve_precision("bf16", "cpu") == "bf16"


def _openvino_copy(av, path):
    """A copy of ``av`` prepared for rendering and moved onto the OpenVINO backend."""
    from neural_avatar.neural.inference import OpenVinoNetwork, attach_openvino

    fast = copy.deepcopy(av)
    prepare_for_inference(fast)
    assert attach_openvino(fast, str(path)) and isinstance(fast.net, OpenVinoNetwork)
    return fast


def _saved_avatar(mode, tmp_path, monkeypatch):
    """A fresh 64² avatar of ``mode`` with trained-looking BN statistics, saved as a bundle, and an
    OpenVINO cache of its own: ``(body model, avatar, bundle path)``."""
    from neural_avatar.neural.bundle import save_bundle

    monkeypatch.setenv("NEURAL_AVATAR_CACHE", str(tmp_path / "cache"))
    model = body.load_default()
    av = build_avatar(AvatarConfig.default(mode, resolution=64), model).eval()
    _randomise_batchnorm(av)
    path = tmp_path / "a.safetensors"
    save_bundle(av, path)
    return model, av, path


@pytest.mark.parametrize("mode", ["VERTEX_PROJECTION", "NEURAL_TEXTURE"])
def test_openvino_backend_matches_fp32(mode, tmp_path, monkeypatch):
    """The optional OpenVINO backend (installed in the test venv) gives the same pictures:
    ≥ 60 dB with the f32 hint, ≥ 40 dB with bf16, against the eager fp32 torch output; the
    exported network is cached and reused."""
    pytest.importorskip("openvino")
    model, av, path = _saved_avatar(mode, tmp_path, monkeypatch)
    frame = _frame(model, size=72)
    ref = av.render(frame, precision="fp32")
    fast = _openvino_copy(av, path)
    out = fast.render(frame, precision="fp32")
    assert _psnr(out["rgb"], ref["rgb"]) >= 60 and _psnr(out["mask"], ref["mask"]) >= 60
    out16 = fast.render(frame, precision="bf16")
    assert _psnr(out16["rgb"], ref["rgb"]) >= 40
    cached = sorted(p.name for p in (tmp_path / "cache" / "openvino").iterdir())
    assert len(cached) == 2 and cached[0].endswith(".bin") and cached[1].endswith(".xml")
    again = _openvino_copy(av, path)  # from the cache this time
    assert _psnr(again.render(frame, precision="fp32")["rgb"], ref["rgb"]) >= 60


def test_openvino_runs_the_style_unet_with_the_appearance_baked_in(tmp_path, monkeypatch):
    """GAUSSIAN_BONES on OpenVINO: the modulated convolutions' weights depend only on the person's
    appearance, so they are baked into one exported network per person. Same pictures as eager
    fp32 torch (≥ 60 dB f32 hint, ≥ 40 dB bf16); another appearance gets its own network."""
    pytest.importorskip("openvino")
    from neural_avatar.neural.bundle import save_bundle

    monkeypatch.setenv("NEURAL_AVATAR_CACHE", str(tmp_path / "cache"))
    model = body.load_default()
    cfg = AvatarConfig.default("GAUSSIAN_BONES", resolution=64)
    av = build_avatar(cfg, model).eval()
    with torch.no_grad():  # a person with a non-trivial appearance and styles
        g = torch.Generator().manual_seed(1)
        av.identity.appearance.copy_(torch.randn(av.identity.appearance.shape, generator=g))
        for p in av.net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    path = tmp_path / "h.safetensors"
    save_bundle(av, path)
    frame = _frame(model, size=72)
    ref = av.render(frame, precision="fp32")
    fast = _openvino_copy(av, path)
    assert fast.backend == "openvino"
    out = fast.render(frame, precision="fp32")
    assert _psnr(out["rgb"], ref["rgb"]) >= 60 and _psnr(out["mask"], ref["mask"]) >= 60
    assert _psnr(fast.render(frame, precision="bf16")["rgb"], ref["rgb"]) >= 40
    other = copy.deepcopy(av)
    with torch.no_grad():
        other.identity.appearance.mul_(-1.0)
    ref2 = other.render(frame, precision="fp32")
    assert _psnr(ref2["rgb"], ref["rgb"]) < 40  # a different person paints differently
    assert _psnr(_openvino_copy(other, path).render(frame, precision="fp32")["rgb"], ref2["rgb"]) >= 60
    assert len(list((tmp_path / "cache" / "openvino").glob("*.xml"))) == 2


def _moved(frame):
    """Another view of the same body: the camera turned ~25° about the body's vertical axis."""
    import math

    a = math.radians(25.0)
    Ry = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    return FrameInputs(verts=frame.verts, joints=frame.joints, K=frame.K, R=frame.R @ Ry, t=frame.t, size=frame.size)


@pytest.mark.parametrize("mode", ["VERTEX_PROJECTION", "NEURAL_TEXTURE"])
def test_int8_on_the_shipped_avatars_stays_within_35_db(mode, tmp_path, monkeypatch):
    """int8 (OpenVINO, calibrated on the first frame an avatar renders): on the shipped SMPLpix and
    ANR avatars the network's output stays within 35 dB of eager fp32 torch, on the calibration
    frame and on another view it was not calibrated on; the network says it runs int8."""
    pytest.importorskip("openvino")
    from neural_avatar.engine import avatars
    from neural_avatar.neural.bundle import load_bundle

    monkeypatch.setenv("NEURAL_AVATAR_CACHE", str(tmp_path / "cache"))
    path = avatars.default_avatar_path(mode)
    av = load_bundle(path).eval()
    model = body.load_default()
    f1 = _frame(model, size=128)
    f2 = _moved(f1)
    refs = [av.render(f, precision="fp32") for f in (f1, f2)]
    fast = _openvino_copy(av, path)
    outs = [fast.render(f, precision="int8") for f in (f1, f2)]
    assert fast.net.int8_state == "active" and fast.net.precision_used == "int8", fast.net.int8_state
    assert fast.net.int8_psnr_db >= 35.0
    for out, ref in zip(outs, refs):
        # the picture: composited RGB, the mask, and the premultiplied foreground the engine pastes
        # (the raw foreground colour where the mask is 0 is never seen)
        pairs = {"rgb": (out["rgb"], ref["rgb"]), "mask": (out["mask"], ref["mask"]),
                 "premultiplied": (out["rgb_fg"] * out["mask"], ref["rgb_fg"] * ref["mask"])}
        for key, (a, b) in pairs.items():
            assert _psnr(a, b) >= 35.0, (key, _psnr(a, b))
        print(mode, {k: round(_psnr(a, b), 1) for k, (a, b) in pairs.items()},
              "raw foreground", round(_psnr(out["rgb_fg"], ref["rgb_fg"]), 1))


def test_int8_is_refused_below_its_bar_and_can_be_switched_off(tmp_path, monkeypatch):
    """Where int8 does not hold (here: a bar no quantised network reaches) the network keeps its
    float precision for good, with the same pictures as bf16/fp32; ``NEURAL_AVATAR_INT8=0``
    never tries it; fp32 and bf16 requests never use it."""
    pytest.importorskip("openvino")
    from neural_avatar.neural import inference

    model, av, path = _saved_avatar("VERTEX_PROJECTION", tmp_path, monkeypatch)
    frame = _frame(model, size=64)
    fast = _openvino_copy(av, path)
    fast.render(frame, precision="fp32")
    fast.render(frame, precision="bf16")
    assert fast.net.int8_state == "unused" and fast.net.precision_used in ("fp32", "bf16")
    monkeypatch.setattr(inference, "INT8_MIN_PSNR_DB", {"auto": 1000.0, "int8": 1000.0})
    out = fast.render(frame, precision="int8")
    assert fast.net.int8_state == "refused" and fast.net.int8_psnr_db < 1000.0
    assert fast.net.precision_used == inference.resolve_precision("int8", "cpu")
    same = fast.render(frame, precision=inference.resolve_precision("auto", "cpu"))
    assert torch.equal(out["rgb"], same["rgb"])
    monkeypatch.setenv("NEURAL_AVATAR_INT8", "0")
    off = _openvino_copy(av, path)
    off.render(frame, precision="auto")
    assert off.net.int8_state == "unused"


def test_int8_calibration_and_decision_are_cached_beside_the_exported_network(tmp_path, monkeypatch):
    """The first int8 render calibrates, checks and writes ``<IR>.int8.json``; a later session
    (a fresh avatar on the same cache) rebuilds the same int8 network from it without calibrating
    or checking again: the same pictures and the same decision. A cached PSNR below the bar is
    refused without calibrating; a damaged or foreign file is ignored and recalibrated."""
    pytest.importorskip("openvino")
    import json

    from neural_avatar.neural import inference

    model, av, path = _saved_avatar("VERTEX_PROJECTION", tmp_path, monkeypatch)
    frame = _frame(model, size=64)
    monkeypatch.setattr(inference, "INT8_MIN_PSNR_DB", {"auto": 1.0, "int8": 1.0})
    first = _openvino_copy(av, path)
    out1 = first.render(frame, precision="int8")
    assert first.net.int8_state == "active", first.net.int8_state
    files = list((tmp_path / "cache" / "openvino").glob("*.int8.json"))
    assert len(files) == 1 and first.net.int8_cache == str(files[0])
    saved = json.loads(files[0].read_text())
    assert saved["psnr_db"] == first.net.int8_psnr_db
    assert len(saved["ranges"]) == len(inference._conv_nodes(first.net.ov_model))

    calls = []
    real_calibrate = inference.calibrate_int8
    monkeypatch.setattr(inference, "calibrate_int8", lambda *a, **k: calls.append(1) or real_calibrate(*a, **k))
    again = _openvino_copy(av, path)
    out2 = again.render(_moved(frame), precision="int8")  # another first frame: the cache decides
    out2 = again.render(frame, precision="int8")
    assert calls == [] and again.net.int8_state == "active"
    assert again.net.int8_psnr_db == first.net.int8_psnr_db
    assert _psnr(out2["rgb"], out1["rgb"]) >= 80.0

    monkeypatch.setattr(inference, "INT8_MIN_PSNR_DB", {"auto": saved["psnr_db"] + 1.0, "int8": saved["psnr_db"] + 1.0})
    refused = _openvino_copy(av, path)
    refused.render(frame, precision="int8")
    assert calls == [] and refused.net.int8_state == "refused"

    monkeypatch.setattr(inference, "INT8_MIN_PSNR_DB", {"auto": 1.0, "int8": 1.0})
    for damaged in ({"version": 1, "psnr_db": 50.0, "ranges": saved["ranges"][:-1]},
                    {"version": 1, "psnr_db": 50.0, "ranges": [[1.0, float("nan")]] * len(saved["ranges"])},
                    "not json {"):
        files[0].write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
        calls.clear()
        fresh = _openvino_copy(av, path)
        fresh.render(frame, precision="int8")
        assert calls == [1] and fresh.net.int8_state == "active"
        assert json.loads(files[0].read_text())["ranges"] == saved["ranges"]  # rewritten from the calibration
