"""The engine benchmark's dressed-subject section has the keys the README's speed table is
built from (small resolutions here; the real run is `python -m neural_avatar bench --engine`)."""
import pytest

pytestmark = pytest.mark.bpy


def test_peak_gflops_is_measured():
    pytest.importorskip("bpy")
    from neural_avatar.lab import bench

    p = bench.peak_gflops(n=256, repeats=2)
    assert p["fp32"] > 0 and p["bf16"] > 0


def test_dressed_bench_keys(addon):
    from neural_avatar.lab import bench

    out = bench.run_dressed(resolutions=(48,), repeats=1, log=lambda *a: None)
    for name in bench.MODES + ("CYCLES_GT", "CYCLES_16", "WORKBENCH"):
        assert out["f12_ms"][name]["48"] > 0
    assert set(out["body_scale_ms"]) == {"1.0", "0.5"}
    for name in bench.MODES:
        assert out["precision_used"][name] in ("bf16", "fp32", "int8")
        assert out["network_gflops"][name]["512"] > 0
        assert out["vs"][name]["48"]["CYCLES_GT"] > 0
