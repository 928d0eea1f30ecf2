"""Paths of data shipped with the package (pure)."""
from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(ROOT, "data")


def bundled_walk():
    """The bundled walking clip (or the first bundled motion), or None."""
    from ..motion import bundled_motion_paths

    paths = bundled_motion_paths()
    for p in paths:
        if "walk" in p.name:
            return str(p)
    return str(paths[0]) if paths else None
