"""Training loop: every mode learns on a tiny synthetic capture, exact resume, cancellation,
killed runs, the JSON CLI, multi-identity ANR and 2-process gloo data parallelism."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from neural_avatar.neural.bundle import load_bundle
from neural_avatar.errors import NeuralAvatarError
from neural_avatar.neural.training.dataset import capsule_body, write_synthetic_dataset
from neural_avatar.neural.training.trainer import TrainConfig, load_checkpoint, train

pytestmark = pytest.mark.slow

TINY = {
    "VERTEX_PROJECTION": {"unet": {"width": 8, "depth": 3}},
    "NEURAL_TEXTURE": {"anr": {"texture_size": 32, "pyramid_levels": 2, "r1_width": 8, "r2_width": 8,
                               "r1_depth": 2, "r2_depth": 2, "latent_channels": 8}},
    "GAUSSIAN_BONES": {"style": {"widths": [8, 16, 16], "w_dim": 16}},
}


@pytest.fixture(scope="module")
def body():
    return capsule_body()


@pytest.fixture(scope="module")
def data(tmp_path_factory, body):
    root = tmp_path_factory.mktemp("capture")
    write_synthetic_dataset(str(root), n=6, res=32, seed=0, body_model=body)
    return str(root)


def _cfg(data, out, mode, **kw):
    base = dict(data=data, mode=mode, out=str(out), steps=30, batch=2, log_every=1, val_every=0,
                ckpt_every=10, avatar=TINY[mode], disc_width=8, perceptual="l1_msssim", threads=1)
    base.update(kw)
    return TrainConfig(**base)


def _records(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize("mode", ["VERTEX_PROJECTION", "NEURAL_TEXTURE", "GAUSSIAN_BONES"])
def test_thirty_steps_reduce_the_loss(tmp_path, data, body, mode):
    events = []
    res = train(_cfg(data, tmp_path, mode), progress=events.append, body_model=body)
    assert res["status"] == "finished" and res["step"] == 30
    recs = [r for r in _records(tmp_path) if "loss" in r and "validation" not in r]
    assert [r["step"] for r in recs] == list(range(1, 31))
    for key in ("loss", "lr", "elapsed_s", "eta_s"):
        assert key in recs[0]
    # compare a component present over the whole run (SMPLpix adds GAN terms in stage 2)
    key = "vgg" if mode == "VERTEX_PROJECTION" else "loss"
    first = np.mean([r[key] for r in recs[:5]])
    last = np.mean([r[key] for r in recs[-5:]])
    assert last < 0.9 * first, (first, last)
    if mode == "VERTEX_PROJECTION":  # two-stage schedule: Adam restarted at 1e-5 with the GAN
        assert recs[14]["lr"]["net"] == pytest.approx(1e-4) and "adv" not in recs[14]
        assert recs[15]["lr"]["net"] == pytest.approx(1e-5) and "adv" in recs[15] and "fm" in recs[15]
    if mode == "NEURAL_TEXTURE":  # split optimisation alternates texture/renderer steps
        assert res["keyframes"] and {r["update_identity"] for r in recs} == {True, False}
        assert "tv_texture" in recs[0] and "aux" in recs[0]
    if mode == "GAUSSIAN_BONES":
        assert "appearance" in recs[0]
    assert any(e["event"] == "progress" for e in events) and events[-1]["event"] == "done"
    for name in ("last.ckpt", "best.ckpt", "loss.png", "avatar.safetensors", "avatar.json"):
        assert (tmp_path / name).is_file(), name
    assert list((tmp_path / "val").glob("*.png"))
    meta = json.loads((tmp_path / "avatar.json").read_text())
    assert meta["training"]["steps"] == 30 and "psnr_bbox" in meta["training"]["validation"]
    avatar = load_bundle(tmp_path / "avatar", expected_mode=mode)
    assert avatar.config.mode == mode


@pytest.mark.parametrize("mode", ["VERTEX_PROJECTION", "NEURAL_TEXTURE", "GAUSSIAN_BONES"])
def test_patches_bf16_haze_and_warm_start(tmp_path, data, body, mode):
    """Patch training at the capture's scale in bf16 with the haze penalty: the loss falls, the
    bundle records the capture resolution (the engine's scale), the patch, the precision and
    the machine; a second run started from that bundle begins where the first ended."""
    first = tmp_path / "a"
    res = train(_cfg(data, first, mode, patch=16, precision="bf16", steps=30, use_gan=False), body_model=body)
    recs = [r for r in _records(first) if "loss" in r and "validation" not in r]
    assert "haze" in recs[0] and all(math.isfinite(r["loss"]) for r in recs)
    key = "vgg" if mode == "VERTEX_PROJECTION" else "loss"
    assert np.mean([r[key] for r in recs[-5:]]) < np.mean([r[key] for r in recs[:5]])
    meta = json.loads((first / "avatar.json").read_text())
    tr = meta["training"]
    assert meta["config"]["resolution"] == 32 and tr["patch"] == 16 and tr["precision"] == "bf16"
    assert tr["scale_range"] == [0.5, 1.0] and tr["machine"]["device"] == "cpu" and "torch" in tr["machine"]
    assert tr["haze_radius_px"] == 1
    if mode == "VERTEX_PROJECTION":
        assert meta["config"]["unet"]["point_splat"] is True
    second = tmp_path / "b"
    train(_cfg(data, second, mode, steps=1, init=str(first / "avatar.json"), use_gan=False), body_model=body)
    tr2 = json.loads((second / "avatar.json").read_text())["training"]
    assert tr2["init"]["bundle"] == "avatar.json" and tr2["init"]["tensors_copied"] > 0
    # the warm-started run's first loss is near the first run's last ones, far below a fresh start
    first_loss = _records(second)[0]["loss"]
    assert first_loss < np.mean([r["loss"] for r in recs[:3]])


def test_mask_weight_scales_the_mask_loss_and_is_recorded(tmp_path, data, body):
    """``w_mask`` (``train --mask-weight``) multiplies the mask BCE of the first step (same seed,
    same weights, so the same BCE) and the bundle records it."""
    firsts = {}
    for w in (1.0, 10.0):
        out = tmp_path / f"w{w:g}"
        train(_cfg(data, out, "VERTEX_PROJECTION", steps=1, use_gan=False, w_mask=w), body_model=body)
        firsts[w] = _records(out)[0]
        assert json.loads((out / "avatar.json").read_text())["training"]["mask_weight"] == w
    assert firsts[10.0]["mask"] == pytest.approx(10.0 * firsts[1.0]["mask"], rel=1e-3)
    assert firsts[10.0]["vgg"] == pytest.approx(firsts[1.0]["vgg"], rel=1e-3)
    assert "pixel" not in firsts[1.0]  # SMPLpix eq. 6 alone by default


def test_smplpix_pixel_weight_adds_an_image_l1_term(tmp_path, data, body):
    """``w_pixel_vp`` (``train --pixel-weight``) adds ``w · L1(composited image, target)`` to
    SMPLpix's eq. 6, and the bundle records it."""
    out = tmp_path / "px"
    train(_cfg(data, out, "VERTEX_PROJECTION", steps=1, use_gan=False, w_pixel_vp=5.0), body_model=body)
    first = _records(out)[0]
    ref = tmp_path / "ref"
    train(_cfg(data, ref, "VERTEX_PROJECTION", steps=1, use_gan=False, w_pixel_vp=1.0), body_model=body)
    assert first["pixel"] > 0 and first["pixel"] == pytest.approx(5.0 * _records(ref)[0]["pixel"], rel=1e-3)
    assert first["loss"] == pytest.approx(sum(v for k, v in first.items() if k in ("mask", "haze", "vgg", "pixel")),
                                          rel=1e-4)
    assert json.loads((out / "avatar.json").read_text())["training"]["pixel_weight"] == 5.0


def test_pixel_weight_sets_each_modes_image_l1(tmp_path, data, body):
    """``train --pixel-weight`` sets ANR's eq. 3 pixel weight (``w_pixel``, default 1) and HVS's
    eq. 17 L1 (``w_pixel_hvs``) as it sets SMPLpix's extra L1; the bundle records the weight used;
    AniPixel refuses the flag; without it every mode keeps its default."""
    from neural_avatar.cli.train import pixel_weight_field
    from neural_avatar.errors import NeuralAvatarError

    recs = {}
    for w in (1.0, 4.0):
        out = tmp_path / f"anr{w}"
        train(_cfg(data, out, "NEURAL_TEXTURE", steps=1, use_gan=False, **pixel_weight_field("NEURAL_TEXTURE", w)),
              body_model=body)
        recs[w] = _records(out)[0]
        assert json.loads((out / "avatar.json").read_text())["training"]["pixel_weight"] == w
    assert recs[1.0]["pixel"] > 0 and recs[4.0]["pixel"] == pytest.approx(4.0 * recs[1.0]["pixel"], rel=1e-3)
    assert recs[4.0]["vgg"] == pytest.approx(recs[1.0]["vgg"], rel=1e-3)
    assert pixel_weight_field("GAUSSIAN_BONES", 2.0) == {"w_pixel_hvs": 2.0}
    assert pixel_weight_field("VERTEX_PROJECTION", 10.0) == {"w_pixel_vp": 10.0}
    assert pixel_weight_field("NEURAL_TEXTURE", None) == {}
    with pytest.raises(NeuralAvatarError, match="PIXEL_ALIGNED"):
        pixel_weight_field("PIXEL_ALIGNED", 1.0)


def test_hvs_adversarial_fine_tuning_is_opt_in(tmp_path, data, body):
    """HVS trains without a discriminator by default; ``use_gan=True`` (``train --gan``) adds
    eq. 18's adversarial term and feature matching from the first step, the bundle says so, and
    the CLI maps the flag (and refuses it beside ``--no-gan``)."""
    from neural_avatar.cli.train import build_parser

    plain, adv = tmp_path / "plain", tmp_path / "adv"
    train(_cfg(data, plain, "GAUSSIAN_BONES", steps=2), body_model=body)
    train(_cfg(data, adv, "GAUSSIAN_BONES", steps=2, use_gan=True), body_model=body)
    assert "adv" not in _records(plain)[0] and json.loads((plain / "avatar.json").read_text())["training"]["gan"] is False
    rec = _records(adv)[0]
    assert rec["adv"] > 0 and "fm" in rec and "disc" in rec["lr"]
    assert json.loads((adv / "avatar.json").read_text())["training"]["gan"] is True
    p = build_parser()
    base = ["--data", "d", "--mode", "GAUSSIAN_BONES", "--out", "o"]
    assert p.parse_args(base + ["--gan"]).gan and not p.parse_args(base).gan
    with pytest.raises(SystemExit):
        p.parse_args(base + ["--gan", "--no-gan"])


def test_vgg_weight_scales_each_modes_perceptual_term(tmp_path, data, body):
    """``train --vgg-weight`` sets the perceptual weight of the mode it trains (HVS's lambda_phi,
    SMPLpix's / ANR's VGG term): the first step's recorded ``vgg`` term scales with it (same seed,
    same batch), and the bundle records the weight."""
    from neural_avatar.cli.train import build_parser, vgg_weight_field

    for mode, field, default in (("GAUSSIAN_BONES", "w_vgg_hvs", 10.0), ("VERTEX_PROJECTION", "w_vgg", 1.0)):
        a, b = tmp_path / f"{mode}_a", tmp_path / f"{mode}_b"
        train(_cfg(data, a, mode, steps=1, perceptual="vgg"), body_model=body)
        train(_cfg(data, b, mode, steps=1, perceptual="vgg", **{field: default / 4}), body_model=body)
        va, vb = _records(a)[0]["vgg"], _records(b)[0]["vgg"]
        assert va > 0 and vb == pytest.approx(va / 4, rel=1e-4)
        assert json.loads((b / "avatar.json").read_text())["training"]["vgg_weight"] == default / 4
        assert vgg_weight_field(mode, 2.5) == {field: 2.5}
    args = build_parser().parse_args(["--data", "d", "--mode", "GAUSSIAN_BONES", "--out", "o", "--vgg-weight", "1"])
    assert vgg_weight_field(args.mode, args.vgg_weight) == {"w_vgg_hvs": 1.0}
    assert vgg_weight_field("NEURAL_TEXTURE", None) == {}


def test_resume_continues_exactly_and_cancel_leaves_checkpoint(tmp_path, data, body):
    mode = "NEURAL_TEXTURE"  # jitter, augmentation, split optimisation and GAN all use RNG
    a = tmp_path / "a"
    train(_cfg(data, a, mode, steps=31, ckpt_every=0), body_model=body)
    b = tmp_path / "b"
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 30

    res = train(_cfg(data, b, mode, steps=31, ckpt_every=0), should_stop=stop, body_model=body)
    assert res["status"] == "cancelled" and res["step"] == 30
    ck = load_checkpoint(b / "last.ckpt")  # torch.load(weights_only=True) inside
    assert ck["step"] == 30 and isinstance(ck["rng"]["torch"], torch.Tensor)
    assert not [p for p in os.listdir(b) if p.endswith(".tmp")]
    assert not (b / "avatar.safetensors").exists()
    res = train(_cfg(data, b, mode, steps=31, ckpt_every=0, resume=True), body_model=body)
    assert res["status"] == "finished" and res["step"] == 31
    la = [r for r in _records(a) if r.get("step") == 31 and "loss" in r and "validation" not in r][0]
    lb = [r for r in _records(b) if r.get("step") == 31 and "loss" in r and "validation" not in r][-1]
    assert lb["loss"] == pytest.approx(la["loss"], rel=1e-6, abs=1e-7)
    assert lb["pixel"] == pytest.approx(la["pixel"], rel=1e-6, abs=1e-7)




def test_multi_identity_textures(tmp_path, body):
    d = tmp_path / "data"
    write_synthetic_dataset(str(d), n=6, res=24, seed=2, body_model=body, identities=2)
    out = tmp_path / "out"
    res = train(_cfg(str(d), out, "NEURAL_TEXTURE", steps=6, use_gan=False), body_model=body)
    assert res["status"] == "finished"
    recs = [r for r in _records(out) if "loss" in r and "validation" not in r]
    assert {r["identity"] for r in recs} == {0, 1}
    a0 = load_bundle(out / "avatar", expected_mode="NEURAL_TEXTURE")
    a1 = load_bundle(out / "avatar", expected_mode="NEURAL_TEXTURE", identity="subject1")
    t0, t1 = a0.identity.texture(), a1.identity.texture()
    assert not torch.allclose(t0, t1)  # one texture per identity, one shared renderer, one file
    assert torch.equal(load_bundle(out / "avatar", identity="subject0").identity.texture(), t0)
    sd0, sd1 = a0.state_dict(), a1.state_dict()
    assert all(torch.equal(sd0[k], sd1[k]) for k in sd0 if not k.startswith("identity."))
    assert not (out / "avatar_subject1.json").exists()
    s0, s1 = a0.state_dict(), a1.state_dict()
    shared = [k for k in s0 if not k.startswith("identity.")]
    assert shared and all(torch.equal(s0[k], s1[k]) for k in shared)  # one shared renderer


def test_cli_json_progress_and_killed_run_leaves_checkpoint(tmp_path, data):
    """A run killed with SIGKILL after a checkpoint leaves a loadable last.ckpt."""
    out = tmp_path / "cli"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # the default body is not needed: the CLI process builds the capsule body the data uses
    code = ("import sys, neural_avatar.neural.training.trainer as T, neural_avatar.neural.training.dataset as D;"
            "import neural_avatar.cli.train as C;"
            "T._load_body = lambda meta, body_dir=None: D.capsule_body();"
            "sys.exit(C.main(sys.argv[1:]))")
    args = [sys.executable, "-c", code, "--data", data, "--mode", "GAUSSIAN_BONES", "--out", str(out),
            "--steps", "100000", "--batch", "1", "--log-every", "1", "--ckpt-every", "2", "--val-every", "0",
            "--perceptual", "l1_msssim", "--avatar-json", json.dumps(TINY["GAUSSIAN_BONES"])]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    seen = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            ev = json.loads(line)
            seen.append(ev)
            if ev["event"] == "progress" and ev["step"] >= 5:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    prog = [e for e in seen if e["event"] == "progress"]
    assert prog and {"step", "loss", "eta_s"} <= set(prog[-1])
    ck = load_checkpoint(out / "last.ckpt")
    assert ck["step"] >= 2 and ck["step"] % 2 == 0 and ck["mode"] == "GAUSSIAN_BONES"


def test_cli_reports_errors_as_json(tmp_path, capsys):
    from neural_avatar.cli.train import main

    rc = main(["--data", str(tmp_path / "missing"), "--mode", "NEURAL_TEXTURE", "--out", str(tmp_path / "o")])
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 2 and ev["event"] == "error" and "does not exist" in ev["message"]


_DDP_WORKER = """
import json, sys, torch
from neural_avatar.neural.training.dataset import capsule_body
from neural_avatar.neural.training.trainer import TrainConfig, train
torch.set_num_threads(1)
res = train(TrainConfig(**json.loads(sys.argv[1])), body_model=capsule_body())
print("STATUS", res["status"])
"""


def test_ddp_two_gloo_processes_match_single_process(tmp_path, data, body):
    """Two gloo processes launched the way torchrun does (RANK/WORLD_SIZE/MASTER_* env)."""
    import socket
    import subprocess
    import sys

    kw = dict(steps=3, batch=2, use_gan=False, stage1_fraction=1.0, ckpt_every=0,
              avatar={"unet": {"width": 8, "depth": 3, "norm": "instance"}})
    train(_cfg(data, tmp_path / "single", "VERTEX_PROJECTION", **kw), body_model=body)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = dict(data=str(data), mode="VERTEX_PROJECTION", out=str(tmp_path / "ddp"), log_every=1, val_every=0,
                disc_width=8, perceptual="l1_msssim", threads=1, **kw)
    procs = []
    for rank in range(2):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                   LOCAL_RANK=str(rank))
        procs.append(subprocess.Popen([sys.executable, "-c", _DDP_WORKER, json.dumps(base)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert all("STATUS finished" in o for o in outs), outs
    single = [r for r in _records(tmp_path / "single") if "loss" in r and "validation" not in r]
    ddp = [r for r in _records(tmp_path / "ddp") if "loss" in r and "validation" not in r]
    assert [r["step"] for r in ddp] == [1, 2, 3]
    for a, b in zip(single, ddp):  # same global batch: same loss, same updates
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), (a, b)


def test_multi_identity_smplpix_uses_each_subjects_vertex_colours(tmp_path, body):
    """Issue 15's bug: identity 1's input was identity 0's. Now each identity's network input is
    the projection of its own baked colours, and its bundle carries them."""
    from neural_avatar.neural.training.dataset import CaptureDataset
    from neural_avatar.neural.training.trainer import _Dist, _Trainer
    from neural_avatar.neural.avatar import build_avatar
    from neural_avatar.neural.config import AvatarConfig

    d = tmp_path / "data"
    write_synthetic_dataset(str(d), n=6, res=24, seed=3, body_model=body, identities=2)
    ds = CaptureDataset(str(d), "train", body)
    assert not torch.allclose(ds.vertex_colors_all[0], ds.vertex_colors_all[1])
    out = tmp_path / "out"
    res = train(_cfg(str(d), out, "VERTEX_PROJECTION", steps=4, use_gan=False), body_model=body)
    assert res["status"] == "finished"
    a0 = load_bundle(out / "avatar", expected_mode="VERTEX_PROJECTION")
    a1 = load_bundle(out / "avatar", expected_mode="VERTEX_PROJECTION", identity="subject1")
    assert torch.allclose(a0.identity.vertex_colors, ds.vertex_colors_all[0])
    assert torch.allclose(a1.identity.vertex_colors, ds.vertex_colors_all[1])
    # during training: the input image of an identity-1 frame shows identity 1's colours
    cfg = _cfg(str(d), tmp_path / "x", "VERTEX_PROJECTION")
    av = build_avatar(AvatarConfig.from_dict({**AvatarConfig.default("VERTEX_PROJECTION", resolution=24).to_dict(),
                                              "unet": {**AvatarConfig.default("VERTEX_PROJECTION").unet.to_dict(),
                                                       "width": 8, "depth": 3}}), body)
    av.identity.vertex_colors.data.copy_(ds.vertex_colors_all[0])  # identity 0: the avatar's own (as train() does)
    av.identity.vertex_colors.requires_grad_(False)
    tr = _Trainer(cfg, av, 2, torch.device("cpu"), _Dist(torch.device("cpu")))
    for k in range(2):
        tr.fixed[k] = {"identity.vertex_colors": ds.vertex_colors_all[k]}
    frame, _ = ds.batch([0])
    inp = [tr.forward(frame, k)["input"][:, :3] for k in range(2)]
    want = []
    for k in range(2):
        ref = build_avatar(av.config, body)
        ref.identity.vertex_colors.data.copy_(ds.vertex_colors_all[k])
        want.append(ref.make_input(frame)["input"][:, :3])
    assert not torch.allclose(inp[0], inp[1])
    assert torch.allclose(inp[1], want[1]) and torch.allclose(inp[0], want[0])


def test_fit_identity_keeps_the_renderer_and_adds_a_person(tmp_path, data, body):
    """ANR fitting: a new person's texture from K frames with the renderer frozen; the result
    has the trained bundle's person plus the new one, and every shared tensor is unchanged."""
    base = tmp_path / "base"
    train(_cfg(data, base, "NEURAL_TEXTURE", steps=30, use_gan=False), body_model=body)
    other = tmp_path / "other"
    write_synthetic_dataset(str(other), n=6, res=32, seed=9, body_model=body)
    fit = tmp_path / "fit"
    res = train(_cfg(str(other), fit, "NEURAL_TEXTURE", steps=40, lr_identity=5e-2, augment=False, init=str(base / "avatar.json"),
                     fit_identity="newbie", frames_limit=3, split_optimization=False), body_model=body)
    assert res["status"] == "finished"
    recs = [r for r in _records(fit) if "loss" in r and "validation" not in r]
    assert all(math.isfinite(r["loss"]) for r in recs) and "adv" not in recs[0]
    # (a renderer trained for 30 tiny steps barely reads its texture, so the loss is not judged here)
    a = load_bundle(base / "avatar")
    meta = json.loads((fit / "avatar.json").read_text())
    assert meta["identities"] == ["subject", "newbie"]
    b0, b1 = load_bundle(fit / "avatar"), load_bundle(fit / "avatar", identity="newbie")
    for k, v in a.state_dict().items():  # the renderer (BN statistics too) and the old person unchanged
        assert torch.equal(b0.state_dict()[k], v), k
        if not k.startswith("identity."):
            assert torch.equal(b1.state_dict()[k], v), k
    assert not torch.allclose(b1.identity.texture(), a.identity.texture())
    fresh = train(_cfg(str(other), tmp_path / "fresh", "NEURAL_TEXTURE", steps=1, lr_identity=0.0, augment=False,
                       init=str(base / "avatar.json"), fit_identity="newbie", split_optimization=False),
                  body_model=body)
    start = load_bundle(tmp_path / "fresh" / "avatar", identity="newbie").identity.texture()
    assert (b1.identity.texture() - start).abs().mean() > 1e-3  # the fitted texture moved from its initialisation
    with pytest.raises(NeuralAvatarError, match="nothing to fit"):
        train(_cfg(str(other), tmp_path / "vp", "VERTEX_PROJECTION", init=str(base / "avatar.json"),
                   fit_identity="x"), body_model=body)


def test_smplpix_descriptors_warm_start_from_an_rgbd_bundle(tmp_path, data, body):
    """Adding descriptors to a trained SMPLpix bundle (``--init`` with ``unet.descriptors``):
    the first conv keeps the bundle's kernels on the RGB-D channels and zeros on the new ones,
    so the warm-started avatar paints exactly the bundle's picture; then training moves the
    descriptors at their own learning rate (``lr_identity``), which the record keeps."""
    from types import SimpleNamespace

    from neural_avatar.body import kinematics
    from neural_avatar.neural.avatar import build_avatar
    from neural_avatar.neural.config import AvatarConfig
    from neural_avatar.neural.evaluation.bench_core import make_frame
    from neural_avatar.neural.training.trainer import _warm_start

    first = tmp_path / "a"
    train(_cfg(data, first, "VERTEX_PROJECTION", steps=3, use_gan=False), body_model=body)
    src = load_bundle(first / "avatar", expected_mode="VERTEX_PROJECTION")
    d = src.config.to_dict()
    d["unet"] = {**d["unet"], "descriptors": 4, "in_ch": 8}
    av = build_avatar(AvatarConfig.from_dict(d), body)
    info = _warm_start(av, str(first / "avatar.json"), "VERTEX_PROJECTION")
    assert info["tensors_extended"] == ["net.unet.inc.0.weight"] and not info["tensors_skipped"]
    w = av.net.unet.inc[0].weight
    assert torch.equal(w[:, :4], src.net.unet.inc[0].weight) and not w[:, 4:].any()
    v, j = kinematics.forward(body)  # rest pose, (V,3) and (J,3)
    f = make_frame(SimpleNamespace(verts=v, joints=j), 32)
    assert torch.equal(av.render(f)["rgb"], src.render(f)["rgb"])
    second = tmp_path / "b"
    train(_cfg(data, second, "VERTEX_PROJECTION", steps=3, use_gan=False, init=str(first / "avatar.json"),
               avatar={"unet": {"descriptors": 4, "in_ch": 8}}, lr_identity=1e-2), body_model=body)
    tr = json.loads((second / "avatar.json").read_text())["training"]
    assert tr["init"]["tensors_extended"] == ["net.unet.inc.0.weight"] and tr["lr"]["identity"] == pytest.approx(1e-2)
    moved = load_bundle(second / "avatar", expected_mode="VERTEX_PROJECTION").identity.vertex_descriptors
    assert float((moved.detach() - av.identity.vertex_descriptors.detach()).abs().max()) > 1e-3


def test_haze_penalty_radius_follows_the_smallest_rendered_scale():
    """The haze penalty dilates the silhouette by the ``haze`` metric's radius for the smallest
    frame the rescale range stands for: 512² windows rescaled by 0.5-1 stand for 256²-512²
    frames, whose metric radii are 3-5 px, so the penalty uses 3 px (a fixed 5 px left the
    256² eval's halo unpenalised); without rescaling it is the capture's own."""
    from neural_avatar.neural.evaluation.metrics import haze_radius
    from neural_avatar.neural.training.trainer import training_haze_radius

    assert training_haze_radius((512, 512), 0.5) == haze_radius((256, 256)) == 3
    assert training_haze_radius((512, 512), 1.0) == haze_radius((512, 512)) == 5
    assert training_haze_radius((512, 384), 0.75) == haze_radius((384, 288)) == 4
    assert training_haze_radius((512, 512), 1.25) == 5  # zoom-ins do not widen it
    assert training_haze_radius((32, 32), 0.5) == 1
