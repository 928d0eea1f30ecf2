"""Render a long animation through the engine and sample the process's resident memory, to
check that a 1,000-frame render does not grow (run: .venv/bin/python tools/memory_soak.py)."""
import argparse
import json
import os
import tempfile


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--res", type=int, default=32)
    p.add_argument("--mode", default="VERTEX_PROJECTION")
    p.add_argument("--avatar", default="", help="bundle (default: the shipped default avatar)")
    p.add_argument("--json", default="")
    a = p.parse_args()

    import bpy

    from neural_avatar.demo_paths import bundled_walk
    from neural_avatar.engine import state
    from neural_avatar.engine.scene_setup import demo_scene

    scene, body = demo_scene(res=a.res, motion_path=bundled_walk(), frames=a.frames, mode=a.mode)
    if a.avatar:
        body.neural_avatar.avatar = a.avatar
    samples = []

    def sample(scene_, *_):
        samples.append((scene_.frame_current, rss_mb()))

    bpy.app.handlers.render_post.append(sample)
    with tempfile.TemporaryDirectory() as tmp:
        scene.render.filepath = os.path.join(tmp, "f_")
        bpy.ops.render.render(animation=True)
    bpy.app.handlers.render_post.remove(sample)
    assert not state.LAST_ERROR, state.LAST_ERROR
    n = len(samples)
    first = sum(m for _, m in samples[n // 10: n // 10 + 20]) / 20
    last = sum(m for _, m in samples[-20:]) / 20
    out = {"frames": n, "rss_mb_after_10pct": round(first, 1), "rss_mb_at_end": round(last, 1),
           "growth_mb": round(last - first, 1), "max_mb": round(max(m for _, m in samples), 1)}
    print(json.dumps(out))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
