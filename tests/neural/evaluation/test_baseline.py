"""Classical per-vertex-colour baseline: exact interpolation, z-buffer, background, SSAA."""
import pytest
import torch

from neural_avatar.errors import NeuralAvatarError
from neural_avatar.neural.avatar import FrameInputs
from neural_avatar.neural.evaluation.baseline import VertexColorBaseline, render_vertex_colors

H = W = 32
F_PX = 40.0


def _cam():
    K = torch.tensor([[[F_PX, 0.0, W / 2], [0.0, F_PX, H / 2], [0.0, 0.0, 1.0]]])
    return K, torch.eye(3)[None], torch.zeros(1, 3)


def _quad(x0, x1, y0, y1, z):
    v = torch.tensor([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=torch.float32)
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    return v, f


def test_linear_colour_is_reproduced_exactly_and_background_elsewhere():
    z = 4.0
    v, f = _quad(-0.8, 0.6, -0.5, 0.7, z)
    # colours linear in world x/y: barycentric interpolation must reproduce them exactly
    col = torch.stack([(v[:, 0] + 1) / 2, (v[:, 1] + 1) / 2, torch.full((4,), 0.25)], 1)
    K, R, t = _cam()
    rgb, cov = render_vertex_colors(v[None], f, col, K, R, t, (H, W), background=torch.tensor([1.0, 0.0, 1.0]))
    assert rgb.shape == (1, 3, H, W) and cov.shape == (1, 1, H, W)
    jj, ii = torch.meshgrid(torch.arange(W) + 0.5, torch.arange(H) + 0.5, indexing="xy")
    X = (jj - W / 2) * z / F_PX
    Y = (ii - H / 2) * z / F_PX
    inside = (X > -0.8) & (X < 0.6) & (Y > -0.5) & (Y < 0.7)
    assert torch.equal(cov[0, 0] > 0.5, inside)
    torch.testing.assert_close(rgb[0, 0][inside], ((X + 1) / 2)[inside], atol=1e-5, rtol=0)
    torch.testing.assert_close(rgb[0, 1][inside], ((Y + 1) / 2)[inside], atol=1e-5, rtol=0)
    out = ~inside
    assert torch.all(rgb[0, 0][out] == 1.0) and torch.all(rgb[0, 1][out] == 0.0) and torch.all(rgb[0, 2][out] == 1.0)


def test_nearer_surface_wins_whatever_the_face_order():
    K, R, t = _cam()
    va, fa = _quad(-0.5, 0.5, -0.5, 0.5, 3.0)   # near, red
    vb, fb = _quad(-1.0, 1.0, -1.0, 1.0, 5.0)   # far, green, larger
    for near_first in (True, False):
        parts = [(va, fa, (1.0, 0.0, 0.0)), (vb, fb, (0.0, 1.0, 0.0))]
        if not near_first:
            parts = parts[::-1]
        verts = torch.cat([parts[0][0], parts[1][0]])
        faces = torch.cat([parts[0][1], parts[1][1] + 4])
        col = torch.tensor([parts[0][2]] * 4 + [parts[1][2]] * 4)
        rgb, _ = render_vertex_colors(verts[None], faces, col, K, R, t, (H, W), background=1.0)
        c = rgb[0, :, H // 2, W // 2]
        torch.testing.assert_close(c, torch.tensor([1.0, 0.0, 0.0]))
        # only the far quad covers pixel 23 (near: u in [9.3, 22.7], far: u in [8, 24])
        torch.testing.assert_close(rgb[0, :, H // 2, 23], torch.tensor([0.0, 1.0, 0.0]))


def test_supersampling_gives_fractional_edge_coverage_and_keeps_interior():
    K, R, t = _cam()
    z = 4.0
    # right edge at u = 16 + 0.5 * 40 / 4 * ... choose x1 so the edge is at u = 24.5 (mid-pixel 24)
    x1 = (24.5 - W / 2) * z / F_PX
    v, f = _quad(-0.9, x1, -0.9, 0.9, z)
    col = torch.full((4, 3), 0.2)
    rgb1, cov1 = render_vertex_colors(v[None], f, col, K, R, t, (H, W), background=1.0, supersample=1)
    rgb2, cov2 = render_vertex_colors(v[None], f, col, K, R, t, (H, W), background=1.0, supersample=2)
    row = H // 2
    assert cov1[0, 0, row, 24] == 1.0  # centre 24.5 on the edge counts as inside (tolerance)
    torch.testing.assert_close(cov2[0, 0, row, 24], torch.tensor(0.5))
    torch.testing.assert_close(rgb2[0, :, row, 24], torch.full((3,), 0.5 * 0.2 + 0.5 * 1.0))
    # interior and exterior pixels agree with the 1x render
    torch.testing.assert_close(rgb2[0, :, row, 10:23], rgb1[0, :, row, 10:23])
    torch.testing.assert_close(rgb2[0, :, row, 26:], rgb1[0, :, row, 26:])
    # coverage integrates the area: width (24.5 - u0) px per covered row
    u0 = W / 2 + (-0.9) * F_PX / z
    assert abs(float(cov2[0, 0, row].sum()) - (24.5 - u0)) < 0.51


def test_baseline_class_renders_frames_and_checks_inputs():
    K, R, t = _cam()
    v, f = _quad(-0.5, 0.5, -0.5, 0.5, 3.0)
    vc = torch.tensor([[0.1, 0.2, 0.3]] * 4)
    base = VertexColorBaseline(f, vc, supersample=1)
    frame = FrameInputs(verts=torch.stack([v, v + torch.tensor([0.3, 0.0, 0.0])]), joints=None,
                        K=K, R=R, t=t, size=(H, W), background=torch.tensor([0.0, 0.0, 0.0]))
    out = base.render(frame)
    assert out["rgb"].shape == (2, 3, H, W) and out["mask"].shape == (2, 1, H, W)
    torch.testing.assert_close(out["rgb"][0, :, H // 2, W // 2], torch.tensor([0.1, 0.2, 0.3]))
    assert float(out["rgb"][0, :, 0, 0].abs().sum()) == 0.0  # frame background (black) used
    assert not torch.equal(out["mask"][0], out["mask"][1])  # second frame shifted right
    with pytest.raises(NeuralAvatarError, match="vertices"):
        base.render(FrameInputs(verts=torch.zeros(1, 5, 3), joints=None, K=K, R=R, t=t, size=(H, W)))
    with pytest.raises(NeuralAvatarError, match="Vertex colours"):
        VertexColorBaseline(f, torch.zeros(4, 4))
    with pytest.raises(NeuralAvatarError, match="supersampling"):
        render_vertex_colors(v[None], f, vc, K, R, t, (H, W), supersample=0)
