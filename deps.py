"""Installing Python dependencies (PyTorch, smplx, safetensors, …) for a real Blender,
whose bundled Python has none of them. Pure: no bpy.

The preferences' *Install dependencies* operator runs :func:`pip_command` in a
subprocess with ``--target`` pointing at the extension's user directory, streams its
output through :func:`run_pip`, and afterwards :func:`add_to_path` makes the packages
importable in the running Blender (and at every later start, from ``register()``).
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Callable, Iterable, Sequence

from .errors import NeuralAvatarError

TORCH_VERSION = "2.13.0"
# What the add-on needs at run time inside Blender (Blender already ships numpy).
RUNTIME_PACKAGES = (f"torch=={TORCH_VERSION}", "smplx==0.1.28", "safetensors==0.7.0",
                    "pytorch-msssim==1.0.0")
TORCH_INDEX = {
    "CPU": "https://download.pytorch.org/whl/cpu",
    "CUDA": "https://download.pytorch.org/whl/cu128",
}


class DependencyInstallError(NeuralAvatarError):
    """pip failed; the message carries the last lines of its output."""


def pip_command(python: str, target: str, packages: Sequence[str], variant: str = "CPU",
                extra_args: Iterable[str] = ()) -> list[str]:
    """The pip command line that installs ``packages`` into ``target``.

    ``variant`` is ``"CPU"``, ``"CUDA"`` or ``"DEFAULT"`` (plain PyPI, e.g. macOS where the
    PyPI wheel has MPS). ``--no-deps`` is deliberately not used: smplx needs its own deps.
    """
    if variant not in ("CPU", "CUDA", "DEFAULT"):
        raise DependencyInstallError(f"Unknown install variant {variant!r} (use CPU, CUDA or DEFAULT).")
    cmd = [python, "-m", "pip", "install", "--upgrade", "--target", target,
           "--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
    if variant in TORCH_INDEX:
        cmd += ["--extra-index-url", TORCH_INDEX[variant]]
    cmd += list(extra_args)
    cmd += list(packages)
    return cmd


def run_pip(cmd: Sequence[str], on_line: Callable[[str], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> None:
    """Run pip, feeding each output line to ``on_line``; raise a readable error on failure."""
    tail: list[str] = []
    try:
        proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
    except OSError as e:
        raise DependencyInstallError(f"Could not start pip ({e}).") from e
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-15:]
        if on_line:
            on_line(line)
        if should_stop and should_stop():
            proc.terminate()
            proc.wait()
            raise DependencyInstallError("Installation cancelled.")
    rc = proc.wait()
    if rc != 0:
        raise DependencyInstallError(
            "Installing dependencies failed (pip exit code %d). Last output:\n%s" % (rc, "\n".join(tail)))


def add_to_path(target: str) -> bool:
    """Make packages installed into ``target`` importable; returns whether it was added."""
    if target and os.path.isdir(target) and target not in sys.path:
        sys.path.insert(0, target)
        return True
    return False


def missing_modules(names: Iterable[str] = ("torch", "smplx", "safetensors")) -> list[str]:
    """Names among ``names`` that cannot be imported right now."""
    import importlib.util

    return [n for n in names if importlib.util.find_spec(n) is None]
