"""SMPLpix vertex projection (eq. 3-4)."""

import math

import numpy as np
import pytest
import torch

from neural_avatar.errors import NeuralAvatarError
from neural_avatar.neural.inputs.project import project_vertices

H, W = 6, 8


def simple_cam(B=1, f=1.0):
    """Camera at the origin looking along +z: pixel (u, v) = (f x/z, f y/z)."""
    K = torch.tensor([[f, 0.0, 0.0], [0.0, f, 0.0], [0.0, 0.0, 1.0]]).expand(B, 3, 3)
    R = torch.eye(3).expand(B, 3, 3)
    t = torch.zeros(B, 3)
    return K, R, t


def pt(u, v, z):
    """World point landing on continuous pixel coords (u, v) at depth z with simple_cam."""
    return [u * z, v * z, z]


def reference(verts, colors, K, R, t, size, near, far):
    """Python loop following SMPLpix literally: sort by depth, keep the first per pixel."""
    Hh, Ww = size
    out = np.ones((4, Hh, Ww))
    X = verts.numpy().astype(np.float64)
    xc = X @ R.numpy().T + t.numpy()
    p = xc @ K.numpy().T
    order = sorted(range(len(X)), key=lambda i: (np.float32(xc[i, 2]), i))
    seen = set()
    for i in order:
        z = xc[i, 2]
        if z <= 0:
            continue
        u, v = math.floor(p[i, 0] / z), math.floor(p[i, 1] / z)
        if not (0 <= u < Ww and 0 <= v < Hh) or (v, u) in seen:
            continue
        seen.add((v, u))
        out[:3, v, u] = colors[i].numpy()
        out[3, v, u] = min(max((z - near) / (far - near), 0.0), 1.0)
    return out


def test_shapes_background_and_single_vertex():
    K, R, t = simple_cam(2)
    verts = torch.tensor([[pt(2.5, 3.2, 2.0)], [pt(7.9, 0.1, 5.0)]])
    colors = torch.tensor([[0.2, 0.4, 0.6]])
    img, mask = project_vertices(verts, colors, K, R, t, (H, W), depth_range=(1.0, 9.0), return_mask=True)
    assert img.shape == (2, 4, H, W) and mask.shape == (2, 1, H, W)
    assert mask.sum() == 2
    torch.testing.assert_close(img[0, :, 3, 2], torch.tensor([0.2, 0.4, 0.6, 1.0 / 8.0]))
    torch.testing.assert_close(img[1, :, 0, 7], torch.tensor([0.2, 0.4, 0.6, 0.5]))
    # Everything else is background: 1 in all four channels.
    bg = mask.expand(-1, 4, -1, -1) == 0
    assert torch.all(img[bg] == 1.0)


def test_collision_nearest_wins_and_is_order_independent():
    K, R, t = simple_cam()
    a = pt(1.5, 1.5, 3.0)  # far, red
    b = pt(1.2, 1.7, 2.0)  # near, green, same pixel
    red, green = [1.0, 0, 0], [0, 1.0, 0]
    for verts, cols in (([a, b], [red, green]), ([b, a], [green, red])):
        img = project_vertices(torch.tensor([verts]), torch.tensor(cols), K, R, t, (H, W), depth_range=(0.0, 4.0))
        torch.testing.assert_close(img[0, :, 1, 1], torch.tensor([0.0, 1.0, 0.0, 0.5]))


def test_equal_depth_tie_goes_to_lower_index_deterministically():
    K, R, t = simple_cam()
    verts = torch.tensor([[pt(3.1, 2.1, 2.0), pt(3.9, 2.9, 2.0), pt(3.5, 2.5, 2.0)]])
    cols = torch.tensor([[0.1, 0.1, 0.1], [0.5, 0.5, 0.5], [0.9, 0.9, 0.9]])
    outs = [project_vertices(verts, cols, K, R, t, (H, W)) for _ in range(3)]
    assert torch.allclose(outs[0][0, :3, 2, 3], torch.tensor(0.1))
    for o in outs[1:]:
        assert torch.equal(o, outs[0])


def test_matches_sorting_reference_with_many_collisions():
    g = torch.Generator().manual_seed(0)
    K = torch.tensor([[6.0, 0.0, 4.0], [0.0, 6.0, 3.0], [0.0, 0.0, 1.0]])[None]
    R, t = torch.eye(3)[None], torch.tensor([[0.0, 0.0, 2.0]])
    verts = (torch.rand(1, 300, 3, generator=g) - 0.5) * torch.tensor([3.0, 2.5, 3.0])
    verts[0, :10, 2] = -5.0  # behind the camera: dropped
    cols = torch.rand(300, 3, generator=g)
    img = project_vertices(verts, cols, K, R, t, (H, W), depth_range=(0.5, 3.5))
    ref = reference(verts[0], cols, K[0], R[0], t[0], (H, W), 0.5, 3.5)
    np.testing.assert_allclose(img[0].numpy(), ref, atol=1e-6)


def test_splat_radius_is_depth_tested():
    K, R, t = simple_cam()
    near = pt(2.5, 2.5, 1.0)
    far = pt(3.5, 2.5, 2.0)  # neighbour pixel, further away
    cols = torch.tensor([[0, 0, 1.0], [1.0, 0, 0]])  # far blue, near red
    img, mask = project_vertices(torch.tensor([[far, near]]), cols, K, R, t, (H, W), splat_radius=1, return_mask=True)
    # Union of two 3x3 squares centred at (2,2) and (2,3).
    assert int(mask.sum()) == 12
    # Overlap columns 2..3 belong to the near (red) vertex; column 4 to the far one.
    assert torch.all(img[0, 0, 1:4, 1:4] == 1.0) and torch.all(img[0, 2, 1:4, 1:4] == 0.0)
    assert torch.all(img[0, 2, 1:4, 4] == 1.0) and torch.all(img[0, 0, 1:4, 4] == 0.0)
    # Squares are clipped at the border without error.
    img = project_vertices(torch.tensor([[pt(0.2, 0.3, 1.0)]]), cols[:1], K, R, t, (H, W), splat_radius=2, return_mask=True)
    assert int(img[1].sum()) == 9


def test_per_batch_depth_range_and_clamping():
    K, R, t = simple_cam(2)
    verts = torch.tensor([[pt(0.5, 0.5, 3.0), pt(1.5, 0.5, 50.0)]]).expand(2, -1, -1)
    cols = torch.zeros(2, 3)
    img = project_vertices(verts, cols, K, R, t, (H, W), depth_range=(torch.tensor([1.0, 2.0]), torch.tensor([5.0, 4.0])))
    assert img[0, 3, 0, 0].item() == pytest.approx(0.5)
    assert img[1, 3, 0, 0].item() == pytest.approx(0.5)
    assert img[0, 3, 0, 1].item() == 1.0  # beyond far: clamped
    with pytest.raises(NeuralAvatarError):
        project_vertices(verts, cols, K, R, t, (H, W), depth_range=(3.0, 1.0))


def test_dtype_and_gradient_to_colours():
    K, R, t = simple_cam()
    verts = torch.tensor([[pt(0.5, 0.5, 3.0), pt(4.5, 2.5, 3.0)]])
    cols = torch.rand(2, 3, requires_grad=True)
    img = project_vertices(verts, cols, K, R, t, (H, W))
    img[:, :3].sum().backward()
    torch.testing.assert_close(cols.grad, torch.ones(2, 3))
    half = project_vertices(verts, cols.detach().half(), K, R, t, (H, W))
    assert half.dtype == torch.float16


def test_bad_inputs():
    K, R, t = simple_cam()
    with pytest.raises(NeuralAvatarError):
        project_vertices(torch.zeros(1, 3, 2), torch.zeros(3, 3), K, R, t, (H, W))
    with pytest.raises(NeuralAvatarError):
        project_vertices(torch.zeros(1, 3, 3), torch.zeros(4, 3), K, R, t, (H, W))
    with pytest.raises(NeuralAvatarError):
        project_vertices(torch.zeros(1, 3, 3), torch.zeros(3, 3), K, R, t, (H, W), splat_radius=-1)


def test_midpoint_subdivision_counts_positions_and_winding():
    """One level of 1-to-4 subdivision (SMPLpix's upsampled topology): one new point per edge
    (a shared edge once), at its midpoint; each face becomes four of a quarter of its area with
    its normal's direction; the subdivided mesh has 2E + 3F edges."""
    from neural_avatar.neural.inputs.project import mesh_edges, midpoints, subdivide_midpoints

    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [0, 3, 4]])
    x = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0.2], [0, 1, 0], [-1, 0.5, 0.3]], dtype=torch.float64)
    edges, sub = subdivide_midpoints(faces, 5)
    assert torch.equal(edges, mesh_edges(faces)) and edges.shape == (7, 2) and sub.shape == (12, 3)
    X = midpoints(x, edges)
    assert X.shape == (12, 3) and torch.equal(X[:5], x)
    for e, (i, j) in enumerate(edges.tolist()):
        assert torch.allclose(X[5 + e], 0.5 * (x[i] + x[j]))
    assert sorted(set(sub.flatten().tolist())) == list(range(12))  # every point used, none twice-made

    def normals(v, f):
        return torch.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]], dim=-1)

    n_parent = normals(x, faces).repeat_interleave(4, 0)
    n_child = normals(X, sub)
    assert torch.allclose(n_child, n_parent / 4)  # same direction, a quarter of the area
    assert mesh_edges(sub).shape[0] == 2 * 7 + 3 * 3
    # batched and per-point features subdivide alike (linear)
    xb = torch.stack([x, 2 * x])
    assert torch.allclose(midpoints(xb, edges)[1], 2 * X)


def _grid_mesh(n=5, seed=0):
    """An n x n vertex grid (2 triangles a cell), bumped at random: a mesh with boundary and
    interior vertices of every valence a triangulated grid has."""
    g = torch.Generator().manual_seed(seed)
    ij = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"), -1).reshape(-1, 2).double()
    x = torch.cat([ij, 0.3 * torch.rand(n * n, 1, generator=g, dtype=torch.float64)], 1)
    x[:, :2] += 0.25 * torch.rand(n * n, 2, generator=g, dtype=torch.float64)
    faces = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            faces += [[a, b, d], [a, d, c]]
    return x, torch.tensor(faces)


@pytest.mark.parametrize("levels", [1, 2])
def test_footprint_sources_give_the_subdivided_meshs_longest_edges(levels):
    """Midsegment theorem: every edge of the subdivided mesh is a 2^-levels copy of one base
    edge, so each point's longest incident edge follows from the base mesh alone; it matches the
    lengths measured on the subdivided mesh itself (positions from midpoints), and projecting
    with those lengths (radii from the projection's own depths) gives footprint_radii's picture."""
    from neural_avatar.neural.inputs.project import (footprint_radii, footprint_sources, longest_incident_edges,
                                                     mesh_edges, midpoints, subdivide_midpoints)

    x, faces = _grid_mesh()
    V = x.shape[0]
    X, f, n = x, faces, V
    for _ in range(levels):
        e, f = subdivide_midpoints(f, n)
        X, n = midpoints(X, e), n + e.shape[0]
    e0, point, edge = footprint_sources(faces, V, levels)
    assert torch.equal(e0, mesh_edges(faces)) and point.shape == edge.shape
    assert int(point.max()) == n - 1 and torch.unique(point).numel() == n  # every point sized
    base = torch.stack([x, 1.5 * x]).float()  # a batch of two poses
    dense = torch.stack([X, 1.5 * X]).float()
    got = longest_incident_edges(base, e0, point, edge, levels, n)
    want = longest_incident_edges(dense, mesh_edges(f))
    assert got.shape == (2, n)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # through the projection: radii from the same lengths and this projection's depths
    K = torch.tensor([[[40.0, 0, 20], [0, 40.0, 20], [0, 0, 1]]])
    R, t = torch.eye(3)[None], torch.tensor([[-2.0, -2.0, 6.0]])
    cols = torch.rand(n, 3, generator=torch.Generator().manual_seed(1))
    radii = footprint_radii(dense, mesh_edges(f), K, R, t)
    assert int(radii.max()) >= 1  # the splats matter at this scale
    a = project_vertices(dense, cols, K, R, t, (40, 40), return_mask=True, splat_radii=radii)
    b = project_vertices(dense, cols, K, R, t, (40, 40), return_mask=True, splat_lengths=got)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(NeuralAvatarError, match="Splat lengths"):
        project_vertices(dense, cols, K, R, t, (40, 40), splat_lengths=got[:, :-1])


def test_batched_projection_reads_each_items_own_colours():
    """A batch with its own colours per item (not one table expanded) gives each item's
    single-frame picture: the flat (item, vertex) indexing picks the right row."""
    K, R, t = simple_cam(2)
    verts = torch.tensor([[pt(1.5, 1.5, 2.0), pt(4.5, 2.5, 3.0)], [pt(4.5, 2.5, 3.0), pt(1.5, 1.5, 2.0)]])
    cols = torch.rand(2, 2, 3, generator=torch.Generator().manual_seed(2))
    both = project_vertices(verts, cols, K, R, t, (H, W), depth_range=(1.0, 4.0))
    for b in range(2):
        one = project_vertices(verts[b:b + 1], cols[b], K[b:b + 1], R[b:b + 1], t[b:b + 1], (H, W), depth_range=(1.0, 4.0))
        assert torch.equal(both[b], one[0])
    assert not torch.equal(both[0], both[1])
