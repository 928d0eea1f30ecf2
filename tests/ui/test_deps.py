"""The dependency installer: pip --target with a real (small) package, then importable."""
import os
import subprocess
import sys

import pytest

from neural_avatar import deps


def test_pip_command_variants():
    cmd = deps.pip_command("py", "/t", ["torch==2.13.0"], "CPU")
    assert cmd[:4] == ["py", "-m", "pip", "install"] and "--target" in cmd and cmd[cmd.index("--target") + 1] == "/t"
    assert deps.TORCH_INDEX["CPU"] in cmd and cmd[-1] == "torch==2.13.0"
    assert deps.TORCH_INDEX["CUDA"] in deps.pip_command("py", "/t", ["x"], "CUDA")
    assert not any("download.pytorch.org" in c for c in deps.pip_command("py", "/t", ["x"], "DEFAULT"))
    with pytest.raises(deps.DependencyInstallError):
        deps.pip_command("py", "/t", ["x"], "ROCM?")


def test_install_real_package_into_target(tmp_path):
    target = str(tmp_path / "site")
    lines = []
    deps.run_pip(deps.pip_command(sys.executable, target, ["six==1.16.0"], "DEFAULT"), on_line=lines.append)
    assert os.path.exists(os.path.join(target, "six.py")), lines[-5:]
    # A fresh interpreter finds it once the target is on the path, the way register() adds it.
    code = f"import sys; sys.path.insert(0, {target!r}); import six; print(six.__file__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().startswith(target), out.stderr


def test_failure_is_reported_readably(tmp_path):
    with pytest.raises(deps.DependencyInstallError) as e:
        deps.run_pip(deps.pip_command(sys.executable, str(tmp_path / "t"),
                                      ["this-package-does-not-exist-na==9.9.9"], "DEFAULT"))
    assert "failed" in str(e.value) and "exit code" in str(e.value)


def test_add_to_path(tmp_path):
    d = str(tmp_path)
    try:
        assert deps.add_to_path(d) is True
        assert d in sys.path
        assert deps.add_to_path(d) is False
        assert deps.add_to_path(str(tmp_path / "missing")) is False
    finally:
        if d in sys.path:
            sys.path.remove(d)


@pytest.mark.bpy
def test_install_operator_in_blender(addon, tmp_path):
    bpy = addon
    target = str(tmp_path / "deps")
    r = bpy.ops.neural_avatar.install_dependencies(variant="DEFAULT", target=target, packages="six==1.16.0")
    assert r == {"FINISHED"}
    assert target in sys.path  # importable right away, no restart
    try:
        import importlib.util

        assert importlib.util.find_spec("six").origin.startswith(target)
    finally:
        sys.path.remove(target)


@pytest.mark.bpy
def test_install_operator_reports_failure(addon, tmp_path):
    bpy = addon
    with pytest.raises(RuntimeError, match="failed"):
        bpy.ops.neural_avatar.install_dependencies(variant="DEFAULT", target=str(tmp_path / "d"),
                                                   packages="this-package-does-not-exist-na==9.9.9")
