"""PSNR / SSIM / LPIPS-style / bounding-box masks / temporal flicker."""

import math
import sys

import pytest
import torch

from neural_avatar.neural.evaluation import metrics as M
from neural_avatar.neural.training.vgg import find_vgg16_weights


def test_psnr_identical_is_inf_and_known_mse():
    x = torch.rand(2, 3, 8, 8) * 0.8
    assert torch.isinf(M.psnr(x, x)).all()
    y = x + 0.1  # MSE = 0.01 -> 20 dB
    assert M.psnr(y, x) == pytest.approx(torch.tensor([20.0, 20.0]), abs=1e-4)


def test_masked_psnr_counts_only_mask_pixels():
    x = torch.zeros(1, 3, 8, 8)
    y = x.clone()
    y[..., :4, :] = 0.1  # error only in the top half
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[..., :4, :] = True
    assert M.psnr(y, x, mask).item() == pytest.approx(20.0, abs=1e-4)
    assert M.psnr(y, x).item() == pytest.approx(10 * math.log10(1 / 0.005), abs=1e-4)
    assert torch.isinf(M.psnr(y, x, ~mask)).all()


def test_ssim_identical_is_one_and_drops_with_noise():
    x = torch.rand(2, 3, 24, 24)
    assert M.ssim(x, x) == pytest.approx(torch.ones(2), abs=1e-5)
    n = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    assert (M.ssim(n, x) < 0.9).all()
    box = M.bbox_mask(torch.ones(2, 1, 24, 24), margin=0)
    assert M.ssim(x, x, box) == pytest.approx(torch.ones(2), abs=1e-5)
    tiny = torch.zeros(2, 1, 24, 24)
    tiny[:, :, 3:6, 3:7] = 1  # crop smaller than the SSIM window still works
    assert M.ssim(x, x, M.bbox_mask(tiny, 0)) == pytest.approx(torch.ones(2), abs=1e-5)


def test_bbox_mask_known_box_and_empty():
    m = torch.zeros(2, 1, 10, 12)
    m[0, 0, 3:5, 4:9] = 1
    box = M.bbox_mask(m, margin=1)
    assert box[0, 0].sum() == (6 - 2) * (10 - 3)  # rows 2..5, cols 3..9
    assert box[0, 0, 2, 3] and not box[0, 0, 1, 3] and not box[0, 0, 2, 10]
    assert box[1].all()  # empty mask -> whole image
    assert M.bbox_of_mask(m)[0] == (3, 5, 4, 9) and M.bbox_of_mask(m)[1] is None


def test_temporal_flicker():
    f = torch.zeros(3, 3, 4, 4)
    f[1] = 0.5
    assert M.temporal_flicker(f).item() == pytest.approx(0.5)
    assert M.temporal_flicker(f[:1]).item() == 0.0
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 0, 0] = 1
    g = f.clone()
    g[1, :, 1:, :] = 0.9
    assert M.temporal_flicker(g, mask).item() == pytest.approx(0.5)


@pytest.mark.skipif(not find_vgg16_weights(), reason="no VGG16 weights on this machine")
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_properties_and_source(net):
    assert "AlexNet" in M.LPIPS_SOURCE and "VGG" in M.LPIPS_VGG_SOURCE
    x = torch.rand(2, 3, 48, 48)
    assert M.lpips_distance(x, x, net=net) == pytest.approx(torch.zeros(2), abs=1e-6)
    near = (x + 0.02 * torch.randn_like(x)).clamp(0, 1)
    far = torch.rand(2, 3, 48, 48)
    d_near, d_far = M.lpips_distance(near, x, net=net), M.lpips_distance(far, x, net=net)
    assert (d_near > 0).all() and (d_near < d_far).all()
    box = torch.zeros(2, 1, 48, 48)
    box[:, :, 10:40, 12:30] = 1
    assert M.lpips_distance(far, x, box.bool(), net=net).shape == (2,)


def test_alexnet_lpips_equals_the_reference_implementation(monkeypatch):
    """Our plain-torch ST-LPIPS AlexNet gives stlpips-pytorch's own numbers. Its package imports
    torchvision, torchsummary and IPython, which are absent here; the AlexNet path uses none of
    them, so stand-ins let the reference run."""
    import types

    from neural_avatar.neural.evaluation.alexnet import load, weights_path

    if weights_path() is None:
        pytest.skip("stlpips-pytorch is not installed")
    tv = types.ModuleType("torchvision")
    tv.models = None
    for name, mod in (("torchvision", tv), ("torchsummary", types.ModuleType("torchsummary")),
                      ("IPython", types.ModuleType("IPython"))):
        monkeypatch.setitem(sys.modules, name, mod)
    sys.modules["torchsummary"].summary = lambda *a, **k: None
    sys.modules["IPython"].embed = lambda *a, **k: None
    for k in [k for k in sys.modules if k.startswith("stlpips_pytorch")]:
        monkeypatch.delitem(sys.modules, k)
    from stlpips_pytorch import stlpips

    ref = stlpips.LPIPS(net="alex", variant="shift_tolerant", verbose=False)
    torch.manual_seed(0)
    x = torch.rand(2, 3, 96, 80)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    with torch.no_grad():
        want = ref(x, y, normalize=True).flatten()
        got = load(torch.device("cpu"))(x, y)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-6), (got, want)


def test_flip_is_zero_for_equal_images_and_grows_with_error():
    pytest.importorskip("flip_evaluator")
    torch.manual_seed(0)
    x = torch.rand(2, 3, 40, 48)
    assert M.flip_distance(x, x) == pytest.approx(torch.zeros(2), abs=1e-6)
    near = (x + 0.03 * torch.randn_like(x)).clamp(0, 1)
    far = torch.rand(2, 3, 40, 48)
    d_near, d_far = M.flip_distance(near, x), M.flip_distance(far, x)
    assert (d_near > 0).all() and (d_near < d_far).all() and (d_far <= 1).all()
    box = torch.zeros(2, 1, 40, 48, dtype=torch.bool)
    box[:, :, 5:20, 5:20] = True
    y = x.clone()
    y[:, :, 30:, 30:] = 1 - y[:, :, 30:, 30:]  # error outside the box only
    assert M.flip_distance(y, x, box) == pytest.approx(torch.zeros(2), abs=1e-6)
    assert (M.flip_distance(y, x) > 0.01).all()


def test_haze_counts_alpha_outside_the_dilated_silhouette():
    gt = torch.zeros(1, 1, 100, 100)
    gt[..., 40:60, 40:60] = 1
    assert M.haze_radius((100, 100)) == 1 and M.haze_radius((512, 512)) == 5
    alpha = gt.clone()
    assert float(M.haze(alpha, gt)) == 0.0
    alpha[..., 60, 40:60] = 1.0  # 1 px beyond the edge: inside the 1-px dilation
    assert float(M.haze(alpha, gt)) == 0.0
    alpha[..., 0:10, :] = 0.06  # a veil over 10 rows of the frame
    assert float(M.haze(alpha, gt)) == pytest.approx(0.10)
    alpha[..., 0:10, :] = 0.04  # below the threshold
    assert float(M.haze(alpha, gt)) == 0.0


def test_evaluate_reports_full_and_bbox():
    x = torch.rand(1, 3, 32, 32)
    y = x.clone()
    y[..., :8, :8] = 0.0  # error outside the body box
    m = torch.zeros(1, 1, 32, 32)
    m[..., 16:28, 16:28] = 1
    r = M.evaluate(y, x, m, margin=2, with_lpips=False)
    assert r["psnr_bbox"] == 100.0  # capped infinity: no error inside the box
    assert r["psnr_full"] < 40 and r["ssim_bbox"] == pytest.approx(1.0, abs=1e-5)
