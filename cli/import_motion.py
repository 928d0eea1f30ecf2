"""``python -m neural_avatar import-motion``: put AMASS/SMPL motion on a body and save a .blend
(for farms and scripts; the same code as the ``neural_avatar.import_motion`` operator)."""
from __future__ import annotations

import argparse
import os
import sys

from ..common.guards import float_in, int_in


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m neural_avatar import-motion", description=__doc__)
    p.add_argument("files", nargs="+", help="AMASS *_poses.npz / *_stageii.npz or SMPL (N×72) files")
    p.add_argument("--blend", help="existing .blend with a body (default: a new scene with the default body)")
    p.add_argument("--body", help="name of the body armature in --blend (default: the first body)")
    p.add_argument("--out", required=True, help=".blend file to write")
    p.add_argument("--target-fps", type=float_in(0.01, 32767.0, "--target-fps", allow_zero=True), default=0.0, help="resample to this rate (0: the file's own)")
    p.add_argument("--no-scene-fps", action="store_true", help="leave the scene's frame rate alone")
    p.add_argument("--apply-betas", action="store_true", help="use the file's betas when the body model matches")
    a = p.parse_args(argv)

    import bpy

    from ..lab.scene_setup import add_camera, add_default_body, ensure_registered, setup_render
    from ..blender.motion_import import import_motions
    from ..blender.rig import body_armatures

    if a.blend:
        bpy.ops.wm.open_mainfile(filepath=os.path.abspath(a.blend))
        ensure_registered()
        bodies = body_armatures(bpy.context.scene)
        arm = next((b for b in bodies if not a.body or b.name == a.body), None)
        if arm is None:
            print(f"error: no Neural Avatar body{' named ' + a.body if a.body else ''} in {a.blend}", file=sys.stderr)
            return 1
    else:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        ensure_registered()
        arm = add_default_body()
        add_camera(bpy.context.scene)
        setup_render(bpy.context.scene)
    acts = import_motions(bpy.context, arm, [os.path.abspath(f) for f in a.files], a.target_fps,
                          not a.no_scene_fps, a.apply_betas)
    bpy.ops.wm.save_as_mainfile(filepath=os.path.abspath(a.out))
    s = bpy.context.scene
    print(f"imported {', '.join(x.name for x in acts)} onto {arm.name}: frames {s.frame_start}-{s.frame_end} "
          f"at {s.render.fps / s.render.fps_base:.3f} fps; saved {a.out}")
    return 0
