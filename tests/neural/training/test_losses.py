"""Losses of SMPLpix / ANR / HVS on tiny tensors: known values and gradients."""

import math

import pytest
import torch
import torch.nn as nn

from neural_avatar.neural.training import losses as L
from neural_avatar.neural.training.vgg import LAYER_NAMES, VGG16Features, find_vgg16_weights, load_vgg16


class _EchoVGG(nn.Module):
    """Stand-in 'VGG' whose five feature maps are the (2x-scaled) input itself."""

    architecture = "standard"

    def forward(self, x, num_layers=5):
        return [2.0 * x for _ in range(num_layers)]


def test_l1_plain_and_weighted():
    a = torch.zeros(1, 3, 4, 4)
    b = torch.full((1, 3, 4, 4), 0.5)
    assert L.l1(a, b).item() == pytest.approx(0.5)
    w = torch.zeros(1, 1, 4, 4)
    w[..., :2, :] = 1.0
    b2 = b.clone()
    b2[..., 2:, :] = 10.0  # outside the weight: ignored
    assert L.l1(a, b2, w).item() == pytest.approx(0.5)
    assert L.l1(a, b2, torch.zeros_like(w)).item() == 0.0


def test_smplpix_eq6_weights_and_value():
    assert L.SMPLPIX_VGG_WEIGHTS == (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)
    loss = L.VGGPerceptualLoss(vgg=_EchoVGG())
    x = torch.zeros(2, 3, 8, 8)
    y = torch.full((2, 3, 8, 8), 0.25)
    # layer 0: |x-y| = 0.25 with weight 1/32; layers 1..5: |2x-2y| = 0.5
    expected = 0.25 / 32 + 0.5 * (1 / 16 + 1 / 8 + 1 / 4 + 1 / 2 + 1)
    assert loss(x, y).item() == pytest.approx(expected)
    assert loss(y, y).item() == 0.0


def test_vgg_perceptual_gradients_and_description():
    loss = L.VGGPerceptualLoss()
    assert isinstance(loss.description, str) and loss.description
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    y = torch.rand(1, 3, 32, 32)
    v = loss(x, y)
    v.backward()
    assert v.item() > 0 and x.grad.abs().sum() > 0
    if loss.uses_vgg:
        assert all(not p.requires_grad for p in loss.vgg.parameters())  # frozen trunk
        assert "eq. 6" in loss.description
    else:
        assert "fallback" in loss.description


def test_fallback_is_l1_msssim_when_no_vgg(monkeypatch):
    import neural_avatar.neural.training.losses as mod

    monkeypatch.setattr(mod, "load_vgg16", lambda required=False: (None, "no weights (test)"))
    with pytest.warns(RuntimeWarning):
        loss = mod.VGGPerceptualLoss()
    assert not loss.uses_vgg and "MS-SSIM" in loss.description
    x = torch.rand(2, 3, 40, 40)
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-5)
    y = (x + 0.2).clamp(0, 1)
    assert loss(x, y).item() > 0.01


@pytest.mark.skipif(not find_vgg16_weights(), reason="no VGG16 weights on this machine")
def test_vgg16_loads_and_features_are_meaningful():
    vgg, source = load_vgg16(required=True)
    assert isinstance(vgg, VGG16Features) and source
    x = torch.rand(1, 3, 64, 64)
    feats = vgg(x)
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512] and len(LAYER_NAMES) == 5
    # trained filters: a smooth image and its noisy copy are closer in relu3_3 than two
    # unrelated noise images (random filters do not give a stable ordering of this size)
    g = torch.linspace(0, 1, 64)
    smooth = torch.stack([g[None, :].expand(64, 64), g[:, None].expand(64, 64), 0.5 * torch.ones(64, 64)])[None]
    noisy = (smooth + 0.03 * torch.randn_like(smooth)).clamp(0, 1)
    f_s, f_n, f_r = vgg(smooth)[2], vgg(noisy)[2], vgg(torch.rand(1, 3, 64, 64))[2]
    assert (f_s - f_n).abs().mean() < 0.5 * (f_s - f_r).abs().mean()


def test_discriminator_shapes_and_gan_known_values():
    d = L.MultiScalePatchDiscriminator(in_ch=3, ndf=8, n_layers=3, num_scales=3)
    outs = d(torch.rand(2, 3, 32, 32))
    assert len(outs) == 3 and all(len(o) == 5 for o in outs)
    assert all(o[-1].shape[:2] == (2, 1) for o in outs)
    assert outs[1][-1].shape[-1] < outs[0][-1].shape[-1]
    ones = [[torch.ones(1, 1, 2, 2)] for _ in range(3)]
    zeros = [[torch.zeros(1, 1, 2, 2)] for _ in range(3)]
    assert L.gan_d_loss(ones, zeros, "lsgan").item() == 0.0
    assert L.gan_g_loss(zeros, "lsgan").item() == pytest.approx(3.0)
    assert L.gan_d_loss(ones, zeros, "hinge").item() == pytest.approx(3.0)  # relu(1+0) per scale
    assert L.gan_g_loss(ones, "hinge").item() == pytest.approx(-3.0)
    with pytest.raises(ValueError):
        L.gan_g_loss(zeros, "wgan")


def test_feature_matching_known_value_and_gradient():
    real = [[torch.zeros(1, 2, 3, 3), torch.zeros(1, 1, 2, 2)] for _ in range(3)]
    f = torch.ones(1, 2, 3, 3, requires_grad=True)
    fake = [[f, torch.full((1, 1, 2, 2), 7.0)] for _ in range(3)]
    v = L.feature_matching_loss(real, fake, weight=0.1)  # final logits excluded
    assert v.item() == pytest.approx(0.1 * 3 * 1.0)
    v.backward()
    assert f.grad.abs().sum() > 0


def test_gan_losses_route_gradients():
    d = L.MultiScalePatchDiscriminator(in_ch=3, ndf=8)
    fake = torch.rand(1, 3, 32, 32, requires_grad=True)
    d_loss, g_adv, g_fm = L.gan_losses(d, torch.rand(1, 3, 32, 32), fake)
    d_loss.backward(retain_graph=True)
    assert fake.grad is None  # the discriminator loss does not reach the generator
    (g_adv + g_fm).backward()
    assert fake.grad.abs().sum() > 0


def test_mask_bce_known_values():
    p = torch.full((1, 1, 2, 2), 0.5, requires_grad=True)
    t = torch.ones(1, 1, 2, 2)
    v = L.mask_bce(p, t)
    assert v.item() == pytest.approx(math.log(2.0), rel=1e-5)
    v.backward()
    assert (p.grad < 0).all()  # raising the mask lowers the loss
    assert math.isfinite(L.mask_bce(torch.zeros(1, 1, 2, 2), t).item())  # saturated: finite
    assert L.mask_bce(t, t).item() == pytest.approx(0.0, abs=1e-5)


def test_tv_loss_known_values():
    x = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert L.tv_loss(x).item() == pytest.approx(1.0)
    assert L.tv_loss(torch.ones(2, 8, 5, 5)).item() == 0.0
    tex = torch.rand(1, 8, 16, 16, requires_grad=True)
    L.tv_loss(tex).backward()
    assert tex.grad.abs().sum() > 0
