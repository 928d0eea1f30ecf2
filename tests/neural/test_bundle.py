"""Model bundles (neural/bundle.py), device choice and the model cache (neural/device.py)."""

import json
import os
import struct
import warnings

import numpy as np
import pytest
import torch

from neural_avatar.errors import BundleError, NeuralAvatarError
from neural_avatar.neural.avatar import build_avatar
from neural_avatar.neural.evaluation.bench_core import make_frame, procedural_body
from neural_avatar.neural.bundle import bundle_paths, load_bundle, read_bundle_meta, save_bundle
from neural_avatar.neural.config import AnrConfig, AvatarConfig, StyleConfig, UNetConfig, IMAGE_MODES as MODES
from neural_avatar.neural.device import ModelCache, pick_device, resolve_device

SUBS = {
    "VERTEX_PROJECTION": dict(unet=UNetConfig(width=4, depth=2)),
    "NEURAL_TEXTURE": dict(anr=AnrConfig(texture_size=16, pyramid_levels=2, latent_channels=5,
                                         r1_width=4, r1_depth=2, r2_width=4, r2_depth=2)),
    "GAUSSIAN_BONES": dict(style=StyleConfig(num_primitives=2, appearance_dim=4, widths=(4, 8), w_dim=8)),
}


def make(mode):
    body = procedural_body(60)
    body.parents = np.array([-1, 0, 1])
    body.joints = np.array([[0, -0.6, 0], [0, 0.0, 0], [0, 0.6, 0]], np.float32)
    torch.manual_seed(0)
    av = build_avatar(AvatarConfig.default(mode, num_joints=3, resolution=32, **SUBS[mode]), body)
    with torch.no_grad():  # not the initial values: every tensor perturbed, BN stats too
        for p in av.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for n, b in av.named_buffers():
            if "running_var" in n:
                b.mul_(1.5)
    return av, body


@pytest.mark.parametrize("mode", MODES)
def test_round_trip_identical_outputs(tmp_path, mode):
    av, body = make(mode)
    frame = make_frame(body, 24)
    st, js = save_bundle(av, tmp_path / "sub" / "model", extra_meta={"training": {"epochs": 3}, "note": "x"})
    assert st.name == "model.safetensors" and js.name == "model.json"
    assert sorted(os.listdir(tmp_path / "sub")) == ["model.json", "model.safetensors"]  # no temp files left
    back = load_bundle(tmp_path / "sub" / "model.safetensors", expected_mode=mode, expected_body=body)
    assert not back.training
    a, b = av.render(frame), back.render(frame)
    for k in ("rgb", "mask", "input"):
        assert torch.equal(a[k], b[k]), k
    for (k1, v1), (k2, v2) in zip(av.state_dict().items(), back.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    meta = read_bundle_meta(js)
    assert meta["mode"] == mode and meta["resolution"] == 32 and meta["body_model_id"] == body.model_id
    assert meta["channels"] == {"input": av.input_channels, "output": 4}
    assert meta["training"] == {"epochs": 3} and meta["extra"] == {"note": "x"}
    assert meta["format_version"] == 1


def test_no_pickle_in_files(tmp_path):
    av, _ = make("NEURAL_TEXTURE")
    st, js = save_bundle(av, tmp_path / "m")
    raw = st.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])  # safetensors: u64 header length + JSON header + raw data
    header = json.loads(raw[8:8 + n])
    assert header["__metadata__"]["mode"] == "NEURAL_TEXTURE"
    assert set(header) - {"__metadata__"} == set(av.state_dict())
    assert not raw.startswith(b"\x80") and not raw.startswith(b"PK")  # neither pickle nor torch zip
    json.loads(js.read_text())
    assert not js.read_bytes().startswith(b"\x80")


def test_wrong_mode_refused_with_clear_message(tmp_path):
    av, _ = make("NEURAL_TEXTURE")
    save_bundle(av, tmp_path / "m")
    with pytest.raises(BundleError, match="trained for NEURAL_TEXTURE, the scene is set to GAUSSIAN_BONES"):
        load_bundle(tmp_path / "m", expected_mode="GAUSSIAN_BONES")


def test_body_mismatch(tmp_path):
    av, body = make("VERTEX_PROJECTION")
    save_bundle(av, tmp_path / "m")
    with pytest.raises(BundleError, match="body model"):
        load_bundle(tmp_path / "m", expected_body="smplx-neutral")
    other = procedural_body(200)
    other.model_id = body.model_id
    with pytest.raises(BundleError, match="vertices"):
        load_bundle(tmp_path / "m", expected_body=other)


def test_missing_and_corrupt_files(tmp_path):
    av, _ = make("GAUSSIAN_BONES")
    st, js = save_bundle(av, tmp_path / "m")
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nothing")
    text = js.read_text()
    js.write_text(text[: len(text) // 2])
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(st)
    js.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(BundleError, match="not a Neural Avatar"):
        read_bundle_meta(js)
    js.write_text(text)
    raw = st.read_bytes()
    st.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(BundleError, match="do not belong|corrupt"):
        load_bundle(st)
    # truncated tensors with a matching hash: safetensors itself refuses
    meta = json.loads(text)
    meta.pop("tensors_sha256")
    js.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="corrupt"):
        load_bundle(st)
    st.unlink()
    with pytest.raises(BundleError, match="not found"):
        load_bundle(js)


def test_mismatched_tensors(tmp_path):
    av, _ = make("VERTEX_PROJECTION")
    st, js = save_bundle(av, tmp_path / "m")
    meta = json.loads(js.read_text())
    meta.pop("tensors_sha256")
    meta["config"]["unet"]["width"] = 8  # the weights were saved for width 4
    js.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="shape"):
        load_bundle(st)
    meta["config"]["unet"]["width"] = 4
    meta["config"]["unet"]["depth"] = 3
    js.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="missing"):
        load_bundle(st)
    meta["config"]["unet"]["norm"] = "weird"
    js.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="invalid configuration"):
        load_bundle(st)
    meta["config"]["unet"]["norm"] = "batch"
    meta["format_version"] = 99
    js.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="Update"):
        load_bundle(st)


def test_nan_weights_refused(tmp_path):
    from safetensors.torch import save_file

    av, _ = make("VERTEX_PROJECTION")
    st, js = save_bundle(av, tmp_path / "m")
    sd = {k: v.clone() for k, v in av.state_dict().items()}
    sd["identity.vertex_colors"][0, 0] = float("nan")
    save_file(sd, str(st))
    meta = json.loads(js.read_text())
    meta.pop("tensors_sha256")
    js.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="NaN"):
        load_bundle(st)


# ---- devices and cache ---------------------------------------------------------------------

def test_pick_device():
    assert pick_device("CPU") == torch.device("cpu")
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(NeuralAvatarError, match="Unknown compute device"):
        pick_device("TPU")
    if not torch.cuda.is_available():
        dev, msg = resolve_device("CUDA")
        assert dev.type in ("cpu", "mps") and "CUDA was requested" in msg
        got = []
        assert pick_device("CUDA", warn=got.append) == dev and got == [msg]
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            pick_device("CUDA")
        assert any("CUDA" in str(x.message) for x in w)


def test_model_cache(tmp_path):
    av, body = make("GAUSSIAN_BONES")
    save_bundle(av, tmp_path / "m")
    cache = ModelCache(max_entries=2)
    a = cache.get(tmp_path / "m.json", "cpu")
    b = cache.get(tmp_path / "m", "cpu", expected_mode="GAUSSIAN_BONES")
    assert a is b and cache.loads == 1
    c = cache.get(tmp_path / "m", "cpu", precision="bf16")
    assert c is not a and cache.loads == 2
    with pytest.raises(BundleError, match="the scene is set to VERTEX_PROJECTION"):
        cache.get(tmp_path / "m", "cpu", expected_mode="VERTEX_PROJECTION")
    # the file changes -> reloaded
    with torch.no_grad():
        av.identity.appearance.add_(1.0)
    save_bundle(av, tmp_path / "m")
    st, js = bundle_paths(tmp_path / "m")
    os.utime(js, ns=(js.stat().st_atime_ns, js.stat().st_mtime_ns + 10_000_000))
    d = cache.get(tmp_path / "m", "cpu")
    assert d is not a and cache.loads == 3
    assert torch.equal(d.identity.appearance, av.identity.appearance)
    assert len(cache) <= 2
    cache.clear()
    assert len(cache) == 0


@pytest.mark.parametrize("mode", MODES)
def test_multi_identity_bundle_swaps_only_the_identity(tmp_path, mode):
    """One renderer, several people: identity B's tensors replace the avatar's identity.* (ANR:
    try-on, any body wears B's texture), every other tensor is shared."""
    av, body = make(mode)
    own = {k: v for k, v in av.state_dict().items() if k.startswith("identity.")}
    other = {k: v + 0.3 for k, v in own.items() if v.is_floating_point()}
    assert other
    save_bundle(av, tmp_path / "m", identities=[("alice", {}), ("bob", other)])
    meta = read_bundle_meta(tmp_path / "m")
    assert meta["identities"] == ["alice", "bob"]
    a = load_bundle(tmp_path / "m", expected_mode=mode)
    b = load_bundle(tmp_path / "m", expected_mode=mode, identity="bob")
    assert torch.equal(load_bundle(tmp_path / "m", identity="alice").state_dict()[next(iter(other))],
                       a.state_dict()[next(iter(other))])
    for k, v in a.state_dict().items():
        if k in other:
            assert torch.allclose(b.state_dict()[k], other[k])
        else:
            assert torch.equal(b.state_dict()[k], v), k
    frame = make_frame(body, 24)
    assert not torch.allclose(a.render(frame)["rgb"], b.render(frame)["rgb"])
    with pytest.raises(BundleError, match="no identity 'carol'.*alice, bob"):
        load_bundle(tmp_path / "m", identity="carol")
    save_bundle(av, tmp_path / "one")
    with pytest.raises(BundleError, match="holds one person"):
        load_bundle(tmp_path / "one", identity="bob")
    with pytest.raises(BundleError, match="identity name"):
        save_bundle(av, tmp_path / "bad", identities=[("alice", {}), ("../x", other)])
    with pytest.raises(BundleError, match="not one of the avatar's identity tensors"):
        save_bundle(av, tmp_path / "bad", identities=[("alice", {}), ("bob", {"net.x": torch.zeros(1)})])


def test_identity_bank_tensors_are_checked(tmp_path):
    """A tampered bundle: a bank tensor of another shape, or of an identity the JSON does not list."""
    from safetensors.torch import load_file, save_file

    av, body = make("NEURAL_TEXTURE")
    own = {k: v for k, v in av.state_dict().items() if k.startswith("identity.") and v.is_floating_point()}
    st, js = save_bundle(av, tmp_path / "m", identities=[("a", {}), ("b", {k: v * 2 for k, v in own.items()})])
    t = load_file(str(st))
    k = next(k for k in t if k.startswith("identities.b."))
    t[k] = torch.zeros(1, 2, 3)
    save_file(t, str(st))
    meta = json.loads(js.read_text())
    meta.pop("tensors_sha256", None)
    js.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="does not match an identity"):
        load_bundle(tmp_path / "m")


@pytest.mark.parametrize("mode", MODES)
def test_average_bundles_is_the_mean_of_snapshots(tmp_path, mode):
    """``average_bundles`` (``python -m neural_avatar average``) writes the mean of two snapshots'
    floating-point tensors, keeps integer ones, renders like an avatar holding those weights, and
    records its inputs; snapshots of different avatars are refused."""
    from neural_avatar.neural.bundle import average_bundles

    a, body = make(mode)
    b, _ = make(mode)
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.1 * torch.randn_like(p))
    save_bundle(a, tmp_path / "a", extra_meta={"training": {"steps": 600}})
    save_bundle(b, tmp_path / "b", extra_meta={"training": {"steps": 800}})
    from neural_avatar.__main__ import main
    assert main(["average", str(tmp_path / "a.json"), str(tmp_path / "b"), "--out", str(tmp_path / "m")]) == 0
    m = load_bundle(tmp_path / "m", expected_mode=mode, expected_body=body)
    sa, sb, sm = a.state_dict(), b.state_dict(), m.state_dict()
    assert sm.keys() == sa.keys()
    moved = 0
    for k, v in sm.items():
        if v.is_floating_point():
            assert torch.allclose(v, (sa[k] + sb[k]) / 2, atol=1e-6), k
            moved += int(not torch.equal(sa[k], sb[k]))
        else:
            assert torch.equal(v, sb[k]), k
    assert moved > 0
    frame = make_frame(body, 24)
    assert not torch.equal(m.render(frame)["rgb"], a.render(frame)["rgb"])
    rec = read_bundle_meta(tmp_path / "m")["training"]
    assert rec["steps"] == 800 and [x["bundle"] for x in rec["averaged_from"]] == ["a", "b"]
    assert rec["averaged_from"][0]["tensors_sha256"] == read_bundle_meta(tmp_path / "a")["tensors_sha256"]

    with pytest.raises(BundleError, match="at least two"):
        average_bundles([tmp_path / "a"], tmp_path / "x")
    other = "NEURAL_TEXTURE" if mode != "NEURAL_TEXTURE" else "VERTEX_PROJECTION"
    c, _ = make(other)
    save_bundle(c, tmp_path / "c")
    with pytest.raises(BundleError, match="not snapshots of one avatar"):
        average_bundles([tmp_path / "a", tmp_path / "c"], tmp_path / "x")
    assert not (tmp_path / "x.json").exists()
