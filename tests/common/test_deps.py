"""The dependency installer (``deps``): plans per platform and build, pip's progress, and whole
installs from a folder of stand-in wheels into a bare Python (no network, no real torch)."""
import json
import os
import subprocess
import sys
import venv

import pytest

from neural_avatar.common import deps
from neural_avatar.errors import DependencyError, NeuralAvatarError

from ..fake_wheels import build_wheel, core_wheelhouse


def test_cpu_plan_pins_the_cpu_build_and_asks_the_torch_index_first():
    p = deps.plan_install("CPU", platform="linux", numpy_version="1.26.4")
    assert f"torch=={deps.TORCH_VERSION}+cpu" in p.requirements
    assert p.index_args[:2] == ["--index-url", deps.TORCH_INDEX["CPU"]]
    assert p.index_args[2:4] == ["--extra-index-url", deps.PYPI_INDEX]
    assert p.torch_index == deps.TORCH_INDEX["CPU"]
    assert not any(r.startswith("numpy") for r in p.requirements)  # Blender's own numpy is kept


def test_plans_for_macos_cuda_default_offline_and_no_numpy():
    mac = deps.plan_install("CPU", platform="darwin", numpy_version="1.26.4")
    assert f"torch=={deps.TORCH_VERSION}" in mac.requirements and mac.torch_index is None
    with pytest.raises(deps.DependencyInstallError, match="macOS"):
        deps.plan_install("CUDA", platform="darwin", numpy_version="1.26.4")
    cuda = deps.plan_install("CUDA", platform="linux", numpy_version="1.26.4")
    assert cuda.torch_index == deps.TORCH_INDEX["CUDA"]
    default = deps.plan_install("DEFAULT", platform="linux", numpy_version="1.26.4")
    assert not any("download.pytorch.org" in a for a in default.index_args)
    with pytest.raises(deps.DependencyInstallError, match="wheel folder"):
        deps.plan_install("CPU", offline=True, numpy_version="1.26.4")
    off = deps.plan_install("CPU", platform="linux", offline=True, find_links=["/w"], numpy_version="1.26.4")
    assert off.index_args == ["--no-index", "--find-links", "/w"] and off.torch_index is None
    assert "numpy<2" in deps.plan_install("CPU", platform="linux", numpy_version=None).requirements
    ov = deps.plan_install("CPU", sets=["core", "openvino"], platform="linux", numpy_version="1.26.4")
    assert any(r.startswith("openvino==") for r in ov.requirements)
    with pytest.raises(deps.DependencyInstallError, match="Unknown"):
        deps.plan_install("ROCM", numpy_version="1")
    with pytest.raises(deps.DependencyInstallError, match="Unknown package set"):
        deps.plan_install("CPU", sets=["core", "nope"], numpy_version="1")


def test_a_system_pytorch_of_the_right_build_is_kept():
    cpu_torch = {"version": "2.6.0", "cuda": None}
    p = deps.plan_install("CPU", platform="linux", numpy_version="1.26.4", system_torch=cpu_torch)
    assert not any(r.startswith("torch") for r in p.requirements) and "--no-deps" in p.index_args
    assert p.system_torch == cpu_torch and p.torch_index is None
    # A CUDA system build does not satisfy a CPU request (and the other way round).
    p = deps.plan_install("CPU", platform="linux", numpy_version="1.26.4", system_torch={"version": "2", "cuda": "12"})
    assert f"torch=={deps.TORCH_VERSION}+cpu" in p.requirements and p.system_torch is None
    p = deps.plan_install("CUDA", platform="linux", numpy_version="1.26.4", system_torch=cpu_torch)
    assert p.system_torch is None and "--no-deps" not in p.index_args
    with pytest.raises(deps.DependencyInstallError, match="python3-numpy"):
        deps.plan_install("CPU", platform="linux", numpy_version=None, system_torch=cpu_torch)


def test_pip_progress_lines_are_parsed():
    assert deps.parse_pip_line("Progress 1024 of 4096") == {"kind": "bytes", "done": 1024, "total": 4096}
    ev = deps.parse_pip_line("  Downloading https://x/torch-2.13.0%2Bcpu-cp311-linux.whl (190.4 MB)")
    assert ev["kind"] == "file" and ev["size"] == 190_400_000 and ev["name"].startswith("torch")
    ev = deps.parse_pip_line("Downloading smplx-0.1.28-py3-none-any.whl (29 kB)")
    assert ev["size"] == 29_000 and not ev["cached"]
    assert deps.parse_pip_line("Using cached six-1.16.0-py2.py3-none-any.whl (11 kB)")["cached"]
    assert deps.parse_pip_line("Collecting torch") is None


def test_pip_command_has_raw_progress_and_constraints():
    plan = deps.plan_install("CPU", platform="linux", numpy_version="1.26.4")
    cmd = deps.pip_command("py", "/t", plan, constraints="/c.txt", progress_raw=True)
    assert cmd[:4] == ["py", "-m", "pip", "install"] and cmd[cmd.index("--target") + 1] == "/t"
    assert cmd[cmd.index("--progress-bar") + 1] == "raw" and cmd[cmd.index("--constraint") + 1] == "/c.txt"
    assert cmd[-len(plan.requirements):] == plan.requirements


def test_lazy_module_and_require():
    lazy_json = deps.lazy("json")
    assert lazy_json.dumps([1]) == "[1]"
    missing = deps.lazy("na_module_that_does_not_exist")
    with pytest.raises(DependencyError, match="Install the dependencies"):
        missing.anything
    with pytest.raises(DependencyError, match="Rendering needs na_nope"):
        deps.require("na_nope", feature="Rendering")
    deps.require("json", "os")  # present: no error
    msg = deps.dependency_message(["numpy"])
    assert "python3-numpy" in msg
    assert "PyTorch" in deps.dependency_message(["torch"], "Rendering")
    assert issubclass(DependencyError, NeuralAvatarError)


def test_add_to_path_appends_after_the_interpreters_own(tmp_path):
    d = str(tmp_path)
    try:
        assert deps.add_to_path(d) is True
        assert sys.path[-1] == d  # Blender's numpy and bundled modules win
        assert deps.add_to_path(d) is False
        assert deps.add_to_path(str(tmp_path / "missing")) is False
    finally:
        if d in sys.path:
            sys.path.remove(d)
    other = tmp_path / "other"
    other.mkdir()
    (other / deps.MANIFEST).write_text(json.dumps({"python": "cp27"}))
    assert deps.add_to_path(str(other)) is False  # installed for another Python


# ------------------------------------------------------------------ whole installs, offline
def _isolated_pip_env():
    """This machine's pip configuration (extra wheel folders, constraints) left out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


@pytest.fixture(autouse=True)
def _isolated_pip(monkeypatch):
    for k in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    """A venv with pip and a stand-in numpy 1.26.4 (as in Blender) but no torch."""
    root = tmp_path_factory.mktemp("bare")
    venv.EnvBuilder(with_pip=True).create(str(root / "venv"))
    py = str(root / "venv" / "bin" / "python")
    wheels = str(root / "numpy_wheel")
    build_wheel(wheels, "numpy", "1.26.4", {"numpy/__init__.py": "__version__ = '1.26.4'\n"})
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-index", "--find-links", wheels, "numpy==1.26.4"],
                   check=True, capture_output=True, env=_isolated_pip_env())
    return py


def _events():
    evs = []
    return evs, evs.append


def test_offline_cpu_install_is_checked_keeps_blenders_numpy_and_swaps_in(bare_python, tmp_path):
    wh = core_wheelhouse(str(tmp_path / "wheels"))
    target = tmp_path / "deps"
    target.mkdir()
    (target / "old.txt").write_text("previous install")
    evs, emit = _events()
    manifest = deps.install(str(target), "CPU", python=bare_python, find_links=[wh], offline=True, on_event=emit)
    assert (target / "torch" / "__init__.py").exists() and (target / "smplx").is_dir()
    assert not (target / "old.txt").exists()  # replaced as a whole
    assert not any(n.lower().startswith("numpy") for n in os.listdir(target)), os.listdir(target)
    assert manifest["installed"]["torch_cuda"] is None and manifest["installed"]["numpy"] == "1.26.4"
    assert manifest["numpy_removed"] and json.loads((target / deps.MANIFEST).read_text())["variant"] == "CPU"
    kinds = {e["kind"] for e in evs}
    assert {"status", "estimate", "done"} <= kinds
    est = next(e for e in evs if e["kind"] == "estimate")
    assert est["bytes"] > 20000 and any(n == "torch" for n, _ in est["packages"])
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".na-deps")]  # no staging left


def test_cpu_choice_refuses_a_cuda_build_and_leaves_the_target(bare_python, tmp_path):
    wh = core_wheelhouse(str(tmp_path / "wheels"), torch_cuda="13.0")
    target = tmp_path / "deps"
    target.mkdir()
    (target / "old.txt").write_text("previous install")
    with pytest.raises(deps.DependencyInstallError, match="CUDA build"):
        deps.install(str(target), "CPU", python=bare_python, find_links=[wh], offline=True, estimate=False)
    assert os.listdir(target) == ["old.txt"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".na-deps")]


def test_cuda_choice_refuses_a_cpu_build(bare_python, tmp_path):
    wh = core_wheelhouse(str(tmp_path / "wheels"), torch_cuda=None)
    with pytest.raises(deps.DependencyInstallError, match="CPU-only"):
        deps.install(str(tmp_path / "deps"), "CUDA", python=bare_python, find_links=[wh], offline=True,
                     estimate=False)
    assert not (tmp_path / "deps").exists()


def test_unreachable_cpu_index_is_refused_before_pip_runs(bare_python, tmp_path, monkeypatch):
    monkeypatch.setattr(deps, "index_reachable", lambda url, timeout=10: "Name or service not known")
    ran = []
    monkeypatch.setattr(deps, "run_pip", lambda *a, **k: ran.append(a))
    with pytest.raises(deps.DependencyInstallError, match="cannot be reached.*Nothing was installed"):
        deps.install(str(tmp_path / "deps"), "CPU", python=bare_python, estimate=False)
    assert not ran and not (tmp_path / "deps").exists()


def test_blender_without_numpy_gets_one(tmp_path):
    root = tmp_path / "v"
    venv.EnvBuilder(with_pip=True).create(str(root))
    py = str(root / "bin" / "python")
    wh = core_wheelhouse(str(tmp_path / "wheels"))
    target = tmp_path / "deps"
    m = deps.install(str(target), "CPU", python=py, find_links=[wh], offline=True, estimate=False)
    assert (target / "numpy").is_dir() and m["installed"]["numpy"] == "1.26.4" and not m["numpy_removed"]


def test_optional_backend_plugs_into_the_same_installer(bare_python, tmp_path):
    wh = core_wheelhouse(str(tmp_path / "wheels"))
    m = deps.install(str(tmp_path / "deps"), "CPU", sets=["core", "openvino"], python=bare_python,
                     find_links=[wh], offline=True, estimate=False)
    assert m["installed"]["openvino"] == "2026.4.1" and (tmp_path / "deps" / "openvino").is_dir()


def test_cli_install_deps(bare_python, tmp_path):
    wh = core_wheelhouse(str(tmp_path / "wheels"))
    target = tmp_path / "farm_deps"
    out = subprocess.run([sys.executable, "-m", "neural_avatar", "install-deps", "--target", str(target), "--cpu",
                          "--python", bare_python, "--offline", "--find-links", wh],
                         capture_output=True, text=True, timeout=600, env=_isolated_pip_env())
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "To download:" in out.stdout and "Installed and checked" in out.stdout
    assert (target / deps.MANIFEST).exists()
    bad = subprocess.run([sys.executable, "-m", "neural_avatar", "install-deps", "--target", str(tmp_path / "x"),
                          "--cpu", "--python", bare_python, "--offline"], capture_output=True, text=True,
                         env=_isolated_pip_env())
    assert bad.returncode == 1 and "wheel folder" in bad.stderr


@pytest.mark.bpy
def test_install_operator_in_blender(addon, tmp_path):
    bpy = addon
    wh = core_wheelhouse(str(tmp_path / "wheels"))
    target = str(tmp_path / "deps")
    r = bpy.ops.neural_avatar.install_dependencies(variant="CPU", target=target, find_links=wh, offline=True)
    assert r == {"FINISHED"}
    try:
        assert target in sys.path and sys.path.index(target) > 0  # appended: Blender's own modules first
        assert deps.read_manifest(target)["variant"] == "CPU"
    finally:
        sys.path.remove(target)


@pytest.mark.bpy
def test_install_operator_reports_failure_and_changes_nothing(addon, tmp_path):
    bpy = addon
    with pytest.raises(RuntimeError, match="wheel folder"):
        bpy.ops.neural_avatar.install_dependencies(variant="CPU", target=str(tmp_path / "d"), offline=True)
    assert not (tmp_path / "d").exists()
