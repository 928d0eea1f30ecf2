"""The unseen-subjects protocol: subjects no evaluated bundle trained on, reference clips that
are not evaluation clips, and a whole (tiny, Workbench) run with every method's input."""
import json
import os

import numpy as np
import pytest

pytestmark = pytest.mark.bpy


def _bundle(tmp_path, mode, identities=None, **sub):
    import torch

    from neural_avatar import body
    from neural_avatar.neural.avatar import build_avatar
    from neural_avatar.neural.bundle import save_bundle
    from neural_avatar.neural.config import AvatarConfig

    d = AvatarConfig.default(mode, resolution=48).to_dict()
    key = {"PIXEL_ALIGNED": "pixel", "GAUSSIAN_BONES": "style", "VERTEX_PROJECTION": "unet",
           "NEURAL_TEXTURE": "anr"}[mode]
    d[key] = {**d[key], **sub}
    torch.manual_seed(0)
    av = build_avatar(AvatarConfig.from_dict(d), body.load_default())
    info = {"training": {"identities": identities or ["subject"]}}
    st, _ = save_bundle(av, tmp_path / mode.lower(), info)
    return str(st)


def test_seeds_clash_and_reference_clips(tmp_path):
    from neural_avatar.errors import NeuralAvatarError
    from neural_avatar.lab import unseen

    b = _bundle(tmp_path, "VERTEX_PROJECTION", identities=["zoo50000", "zoo1001"], width=8, depth=2)
    assert unseen.training_seeds([b]) == {50000, 1001}
    with pytest.raises(NeuralAvatarError, match="50000"):
        unseen.unseen_specs(2, 0, unseen.training_seeds([b]))
    specs = unseen.unseen_specs(2, 1, unseen.training_seeds([b]))
    assert [s.seed for s in specs] == [50100, 50101]
    ref = unseen.reference_motions(["x/punch_poses.npz"])
    assert ref and not any(os.path.basename(p) == "punch_poses.npz" for p in ref)


def test_tiny_unseen_run_has_every_method_and_the_protocol_layout(tmp_path):
    from neural_avatar import body
    from neural_avatar.lab import evaluate, unseen

    bundles = {
        "VERTEX_PROJECTION": _bundle(tmp_path, "VERTEX_PROJECTION", width=8, depth=2),
        "GAUSSIAN_BONES": _bundle(tmp_path, "GAUSSIAN_BONES", widths=[8, 16], w_dim=16, encoder=True,
                                  encoder_width=8, encoder_res=32),
        "NEURAL_TEXTURE": _bundle(tmp_path, "NEURAL_TEXTURE", texture_size=32, pyramid_levels=2, r1_width=8,
                                  r2_width=8, r1_depth=2, r2_depth=2, latent_channels=8),
        "PIXEL_ALIGNED": _bundle(tmp_path, "PIXEL_ALIGNED", hidden=16, samples=6, source_res=32, vertex_stride=8),
    }
    model = body.load_default()
    paths = [os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "data", "motions",
                          "heldout", "dance_b_poses.npz")]
    out = unseen.evaluate_unseen(bundles, 1, paths, evaluate.load_motions(paths), 1, 2, 30.0, 3, None, 32,
                                 "BLENDER_WORKBENCH", 1, str(tmp_path / "gt"), "cpu", model, texture_size=64,
                                 batch=2, fit_steps=2)
    r = out["result"]
    assert r["protocol"] == "unseen_subjects" and r["frames"] == 2
    assert set(r["methods"]) == {"CLASSICAL", *bundles}
    for m in r["methods"].values():
        assert set(evaluate.METRIC_KEYS) <= set(m) and np.isfinite(m["psnr_mask"])
    name = r["subjects"][0]["name"]
    assert name.startswith("zoo") and r["subjects"][0]["seed"] == unseen.UNSEEN_SEED_BASE + 300
    assert os.path.isfile(tmp_path / "gt" / name / "reference" / "dataset.json")
    assert json.dumps(r)  # the JSON layout serialises
