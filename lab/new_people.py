"""Capturing a dressed character for the generalizable avatars (bpy): the source views of
*Avatar from Views* (PIXEL_ALIGNED) and the one image of *Avatar from Image* (GAUSSIAN_BONES).

Both are small captures (:func:`.capture.capture_dataset`, the capture format) of the body as
it is dressed in the scene: posed by a bundled clip with ``views`` synchronised cameras around one
instant (:func:`capture_views`), or as the scene shows it now through the scene camera
(:func:`capture_current_view`). The scene is restored afterwards (the capture's own scene-state
guard).
"""
from __future__ import annotations

import os

from .capture import capture_dataset


def capture_views(context, arm, out_dir: str, views: int = 3, res: int = 128, engine: str = "CYCLES",
                  samples: int = 16, seed: int = 0, progress=None, should_stop=None) -> dict:
    """``views`` synchronised views of ``arm`` (a dressed Neural Avatar body) into ``out_dir``."""
    return capture_dataset(context, out_dir, int(views), int(res), engine, int(seed), None, progress=progress,
                           should_stop=should_stop, arm=arm, samples=int(samples), views=int(views))


def capture_current_view(context, arm, out_dir: str, res: int = 128, engine: str = "CYCLES",
                         samples: int = 16) -> dict:
    """One image of ``arm`` as the scene shows it now (its pose at the current frame, the scene
    camera, the scene's frame shape with the longer side ``res``) into ``out_dir``: the image of
    *Avatar from Image* "from the current render"."""
    return capture_dataset(context, out_dir, 1, int(res), engine, 0, None, arm=arm, samples=int(samples),
                           current_view=True)


def source_dir_ok(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "dataset.json"))
