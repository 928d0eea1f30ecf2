"""StyleGAN2 modulated convolution and the HVS style UNet (neural/style.py)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neural_avatar.neural.config import StyleConfig
from neural_avatar.neural.networks.style import MappingNetwork, ModulatedConv2d, StyleUNet


def test_modconv_equals_plain_conv_with_unit_styles_no_demod():
    torch.manual_seed(0)
    mc = ModulatedConv2d(5, 7, 3, w_dim=4, demodulate=False)
    with torch.no_grad():
        mc.bias.normal_()
    conv = nn.Conv2d(5, 7, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(mc.weight * mc.scale)
        conv.bias.copy_(mc.bias)
    x = torch.randn(3, 5, 11, 9)
    y = mc(x, styles=torch.ones(3, 5))
    assert torch.allclose(y, conv(x), atol=1e-5)


def test_modconv_demodulation_matches_reference():
    torch.manual_seed(1)
    mc = ModulatedConv2d(4, 6, 3, w_dim=8, demodulate=True, bias=False)
    x = torch.randn(2, 4, 8, 8)
    s = torch.rand(2, 4) + 0.5
    y = mc(x, styles=s)
    for b in range(2):  # StyleGAN2 eq. 1 and 3, one sample at a time
        w1 = mc.scale * mc.weight * s[b].view(1, 4, 1, 1)
        w2 = w1 / torch.sqrt((w1 ** 2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        ref = F.conv2d(x[b:b + 1], w2, padding=1)
        assert torch.allclose(y[b:b + 1], ref, atol=1e-5)
    # demodulation removes the style's overall scale
    assert torch.allclose(mc(x, styles=3 * s), y, atol=1e-4)


def test_modconv_grouped_batch_equals_loop_and_w_path():
    torch.manual_seed(2)
    mc = ModulatedConv2d(3, 4, 3, w_dim=6)
    x = torch.randn(3, 3, 7, 5)
    w = torch.randn(3, 6)
    y = mc(x, w)
    for b in range(3):
        assert torch.allclose(y[b:b + 1], mc(x[b:b + 1], w[b:b + 1]), atol=1e-5)
    # styles come from the affine A(w); its bias starts at 1
    assert torch.allclose(mc(x, w), mc(x, styles=mc.affine(w)))
    assert torch.allclose(mc.affine(torch.zeros(1, 6)), torch.ones(1, 3))
    with pytest.raises(ValueError):
        mc(x)


def test_mapping_network():
    m = MappingNetwork(12, 8, layers=3)
    w = m(torch.randn(5, 12))
    assert w.shape == (5, 8)
    # pixel norm: a rescaled input maps to the same style
    z = torch.randn(2, 12)
    assert torch.allclose(m(z), m(7 * z), atol=1e-5)


def _cfg():
    return StyleConfig(num_primitives=3, appearance_dim=5, widths=(4, 8, 8), w_dim=8, mapping_layers=2)


@pytest.mark.parametrize("size", [(17, 11), (32, 32), (9, 26)])
def test_style_unet_shapes(size):
    torch.manual_seed(3)
    net = StyleUNet(_cfg()).eval()
    y = net(torch.randn(2, 5, *size), torch.randn(3, 5))
    assert y.shape == (2, 4, *size)
    assert y[:, :3].min() >= 0 and y[:, :3].max() <= 1
    assert StyleUNet(_cfg(), out_mask=False)(torch.randn(1, 5, *size), torch.randn(1, 3, 5)).shape == (1, 3, *size)


def test_style_unet_uses_appearance_as_style_and_gradients():
    torch.manual_seed(4)
    net = StyleUNet(_cfg())
    f = torch.randn(1, 5, 16, 16)
    a = torch.randn(1, 3, 5, requires_grad=True)
    y1 = net(f, a)
    y2 = net(f, a.detach() + torch.randn(1, 3, 5))
    assert not torch.allclose(y1, y2)  # same feature image, other styles -> other image
    y1.sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in net.modules())
    with pytest.raises(ValueError):
        net(f, torch.randn(1, 4, 5))


def test_style_unet_bf16_autocast():
    torch.manual_seed(5)
    net = StyleUNet(_cfg()).eval()
    f, a = torch.randn(1, 5, 16, 16), torch.randn(3, 5)
    ref = net(f, a)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(f, a)
    assert (y.float() - ref).abs().max() < 0.1
