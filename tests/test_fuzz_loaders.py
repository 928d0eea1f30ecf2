"""Fuzz tier: every loader of untrusted files (motion, body model .npz/.pkl, model bundle,
capture folder, training checkpoint) ends in success or a project error (NeuralAvatarError),
never another exception, and never allocates beyond the memory limit.

Inputs are mutations of a valid file: random byte damage (flips, truncation, insertions), and
structure-aware changes (JSON values replaced by hostile ones: huge or negative numbers,
bools, NaN, deep nesting, wrong types; .npy headers that declare huge shapes). The memory limit
is lowered to 256 MB for the run (``NEURAL_AVATAR_MEMORY_LIMIT_MB``), and the process's peak
resident memory may not grow by more than 1.5 GB over a test.
"""
import copy
import functools
import io
import json
import os
import pathlib
import resource
import shutil
import tempfile
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neural_avatar.errors import NeuralAvatarError

FUZZ = settings(max_examples=int(os.environ.get("NA_FUZZ_EXAMPLES", "30")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
LIMIT_MB = 256


@pytest.fixture(autouse=True)
def _memory_limit(monkeypatch):
    monkeypatch.setenv("NEURAL_AVATAR_MEMORY_LIMIT_MB", str(LIMIT_MB))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    yield
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown < 1536, f"peak memory grew by {grown:.0f} MB during a fuzz test"


def _outcome(fn):
    """Run a loader: returns 'ok' or 'error'; any other exception fails the test, and so does a
    peak-memory growth over 1 GB during this one input (hypothesis then shrinks it)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        fn()
        result = "ok"
    except NeuralAvatarError:
        result = "error"
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown < 1024, f"this input made the loader allocate {grown:.0f} MB (limit {LIMIT_MB} MB)"
    return result


# ------------------------------------------------------------------ mutation strategies
@st.composite
def damaged(draw, data: bytes):
    """``data`` with random byte damage."""
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "zero"]))
        if not b:
            break
        i = draw(st.integers(0, len(b) - 1))
        if kind == "flip":
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del b[i:]
        elif kind == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:
            n = draw(st.integers(1, 64))
            b[i:i + n] = bytes(min(n, len(b) - i))
    return bytes(b)


HOSTILE_VALUES = st.one_of(
    st.integers(-(2 ** 70), 2 ** 70), st.sampled_from([0, -1, 1, 10 ** 9, 10 ** 12, 2 ** 62]),
    st.booleans(), st.none(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from(["../../x", "/etc/passwd", "a\x00b", "x/../../.."]),
    st.lists(st.integers(-3, 3), max_size=4), st.just([[[[[[[[[[[]]]]]]]]]]]), st.just({"a": {"b": {}}}),
)


def _paths(obj, prefix=()):
    """Every (path, value) in a JSON document."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:6]):
            yield from _paths(v, prefix + (i,))


@st.composite
def json_mutation(draw, doc):
    """``doc`` with 1–3 values (at any depth) replaced by hostile ones, or deleted."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p, _ in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if draw(st.integers(0, 5)) == 0 and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(draw(HOSTILE_VALUES))  # st.just values are shared
    return doc


def _deep_json(depth=100000) -> str:
    return "[" * depth + "]" * depth


def _npy_bytes_with_header(shape, descr="<f8") -> bytes:
    """An .npy whose header declares ``shape`` but holds (almost) no data."""
    header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\x00" * 64


def _zip_with(members: dict, compress=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compress) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


HUGE_SHAPES = st.sampled_from([(10 ** 9, 3), (2 ** 31, 156), (10 ** 6, 10 ** 6), (7, 10 ** 12), (-1, 3)])


# ------------------------------------------------------------------ motion
def _valid_motion(tmp_path) -> bytes:
    p = tmp_path / "m.npz"
    np.savez(p, poses=np.zeros((5, 156)), trans=np.zeros((5, 3)), mocap_framerate=np.array(30.0),
             betas=np.zeros(16), gender=np.array("female"))
    return p.read_bytes()


@FUZZ
@given(data=st.data())
def test_fuzz_motion(tmp_path, data):
    from neural_avatar.motion import load_motion

    raw = _valid_motion(tmp_path)
    choice = data.draw(st.integers(0, 2))
    if choice == 0:
        raw = data.draw(damaged(raw))
    elif choice == 1:  # a member that declares a huge array (a decompression bomb's header)
        raw = _zip_with({"poses.npy": _npy_bytes_with_header(data.draw(HUGE_SHAPES)),
                         "trans.npy": _npy_bytes_with_header((5, 3)), "mocap_framerate.npy": _npy_bytes_with_header(())})
    else:  # a real bomb: millions of frames of zeros, compressed to a few kB
        n = data.draw(st.sampled_from([3_000_000, 20_000_000]))
        raw = _zip_with({"poses.npy": _npy_bytes_with_header((n, 156))[:-64] + b"\x00" * 0,
                         "trans.npy": _npy_bytes_with_header((5, 3))})
    p = tmp_path / "fuzz.npz"
    p.write_bytes(raw)
    _outcome(lambda: load_motion(p))


# ------------------------------------------------------------------ body model
def _valid_body_npz(tmp_path) -> bytes:
    from neural_avatar import body

    path = body.write_synthetic_model(tmp_path / "src", "smpl", "neutral")
    return open(path, "rb").read(), os.path.basename(path)


@FUZZ
@given(data=st.data())
def test_fuzz_body_model_npz(tmp_path, data):
    from neural_avatar import body

    raw, name = _valid_body_npz(tmp_path)
    if data.draw(st.booleans()):
        raw = data.draw(damaged(raw))
    else:
        raw = _zip_with({"v_template.npy": _npy_bytes_with_header(data.draw(HUGE_SHAPES)),
                         "f.npy": _npy_bytes_with_header((10, 3), "<i8")})
    d = tmp_path / "fuzz"
    d.mkdir(exist_ok=True)
    p = d / ("SMPL_NEUTRAL.npz" if name.endswith(".npz") else name)
    p.write_bytes(raw)
    _outcome(lambda: body.load_model_file(p, "smpl"))


@FUZZ
@given(data=st.data())
def test_fuzz_body_model_pickle(tmp_path, data):
    import pickle

    from neural_avatar import body
    from neural_avatar.body.synthetic import make_synthetic_model

    d = make_synthetic_model("smpl") if callable(make_synthetic_model) else None
    arrays = {k: np.asarray(v) for k, v in (d.items() if isinstance(d, dict) else [])}
    raw = pickle.dumps(arrays, protocol=data.draw(st.sampled_from([2, 4])))
    raw = data.draw(damaged(raw))
    p = tmp_path / "SMPL_NEUTRAL.pkl"
    p.write_bytes(raw)
    _outcome(lambda: body.load_model_file(p, "smpl"))


# ------------------------------------------------------------------ bundle
@functools.lru_cache(maxsize=None)
def bundle_files():
    from neural_avatar import body
    from neural_avatar.neural.avatar import build_avatar
    from neural_avatar.neural.bundle import save_bundle
    from neural_avatar.neural.config import AvatarConfig

    d = pathlib.Path(tempfile.mkdtemp(prefix="na_fuzz_bundles_"))
    out = {}
    model = body.load_default()
    for mode in ("VERTEX_PROJECTION", "NEURAL_TEXTURE", "GAUSSIAN_BONES"):
        cfg = AvatarConfig.default(mode, resolution=32)
        p = d / f"{mode.lower()}.safetensors"
        save_bundle(build_avatar(cfg, model), p)
        out[mode] = (p.read_bytes(), json.loads(p.with_suffix(".json").read_text()))
    return out


@FUZZ
@given(data=st.data())
def test_fuzz_bundle(tmp_path, data):
    from neural_avatar.neural.bundle import load_bundle

    bundle_files = globals()["bundle_files"]()
    mode = data.draw(st.sampled_from(sorted(bundle_files)))
    weights, meta = bundle_files[mode]
    kind = data.draw(st.integers(0, 3))
    if kind == 0:
        meta = data.draw(json_mutation(meta))
        meta.pop("tensors_sha256", None)  # reach the config checks, not only the hash check
    elif kind == 1:
        weights = data.draw(damaged(weights))
        meta = dict(meta)
        meta.pop("tensors_sha256", None)
    elif kind == 2:  # a configuration claiming a giant network
        meta = json.loads(json.dumps(meta))
        meta.pop("tensors_sha256", None)
        sub = next(k for k in ("unet", "anr", "style") if meta["config"].get(k))
        cfg = meta["config"][sub]
        key = data.draw(st.sampled_from([k for k, v in cfg.items() if isinstance(v, int) and not isinstance(v, bool)]
                                        or ["width"]))
        cfg[key] = data.draw(st.sampled_from([4096, 65536, 10 ** 6]))
        if data.draw(st.booleans()):
            meta["config"]["num_verts"] = 10 ** 9
    p = tmp_path / "b.safetensors"
    p.write_bytes(weights)
    text = json.dumps(meta) if kind != 3 else _deep_json()
    p.with_suffix(".json").write_text(text)
    _outcome(lambda: load_bundle(p))


# ------------------------------------------------------------------ capture folder
@functools.lru_cache(maxsize=None)
def capture_dir():
    from neural_avatar.neural.training.dataset import capsule_body, write_synthetic_dataset

    d = pathlib.Path(tempfile.mkdtemp(prefix="na_fuzz_capture_")) / "cap"
    model = capsule_body()
    write_synthetic_dataset(str(d), n=4, res=24, body_model=model)
    return d, model


@FUZZ
@given(data=st.data())
def test_fuzz_capture_folder(tmp_path, data):
    from neural_avatar.neural.training.dataset import CaptureDataset

    src, model = capture_dir()
    dst = tmp_path / "cap"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    target = data.draw(st.sampled_from(["dataset.json", "cameras.json", "body.npz", "vertex_colors.npy",
                                        "images/000000.png", "deep"]))
    if target.endswith(".json"):
        doc = json.loads((dst / target).read_text())
        (dst / target).write_text(json.dumps(data.draw(json_mutation(doc))))
    elif target == "deep":
        (dst / "dataset.json").write_text(_deep_json())
    elif target == "body.npz" and data.draw(st.booleans()):
        (dst / target).write_bytes(_zip_with({"poses.npy": _npy_bytes_with_header(data.draw(HUGE_SHAPES))}))
    else:
        p = dst / target
        p.write_bytes(data.draw(damaged(p.read_bytes())))

    def load():
        ds = CaptureDataset(str(dst), "train", body_model=model, res=data.draw(st.sampled_from([None, 16, 24])))
        for i in range(min(2, len(ds))):
            ds[i]

    _outcome(load)


# ------------------------------------------------------------------ checkpoint
@functools.lru_cache(maxsize=None)
def checkpoint_bytes():
    import torch

    d = pathlib.Path(tempfile.mkdtemp(prefix="na_fuzz_ckpt_"))
    from neural_avatar.neural.training import trainer as tr

    ck = {"format": tr.CKPT_FORMAT, "mode": "VERTEX_PROJECTION", "step": 3, "config": {}, "trainer": {
        "w": torch.zeros(4, 4)}, "rng": {"torch": torch.get_rng_state()}, "best_psnr": 1.0, "history": []}
    p = d / "last.ckpt"
    torch.save(ck, p)
    return p.read_bytes()


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/na_fuzz_pwned",))


@FUZZ
@given(data=st.data())
def test_fuzz_checkpoint(tmp_path, data):
    import torch

    from neural_avatar.neural.training.trainer import load_checkpoint

    raw = checkpoint_bytes()
    kind = data.draw(st.integers(0, 2))
    if kind == 0:
        raw = data.draw(damaged(raw))
    elif kind == 1:  # a pickled object: refused, never run
        buf = io.BytesIO()
        torch.save({"format": "x", "evil": _Evil()}, buf)
        raw = buf.getvalue()
    p = tmp_path / "last.ckpt"
    p.write_bytes(raw)
    _outcome(lambda: load_checkpoint(p))
    assert not os.path.exists("/tmp/na_fuzz_pwned")


def test_pickled_checkpoint_message_is_in_the_users_words(tmp_path):
    import torch

    from neural_avatar.neural.training.trainer import load_checkpoint

    p = tmp_path / "last.ckpt"
    torch.save({"evil": _Evil()}, p)
    with pytest.raises(NeuralAvatarError) as e:
        load_checkpoint(p)
    assert "weights_only" not in str(e.value) and "could run code" in str(e.value)


def test_image_declaring_a_huge_size_is_refused_before_decoding(tmp_path):
    import struct
    import zlib

    from neural_avatar.errors import DatasetError
    from neural_avatar.neural.training.dataset import CaptureDataset

    src, model = capture_dir()
    dst = tmp_path / "cap"
    shutil.copytree(src, dst)

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    w = h = 60000  # 14 GB once decoded; a few hundred bytes on disk
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b"")
    (dst / "images" / "000000.png").write_bytes(png)
    ds = CaptureDataset(str(dst), "train", body_model=model)
    with pytest.raises(DatasetError, match="60000x60000"):
        ds[0]
