"""SMPLpix UNet (neural/unet.py) and the typed configs (neural/config.py)."""

import json

import pytest
import torch
from torch import nn

from neural_avatar.neural.config import (
    AnrConfig, AvatarConfig, ConfigError, StyleConfig, UNetConfig, field_docs, MODES,
)
from neural_avatar.neural.networks.unet import SMPLpixUNet, UNet, level_widths


@pytest.mark.parametrize("size", [(17, 23), (33, 31), (16, 16), (5, 9)])
@pytest.mark.parametrize("out_ch", [3, 4])
def test_smplpix_shapes_odd_sizes(size, out_ch):
    torch.manual_seed(0)
    net = SMPLpixUNet(UNetConfig(in_ch=4, out_ch=out_ch, width=4, depth=4)).eval()
    x = torch.rand(2, 4, *size)
    y = net(x)
    assert y.shape == (2, out_ch, *size)
    assert torch.all((y[:, :3] >= 0) & (y[:, :3] <= 1))
    assert torch.isfinite(y).all()


def test_smplpix_mask_channel_is_a_logit():
    torch.manual_seed(0)
    net = SMPLpixUNet(UNetConfig(width=4, depth=2))
    with torch.no_grad():
        net.unet.outc.bias[3] = 50.0  # a logit can leave [0, 1], a sigmoid cannot
    y = net.eval()(torch.rand(1, 4, 8, 8))
    assert y[:, 3].min() > 10


def test_unet_more_input_channels_and_depths():
    for depth in (0, 1, 3):
        net = UNet(7, 2, width=4, depth=depth).eval()
        assert net(torch.rand(1, 7, 13, 11)).shape == (1, 2, 13, 11)
    with pytest.raises(ValueError):
        UNet(7, 2, width=4, depth=2)(torch.rand(1, 4, 8, 8))


def test_level_widths_and_structure():
    assert level_widths(32, 4, 512) == [32, 64, 128, 256, 512]
    assert level_widths(64, 4, 256) == [64, 128, 256, 256, 256]
    net = SMPLpixUNet(UNetConfig(width=8, depth=4))
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    # (1 in + 4 down + 4 up) double convs of 3x3 + one 1x1 head
    assert sum(m.kernel_size == (3, 3) for m in convs) == 18
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 18
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 4


def test_no_transposed_convolutions():
    net = SMPLpixUNet(UNetConfig(width=4, depth=4, up="nearest"))
    assert not any(isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) for m in net.modules())


def test_eval_is_deterministic_and_batch_independent():
    torch.manual_seed(0)
    net = SMPLpixUNet(UNetConfig(width=4, depth=3))
    net.train()
    for _ in range(3):  # move the BN running statistics away from their init
        net(torch.rand(4, 4, 24, 24) * 3)
    net.eval()
    x = torch.rand(3, 4, 21, 19)
    a = net(x)
    b = net(x)
    assert torch.equal(a, b)
    single = net(x[1:2])
    assert torch.allclose(single, a[1:2], atol=1e-5)


def test_train_mode_batchnorm_updates_stats():
    net = SMPLpixUNet(UNetConfig(width=4, depth=1)).train()
    bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    net(torch.rand(2, 4, 8, 8) + 5)
    assert not torch.equal(before, bn.running_mean)


def test_gradients_reach_every_parameter():
    net = SMPLpixUNet(UNetConfig(width=4, depth=2))
    net(torch.rand(2, 4, 12, 10)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_bf16_autocast_cpu():
    torch.manual_seed(0)
    net = SMPLpixUNet(UNetConfig(width=4, depth=2)).eval()
    x = torch.rand(1, 4, 16, 16)
    ref = net(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x)
    assert y.dtype == torch.bfloat16
    assert (y.float() - ref).abs().max() < 0.05


# ---- configs ------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [UNetConfig, AnrConfig, StyleConfig, AvatarConfig])
def test_every_field_has_a_docstring(cls):
    docs = field_docs(cls)
    assert docs and all(len(d) > 10 for d in docs.values()), docs


@pytest.mark.parametrize("mode", MODES)
def test_avatar_config_json_round_trip(mode):
    cfg = AvatarConfig.default(mode, resolution=128, body_model_id="x", num_verts=10)
    d = json.loads(json.dumps(cfg.to_dict()))
    back = AvatarConfig.from_dict(d)
    assert back == cfg
    assert back.sub is not None


def test_config_validation_messages():
    with pytest.raises(ConfigError, match="norm"):
        UNetConfig.from_dict({"norm": "group"})
    with pytest.raises(ConfigError, match="unknown field"):
        UNetConfig.from_dict({"widht": 3})
    with pytest.raises(ConfigError, match="positive integer"):
        AnrConfig.from_dict({"texture_channels": 0})
    with pytest.raises(ConfigError, match="unknown mode"):
        AvatarConfig.default("MESH")
    d = AvatarConfig.default("VERTEX_PROJECTION").to_dict()
    d["anr"] = AnrConfig().to_dict()
    with pytest.raises(ConfigError, match="does not use"):
        AvatarConfig.from_dict(d)
    d = AvatarConfig.default("GAUSSIAN_BONES").to_dict()
    d["num_joints"] = 5
    with pytest.raises(ConfigError, match="num_primitives"):
        AvatarConfig.from_dict(d)
    d = AvatarConfig.default("NEURAL_TEXTURE").to_dict()
    d["background"] = [0, 0, 2]
    with pytest.raises(ConfigError, match="background"):
        AvatarConfig.from_dict(d)
    with pytest.raises(ConfigError, match="resolution"):
        AvatarConfig.default("NEURAL_TEXTURE", resolution=True)
