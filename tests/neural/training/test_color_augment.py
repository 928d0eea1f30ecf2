"""Albedo colour augmentation (neural/training/color_augment.py): grey-preserving matrices on
linear RGB that change a person's albedo and their photograph alike."""
import math

import pytest
import torch

from neural_avatar.neural.training import color_augment as CA


@pytest.mark.parametrize("mode", ["permute", "hue"])
def test_matrices_keep_grey_and_the_background(mode):
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        m = CA.random_matrix(mode, g)
        assert torch.allclose(m.sum(1), torch.ones(3), atol=1e-5)  # (1,1,1) -> (1,1,1)
        for v in (0.0, 0.3, 1.0):  # a grey background stays exactly where it was
            img = torch.full((1, 3, 4, 4), v)
            assert torch.allclose(CA.apply_to_image(m, img), img, atol=1e-5)
        if mode == "permute":
            assert sorted(m.flatten().tolist()) == [0.0] * 6 + [1.0] * 3


def test_hue_rotation_is_a_rotation_about_grey():
    r = CA.hue_rotation(2 * math.pi / 3)
    assert torch.allclose(r, torch.eye(3)[[2, 0, 1]], atol=1e-6)  # 120°: a cyclic channel shift
    for th in (0.3, -1.2, 2.5):
        r = CA.hue_rotation(th)
        assert torch.allclose(r @ r.T, torch.eye(3), atol=1e-6) and abs(float(torch.det(r)) - 1.0) < 1e-5
    s = CA.saturation(0.5)
    c = torch.tensor([0.8, 0.2, 0.2])
    assert torch.allclose(s @ c - c.mean(), 0.5 * (c - c.mean()), atol=1e-6)


def test_transforming_albedo_transforms_the_lit_picture_alike():
    """Diffuse shading under grey light: image = albedo · E per channel (linear). Transforming the
    albedo by M transforms the sRGB picture exactly as apply_to_image does (away from clipping)."""
    g = torch.Generator().manual_seed(0)
    albedo = 0.1 + 0.6 * torch.rand(50, 3, generator=g)  # sRGB vertex colours
    E = 0.2 + 0.7 * torch.rand(50, 1, generator=g)  # grey irradiance per point
    bg = 1.0

    def photo(srgb_albedo):
        lin = CA.srgb_to_linear(srgb_albedo) * E
        return CA.linear_to_srgb(lin)

    for _ in range(10):
        m = CA.random_matrix("hue", g)
        a2 = CA.apply_to_colors(m, albedo)
        lin2 = CA.srgb_to_linear(a2)
        inside = ((CA.srgb_to_linear(albedo) @ m.T) > 0).all(1) & ((CA.srgb_to_linear(albedo) @ m.T) < 1).all(1)
        want = photo(a2)
        got = CA.apply_to_image(m, photo(albedo).T.reshape(1, 3, 50, 1)).reshape(3, 50).T
        assert inside.sum() > 10
        assert torch.allclose(got[inside], want[inside], atol=1e-4), float((got - want)[inside].abs().max())
        assert lin2.min() >= 0 and lin2.max() <= 1
    assert bg == 1.0


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError):
        CA.random_matrix("sepia", torch.Generator())
