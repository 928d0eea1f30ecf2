"""Per-mode avatar pipelines (neural/avatar.py) on a tiny procedural body."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from neural_avatar.errors import NeuralAvatarError
from neural_avatar.neural.avatar import FrameInputs, build_avatar, GaussianBonesAvatar
from neural_avatar.neural.evaluation.bench_core import make_frame, procedural_body
from neural_avatar.neural.inputs.camera import project_points
from neural_avatar.neural.config import AnrConfig, AvatarConfig, StyleConfig, UNetConfig, IMAGE_MODES as MODES

SUBS = {
    "VERTEX_PROJECTION": dict(unet=UNetConfig(width=4, depth=2)),
    "NEURAL_TEXTURE": dict(anr=AnrConfig(texture_size=16, pyramid_levels=2, latent_channels=5,
                                         r1_width=4, r1_depth=2, r2_width=4, r2_depth=2)),
    "GAUSSIAN_BONES": dict(style=StyleConfig(num_primitives=2, appearance_dim=4, widths=(4, 8), w_dim=8)),
}


def tiny_body():
    """~60-vertex ellipsoid with UVs and a 3-joint chain (pelvis -> spine -> head)."""
    b = procedural_body(60)
    b.parents = np.array([-1, 0, 1])
    b.joints = np.array([[0, -0.6, 0], [0, 0.0, 0], [0, 0.6, 0]], np.float32)
    return b


def tiny_avatar(mode, body=None, **kw):
    body = body or tiny_body()
    cfg = AvatarConfig.default(mode, num_joints=3, resolution=32, **SUBS[mode], **kw)
    return build_avatar(cfg, body), body


def frame2(body, size=32):
    f = make_frame(body, size)
    # two frames: the second one slightly moved
    verts = torch.cat([f.verts, f.verts + torch.tensor([0.05, 0, 0])])
    joints = torch.cat([f.joints, f.joints + torch.tensor([0.05, 0, 0])])
    return dataclasses.replace(f, verts=verts, joints=joints, size=(size, size - 3))


@pytest.mark.parametrize("mode", MODES)
def test_forward_outputs(mode):
    torch.manual_seed(0)
    av, body = tiny_avatar(mode)
    out = av(frame2(body))
    H, W = 32, 29
    assert out["rgb"].shape == (2, 3, H, W) and out["mask"].shape == (2, 1, H, W)
    assert out["input"].shape == (2, av.input_channels, H, W)
    assert (out["aux_rgb"] is not None) == (mode == "NEURAL_TEXTURE")
    assert (out["depth"] is None) == (mode == "GAUSSIAN_BONES")
    m = out["mask"]
    bg = torch.tensor(av.config.background).view(1, 3, 1, 1)
    assert torch.allclose(out["rgb"], m * out["rgb_fg"] + (1 - m) * bg, atol=1e-6)
    assert av.mode == mode and av.config.num_verts == body.num_verts


@pytest.mark.parametrize("mode", MODES)
def test_gradients_reach_identity_and_network(mode):
    torch.manual_seed(0)
    av, body = tiny_avatar(mode)
    ident = av.identity_parameters()
    net = av.network_parameters()
    assert ident and net
    assert {id(p) for p in ident}.isdisjoint({id(p) for p in net})
    assert len(ident) + len(net) == len(list(av.parameters()))
    out = av(frame2(body))
    loss = (out["rgb"] - 0.3).abs().mean() + out["mask"].mean()
    if out["aux_rgb"] is not None:
        loss = loss + out["aux_rgb"].mean()
    loss.backward()
    for p in ident + net:
        assert p.grad is not None and torch.isfinite(p.grad).all()
    for name, p in av.identity.named_parameters():
        assert p.grad.abs().sum() > 0, f"no gradient reaches identity.{name}"
    assert sum(float(p.grad.abs().sum()) > 0 for p in net) >= 0.9 * len(net)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_render_half_precision_cpu(mode, precision):
    torch.manual_seed(0)
    av, body = tiny_avatar(mode)
    av.train()
    f = frame2(body)
    ref = av.render(f)
    out = av.render(f, precision=precision)
    assert av.training  # mode restored
    assert out["rgb"].dtype == torch.float32
    assert not out["rgb"].requires_grad
    assert (out["rgb"] - ref["rgb"]).abs().max() < 0.05
    assert torch.equal(av.render(f)["rgb"], ref["rgb"])  # deterministic in eval
    with pytest.raises(NeuralAvatarError, match="precision"):
        av.render(f, precision="int4")


def test_frame_background_and_checks():
    av, body = tiny_avatar("VERTEX_PROJECTION")
    f = dataclasses.replace(frame2(body), background=torch.tensor([0.0, 1.0, 0.0]))
    out = av.render(f)
    m = out["mask"]
    assert torch.allclose(out["rgb"][:, 1:2], m * out["rgb_fg"][:, 1:2] + (1 - m), atol=1e-6)
    bad = dataclasses.replace(f, verts=f.verts[:, :-1])
    with pytest.raises(NeuralAvatarError, match="vertices"):
        av(bad)
    gav, gbody = tiny_avatar("GAUSSIAN_BONES")
    with pytest.raises(NeuralAvatarError, match="joints"):
        gav(dataclasses.replace(make_frame(gbody, 16), joints=torch.zeros(1, 5, 3)))


def test_vertex_projection_depth_range_and_metric_depth():
    av, body = tiny_avatar("VERTEX_PROJECTION")
    f = frame2(body)
    near, far = av.depth_range(f.verts, f.R, f.t)
    _, z = project_points(f.verts, f.K, f.R, f.t)
    assert torch.all(z.min(1).values >= near) and torch.all(z.max(1).values <= far)
    out = av.render(f)
    hit = torch.isfinite(out["depth"])
    assert hit.any()
    d = out["input"][:, 3:4]
    assert torch.all(d[hit] < 1) and torch.all(d[~hit] == 1)  # background depth = 1 (SMPLpix eq. 4)
    zs = out["depth"][hit]
    assert zs.min() >= z.min() - 1e-4 and zs.max() <= z.max() + 1e-4
    # same body, camera 1 m further: normalised depth image is unchanged (distance invariant)
    f2 = dataclasses.replace(f, t=f.t + torch.tensor([0.0, 0.0, 1.0]), K=f.K.clone())
    f2.K[:, 0, 0] *= (f.t[0, 2] + 1) / f.t[0, 2]
    f2.K[:, 1, 1] *= (f.t[0, 2] + 1) / f.t[0, 2]
    d2 = av.render(f2)["input"][:, 3:4]
    same = hit & torch.isfinite(av.render(f2)["depth"])
    assert (d2[same] - d[same]).abs().max() < 0.15


def test_build_avatar_fills_and_checks_config():
    body = tiny_body()
    av, _ = tiny_avatar("NEURAL_TEXTURE", body)
    assert av.config.body_model_id == body.model_id
    assert av.faces.shape == (len(body.faces), 3) and av.uv.shape == (len(body.vt), 2)
    no_uv = SimpleNamespace(**{**vars(body), "vt": None})
    with pytest.raises(NeuralAvatarError, match="vt"):
        tiny_avatar("NEURAL_TEXTURE", no_uv)
    cfg = AvatarConfig.default("VERTEX_PROJECTION", num_verts=body.num_verts + 1, **SUBS["VERTEX_PROJECTION"])
    with pytest.raises(NeuralAvatarError, match="vertices"):
        build_avatar(cfg, body)
    # GAUSSIAN_BONES adapts the primitive count to the skeleton (24 joints -> 23 bones)
    big = procedural_body(60)
    gav = build_avatar(AvatarConfig.default("GAUSSIAN_BONES", style=StyleConfig(widths=(4, 8), w_dim=8)), big)
    assert isinstance(gav, GaussianBonesAvatar)
    assert gav.identity.appearance.shape == (23, 16) and gav.config.num_joints == 24
    assert gav(make_frame(big, 24))["rgb"].shape == (1, 3, 24, 24)


def test_no_transposed_convs_in_any_avatar():
    for mode in MODES:
        av, _ = tiny_avatar(mode)
        assert not any(isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
                       for m in av.modules())


def test_procedural_body_sizes():
    for n in (7000, 27000):
        b = procedural_body(n)
        assert abs(b.num_verts - n) / n < 0.02
        assert b.faces.min() >= 0 and b.faces.max() < b.num_verts
        assert b.vt.shape == (b.num_verts, 2) and b.joints.shape == (24, 3)


def test_frame_inputs_to_device_dtype():
    body = tiny_body()
    f = make_frame(body, 8)
    g = dataclasses.replace(f, verts=f.verts.double()).to("cpu")
    assert g.verts.dtype == torch.float32 and g.size == (8, 8)
    assert isinstance(FrameInputs, type)


def test_vertex_projection_descriptors_are_projected_and_learnt():
    """``unet.descriptors = D``: the input is SMPLpix's RGB-D on its first four channels, then
    D learnt per-vertex channels (background 1 like the rest, SMPLpix eq. 4); the descriptors
    get gradients and are per-identity; in_ch must be 4 + D."""
    torch.manual_seed(0)
    body = tiny_body()
    plain, _ = tiny_avatar("VERTEX_PROJECTION", body)
    sub = SUBS["VERTEX_PROJECTION"]["unet"]
    cfg = AvatarConfig.default("VERTEX_PROJECTION", num_joints=3, resolution=32,
                               unet=dataclasses.replace(sub, descriptors=5, in_ch=9))
    av = build_avatar(cfg, body)
    av.identity.vertex_colors.data.copy_(plain.identity.vertex_colors.data)
    f = frame2(body)
    x = av.make_input(f)["input"]
    ref = plain.make_input(f)["input"]
    assert x.shape == (2, 9, 32, 29) and torch.equal(x[:, :4], ref)
    hit = ref[:, 3] < 1.0  # pixels a vertex landed on
    assert hit.any() and bool((x[:, 4:][(~hit)[:, None].expand(-1, 5, -1, -1)] == 1.0).all())
    d = av.identity.vertex_descriptors
    assert d.shape == (body.num_verts, 5) and any(p is d for p in av.identity_parameters())
    # the splatted values are the descriptors themselves
    vals = x[:, 4:].permute(0, 2, 3, 1)[hit].detach()
    assert float((vals[:, None] - d.detach()[None]).abs().amax(-1).amin(1).max()) == 0.0
    out = av(f)
    ((out["rgb"] - 0.3).abs().mean() + out["mask"].mean()).backward()
    assert d.grad is not None and float(d.grad.abs().sum()) > 0
    with pytest.raises(NeuralAvatarError, match="4 \\+ descriptors"):
        AvatarConfig.default("VERTEX_PROJECTION", num_joints=3, resolution=32,
                             unet=dataclasses.replace(sub, descriptors=5)).validate()


def test_vertex_projection_on_the_subdivided_topology():
    """``unet.subdivide = 1``: the projected points are the vertices and their edges'
    midpoints (SMPLpix's upsampled topology), descriptors are learnt per point, colours stay per
    vertex (interpolated); a bundle's per-vertex descriptors warm-start it through the same
    midpoints, and the subdivided avatar round-trips through a bundle. It needs splats."""
    from neural_avatar.neural.bundle import load_bundle, save_bundle
    from neural_avatar.neural.inputs.project import mesh_edges
    from neural_avatar.neural.training.trainer import _warm_start

    torch.manual_seed(0)
    body = tiny_body()
    V, E = body.num_verts, mesh_edges(torch.from_numpy(np.asarray(body.faces))).shape[0]
    base = dict(width=4, depth=2, point_splat=True, descriptors=3, in_ch=7)
    cfg0 = AvatarConfig.default("VERTEX_PROJECTION", num_joints=3, resolution=32, unet=UNetConfig(**base))
    cfg1 = AvatarConfig.default("VERTEX_PROJECTION", num_joints=3, resolution=32,
                                unet=UNetConfig(**base, subdivide=1))
    plain, av = build_avatar(cfg0, body), build_avatar(cfg1, body)
    assert av.num_points == V + E and av.identity.vertex_colors.shape == (V, 3)
    assert av.identity.vertex_descriptors.shape == (V + E, 3)
    f = frame2(body)
    out = av(f)
    assert out["rgb"].shape == (2, 3, 32, 29)
    ((out["rgb"] - 0.3).abs().mean()).backward()
    assert float(av.identity.vertex_descriptors.grad[V:].abs().sum()) > 0  # the midpoints are drawn
    assert float(av.identity.vertex_colors.grad.abs().sum()) > 0
    # warm start from the plain bundle: descriptors carried by midpoints, the rest copied
    import tempfile, os
    with tempfile.TemporaryDirectory() as d:
        save_bundle(plain, os.path.join(d, "plain"))
        info = _warm_start(av, os.path.join(d, "plain.json"), "VERTEX_PROJECTION")
        assert info["tensors_extended"] == ["identity.vertex_descriptors"] and not info["tensors_skipped"]
        dd = av.identity.vertex_descriptors.detach()
        assert torch.equal(dd[:V], plain.identity.vertex_descriptors.detach())
        assert torch.allclose(dd, av.densify(plain.identity.vertex_descriptors.detach()))
        save_bundle(av, os.path.join(d, "sub"))
        back = load_bundle(os.path.join(d, "sub"), expected_mode="VERTEX_PROJECTION")
        assert back.num_points == V + E
        av.eval(), back.eval()
        assert torch.equal(back.render(f)["rgb"], av.render(f)["rgb"])
    with pytest.raises(NeuralAvatarError, match="point_splat"):
        UNetConfig(width=4, depth=2, subdivide=1).validate()
    with pytest.raises(NeuralAvatarError, match="subdivide"):
        UNetConfig(width=4, depth=2, point_splat=True, subdivide=3).validate()


def test_vertex_projection_point_features_follow_the_identity():
    """The projected points' colours and descriptors are pose-free, so a render (no gradient)
    reuses them; an in-place edit, another identity's tensors or a dtype change are seen at the
    next frame, and while training they are rebuilt with their gradient every step."""
    torch.manual_seed(0)
    body = tiny_body()
    cfg = AvatarConfig.default("VERTEX_PROJECTION", num_joints=3, resolution=32,
                               unet=UNetConfig(width=4, depth=2, point_splat=True, descriptors=3, in_ch=7, subdivide=1))
    av = build_avatar(cfg, body).eval()
    f = frame2(body)

    def fresh():
        c = av.densify(av.identity.vertex_colors.detach().clamp(0, 1))
        return torch.cat([c, av.identity.vertex_descriptors.detach()], -1)

    with torch.no_grad():
        first = av.point_features()
        assert av.point_features() is first and torch.equal(first, fresh())  # reused
        before = av.make_input(f)["input"]
        av.identity.vertex_colors.mul_(0.5)  # an in-place edit
        assert torch.equal(av.point_features(), fresh())
        assert not torch.equal(av.make_input(f)["input"], before)
        av.identity.vertex_descriptors = nn.Parameter(torch.zeros_like(av.identity.vertex_descriptors))  # another identity
        assert torch.equal(av.point_features(), fresh()) and float(av.point_features()[:, 3:].abs().sum()) == 0
        av.double()  # a dtype change
        assert av.point_features().dtype == torch.float64
    av.float().train()
    feats = av.point_features()  # training: rebuilt, with its graph
    assert feats.requires_grad and feats is not av.point_features()
