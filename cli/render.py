"""``python -m neural_avatar render``: render a .blend (or the default demo scene) through the
neural engine, headless — the same as ``blender -b file.blend -a`` with this extension."""
from __future__ import annotations

import argparse
import os
import sys

from ..common.guards import float_in, int_in


def render_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m neural_avatar render", description=__doc__)
    p.add_argument("--blend", help=".blend file to render (default: a demo scene with the default body)")
    p.add_argument("--out", default="out/render/frame_", help="output path (Blender's filepath rules; "
                   "a still gets .png appended)")
    p.add_argument("--mode", choices=("VERTEX_PROJECTION", "NEURAL_TEXTURE", "GAUSSIAN_BONES"),
                   help="override the scene's mode")
    p.add_argument("--res", type=int_in(8, 16384, "--res"), help="override the resolution (square)")
    p.add_argument("--frame", type=int, help="render this single frame")
    p.add_argument("--start", type=int, help="first frame of an animation render")
    p.add_argument("--end", type=int, help="last frame of an animation render")
    p.add_argument("--anim", action="store_true", help="render the animation (frame range)")
    p.add_argument("--motion", help="with no --blend: motion file for the demo scene")
    p.add_argument("--device", choices=("AUTO", "CUDA", "MPS", "CPU"), help="compute device")
    p.add_argument("--transparent", action="store_true", help="film transparent (alpha from the mask)")
    a = p.parse_args(argv)

    import bpy

    from ..engine import state
    from ..lab.scene_setup import demo_scene, ensure_registered

    if a.blend:
        if not os.path.exists(a.blend):
            print(f"error: {a.blend} not found", file=sys.stderr)
            return 1
        bpy.ops.wm.open_mainfile(filepath=os.path.abspath(a.blend))
        ensure_registered()
        scene = bpy.context.scene
        scene.render.engine = "NEURAL_AVATAR"
    else:
        scene, _ = demo_scene(res=a.res or 256, motion_path=a.motion, frames=(a.end or 12))
    s = scene.neural_avatar
    if a.mode:
        s.mode = a.mode
    if a.device:
        s.device = a.device
    if a.res:
        scene.render.resolution_x = scene.render.resolution_y = a.res
    if a.transparent:
        scene.render.film_transparent = True
        scene.render.image_settings.color_mode = "RGBA"
    if a.start is not None:
        scene.frame_start = a.start
    if a.end is not None:
        scene.frame_end = a.end
    scene.render.filepath = os.path.abspath(a.out)
    state.clear_error()
    state.ERRORS.clear()
    # Ctrl+C finishes the frame being rendered, then stops with exit code 130 (as `blender -b` does).
    import signal

    def on_sigint(signum, frame):
        if state.STOP_REQUESTED:  # a second Ctrl+C: stop now
            raise KeyboardInterrupt
        state.STOP_REQUESTED = True
        print("\nInterrupted: stopping after the current frame (Ctrl+C again to stop now).", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        if a.anim:
            bpy.ops.render.render(animation=True)
        else:
            if a.frame is not None:
                scene.frame_set(a.frame)
            bpy.ops.render.render(write_still=True)
    except RuntimeError:
        pass  # the engine reported the error (recorded in state); Blender wrote no frame for it
    except KeyboardInterrupt:
        state.STOP_REQUESTED = True
    finally:
        signal.signal(signal.SIGINT, previous)
    if state.STOP_REQUESTED:
        state.STOP_REQUESTED = False
        print("error: render interrupted (Ctrl+C)", file=sys.stderr)
        return 130
    if state.ERRORS and state.LAST_ERROR:
        print(f"error: {state.LAST_ERROR}", file=sys.stderr)
        return 1
    print(f"rendered to {scene.render.filepath}")
    return 0
