"""Per-body windows at the trained scale (neural/crop.py): every projected vertex inside the
window, the network size capped at the training resolution (close-ups) and following the body's
own size below it (far bodies), nothing for bodies behind the camera or off-screen, the window's
intrinsics consistent with the frame's, and pasting that resamples only the visible part."""
import os

import pytest
import numpy as np
import torch

from neural_avatar import body
from neural_avatar.body import kinematics
from neural_avatar.neural import crop as C
from neural_avatar.neural.inputs.camera import project_points


def _body():
    v, _ = kinematics.forward(body.load_default())
    return np.asarray(v)


def _cam(dist, f=600.0, size=512):
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    R = np.diag([1.0, -1.0, -1.0])
    t = np.array([0.0, 0.25, dist])
    return K, R, t


def test_window_holds_the_body_and_scales_with_distance():
    v = _body()
    K, R, t = _cam(4.0)
    w = C.body_crop(v, K, R, t, 512, 512, train_res=256)
    Xc = v @ R.T + t
    uv = (Xc @ K.T)[:, :2] / Xc[:, 2:3]
    assert (uv[:, 0] >= w.x0).all() and (uv[:, 0] <= w.x0 + w.side).all()
    assert (uv[:, 1] >= w.y0).all() and (uv[:, 1] <= w.y0 + w.side).all()
    far = C.body_crop(v, *_cam(8.0), 512, 512, train_res=256)
    assert abs(far.side / w.side - 0.5) < 0.03  # half the distance → half the window
    assert far.res == 16 * np.ceil(far.side / 16) < 256  # below the trained scale: its own pixels (16-px steps)
    near = C.body_crop(v, *_cam(1.5), 512, 512, train_res=256)
    assert near.res == 256 and near.side > 256  # a close-up: capped, then upsampled


def test_behind_the_camera_or_off_screen_gives_no_window():
    v = _body()
    K, R, t = _cam(-3.0)
    assert C.body_crop(v, K, R, t, 512, 512, 128) is None
    K, R, t = _cam(4.0)
    assert C.body_crop(v + np.array([50.0, 0, 0]), K, R, t, 512, 512, 128) is None
    part = C.body_crop(v + np.array([1.45, 0, 0]), K, R, t, 512, 512, 128)  # half off the right edge
    assert part is not None and part.visible(512, 512)[2] == 512


def test_window_intrinsics_map_frame_pixels_to_network_pixels():
    v = _body()
    K, R, t = _cam(4.0)
    w = C.body_crop(v, K, R, t, 512, 512, train_res=64)
    Kc = C.crop_intrinsics(K, w)
    X = torch.as_tensor(v[:50], dtype=torch.float32)[None]
    uv_f = project_points(X, torch.as_tensor(K, dtype=torch.float32)[None], torch.as_tensor(R, dtype=torch.float32)[None],
                          torch.as_tensor(t, dtype=torch.float32)[None])[0][..., :2]
    uv_c = project_points(X, torch.as_tensor(Kc, dtype=torch.float32)[None], torch.as_tensor(R, dtype=torch.float32)[None],
                          torch.as_tensor(t, dtype=torch.float32)[None])[0][..., :2]
    expect = (uv_f - torch.tensor([w.x0, w.y0])) * w.scale
    assert torch.allclose(uv_c, expect.float(), atol=1e-3)


def test_paste_fills_only_the_visible_window_and_feather_reaches_zero():
    w = C.Crop(x0=-10.0, y0=20.0, side=40.0, res=20)
    img = torch.ones(1, 20, 20)
    arr, (xa, ya, xb, yb) = C.paste(img, w, 64, 64)
    assert (xa, ya, xb, yb) == (0, 20, 30, 60) and arr.shape == (40, 30, 1) and np.allclose(arr, 1.0)
    m = C.feather(torch.ones(1, 1, 50, 50))
    assert float(m[0, 0, 0, 0]) < 0.3 and float(m[0, 0, 25, 25]) == 1.0


@pytest.mark.parametrize("train_res", [128, 512])
def test_silhouette_gate_covers_the_body_and_clears_far_pixels(train_res):
    v = _body()
    K, R, t = _cam(4.0 if train_res == 128 else 2.5)
    w = C.body_crop(v, K, R, t, 512, 512, train_res=train_res)
    assert train_res == 128 or w.res > 2 * C.GATE_RES  # the second case builds it at a lower side
    g = C.silhouette_gate(v, C.crop_intrinsics(K, w), R, t, w.res)[0, 0]
    assert float(g[0, 0]) == 0.0 and float(g[:, :3].max()) == 0.0  # window corners/edge columns
    Xc = v @ R.T + t
    uv = (Xc @ C.crop_intrinsics(K, w).T)[:, :2] / Xc[:, 2:3]
    i, j = np.clip(uv[:, 1].astype(int), 0, w.res - 1), np.clip(uv[:, 0].astype(int), 0, w.res - 1)
    assert float(g[i, j].min()) == 1.0  # every vertex fully inside the gate


def test_silhouette_gate_at_a_lower_side_matches_the_full_side_one(monkeypatch):
    v = _body()
    K, R, t = _cam(2.5)
    w = C.body_crop(v, K, R, t, 512, 512, train_res=512)
    Kc = C.crop_intrinsics(K, w)
    fast = C.silhouette_gate(v, Kc, R, t, w.res)
    monkeypatch.setattr(C, "GATE_RES", 100_000)
    full = C.silhouette_gate(v, Kc, R, t, w.res)
    assert fast.shape == full.shape == (1, 1, w.res, w.res)
    assert float((fast - full).abs().mean()) < 0.02
    assert float(((fast > 0.5) != (full > 0.5)).float().mean()) < 0.03


@pytest.mark.parametrize("train_res", [128, 384, 512])
def test_silhouette_gate_of_a_region_is_the_whole_gate_cut_there(train_res):
    """The engine asks for the gate of the body's region only (the upsample of the part it reads):
    the values are the whole window's gate's there, to float rounding, for regions touching the
    window's border and inside it, at integer and non-power-of-two upsampling factors."""
    v = _body()
    K, R, t = _cam(2.5)
    w = C.body_crop(v, K, R, t, 512, 512, train_res=train_res)
    Kc = C.crop_intrinsics(K, w)
    full = C.silhouette_gate(v, Kc, R, t, w.res)
    r = w.res
    rng = np.random.default_rng(1)
    rects = [(0, 0, r, r), (0, 0, 40, 33), (r - 57, r - 9, r, r), (13, 7, r - 5, r - 3)]
    rects += [tuple(int(x) for x in (a, b, a + 1 + rng.integers(r - a), b + 1 + rng.integers(r - b)))
              for a, b in rng.integers(0, r - 1, (20, 2))]
    for x0, y0, x1, y1 in rects:
        g = C.silhouette_gate(v, Kc, R, t, r, region=(x0, y0, x1, y1))
        assert g.shape == (1, 1, y1 - y0, x1 - x0)
        assert float((g - full[..., y0:y1, x0:x1]).abs().max()) < 1e-5
    assert float(full.max()) == 1.0 and float(full.min()) == 0.0  # a gate, not an empty map


def test_projected_vertices_cover_the_silhouette_at_every_scale():
    """SMPLpix's input density: one pixel per vertex covers ≥ 85 % of the default body's
    silhouette only up to 128² windows; footprint splats (project.footprint_radii) keep the
    coverage ≥ 0.85 from 64² to 1024² (a close-up at 2× the largest trained scale), while the
    splats stay inside the silhouette's neighbourhood."""
    from neural_avatar.neural.inputs.project import footprint_radii, mesh_edges, project_vertices
    from neural_avatar.neural.inputs.raster import rasterize

    model = body.load_default()
    pose = np.zeros((24, 3))
    pose[16, 2], pose[17, 2] = -1.2, 1.2
    v = np.asarray(kinematics.forward(model, pose_aa=pose)[0])
    K, R, t = _cam(4.0)
    cover, dense, spill = {}, {}, {}
    faces = torch.as_tensor(np.array(model.faces), dtype=torch.long)
    edges = mesh_edges(faces)
    for res in (64, 96, 128, 256, 512, 1024):
        w = C.body_crop(v, K, R, t, 512, 512, train_res=res)
        w.res = res
        Kc = C.crop_intrinsics(K, w)

        def T(a):
            return torch.as_tensor(np.array(a), dtype=torch.float32)[None]

        ras = rasterize(T(v), torch.as_tensor(np.array(model.faces), dtype=torch.long), T(Kc), T(R), T(t), (res, res),
                        compute_normals=False)
        sil = torch.isfinite(ras.depth[0]).reshape(res, res)
        Xc = v @ R.T + t
        uv = (Xc @ Kc.T)[:, :2] / Xc[:, 2:3]
        j, i = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        ok = (j >= 0) & (j < res) & (i >= 0) & (i < res)
        hit = torch.zeros(res, res, dtype=torch.bool)
        hit[torch.as_tensor(i[ok]), torch.as_tensor(j[ok])] = True
        cover[res] = float((hit & sil).sum() / sil.sum())
        radii = footprint_radii(T(v), edges, T(Kc), T(R), T(t))
        _, m = project_vertices(T(v), torch.ones(len(v), 3), T(Kc), T(R), T(t), (res, res), splat_radii=radii,
                                return_mask=True)
        m = m[0, 0] > 0.5
        dense[res] = float((m & sil).sum() / sil.sum())
        # splats that land off the silhouette stay within a few pixels of it
        grown = torch.nn.functional.max_pool2d(sil[None, None].float(), 2 * max(2, res // 64) + 1, 1,
                                               max(2, res // 64))[0, 0] > 0
        spill[res] = float((m & ~grown).sum() / sil.sum())
    assert min(cover[64], cover[96], cover[128]) >= 0.85, cover
    assert cover[512] < 0.85  # one pixel per vertex is too sparse here
    assert min(dense.values()) >= 0.85, dense
    assert max(spill.values()) < 0.05, spill


def test_body_regions_hold_the_body_on_the_downsampling_grid():
    v = _body()
    K, R, t = _cam(2.5)
    w = C.body_crop(v, K, R, t, 512, 512, train_res=512)
    Kc = C.crop_intrinsics(K, w)
    e = C.body_extent(v, Kc, R, t, w.res)
    assert 0 <= e[0] < e[2] <= w.res and 0 <= e[1] < e[3] <= w.res
    # a second, narrower body in the same batch shares the region's size
    e2 = (e[0] + 40, e[1] + 10, e[0] + 90, e[3] - 20)
    h, wd = C.region_size([e, e2], w.res)
    assert h % 16 == 0 and wd % 16 == 0 and wd < w.res and h <= w.res
    for ext in (e, e2):
        ox, oy = C.place_region(ext, h, wd, w.res)
        assert ox % 16 == 0 and oy % 16 == 0
        assert ox <= ext[0] and ext[2] <= ox + wd and oy <= ext[1] and ext[3] <= oy + h
        assert ox + wd <= w.res and oy + h <= w.res


def test_the_style_unet_keeps_a_wider_minimum_margin():
    """A small window's region keeps at least REGION_MIN_MARGIN_PX of background around the body;
    HVS's style UNet (bottleneck at 1/8 of the side) keeps its own, wider minimum."""
    v = _body()
    K, R, t = _cam(2.5)
    w = C.body_crop(v, K, R, t, 512, 512, train_res=160)
    Kc = C.crop_intrinsics(K, w)
    uv = C._project_front(v, Kc, R, t)
    for mode, px in (("VERTEX_PROJECTION", C.REGION_MIN_MARGIN_PX),
                     ("GAUSSIAN_BONES", C.REGION_MIN_MARGIN_BY_MODE["GAUSSIAN_BONES"])):
        e = C.body_extent(v, Kc, R, t, w.res, mode=mode)
        assert px > C.REGION_MARGIN * w.res  # the minimum is what counts at this size
        assert e[0] == max(0, int(np.floor(uv[:, 0].min() - px)))
        assert e[2] == min(w.res, int(np.ceil(uv[:, 0].max() + px)))
    assert C.REGION_MIN_MARGIN_BY_MODE["GAUSSIAN_BONES"] > C.REGION_MIN_MARGIN_PX


@pytest.mark.parametrize("where", ["inside", "corner"])
def test_a_region_pastes_and_feathers_as_the_whole_window_holding_it(where):
    """The engine keeps a body's network output at its region's size: pasting the region (the
    window outside it at ``fill``) and feathering it at its offset give the frame that the whole
    window, built around it, gives; also where the region meets the window's border."""
    win = C.Crop(x0=50.3, y0=40.7, side=400.0, res=128)  # inside the frame, coarser than it
    r = win.res
    h, wd = 64, 48
    ox, oy = (32, 16) if where == "inside" else (r - wd, 0)
    fill = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    g = torch.Generator().manual_seed(0)
    region = torch.rand(7, h, wd, generator=g)
    region[3:4] = C.feather(region[None, 3:4], res=r, offset=(ox, oy))[0]
    whole = torch.tensor(fill).view(7, 1, 1).repeat(1, r, r)
    whole[:, oy:oy + h, ox:ox + wd] = torch.rand(7, h, wd, generator=torch.Generator().manual_seed(0))
    whole[3:4] = C.feather(whole[None, 3:4])[0]
    rect = (ox, oy, ox + wd, oy + h)
    a, vis_a = C.paste(region, win, 600, 600, rect=rect, fill=fill)
    b, vis_b = C.paste(whole, win, 600, 600, rect=rect)
    assert vis_a == vis_b and a.shape == b.shape and a.shape[0] > h
    assert float(np.abs(a - b).max()) < 1e-5
    with pytest.raises(ValueError):
        C.paste(region[:, :-1], win, 600, 600, rect=rect)


def test_back_face_culling_is_used_only_on_closed_meshes_and_changes_nothing():
    from neural_avatar.neural.inputs.raster import is_closed_oriented, rasterize

    model = body.load_default()
    faces = torch.as_tensor(np.asarray(model.faces)).long()
    assert is_closed_oriented(faces)
    assert not is_closed_oriented(faces[1:])  # a hole
    assert not is_closed_oriented(torch.cat([faces[:1, [0, 2, 1]], faces[1:]]))  # one face flipped
    v = torch.as_tensor(_body(), dtype=torch.float32)[None]
    K, R, t = _cam(2.5)
    args = (v, faces, torch.as_tensor(K, dtype=torch.float32)[None], torch.as_tensor(R, dtype=torch.float32)[None],
            torch.as_tensor(t, dtype=torch.float32)[None], (512, 512))
    a = rasterize(*args)
    b = rasterize(*args, cull_backfaces=True)
    assert torch.equal(a.face_id, b.face_id) and int((a.face_id >= 0).sum()) > 1000


@pytest.mark.parametrize("res", [384, 512])
def test_the_style_unet_on_a_region_paints_what_the_whole_window_paints(res):
    """HVS runs on the body's region like SMPLpix and ANR: the shipped style UNet evaluated on
    the region (its Gaussian feature image computed at the region's pixels) gives the
    premultiplied colour of the whole window's render there to ≥ 50 dB PSNR, on a smaller
    network image."""
    from neural_avatar.engine.avatars import default_avatar_path
    from neural_avatar.neural.avatar import FrameInputs
    from neural_avatar.neural.bundle import load_bundle
    from neural_avatar.neural.evaluation.bench_core import default_or_procedural, make_frame

    path = default_avatar_path("GAUSSIAN_BONES")
    if not os.path.isfile(path):
        pytest.skip("shipped avatars not present")
    av = load_bundle(path, expected_mode="GAUSSIAN_BONES")
    fr = make_frame(default_or_procedural(6890), res)
    fr.K[0, 0, 0] *= 0.7  # the body about as large in its window as the capture protocol frames it
    fr.K[0, 1, 1] *= 0.7
    K, R, t, v = fr.K[0].numpy(), fr.R[0].numpy(), fr.t[0].numpy(), fr.verts[0].numpy()
    e = C.body_extent(v, K, R, t, res, mode="GAUSSIAN_BONES")
    rh, rw = C.region_size([e], res)
    ox, oy = C.place_region(e, rh, rw, res)
    assert rh * rw < res * res
    region = FrameInputs(verts=fr.verts, joints=fr.joints, R=fr.R, t=fr.t, size=(rh, rw),
                         K=torch.as_tensor(C.region_intrinsics(K, ox, oy), dtype=torch.float32)[None])
    with torch.no_grad():
        whole, part = av.render(fr, precision="fp32"), av.render(region, precision="fp32")
    a = (whole["rgb_fg"] * whole["mask"])[..., oy:oy + rh, ox:ox + rw]
    b = part["rgb_fg"] * part["mask"]
    psnr = float(10 * torch.log10(1.0 / ((a - b) ** 2).mean().clamp_min(1e-12)))
    print("HVS region", (rh, rw), "of", res, "PSNR", psnr)
    assert psnr >= 50.0, psnr


def test_projecting_once_gives_the_window_region_and_gate_of_projecting_each_time():
    """The engine projects a body once a frame (``project_front``, then ``to_window``): the window,
    the region and the gate are those each function computes from its own K."""
    v = _body()
    K, R, t = _cam(3.0)
    K = K.copy()
    K[0, 1] = 2.0  # a skewed camera too
    uv = C.project_front(v, K, R, t)
    w = C.body_crop(v, K, R, t, 512, 512, train_res=256, uv=uv)
    assert w == C.body_crop(v, K, R, t, 512, 512, train_res=256)
    Kw = C.crop_intrinsics(K, w)
    uw = C.to_window(uv, w)
    assert np.allclose(uw, C.project_front(v, Kw, R, t), atol=1e-9)
    ext = C.body_extent(v, Kw, R, t, w.res, uv=uw)
    assert ext == C.body_extent(v, Kw, R, t, w.res)
    region = (ext[0], ext[1], ext[2], ext[3])
    g1 = C.silhouette_gate(v, Kw, R, t, w.res, region=region, uv=uw)
    g0 = C.silhouette_gate(v, Kw, R, t, w.res, region=region)
    assert torch.equal(g1, g0)
