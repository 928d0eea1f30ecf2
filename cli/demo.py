"""``python -m neural_avatar demo``: render the embedded default avatars (stills per mode, a short animation, a contact sheet)."""
from __future__ import annotations

import argparse
import os
import sys

from ..common.guards import int_in
from ..lab.demo import MODES, _bundled_motion, contact_sheet


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m neural_avatar demo", description=__doc__)
    p.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    p.add_argument("--res", type=int_in(8, 16384, "--res"), default=256, help="image size in pixels (square)")
    p.add_argument("--frames", type=int_in(1, 100_000, "--frames"), default=12, help="frames of the animation")
    p.add_argument("--motion", default=None, help="motion file (default: the bundled walk)")
    p.add_argument("--anim-mode", default="NEURAL_TEXTURE", choices=MODES, help="mode of the animation")
    a = p.parse_args(argv)

    import bpy

    from ..engine import state
    from ..lab.scene_setup import demo_scene

    out = os.path.abspath(a.out)
    os.makedirs(os.path.join(out, "anim"), exist_ok=True)
    motion = a.motion or _bundled_motion()
    scene, body = demo_scene(res=a.res, motion_path=motion, frames=a.frames)
    stills, failures = [], []
    mid = scene.frame_start + a.frames // 2
    scene.frame_set(mid)
    for mode in MODES:
        scene.neural_avatar.mode = mode
        path = os.path.join(out, f"still_{mode.lower()}.png")
        scene.render.filepath = path
        state.clear_error()
        bpy.ops.render.render(write_still=True)
        if state.LAST_ERROR:
            failures.append(f"{mode}: {state.LAST_ERROR}")
        else:
            stills.append(path)
            print(f"wrote {path}")
    # Workbench reference of the same body/camera, for comparison.
    scene.render.engine = "BLENDER_WORKBENCH"
    ref = os.path.join(out, "still_workbench.png")
    scene.render.filepath = ref
    bpy.ops.render.render(write_still=True)
    scene.render.engine = "NEURAL_AVATAR"
    scene.neural_avatar.mode = a.anim_mode
    scene.render.filepath = os.path.join(out, "anim", "frame_")
    state.clear_error()
    bpy.ops.render.render(animation=True)
    if state.LAST_ERROR:
        failures.append(f"animation: {state.LAST_ERROR}")
    anim = sorted(os.path.join(out, "anim", f) for f in os.listdir(os.path.join(out, "anim")) if f.endswith(".png"))
    print(f"wrote {len(anim)} animation frames to {os.path.join(out, 'anim')}")
    sheet = contact_sheet(stills + [ref] + anim[:: max(1, len(anim) // 8)], os.path.join(out, "contact_sheet.png"))
    if sheet:
        print(f"wrote {sheet}")
    if failures:
        print("demo failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0
