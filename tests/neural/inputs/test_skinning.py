"""The pruned nearest-vertex search AniPixel asks for every ray sample (eq. 1) and every
canonical point (eq. 2-4) gives the brute-force answer."""

import numpy as np
import pytest
import torch

from neural_avatar import body as body_lib
from neural_avatar.neural.inputs import skinning


def _brute(x, v):
    return torch.cdist(x, v).min(-1)


@pytest.fixture(scope="module")
def verts():
    model = body_lib.load_default()
    v = torch.tensor(np.asarray(model.v_template), dtype=torch.float32)[::4]
    # two bodies a metre apart, the second one turned, as a batch
    R = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    return torch.stack([v, v @ R.T + torch.tensor([1.0, 0.0, 0.3])])


def _points(verts, n=6000, seed=0):
    """Points on, near and far from each body: surface jitter at three scales and the box."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for v in verts:
        lo, hi = v.amin(0) - 0.3, v.amax(0) + 0.3
        pick = v[torch.randint(0, len(v), (3 * n // 4,), generator=g)]
        sig = torch.tensor([0.005, 0.05, 0.15]).repeat_interleave(n // 4)[:, None]
        near = pick + sig * torch.randn(pick.shape, generator=g)
        box = lo + (hi - lo) * torch.rand(n - len(near), 3, generator=g)
        out.append(torch.cat([near, box]))
    return torch.stack(out)


@pytest.mark.parametrize("chunk", [64, 2048])  # small chunks: every chunk's box bound matters
def test_exact_nearest_without_a_radius(verts, chunk):
    x = _points(verts)
    d, i = skinning.nearest(x, verts, chunk=chunk)
    bd, bi = _brute(x, verts)
    assert torch.equal(i, bi)
    assert float((d - bd).abs().max()) < 1e-6


@pytest.mark.parametrize("chunk", [64, 2048])
def test_nearest_within_a_radius_is_exact_below_it(verts, chunk):
    """Below the radius: the brute-force vertex and distance; at or above it: reported at or
    above it (culled points as inf), so `dist < radius` is the same test either way."""
    x = _points(verts, seed=1)
    r = 0.12
    d, i = skinning.nearest(x, verts, chunk=chunk, radius=r)
    bd, bi = _brute(x, verts)
    inside = bd < r
    assert 0.2 < float(inside.float().mean()) < 0.9  # the points test both sides
    assert torch.equal(d < r, inside)
    assert torch.equal(i[inside], bi[inside])
    assert float((d[inside] - bd[inside]).abs().max()) < 1e-6
    assert bool((d[~inside] >= bd[~inside] - 1e-6).all())
    assert bool(torch.isinf(d).any())  # the voxel cull dropped the far points unmeasured


def test_nearest_handles_empty_and_far_inputs(verts):
    d, i = skinning.nearest(torch.zeros(1, 0, 3), verts[:1], radius=0.1)
    assert d.shape == (1, 0) and i.shape == (1, 0)
    far = torch.full((1, 5, 3), 50.0)
    d, _ = skinning.nearest(far, verts[:1], radius=0.1)
    assert bool(torch.isinf(d).all())
    d, i = skinning.nearest(far, verts[:1])
    assert torch.equal(i, _brute(far, verts[:1])[1])
