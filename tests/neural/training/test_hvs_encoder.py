"""HVS appearance from one image (eq. 4): the body crop of source views, the encoder, and
training it on a multi-person capture so that a new person needs no training."""

import json
import os

import numpy as np
import pytest
import torch

from neural_avatar.errors import NeuralAvatarError
from neural_avatar.neural.avatar import build_avatar
from neural_avatar.neural.bundle import bundle_identities, load_bundle, read_bundle_meta
from neural_avatar.neural.config import AvatarConfig
from neural_avatar.neural.inputs.source import SourceViews, crop_to_body, project
from neural_avatar.neural.training.dataset import CaptureDataset, capsule_body, write_synthetic_dataset
from neural_avatar.neural.training.trainer import TrainConfig, train

STYLE = {"widths": [8, 16, 16], "w_dim": 16, "encoder": True, "encoder_width": 8, "encoder_res": 32}


@pytest.fixture(scope="module")
def body():
    return capsule_body()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, body):
    root = tmp_path_factory.mktemp("zoo")
    write_synthetic_dataset(str(root), n=10, res=32, seed=3, body_model=body, identities=3)
    return str(root)


def _avatar(body, **style):
    cfg = AvatarConfig.default("GAUSSIAN_BONES", resolution=32, num_joints=len(body.parents))
    cfg = AvatarConfig.from_dict({**cfg.to_dict(), "style": {**cfg.to_dict()["style"], **STYLE, **style}})
    return build_avatar(cfg, body)


def test_crop_keeps_the_body_and_its_pixels(zoo, body):
    ds = CaptureDataset(zoo, "train", body)
    src = ds.sources([0, 1])
    assert src.rgb.shape == (2, 1, 3, 32, 32)
    crop = crop_to_body(src, 24)
    assert crop.rgb.shape == (2, 1, 3, 24, 24) and crop.mask.shape == (2, 1, 1, 24, 24)
    for b in range(2):
        uv, z = project(src.verts[b:b + 1], crop.K[b:b + 1, 0], crop.R[b:b + 1, 0], crop.t[b:b + 1, 0])
        assert float(uv.min()) > 0 and float(uv.max()) < 24  # the whole body inside the window
        # the cropped mask covers about the same share of the body's box as the source's
        assert float(crop.mask[b].sum()) > 0.2 * 24 * 24 * float(src.mask[b].mean())
    # a window made of the full frame leaves the image unchanged (identity resampling)
    full = SourceViews(rgb=src.rgb, mask=src.mask, K=src.K, R=src.R, t=src.t,
                       verts=torch.tensor([[[0.0, 0.0, 0.0]]]).expand(2, 1, 3), joints=src.joints)
    assert full.validate().num_views == 1


def test_encoder_reads_the_image_and_no_encoder_is_a_clear_error(zoo, body):
    ds = CaptureDataset(zoo, "train", body)
    av = _avatar(body).eval()
    ids = ds.identity_index[np.asarray(ds.indices)]
    p0 = int(np.nonzero(ids == 0)[0][0])
    p1 = int(np.nonzero(ids == 1)[0][0])
    with torch.no_grad():
        a0 = av.encode_appearance(ds.sources([p0]))
        a1 = av.encode_appearance(ds.sources([p1]))
    M = av.config.style.num_primitives
    assert a0.shape == (1, M, av.config.style.appearance_dim)
    assert float((a0 - a1).abs().mean()) > 1e-4  # another person, another appearance
    src = ds.sources([p0])
    src.rgb.requires_grad_(True)
    av.encode_appearance(src).sum().backward()
    assert src.rgb.grad is not None and float(src.rgb.grad.abs().sum()) > 0
    plain = _avatar(body, encoder=False)
    with pytest.raises(NeuralAvatarError, match="no appearance encoder"):
        plain.encode_appearance(ds.sources([p0]))


def test_sources_of_one_item_must_share_an_instant(zoo, body):
    ds = CaptureDataset(zoo, "train", body)
    with pytest.raises(Exception, match="same instant"):
        ds.sources([0, 1], views_per_item=2)
    pick = ds.pick_sources([0, 1, 2], np.random.default_rng(0))
    ids = ds.identity_index[np.asarray(ds.indices)]
    assert all(ids[p] == ids[q] and p != q for p, q in zip([0, 1, 2], pick))


def test_training_the_encoder_reduces_the_loss_and_ships_every_person(tmp_path, zoo, body):
    cfg = TrainConfig(data=zoo, mode="GAUSSIAN_BONES", out=str(tmp_path), steps=40, batch=2, log_every=1,
                      val_every=0, ckpt_every=20, avatar={"style": STYLE}, perceptual="l1_msssim", threads=1)
    res = train(cfg, body_model=body)
    assert res["status"] == "finished"
    with open(tmp_path / "metrics.jsonl") as f:
        losses = [json.loads(x)["loss"] for x in f if '"loss"' in x and "validation" not in x]
    assert np.mean(losses[-8:]) < np.mean(losses[:8])
    names = bundle_identities(read_bundle_meta(res["bundle"]))
    assert len(names) == 3
    a = [load_bundle(res["bundle"], identity=n).identity.appearance.detach() for n in names]
    assert float((a[0] - a[1]).abs().mean()) > 1e-4 and float((a[1] - a[2]).abs().mean()) > 1e-4
    # a reloaded avatar still encodes a new image
    av = load_bundle(res["bundle"])
    ds = CaptureDataset(zoo, "val", body)
    assert av.encode_appearance(ds.sources([0])).shape[1] == av.config.style.num_primitives


def _train_smplpix_watching(tmp_path, zoo, body, look, **kw):
    """A tiny SMPLpix run on the zoo; ``look(trainer, identity)`` sees every step just before its
    losses (the colour augmentation has been applied by then)."""
    from neural_avatar.neural.training import trainer as T

    cfg = TrainConfig(data=zoo, mode="VERTEX_PROJECTION", out=str(tmp_path), steps=6, batch=2, log_every=1,
                      val_every=0, ckpt_every=0, avatar={"unet": {"width": 8, "depth": 2}},
                      perceptual="l1_msssim", threads=1, use_gan=False, **kw)
    orig = T._Trainer._losses

    def spy(self, frame, tgt, identity, update_identity, source=None):
        look(self, identity)
        return orig(self, frame, tgt, identity, update_identity, source)

    T._Trainer._losses = spy
    try:
        return train(cfg, body_model=body)
    finally:
        T._Trainer._losses = orig


def test_smplpix_colour_permutation_trains_on_several_people(tmp_path, zoo, body):
    """--color-permute: the input colours and the target are permuted alike (half the steps)."""
    seen = []
    res = _train_smplpix_watching(tmp_path, zoo, body,
                                  lambda tr, i: seen.append(getattr(tr, "_permuted", None) is not None),
                                  color_permute=True)
    assert res["status"] == "finished" and any(seen) and not all(seen)


def test_smplpix_hue_augmentation_trains_and_records_it(tmp_path, zoo, body):
    """--color-augment hue: input colours and target transformed alike on some steps, the
    colours change (not only their order), and the bundle records the augmentation."""
    import json

    seen = []

    def look(tr, identity):
        p = getattr(tr, "_permuted", None)
        if p is not None:
            vc = tr.fixed[identity].get("identity.vertex_colors", tr.avatar.identity.vertex_colors)
            new = p["identity.vertex_colors"]
            # not a plain channel permutation: some colour leaves the set of its channel values
            seen.append(not any(torch.allclose(new, vc[:, q], atol=1e-4)
                                for q in ([0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0])))

    res = _train_smplpix_watching(tmp_path, zoo, body, look, color_augment="hue")
    assert res["status"] == "finished" and seen and any(seen)
    meta = json.load(open(res["bundle"].replace(".safetensors", ".json")))
    assert meta["training"]["color_augment"] == "hue"


def test_colour_augmentation_options_are_checked():
    from neural_avatar.errors import NeuralAvatarError

    with pytest.raises(NeuralAvatarError, match="color_augment"):
        TrainConfig(data="x", mode="VERTEX_PROJECTION", out="y", color_augment="sepia").validate()
    cfg = TrainConfig(data="x", mode="VERTEX_PROJECTION", out="y", color_permute=True)
    cfg.validate()
    assert cfg.color_augment == "permute"
