"""``python -m neural_avatar install-deps``: the dependency installer without Blender (farms, scripts)."""
from __future__ import annotations

import argparse

from ..common.deps import ConsoleProgress, DEPS_ENV, PACKAGE_SETS, install


def main(argv=None) -> int:
    """``python -m neural_avatar install-deps``: the installer without Blender (farms, scripts)."""
    p = argparse.ArgumentParser(prog="python -m neural_avatar install-deps",
                                description="Install PyTorch and the other packages Neural Avatar needs into a "
                                            "folder (pip --target), check the build, and swap it into place. "
                                            "Point Blender at the folder with the add-on preference or the "
                                            f"{DEPS_ENV} environment variable.")
    p.add_argument("--target", required=True, help="folder to install into (replaced only after a checked install)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--cpu", dest="variant", action="store_const", const="CPU", help="CPU build of PyTorch (default)")
    g.add_argument("--cuda", dest="variant", action="store_const", const="CUDA", help="CUDA build (NVIDIA GPUs)")
    g.add_argument("--default", dest="variant", action="store_const", const="DEFAULT",
                   help="PyPI's own build (macOS: MPS)")
    p.add_argument("--with", dest="extra_sets", action="append", default=[], choices=[k for k, s in
                   PACKAGE_SETS.items() if s.optional], help="also install an optional backend")
    p.add_argument("--python", default=None, help="the Python to install for (default: this one; use Blender's "
                                                   "bundled python for a Blender install)")
    p.add_argument("--index-url", default="", help="package index instead of PyPI (a farm's mirror)")
    p.add_argument("--find-links", action="append", default=[], help="folder of wheels to use")
    p.add_argument("--offline", action="store_true", help="no index at all: only --find-links folders")
    p.add_argument("--no-estimate", action="store_true", help="skip the download-size estimate")
    p.add_argument("--no-system-torch", action="store_true",
                   help="install PyTorch even if the Python already has one of the right build")
    a = p.parse_args(argv)
    progress = ConsoleProgress()
    install(a.target, a.variant or "CPU", ["core"] + a.extra_sets, python=a.python, on_event=progress,
            index_url=a.index_url, find_links=a.find_links, offline=a.offline, estimate=not a.no_estimate,
            use_system_torch=not a.no_system_torch)
    print(f"Done. Blender finds these packages when the add-on's Dependencies Folder is {a.target} "
          f"or {DEPS_ENV}={a.target} is set.")
    return 0
