"""``python -m neural_avatar avatar-from-views``: a PIXEL_ALIGNED (AniPixel) person from a few
source views, no training.

``--source DIR``: a capture folder whose first synchronised group has ``--views`` frames; or
``--subject-seed S``: capture ``--views`` synchronised views of zoo subject S into ``--out``
first. Then the source views are checked and, with ``--preview PNG``, the person is rendered
in a new pose and view (a frame of a bundled clip) next to the source views.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ..common.guards import int_in


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m neural_avatar avatar-from-views",
                                 description="A PIXEL_ALIGNED person from a few source views (no training).")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--source", default=None, help="capture folder with synchronised views of the person")
    g.add_argument("--subject-seed", type=int, default=None, help="capture zoo subject S into --out first")
    ap.add_argument("--out", default=None, help="--subject-seed: the source-views folder to write")
    ap.add_argument("--views", type=int_in(1, 64, "--views"), default=3)
    ap.add_argument("--res", type=int_in(32, 4096, "--res"), default=128)
    ap.add_argument("--bundle", default=None, help="PIXEL_ALIGNED bundle (default: data/avatars/pixel_aligned)")
    ap.add_argument("--preview", default=None, metavar="PNG", help="render the person in a new pose and view")
    a = ap.parse_args(argv)
    from ..errors import NeuralAvatarError

    src = a.source
    if a.subject_seed is not None:
        if not a.out:
            raise NeuralAvatarError("--subject-seed needs --out (the source-views folder to write).")
        from .from_image import _capture_zoo_view

        _capture_zoo_view(a.subject_seed, a.out, a.res, a.views)
        src = a.out
    from ..engine.avatars import default_avatar_path
    from ..neural.new_people import check_source_views

    info = check_source_views(src, a.views)
    res = {"source_views": os.path.abspath(src), **info}
    if a.preview:
        res["preview"] = _preview(a.bundle or default_avatar_path("PIXEL_ALIGNED"), src, a.preview, a.res)
    print(json.dumps(res))
    return 0


def _preview(bundle: str, src: str, png: str, res: int) -> str:
    """Source views | the person in a new pose from a new camera (a bundled clip's frame)."""
    import cv2
    import numpy as np
    import torch

    from .. import body as body_lib
    from .. import motion as motion_lib
    from ..body import kinematics
    from ..neural.avatar import FrameInputs
    from ..neural.inputs.camera import blender_camera_to_krt
    from ..neural.pixel_aligned import load_source_avatar
    from ..lab.capture import _look_at_matrix

    model = body_lib.load_default()
    av = load_source_avatar(bundle, src, body_model=model)
    m = motion_lib.load_motion(str(motion_lib.bundled_motion_paths()[0]))
    pose = m.pose_aa(model.num_joints)[m.num_frames // 2]
    v, j = kinematics.forward(model, np.zeros(model.num_betas), pose[None], np.asarray(m.trans[m.num_frames // 2])[None])
    v, j = np.asarray(v)[0], np.asarray(j)[0]  # AMASS clips: the model frame is Blender's world (Z-up)
    c = 0.5 * (v.min(0) + v.max(0))
    cam = _look_at_matrix(c + np.array([1.0, -2.6, 0.5]), c)
    K, R, t = blender_camera_to_krt(cam, 50.0, 36.0, 36.0, "AUTO", 0.0, 0.0, res, res, 1, 1, 0.05, 100.0, 100, "PERSP")
    f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
    out = av.render(FrameInputs(verts=f32(v)[None], joints=f32(j)[None], K=f32(K)[None], R=f32(R)[None],
                                t=f32(t)[None], size=(res, res)))
    img = out["rgb"][0].permute(1, 2, 0).numpy()
    srcs = [av._src["rgb"][0, k].permute(1, 2, 0).cpu().numpy() for k in range(av._src["rgb"].shape[1])]
    srcs = [cv2.resize(s, (res, res), interpolation=cv2.INTER_AREA) for s in srcs]
    sheet = np.concatenate(srcs + [img], 1)
    cv2.imwrite(png, np.round(np.clip(sheet[:, :, ::-1], 0, 1) * 255).astype(np.uint8))
    return os.path.abspath(png)


if __name__ == "__main__":
    sys.exit(main())
