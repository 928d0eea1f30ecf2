"""Triangle rasterizer, texture sampling and the Laplacian-pyramid neural texture (ANR/DNR)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neural_avatar.errors import NeuralAvatarError
from neural_avatar.neural.inputs.camera import krt_to_torch, look_at_krt
from neural_avatar.neural.inputs.raster import (
    LaplacianPyramidTexture,
    Raster,
    rasterize,
    sample_texture,
    vertex_normals,
)


def unit_cam(B=1):
    """Camera at the origin looking along +z with fx = fy = 1, c = 0: at z = 1 a world
    point (x, y) lands on continuous pixel coordinates (x, y)."""
    return torch.eye(3).expand(B, 3, 3), torch.eye(3).expand(B, 3, 3), torch.zeros(B, 3)


def brute_force(verts, faces, K, R, t, size):
    """Reference in float64: every face tested at every pixel centre (vectorised over pixels,
    looped over faces); the nearest face wins, ties go to the lower face id."""
    Hh, Ww = size
    X = verts.numpy().astype(np.float64) @ R.numpy().astype(np.float64).T + t.numpy()
    P = X @ K.numpy().astype(np.float64).T
    s = P[:, :2] / P[:, 2:]
    jj, ii = np.meshgrid(np.arange(Ww) + 0.5, np.arange(Hh) + 0.5)
    fid = -np.ones((Hh, Ww), dtype=np.int64)
    depth = np.full((Hh, Ww), np.inf)
    per_face = np.full((len(faces), Hh, Ww), np.inf)
    for f, (a, b, c) in enumerate(faces.tolist()):
        A, B_, C = s[a], s[b], s[c]
        area = (B_[0] - A[0]) * (C[1] - A[1]) - (B_[1] - A[1]) * (C[0] - A[0])
        if abs(area) < 1e-12:
            continue
        l1 = ((C[1] - A[1]) * (jj - A[0]) - (C[0] - A[0]) * (ii - A[1])) / area
        l2 = ((B_[0] - A[0]) * (ii - A[1]) - (B_[1] - A[1]) * (jj - A[0])) / area
        l0 = 1 - l1 - l2
        inside = (l0 >= -1e-9) & (l1 >= -1e-9) & (l2 >= -1e-9)
        z = 1.0 / (l0 / X[a, 2] + l1 / X[b, 2] + l2 / X[c, 2])
        per_face[f][inside] = z[inside]
        better = inside & (z < depth - 1e-9)
        depth[better], fid[better] = z[better], f
    return fid, depth, per_face


def test_single_triangle_coverage_bary_depth():
    K, R, t = unit_cam()
    verts = torch.tensor([[[0.0, 0.0, 1.0], [4.0, 0.0, 1.0], [0.0, 4.0, 1.0]]])
    faces = torch.tensor([[0, 1, 2]])
    r = rasterize(verts, faces, K, R, t, (6, 6))
    assert isinstance(r, Raster)
    assert r.face_id.shape == (1, 6, 6) and r.bary.shape == (1, 6, 6, 3)
    assert r.depth.shape == (1, 6, 6) and r.mask.shape == (1, 1, 6, 6)
    assert r.uv is None and r.normals.shape == (1, 3, 6, 6)
    # Pixel centres (j+.5, i+.5) with i + j <= 3 (the hypotenuse ones included): 10 pixels.
    expected = torch.zeros(6, 6)
    for i in range(4):
        for j in range(4 - i):
            expected[i, j] = 1
    assert torch.equal(r.mask[0, 0], expected)
    assert torch.equal(r.face_id[0], torch.where(expected > 0, 0, -1))
    torch.testing.assert_close(r.bary[0, 0, 0], torch.tensor([0.75, 0.125, 0.125]))
    torch.testing.assert_close(r.bary[0, 2, 1], torch.tensor([0.0, 0.375, 0.625]))  # on the hypotenuse
    assert torch.all(r.depth[0][expected > 0] == 1.0)
    assert torch.all(torch.isinf(r.depth[0][expected == 0]))
    assert torch.all(r.bary[0][expected == 0] == 0)
    # Right-hand-rule normal of this winding is +z (away from the camera), in camera axes.
    n = r.normals[0][:, expected > 0]
    torch.testing.assert_close(n, torch.tensor([0.0, 0.0, 1.0])[:, None].expand_as(n))
    assert torch.all(r.normals[0][:, expected == 0] == 0)


def test_perspective_correct_barycentrics_and_depth():
    K, R, t = krt_to_torch(*look_at_krt([0.2, -0.1, 2.0], [0, 0, 0], [0, 1, 0], 50.0, 24, 20), dtype=torch.float64)
    verts = torch.tensor([[[-0.6, -0.5, -0.8], [0.7, -0.3, 0.4], [0.0, 0.6, -0.1]]], dtype=torch.float64)
    r = rasterize(verts, torch.tensor([[0, 1, 2]]), K, R, t, (20, 24))
    m = r.mask[0, 0] > 0
    assert m.sum() > 30
    # The barycentric combination of the 3D vertices is a point on the triangle that projects
    # to the pixel centre and has the reported depth.
    P = torch.einsum("hwk,kc->hwc", r.bary[0], verts[0])[m]
    xc = P @ R[0].T + t[0]
    uv = (xc @ K[0].T)[:, :2] / xc[:, 2:]
    ii, jj = torch.nonzero(m, as_tuple=True)
    torch.testing.assert_close(uv, torch.stack([jj + 0.5, ii + 0.5], -1).double(), atol=1e-9, rtol=0)
    torch.testing.assert_close(xc[:, 2], r.depth[0][m], atol=1e-12, rtol=0)


def test_occlusion_nearest_wins_and_ties_to_lower_face():
    K, R, t = unit_cam()
    tri = [[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]]
    far = [[x * 2, y * 2, 2.0] for x, y in tri]  # same screen triangle at depth 2
    near = [[x, y, 1.0] for x, y in tri]
    verts = torch.tensor([far + near])
    for faces in ([[0, 1, 2], [3, 4, 5]], [[3, 4, 5], [0, 1, 2]]):
        r = rasterize(verts, torch.tensor(faces), K, R, t, (6, 6))
        near_id = 1 if faces[1][0] == 3 else 0
        assert torch.all(r.face_id[0][r.mask[0, 0] > 0] == near_id)
        assert torch.all(r.depth[0][r.mask[0, 0] > 0] == 1.0)
    # Identical depth: the lower face index wins, every run.
    verts = torch.tensor([near + near])
    outs = [rasterize(verts, torch.tensor([[3, 4, 5], [0, 1, 2]]), K, R, t, (6, 6)).face_id for _ in range(3)]
    assert torch.all(outs[0][outs[0] >= 0] == 0)
    assert all(torch.equal(o, outs[0]) for o in outs)


def test_quad_has_no_cracks_and_chunking_is_invisible():
    K, R, t = krt_to_torch(*look_at_krt([0.3, 0.4, 3.0], [0, 0, 0], [0, 1, 0], 40.0, 33, 29))
    g = torch.Generator().manual_seed(1)
    # A finely triangulated wavy sheet: a closed region must be covered without holes.
    n = 9
    ys, xs = torch.meshgrid(torch.linspace(-0.8, 0.8, n), torch.linspace(-0.8, 0.8, n), indexing="ij")
    zs = 0.1 * torch.sin(3 * xs) * torch.cos(2 * ys) + 0.02 * torch.rand(n, n, generator=g)
    verts = torch.stack([xs, ys, zs], -1).reshape(1, -1, 3)
    faces = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            faces += [[a, b, d], [a, d, c]]
    faces = torch.tensor(faces)
    r = rasterize(verts, faces, K, R, t, (29, 33))
    ref_fid, ref_depth, _ = brute_force(verts[0], faces, K[0], R[0], t[0], (29, 33))
    assert np.array_equal(r.face_id[0].numpy() >= 0, ref_fid >= 0)
    np.testing.assert_allclose(r.depth[0].numpy(), ref_depth, rtol=1e-5)
    # Hole-free: every pixel between covered pixels of a row is covered (the sheet is convex
    # in the image for this view).
    m = r.mask[0, 0].bool()
    for row in m:
        idx = torch.nonzero(row).flatten()
        if idx.numel():
            assert bool(row[idx.min(): idx.max() + 1].all())
    r2 = rasterize(verts, faces, K, R, t, (29, 33), chunk_pixels=7)
    assert torch.equal(r.face_id, r2.face_id) and torch.equal(r.depth, r2.depth)


def test_random_mesh_against_brute_force_and_batch():
    g = torch.Generator().manual_seed(3)
    K, R, t = krt_to_torch(*look_at_krt([0.0, 0.0, 3.0], [0, 0, 0], [0, 1, 0], 45.0, 16, 14), batch_size=2)
    verts = (torch.rand(2, 12, 3, generator=g) - 0.5) * 2
    faces = torch.randint(0, 12, (10, 3), generator=g)
    r = rasterize(verts, faces, K, R, t, (14, 16), compute_normals=False)
    assert r.normals is None
    for b in range(2):
        ref_fid, ref_depth, per_face = brute_force(verts[b], faces, K[b], R[b], t[b], (14, 16))
        np.testing.assert_allclose(r.depth[b].numpy(), ref_depth, rtol=1e-5)
        ours = r.face_id[b].numpy()
        assert np.array_equal(ours >= 0, ref_fid >= 0)
        # A different face may only win where it lies at the same depth (float32 tie between
        # faces sharing vertices); the chosen face must cover the pixel.
        ii, jj = np.nonzero(ours != ref_fid)
        assert len(ii) < 0.05 * ours.size
        np.testing.assert_allclose(per_face[ours[ii, jj], ii, jj], ref_depth[ii, jj], rtol=1e-5)


def test_backface_culling_same_image_for_closed_mesh():
    # Closed, outward-oriented octahedron.
    v = torch.tensor([[[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]]]) * 0.6
    faces = torch.tensor([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    K, R, t = krt_to_torch(*look_at_krt([1.0, 1.5, 2.5], [0, 0, 0], [0, 1, 0], 50.0, 24, 24))
    a = rasterize(v, faces, K, R, t, (24, 24))
    b = rasterize(v, faces, K, R, t, (24, 24), cull_backfaces=True)
    assert torch.equal(a.face_id, b.face_id)
    # Smooth normals of the octahedron are the +-axes at its vertices; the raster holds their
    # barycentric interpolation rotated into the camera frame.
    m = a.mask[0, 0] > 0
    vn_cam = (v[0] / 0.6) @ R[0].T
    fid = a.face_id[0][m]
    expect = (a.bary[0][m].unsqueeze(-1) * vn_cam[faces[fid]]).sum(1)
    expect = expect / expect.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(a.normals[0][:, m].T, expect)
    assert a.normals[0][2][m].mean() < -0.3  # visible side faces the camera (-z)


def test_uv_seams_use_per_face_uv_indices():
    K, R, t = unit_cam()
    # Two triangles share the edge (4,0)-(0,4) but not their UVs (a seam).
    verts = torch.tensor([[[0.0, 0.0, 1.0], [4.0, 0.0, 1.0], [0.0, 4.0, 1.0], [4.0, 4.0, 1.0]]])
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    uv = torch.tensor([[0.0, 0.0], [0.4, 0.0], [0.0, 0.4], [0.6, 0.6], [1.0, 0.6], [0.6, 1.0]])
    uv_faces = torch.tensor([[0, 1, 2], [4, 3, 5]])  # face 1 in its own island
    r = rasterize(verts, faces, K, R, t, (4, 4), uv=uv, uv_faces=uv_faces)
    assert r.uv.shape == (1, 4, 4, 2)
    for i in range(4):
        for j in range(4):
            u, v = r.uv[0, i, j].tolist()
            if r.face_id[0, i, j] == 0:
                assert u + v <= 0.4 + 1e-6
            else:
                assert u >= 0.6 - 1e-6 and v >= 0.6 - 1e-6
    # Pixel (0,0): bary (0.75, 0.125, 0.125) of face 0 -> uv = 0.125 * 0.4 each.
    torch.testing.assert_close(r.uv[0, 0, 0], torch.tensor([0.05, 0.05]))
    with pytest.raises(NeuralAvatarError):
        rasterize(verts, faces, K, R, t, (4, 4), uv=uv)  # T != V without uv_faces
    # Background sentinel.
    r = rasterize(verts[:, :3], faces[:1], K, R, t, (5, 5), uv=uv[:3])
    assert torch.all(r.uv[0][r.face_id[0] < 0] == -1)


def test_vertex_normals_unit_and_direction():
    v = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]])
    faces = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])  # outward tetrahedron
    n = vertex_normals(v, faces)
    assert n.shape == (1, 4, 3)
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(1, 4))
    torch.testing.assert_close(n[0, 0], -torch.ones(3) / 3 ** 0.5)
    # Vertex 3 sees faces with normals -y, -x and (1,1,1)/sqrt3*... (area weighted).
    assert torch.all(n[0, 3] @ torch.tensor([0.0, 0, 1]) > 0)


def test_sample_texture_convention_and_background():
    tex = torch.arange(12.0).reshape(1, 1, 3, 4)  # row 0 = top of the texture image
    # Texel centres: u = (c + .5)/4, v = 1 - (r + .5)/3 (v up).
    uv = torch.tensor([[[[0.5 / 4, 1 - 0.5 / 3], [3.5 / 4, 1 - 2.5 / 3]], [[0.5 / 4, 0.5 / 3], [-1.0, -1.0]]]])
    out = sample_texture(tex, uv, background=-7.0)
    assert out.shape == (1, 1, 2, 2)
    torch.testing.assert_close(out[0, 0], torch.tensor([[0.0, 11.0], [8.0, -7.0]]))
    # Bilinear between two texels.
    mid = torch.tensor([[[[1.0 / 4, 1 - 0.5 / 3]]]])
    torch.testing.assert_close(sample_texture(tex, mid)[0, 0, 0, 0], torch.tensor(0.5))
    # Per-channel background, texture batch broadcast.
    tex3 = torch.rand(1, 3, 5, 5)
    out = sample_texture(tex3, uv.expand(2, -1, -1, -1), background=torch.tensor([1.0, 2.0, 3.0]))
    assert out.shape == (2, 3, 2, 2)
    torch.testing.assert_close(out[1, :, 1, 1], torch.tensor([1.0, 2.0, 3.0]))
    # Half-precision textures stay half (inference with fp16/bf16 networks).
    assert sample_texture(tex3.bfloat16(), uv).dtype == torch.bfloat16


def test_sample_texture_from_raster_and_gradcheck():
    K, R, t = unit_cam()
    verts = torch.tensor([[[0.0, 0.0, 1.0], [4.0, 0.0, 1.0], [0.0, 4.0, 1.0]]], dtype=torch.float64)
    uv = torch.tensor([[0.1, 0.2], [0.9, 0.3], [0.2, 0.8]], dtype=torch.float64)
    r = rasterize(verts, torch.tensor([[0, 1, 2]]), K.double(), R.double(), t.double(), (4, 4), uv=uv)
    tex = torch.rand(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    img = sample_texture(tex, r)
    assert img.shape == (1, 2, 4, 4)
    assert torch.all(img[0][:, r.face_id[0] < 0] == 0)
    assert torch.autograd.gradcheck(lambda x: sample_texture(x, r, background=0.5), (tex,))
    uvimg = r.uv.clone().requires_grad_(True)
    # UV gradients away from texel-centre kinks.
    assert torch.autograd.gradcheck(lambda u: sample_texture(tex.detach(), u), (uvimg,), atol=1e-6)
    with pytest.raises(NeuralAvatarError):
        sample_texture(tex, Raster(r.face_id, r.bary, r.depth, r.mask))


def test_laplacian_pyramid_texture():
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = LaplacianPyramidTexture(levels=4, channels=8, size=32, generator=g1)
    b = LaplacianPyramidTexture(levels=4, channels=8, size=32, generator=g2)
    ta = a()
    assert ta.shape == (1, 8, 32, 32)
    assert torch.equal(ta, b())  # same seed -> same initialisation (ANR multi-identity)
    assert ta.min() >= -1 and ta.max() <= 1 and ta.std() > 0.4  # U[-1, 1]
    assert [p.shape[-1] for p in a.levels] == [32, 16, 8, 4]
    with torch.no_grad():
        a.levels[3].fill_(1.0)
    torch.testing.assert_close(a() - ta, torch.ones_like(ta))  # coarse level adds low frequencies
    a().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in a.levels)
    z = LaplacianPyramidTexture(levels=2, channels=3, size=8, init="zeros")
    assert torch.all(z() == 0)
    with pytest.raises(NeuralAvatarError):
        LaplacianPyramidTexture(levels=6, channels=3, size=16)


def test_gradient_reaches_vertices_through_interpolation():
    K, R, t = unit_cam()
    verts = torch.tensor([[[0.0, 0.0, 1.0], [4.0, 0.0, 1.0], [0.0, 4.0, 1.0]]], requires_grad=True)
    uv = torch.tensor([[0.1, 0.2], [0.9, 0.3], [0.2, 0.8]])
    r = rasterize(verts, torch.tensor([[0, 1, 2]]), K, R, t, (4, 4), uv=uv)
    r.uv[r.face_id >= 0].sum().backward()
    assert verts.grad is not None and torch.isfinite(verts.grad).all() and verts.grad.abs().sum() > 0
