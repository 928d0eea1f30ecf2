"""ANR two-stage renderer R1 -> [normals] -> R2 (neural/anr.py, ANR eq. 2)."""

import pytest
import torch
from torch import nn

from neural_avatar.neural.networks.anr import AnrRenderer, composite
from neural_avatar.neural.config import AnrConfig


def _cfg(**kw):
    base = dict(texture_channels=8, texture_size=16, pyramid_levels=2, latent_channels=6,
                r1_width=4, r1_depth=2, r2_width=4, r2_depth=2)
    base.update(kw)
    return AnrConfig(**base)


@pytest.mark.parametrize("size", [(19, 13), (32, 32), (7, 30)])
def test_shapes_at_odd_sizes(size):
    torch.manual_seed(0)
    net = AnrRenderer(_cfg()).eval()
    out = net(torch.randn(2, 8, *size), torch.randn(2, 3, *size), torch.tensor([0.2, 0.4, 0.6]))
    for k in ("rgb", "rgb_fg", "aux_rgb"):
        assert out[k].shape == (2, 3, *size)
        assert out[k].min() >= 0 and out[k].max() <= 1
    assert out["mask"].shape == (2, 1, *size)
    assert out["latent"].shape == (2, 6, *size)


def test_composite_formula_and_aux_rgb():
    torch.manual_seed(1)
    net = AnrRenderer(_cfg()).eval()
    bg = torch.tensor([0.9, 0.1, 0.3])
    out = net(torch.randn(1, 8, 12, 12), torch.randn(1, 3, 12, 12), bg)
    m = out["mask"]
    assert torch.allclose(out["rgb"], m * out["rgb_fg"] + (1 - m) * bg.view(1, 3, 1, 1), atol=1e-6)
    assert torch.allclose(out["mask"], torch.sigmoid(out["mask_logit"]))
    assert torch.allclose(out["aux_rgb"], torch.sigmoid(out["latent"][:, :3]))
    # per-pixel background image too
    bg_img = torch.rand(1, 3, 12, 12)
    c = composite(out["rgb_fg"], m, bg_img)
    assert torch.allclose(c, m * out["rgb_fg"] + (1 - m) * bg_img)


def test_normals_reach_r2():
    torch.manual_seed(2)
    net = AnrRenderer(_cfg()).eval()
    x = torch.randn(1, 8, 16, 16)
    a = net(x, torch.zeros(1, 3, 16, 16))["rgb_fg"]
    b = net(x, torch.ones(1, 3, 16, 16))["rgb_fg"]
    assert not torch.allclose(a, b)
    assert net.r2.in_ch == 6 + 3
    with pytest.raises(ValueError, match="normal"):
        net(x, None)


def test_without_normals():
    net = AnrRenderer(_cfg(use_normals=False)).eval()
    assert net.r2.in_ch == 6
    out = net(torch.randn(1, 8, 9, 9))
    assert out["rgb"].shape == (1, 3, 9, 9)


def test_no_transposed_convs_and_gradients():
    net = AnrRenderer(_cfg())
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in net.modules())
    x = torch.randn(2, 8, 10, 10, requires_grad=True)
    out = net(x, torch.randn(2, 3, 10, 10))
    (out["rgb"].mean() + out["aux_rgb"].mean()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())


def test_eval_determinism_and_bf16():
    torch.manual_seed(3)
    net = AnrRenderer(_cfg()).eval()
    x, n = torch.randn(1, 8, 15, 17), torch.randn(1, 3, 15, 17)
    a, b = net(x, n), net(x, n)
    assert torch.equal(a["rgb"], b["rgb"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        c = net(x, n)
    assert (c["rgb"].float() - a["rgb"]).abs().max() < 0.05
