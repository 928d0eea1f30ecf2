"""``python -m neural_avatar avatar-from-image``: a new person for a generalizable
GAUSSIAN_BONES avatar from one image (HumanViewSynthesis eq. 4), no training.

The image is a frame of a capture folder (its camera and the body's pose come with it), or,
with ``--subject-seed S``, one fresh Cycles view of zoo subject S (``--capture-dir`` keeps it).
The result is a copy of ``--bundle`` with the new identity: set it as a body's Avatar and pick
the identity; the body's own motion drives the new person's appearance (motion transfer).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile

from ..common.guards import int_in


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m neural_avatar avatar-from-image",
                                 description="Add a person to a generalizable GAUSSIAN_BONES avatar from one image.")
    ap.add_argument("--bundle", default=None, help="GAUSSIAN_BONES bundle with an appearance encoder "
                                                   "(default: data/avatars/zoo/gaussian_bones)")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--capture", default=None, help="capture folder holding the image (with camera and pose)")
    g.add_argument("--subject-seed", type=int, default=None, help="capture one view of zoo subject S first")
    ap.add_argument("--frame", type=int_in(0, 10_000_000, "--frame"), default=0, help="frame of the capture")
    ap.add_argument("--name", required=True, help="name of the new identity (letters, digits, _ . -)")
    ap.add_argument("--out", required=True, help="output bundle (X → X.safetensors + X.json)")
    ap.add_argument("--res", type=int_in(32, 4096, "--res"), default=128, help="--subject-seed: capture size")
    ap.add_argument("--capture-dir", default=None, help="--subject-seed: keep the captured view here")
    a = ap.parse_args(argv)
    from ..neural.new_people import avatar_from_image

    bundle = a.bundle or _default_bundle()
    cap = a.capture
    if a.subject_seed is not None:
        cap = a.capture_dir or tempfile.mkdtemp(prefix="na_from_image_")
        _capture_zoo_view(a.subject_seed, cap, a.res, 1)
    res = avatar_from_image(bundle, cap, a.frame, a.name, a.out)
    print(json.dumps(res))
    return 0


def _default_bundle() -> str:
    from ..engine.avatars import zoo_avatar_path

    return zoo_avatar_path("GAUSSIAN_BONES")


def _capture_zoo_view(seed: int, out: str, res: int, views: int) -> None:
    import bpy

    from ..lab import subject
    from ..lab.new_people import capture_views
    from .capture import _ensure_registered

    bpy.ops.wm.read_factory_settings(use_empty=True)
    _ensure_registered()
    subj = subject.build_demo_subject(bpy.context, texture_size=512, spec=subject.SubjectSpec.random(seed))
    capture_views(bpy.context, subj["armature"], out, views=views, res=res)


if __name__ == "__main__":
    sys.exit(main())
