"""composite_layers: back-to-front "over" of per-body layers, whole-frame or crop-sized."""
import numpy as np
import pytest

from neural_avatar.neural.composite import composite_layers


def _layer(rng, H, W, crop, depth, local):
    xa, ya, xb, yb = crop
    full = {"rgb": np.zeros((H, W, 3), np.float32), "mask": np.zeros((H, W), np.float32),
            "input": np.ones((H, W, 3), np.float32)}
    h, w = yb - ya, xb - xa
    part = {"rgb": rng.random((h, w, 3), dtype=np.float32), "mask": rng.random((h, w), dtype=np.float32),
            "input": rng.random((h, w, 3), dtype=np.float32)}
    for k in full:
        full[k][ya:yb, xa:xb] = part[k]
    return {**(part if local else full), "crop": crop, "depth": depth}


@pytest.mark.parametrize("transparent", [False, True])
def test_crop_sized_layers_composite_as_whole_frame_ones(transparent):
    """Two overlapping bodies, the far one painted first: layers holding only their crop give
    exactly the frame that whole-frame layers give; pixels outside every crop are background."""
    H, W = 40, 60
    crops = [(5, 3, 35, 30), (20, 10, 58, 39)]
    bg = np.array([0.2, 0.3, 0.4], np.float32)
    res = []
    for local in (False, True):
        rng = np.random.default_rng(0)
        layers = [_layer(rng, H, W, c, d, local) for c, d in zip(crops, (1.0, 3.0))]
        res.append(composite_layers(layers, bg, transparent, (H, W)))
    for key in ("rgba", "mask", "input"):
        assert np.array_equal(res[0][key], res[1][key]), key
    assert np.all(res[1]["mask"][:, :5] == 0.0) and np.all(res[1]["input"][:, :5] == 1.0)
    if not transparent:
        assert np.allclose(res[1]["rgba"][0, 0, :3], bg)
    lean = composite_layers(layers, bg, transparent, (H, W), with_input=False)
    assert lean["input"] is None and np.array_equal(lean["rgba"], res[1]["rgba"])
    bad = _layer(np.random.default_rng(0), H, W, crops[0], 1.0, True)
    bad["mask"] = bad["mask"][1:]
    with pytest.raises(ValueError):
        composite_layers([bad], bg, transparent, (H, W))
