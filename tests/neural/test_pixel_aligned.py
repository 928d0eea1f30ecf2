"""PIXEL_ALIGNED (AniPixel): the skinning round trip, the density and normal maths against
finite differences, source views, the bundle round trip and a tiny training run."""

import json

import numpy as np
import pytest
import torch

from neural_avatar import body as body_lib
from neural_avatar.body import kinematics
from neural_avatar.errors import NeuralAvatarError
from neural_avatar.neural.avatar import FrameInputs, build_avatar
from neural_avatar.neural.bundle import load_bundle, save_bundle
from neural_avatar.neural.config import AvatarConfig
from neural_avatar.neural.inputs import skinning
from neural_avatar.neural.networks.anipixel import AniPixelFields, HashGrid, laplace_density, sdf_normal
from neural_avatar.neural.training.dataset import CaptureDataset, write_synthetic_dataset
from neural_avatar.neural.training.trainer import TrainConfig, train

SMALL = {"pixel": {"hidden": 16, "samples": 8, "source_res": 32, "vertex_stride": 8}}


@pytest.fixture(scope="module")
def model():
    return body_lib.load_default()


def _posed(model, seed=0):
    rng = np.random.default_rng(seed)
    pose = np.zeros((model.num_joints, 3))
    pose[1:] = rng.normal(0, 0.35, (model.num_joints - 1, 3))
    pose[0] = [0.3, 1.0, -0.2]
    betas = np.zeros(model.num_betas)
    betas[:2] = [0.8, -0.5]
    v, j = kinematics.forward(model, betas, pose[None], np.array([[0.2, 0.9, -0.1]]))
    return torch.tensor(np.asarray(v), dtype=torch.float32), torch.tensor(np.asarray(j), dtype=torch.float32)


def test_skinning_round_trip_within_a_millimetre(model):
    """canonical -> posed (forward LBS, eq. 3) -> canonical (backward skinning with the nearest
    posed vertex's weights, eq. 1), on the body's own vertices."""
    tmpl = torch.tensor(np.asarray(model.v_template), dtype=torch.float32)
    W = torch.tensor(np.asarray(model.weights), dtype=torch.float32)
    posed, _ = _posed(model)
    T = skinning.bone_transforms(tmpl, posed, W)
    sub = torch.arange(0, tmpl.shape[0], 5)
    x_c = tmpl[sub][None]
    x_t = skinning.apply(skinning.blend(W[sub][None], T), x_c)  # forward
    _, nn = skinning.nearest(x_t, x_t)  # the posed surface (the same vertices)
    back = skinning.apply_inverse(skinning.blend(W[sub][nn], T), x_t)
    assert float((back - x_c).norm(dim=-1).max()) < 1e-3
    # the recovered bones carry the template close to the real posed body (shape stays residual)
    U = skinning.unpose(posed, W, T)
    assert float((skinning.apply(skinning.blend(W[None], T), U) - posed).norm(dim=-1).max()) < 1e-3
    # box normalisation and its inverse
    scale, cs, c0 = skinning.box_normalisation(U, tmpl)
    xn = scale[:, None] * (U - cs[:, None]) + c0
    assert torch.allclose((xn - c0) / scale[:, None] + cs[:, None], U, atol=1e-5)
    lo, hi = xn.amin(1), xn.amax(1)
    assert torch.allclose(hi - lo, (tmpl.amax(0) - tmpl.amin(0))[None], atol=1e-4)


def test_density_is_the_scaled_laplace_cdf():
    b = torch.tensor(0.02, dtype=torch.float64)
    s = torch.linspace(-0.1, 0.1, 2001, dtype=torch.float64)
    sigma = laplace_density(s, b)
    # eq. 5 = (1/b) * CDF of Laplace(0, b) at -s: its derivative is -(1/b) * pdf(s) = -exp(-|s|/b) / (2 b^2)
    ds = s[1] - s[0]
    fd = (sigma[2:] - sigma[:-2]) / (2 * ds)
    pdf = torch.exp(-s[1:-1].abs() / b) / (2 * b)
    keep = s[1:-1].abs() > 2 * ds  # the kink at 0
    assert torch.allclose(fd[keep], -pdf[keep] / b, rtol=2e-3)
    assert float(laplace_density(torch.tensor(0.0, dtype=torch.float64), b)) == pytest.approx(0.5 / 0.02)
    assert float(sigma[-1]) < float(sigma[0]) * 1e-2  # empty outside, dense inside


def test_sdf_normal_matches_finite_differences(model):
    torch.manual_seed(0)
    f = AniPixelFields(model.num_joints, 2, hidden=16).double()
    for p in f.sdf.parameters():  # a non-trivial residual
        torch.nn.init.normal_(p, std=0.3)
    tmpl = torch.tensor(np.asarray(model.v_template), dtype=torch.float64)[::8]
    from neural_avatar.neural.pixel_aligned import vertex_normals

    nrm = torch.tensor(vertex_normals(np.asarray(model.v_template, np.float64), np.asarray(model.faces))[::8])
    x = tmpl[::40][None] + 0.01 * torch.randn(1, len(tmpl[::40]), 3, dtype=torch.float64)
    cond = torch.randn(1, x.shape[1], 3 + 16 + 16, dtype=torch.float64)
    from neural_avatar.neural.networks.anipixel import canonical_sdf

    s, g = sdf_normal(f, x, cond, tmpl, nrm)
    h = 1e-6
    fd = torch.zeros_like(x)
    for k in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[k] = h
        fd[..., k] = (canonical_sdf(f, x + e, cond, tmpl, nrm) - canonical_sdf(f, x - e, cond, tmpl, nrm)) / (2 * h)
    assert torch.allclose(g, fd, atol=1e-5, rtol=1e-4)


def _avatar(model):
    cfg = AvatarConfig.from_dict({**AvatarConfig.default("PIXEL_ALIGNED", resolution=32).to_dict(), **SMALL})
    return build_avatar(cfg, model)


@pytest.fixture(scope="module")
def views_capture(tmp_path_factory, model):
    root = tmp_path_factory.mktemp("views")
    write_synthetic_dataset(str(root), n=14, res=32, seed=2, body_model=model, identities=2, views=3)
    return str(root)


def test_render_needs_sources_and_round_trips_a_bundle(tmp_path, model, views_capture):
    av = _avatar(model)
    ds = CaptureDataset(views_capture, "train", model)
    i = ds.indices[4]
    v, j = ds.posed_body(i)
    K, R, t = ds.camera(i)
    f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
    frame = FrameInputs(verts=f32(v)[None], joints=f32(j)[None], K=f32(K)[None], R=f32(R)[None], t=f32(t)[None],
                        size=(24, 24))
    with pytest.raises(NeuralAvatarError, match="source views"):
        av.render(frame)
    src = ds.sources([0, 1, 2], views_per_item=3)
    av.set_sources(src)
    out = av.render(frame)
    assert out["rgb"].shape == (1, 3, 24, 24) and out["mask"].shape == (1, 1, 24, 24)
    assert bool(torch.isfinite(out["rgb"]).all()) and float(out["mask"].max()) > 0.05
    st, _ = save_bundle(av, tmp_path / "pa")
    av2 = load_bundle(st, expected_body=model)
    av2.set_sources(src)
    assert torch.allclose(av2.render(frame)["rgb"], out["rgb"], atol=1e-5)
    # rays in chunks: the same picture, and a cancel point between chunks
    import neural_avatar.neural.pixel_aligned as PA

    old = PA.RAY_CHUNK
    try:
        PA.RAY_CHUNK = 37
        assert torch.allclose(av.render(frame)["rgb"], out["rgb"], atol=1e-5)
        calls = []
        av.should_stop = lambda: calls.append(1) or len(calls) > 2
        from neural_avatar.errors import CancelledError

        with pytest.raises(CancelledError):
            av.render(frame)
        assert len(calls) == 3
    finally:
        PA.RAY_CHUNK = old
        av.should_stop = None


def _hash_grid_reference(g, x):
    """Müller et al. eq. 3-4 written out level by level and corner by corner."""
    u = ((x - g.lo) / (g.hi - g.lo)).clamp(0.0, 1.0)
    outs = []
    for level in range(g.levels):
        p = u * g.res[level]
        p0 = torch.floor(p)
        f = p - p0
        acc = 0.0
        for corner in range(8):
            o = torch.tensor([(corner >> 0) & 1, (corner >> 1) & 1, (corner >> 2) & 1])
            c = p0.long() + o
            idx = ((c[:, 0] * 1) ^ (c[:, 1] * 2654435761) ^ (c[:, 2] * 805459861)) % g.T
            w = torch.where(o.bool(), f, 1.0 - f).prod(-1, keepdim=True)
            acc = acc + w * g.table[level][idx]
        outs.append(acc)
    return torch.cat(outs, -1)


def test_hash_grid_matches_the_encoding_written_out_with_its_gradients():
    torch.manual_seed(0)
    g = HashGrid(levels=4, features=2, log2_table=10, base=4, finest=64)
    with torch.no_grad():
        g.table.uniform_(-1, 1)
    x = (torch.rand(300, 3) * 2.6 - 1.3).requires_grad_(True)  # some points outside the box (clamped)
    ref = _hash_grid_reference(g, x)
    wt = torch.randn_like(ref)
    rx, rt = torch.autograd.grad((ref * wt).sum(), (x, g.table))
    for training in (True, False):  # the gather (twice differentiable) and the fused inference kernel
        g.train(training)
        out = g(x)
        assert out.shape == (300, 8)
        assert torch.allclose(out, ref, atol=1e-6)
        gx, gt = torch.autograd.grad((out * wt).sum(), (x, g.table))
        assert torch.allclose(gx, rx, atol=1e-5) and torch.allclose(gt, rt, atol=1e-5)
        assert float(gt.abs().sum()) > 0 and g(x[None]).shape == (1, 300, 8)  # batch dims kept
    g.train(True)  # training's second derivative (the Eikonal term's gradient) goes through
    gx = torch.autograd.grad((g(x) ** 2).sum(), x, create_graph=True)[0]
    assert gx.requires_grad and torch.autograd.grad(gx.sum(), g.table)[0].abs().sum() > 0


def test_inference_shades_only_the_weighted_samples_and_paints_the_same_picture(model, views_capture, monkeypatch):
    """Inference runs the geometry (eq. 1-5) at every near-body sample and the appearance
    (eq. 6-7) only where the volume-rendering weight exceeds COLOUR_WEIGHT_EPS: the pixels stay
    within samples x eps of shading every sample, and fewer samples are shaded."""
    import neural_avatar.neural.pixel_aligned as PA
    import neural_avatar.neural.networks.anipixel as AP

    torch.manual_seed(3)
    av = _avatar(model)
    ds = CaptureDataset(views_capture, "train", model)
    av.set_sources(ds.sources([0, 1, 2], views_per_item=3))
    i = ds.indices[5]
    v, j = ds.posed_body(i)
    K, R, t = ds.camera(i)
    f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32))[None]  # noqa: E731
    frame = FrameInputs(verts=f32(v), joints=f32(j), K=f32(K), R=f32(R), t=f32(t), size=(32, 32))
    shaded = []
    real = AP.eval_colour

    def counting(fields, body, ctx, view_dir, src, sel=None):
        shaded.append((ctx["x_c"].shape[1], ctx["x_c"].shape[1] if sel is None else len(sel)))
        return real(fields, body, ctx, view_dir, src, sel)

    monkeypatch.setattr(AP, "eval_colour", counting)
    monkeypatch.setattr(PA, "eval_colour", counting)
    monkeypatch.setattr(PA, "COLOUR_WEIGHT_EPS", None)
    every = av.render(frame)
    assert shaded and all(n == m for m, n in shaded)  # the reference shades every sample
    shaded.clear()
    monkeypatch.setattr(PA, "COLOUR_WEIGHT_EPS", 1e-4)
    fast = av.render(frame)
    evaluated, kept = sum(m for m, _ in shaded), sum(n for _, n in shaded)
    assert 0 < kept < evaluated
    assert torch.equal(fast["mask"], every["mask"])  # the geometry is the same computation
    bound = av.config.pixel.samples * 1e-4
    assert float((fast["rgb"] - every["rgb"]).abs().max()) <= bound + 1e-6
    assert float(every["mask"].max()) > 0.5  # the body is there, so the comparison means something


def test_tiny_training_run_reduces_the_loss(tmp_path, model, views_capture):
    cfg = TrainConfig(data=views_capture, mode="PIXEL_ALIGNED", out=str(tmp_path), steps=30, batch=1, log_every=1,
                      val_every=0, ckpt_every=0, avatar=SMALL, perceptual="l1_msssim", threads=1, patch=16,
                      phase1_fraction=0.0, lr=2e-3)
    res = train(cfg, body_model=model)
    assert res["status"] == "finished"
    with open(tmp_path / "metrics.jsonl") as f:
        losses = [json.loads(x)["loss"] for x in f if '"loss"' in x and "validation" not in x]
    assert len(losses) == 30 and all(np.isfinite(losses))
    # the image error on fixed training frames (each from another instant's 3 views) falls
    ds = CaptureDataset(views_capture, "train", model)
    torch.manual_seed(cfg.seed)
    fresh = _avatar(model)
    trained = load_bundle(res["bundle"], expected_body=model)
    f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731

    def err(av):
        e = []
        for p, srcs in ((0, [6, 7, 8]), (4, [9, 10, 11]), (7, [0, 1, 2])):  # same person, another instant
            i = ds.indices[p]
            v, j = ds.posed_body(i)
            K, R, t = ds.camera(i)
            av.set_sources(ds.sources(srcs, views_per_item=3))
            out = av.render(FrameInputs(verts=f32(v)[None], joints=f32(j)[None], K=f32(K)[None], R=f32(R)[None],
                                        t=f32(t)[None], size=(32, 32)))
            rgb, _ = ds.load_image(i)
            e.append(float((out["rgb"][0].permute(1, 2, 0) - torch.from_numpy(rgb)).abs().mean()))
        return float(np.mean(e))

    assert err(trained) < err(fresh)
