"""Validate and build the extension zip with the validator/builder that ships inside the bpy
wheel (``bpy/<ver>/scripts/addons_core/bl_pkg/cli/blender_ext.py``). Pure: finds bpy without
importing it."""
from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import subprocess
import sys

from ..errors import NeuralAvatarError

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))


def blender_ext_tool() -> str:
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise NeuralAvatarError("The bpy module is not installed; run `make venv` first.")
    base = list(spec.submodule_search_locations)[0]
    hits = sorted(glob.glob(os.path.join(base, "*", "scripts", "addons_core", "bl_pkg", "cli", "blender_ext.py")))
    if not hits:
        raise NeuralAvatarError(f"Blender's extension tool was not found under {base}.")
    return hits[-1]


def _run(args: list[str]) -> str:
    proc = subprocess.run([sys.executable, blender_ext_tool(), *args], capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise NeuralAvatarError(f"blender_ext {' '.join(args[:1])} failed:\n{out.strip()}")
    return out


def validate(source_dir: str = REPO_ROOT) -> str:
    return _run(["validate", source_dir])


def build(out_dir: str, source_dir: str = REPO_ROOT) -> str:
    """Validate, then build ``neural_avatar-<version>.zip`` into ``out_dir``; returns its path."""
    validate(source_dir)
    os.makedirs(out_dir, exist_ok=True)
    _run(["build", "--source-dir", source_dir, "--output-dir", out_dir])
    zips = sorted(glob.glob(os.path.join(out_dir, "neural_avatar-*.zip")), key=os.path.getmtime)
    if not zips:
        raise NeuralAvatarError(f"The builder wrote no zip into {out_dir}.")
    return zips[-1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m neural_avatar build-extension", description=__doc__)
    p.add_argument("--out", default="dist", help="output folder for the zip (default: dist)")
    a = p.parse_args(argv)
    print(build(a.out))
    return 0
