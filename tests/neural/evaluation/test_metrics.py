"""PSNR / SSIM / LPIPS-style / bounding-box masks / temporal flicker."""

import math

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
def test_lpips_properties_and_source():
    assert "VGG" in M.LPIPS_SOURCE and not M.LPIPS_SOURCE.startswith("unavailable")
    x = torch.rand(2, 3, 48, 48)
    assert M.lpips_distance(x, x) == pytest.approx(torch.zeros(2), abs=1e-6)
    near = (x + 0.02 * torch.randn_like(x)).clamp(0, 1)
    far = torch.rand(2, 3, 48, 48)
    d_near, d_far = M.lpips_distance(near, x), M.lpips_distance(far, x)
    assert (d_near > 0).all() and (d_near < d_far).all()
    box = torch.zeros(2, 1, 48, 48)
    box[:, :, 10:40, 12:30] = 1
    assert M.lpips_distance(far, x, box.bool()).shape == (2,)


def test_evaluate_reports_full_and_bbox():
    x = torch.rand(1, 3, 32, 32)
    y = x.clone()
    y[..., :8, :8] = 0.0  # error outside the body box
    m = torch.zeros(1, 1, 32, 32)
    m[..., 16:28, 16:28] = 1
    r = M.evaluate(y, x, m, margin=2, with_lpips=False)
    assert r["psnr_bbox"] == 100.0  # capped infinity: no error inside the box
    assert r["psnr_full"] < 40 and r["ssim_bbox"] == pytest.approx(1.0, abs=1e-5)
