"""Hypothesis fuzzing of the loader: malformed files raise MotionFileError and nothing else."""

import io
import zipfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from neural_avatar.errors import MotionFileError
from neural_avatar.motion import load_motion

KEYS = ["poses", "trans", "betas", "gender", "mocap_framerate", "mocap_frame_rate",
        "root_orient", "pose_body", "pose_hand", "pose_jaw", "pose_eye", "surface_model_type",
        "dmpls", "fps"]

_dtypes = st.one_of(
    hnp.floating_dtypes(sizes=(16, 32, 64)),
    hnp.integer_dtypes(sizes=(8, 32, 64)),
    hnp.unsigned_integer_dtypes(sizes=(8, 64)),
    hnp.boolean_dtypes(),
    hnp.complex_number_dtypes(sizes=(64,)),
    st.just(np.dtype("<U6")),
    st.just(np.dtype("|S6")),
)
# Widths near the real ones so the loader's deeper checks are reached often.
_dims = st.sampled_from([0, 1, 2, 3, 6, 8, 16, 63, 72, 90, 156, 165])
_shapes = st.one_of(
    st.just(()),
    st.tuples(_dims),
    st.tuples(st.integers(0, 5), _dims),
    st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
)


@st.composite
def _arrays(draw):
    if draw(st.integers(0, 14)) == 0:  # object array (pickled on save)
        a = np.empty(draw(st.integers(1, 3)), dtype=object)
        a[:] = [{"x": 1}] * len(a)
        return a
    dtype = draw(_dtypes)
    shape = draw(_shapes)
    elements = None
    if dtype.kind == "f":
        elements = st.one_of(st.floats(width=dtype.itemsize * 8, allow_nan=True,
                                       allow_infinity=True), st.just(0.5))
    return draw(hnp.arrays(dtype, shape, elements=elements))


_valid_base = {
    "poses": np.zeros((4, 156)),
    "trans": np.zeros((4, 3)),
    "mocap_framerate": np.array(30.0),
}


@st.composite
def _archives(draw):
    """A dict of arrays: sometimes a valid file with some keys replaced, sometimes random."""
    if draw(st.booleans()):
        arrays = dict(_valid_base)
        for k in draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True)):
            if draw(st.integers(0, 4)) == 0:
                arrays.pop(k, None)
            else:
                arrays[k] = draw(_arrays())
    else:
        keys = draw(st.lists(st.sampled_from(KEYS), max_size=6, unique=True))
        arrays = {k: draw(_arrays()) for k in keys}
    return arrays


def _check(path):
    try:
        m = load_motion(path)
    except MotionFileError as e:
        assert str(e)
        return None
    # Whatever loads is consistent and finite.
    n = m.num_frames
    assert n >= 1 and m.fps > 0 and np.isfinite(m.fps)
    assert m.root_orient.shape == (n, 3) and m.body_pose.shape == (n, 21, 3)
    for j in (24, 52, 55):
        p = m.pose_aa(j)
        assert p.shape == (n, j, 3) and np.all(np.isfinite(p))
    assert np.all(np.isfinite(m.trans))
    assert m.gender is None or isinstance(m.gender, str)
    return m


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(arrays=_archives())
def test_fuzz_malformed_arrays(tmp_path_factory, arrays):
    path = tmp_path_factory.mktemp("fuzz") / "f.npz"
    np.savez(path, **arrays)
    _check(path)


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_fuzz_corrupted_bytes(tmp_path_factory, data):
    buf = io.BytesIO()
    np.savez_compressed(buf, poses=np.ones((5, 156)) * 0.1, trans=np.zeros((5, 3)),
                        gender="male", mocap_framerate=np.array(60.0))
    raw = bytearray(buf.getvalue())
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    path = tmp_path_factory.mktemp("corrupt") / "c.npz"
    path.write_bytes(bytes(raw))
    _check(path)


@settings(max_examples=40, deadline=None)
@given(blob=st.binary(max_size=300), member=st.sampled_from(["poses.npy", "trans", "x.npy"]))
def test_fuzz_random_zip_members(tmp_path_factory, blob, member):
    path = tmp_path_factory.mktemp("zip") / "z.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, blob)
        z.writestr("mocap_framerate.npy", blob[:50])
    _check(path)
