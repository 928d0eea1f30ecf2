"""Stock-Blender check, run INSIDE a real Blender with a window (under Xvfb) by
``tools/stock_blender_test.sh``; needs nothing beyond what Blender ships (no numpy):

    blender --python tools/stock_check.py -- --phase PHASE --out DIR

The extension is already installed and enabled (``blender --command extension install-file -e``),
so this is what a user meets after *Install from Disk*. Phases:

* ``bare``: no numpy, no torch. The add-on is enabled, imported neither; the preferences and the
  sidebar say *Dependencies missing*; Add Body and F12 report what to install.
* ``numpy``: the system's numpy is installed, torch is not. Add Body works; F12 reports the
  dependencies message and writes no frame; the installer's CPU choice runs for real.
* ``render``: after the installer and a restart. F12 renders a body (the PNG is written) and
  the scene is saved for ``blender -b … -a``.

Each phase writes ``report_<phase>.json`` and screenshots (``xwd -root`` → PNG, since Blender's
own screenshot operator reads black under Xvfb) into ``--out`` and quits with 0 when every check
passed.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import traceback
import zlib

import bpy

ARGS = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
PHASE = ARGS[ARGS.index("--phase") + 1] if "--phase" in ARGS else "bare"
OUT = ARGS[ARGS.index("--out") + 1] if "--out" in ARGS else "/tmp/stock"
os.makedirs(OUT, exist_ok=True)
REPORT = {"phase": PHASE, "blender": bpy.app.version_string, "python": sys.version.split()[0], "checks": []}
MOD = next((m for m in bpy.context.preferences.addons.keys() if m.endswith(".neural_avatar")), "")


def log(msg):
    print(f"[stock_check {PHASE}] {msg}", flush=True)


def check(name, ok, detail=""):
    REPORT["checks"].append({"name": name, "ok": bool(ok), "detail": str(detail)[:2000]})
    log(f"{'PASS' if ok else 'FAIL'} {name} {str(detail)[:300]}")


def finish():
    ok = all(c["ok"] for c in REPORT["checks"])
    REPORT["passed"] = ok
    with open(os.path.join(OUT, f"report_{PHASE}.json"), "w") as f:
        json.dump(REPORT, f, indent=1)
    log("PASSED" if ok else "FAILED")
    sys.stdout.flush()
    os._exit(0 if ok else 1)


# ------------------------------------------------------------------ screenshots without numpy
def _png(path, w, h, rgb_rows):
    raw = b"".join(b"\x00" + r for r in rgb_rows)

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def screenshot(name):
    dump = os.path.join(OUT, "shot.xwd")
    subprocess.run(["xwd", "-root", "-silent", "-out", dump], check=True, timeout=30)
    data = open(dump, "rb").read()
    os.unlink(dump)
    hdr = struct.unpack(">25I", data[:100])
    header_size, fmt, depth, w, h = hdr[0], hdr[2], hdr[3], hdr[4], hdr[5]
    bpp, bpl, ncolors = hdr[11], hdr[12], hdr[19]
    if fmt != 2 or bpp not in (24, 32):
        raise RuntimeError(f"unsupported xwd dump (format {fmt}, {bpp} bpp)")
    step = bpp // 8
    off = header_size + ncolors * 12
    little = hdr[7] == 0  # byte_order LSBFirst
    rows = []
    for y in range(h):
        row = data[off + y * bpl: off + y * bpl + w * step]
        out = bytearray(w * 3)
        if little:  # B G R (X)
            out[0::3], out[1::3], out[2::3] = row[2::step], row[1::step], row[0::step]
        else:  # (X) R G B
            k = step - 3
            out[0::3], out[1::3], out[2::3] = row[k::step], row[k + 1::step], row[k + 2::step]
        rows.append(bytes(out))
    path = os.path.join(OUT, name)
    _png(path, w, h, rows)
    REPORT.setdefault("screenshots", []).append(name)
    return path


# ------------------------------------------------------------------ UI helpers
def view3d():
    for win in bpy.context.window_manager.windows:
        for area in win.screen.areas:
            if area.type == "VIEW_3D":
                return win, area
    return None, None


def show_sidebar():
    win, area = view3d()
    if area is None:
        return
    space = area.spaces.active
    space.show_region_ui = True
    for region in area.regions:
        if region.type == "UI":
            try:
                region.active_panel_category = "Neural Avatar"
            except (AttributeError, TypeError, ValueError) as e:
                # Blender 4.3: read-only. For the screenshot only, take the built-in sidebar
                # panels away so that ours is the tab shown.
                log(f"cannot switch the sidebar tab ({e}); hiding the built-in sidebar panels")
                panels = [cls for cls in (getattr(bpy.types, n, None) for n in dir(bpy.types))
                          if isinstance(cls, type) and issubclass(cls, bpy.types.Panel)
                          and not cls.__name__.startswith("NEURAL")
                          and getattr(cls, "bl_space_type", "") == "VIEW_3D"
                          and getattr(cls, "bl_region_type", "") == "UI"]
                for cls in sorted(panels, key=lambda c: not getattr(c, "bl_parent_id", "")):  # children first
                    try:
                        bpy.utils.unregister_class(cls)
                    except RuntimeError:
                        pass
    area.tag_redraw()


def show_preferences():
    prefs = bpy.context.preferences
    prefs.active_section = "ADDONS"
    try:
        bpy.context.window_manager.addon_search = "Neural"
    except AttributeError:
        pass
    bpy.ops.screen.userpref_show()
    try:
        import addon_utils

        mod = sys.modules.get(MOD)
        if mod is not None and not addon_utils.module_bl_info(mod).get("show_expanded"):
            bpy.ops.preferences.addon_expand(module=MOD)
    except Exception as e:  # noqa: BLE001
        log(f"cannot expand the add-on entry: {e}")
    for win in bpy.context.window_manager.windows:
        for area in win.screen.areas:
            area.tag_redraw()


def close_extra_windows():
    wm = bpy.context.window_manager
    for win in list(wm.windows)[1:]:
        try:
            with bpy.context.temp_override(window=win):
                bpy.ops.wm.window_close()
        except Exception:  # noqa: BLE001
            pass


def op(fn, *a, **k):
    """Run an operator; (result, error message)."""
    win, area = view3d()
    try:
        with bpy.context.temp_override(window=win, area=area):
            return fn(*a, **k), ""
    except RuntimeError as e:
        return {"CANCELLED"}, str(e)


def setup_camera_and_engine(res=256):
    scene = bpy.context.scene
    for ob in list(bpy.data.objects):
        if ob.type == "MESH" and ob.name.startswith("Cube"):
            bpy.data.objects.remove(ob, do_unlink=True)
    cam = scene.camera
    if cam is None:
        cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
        scene.collection.objects.link(cam)
        scene.camera = cam
    cam.location = (0.0, -3.6, 1.0)
    cam.rotation_euler = (1.5708, 0.0, 0.0)
    cam.data.lens = 40
    scene.render.engine = "NEURAL_AVATAR"
    scene.render.resolution_x = scene.render.resolution_y = res
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"


def engine_state():
    return sys.modules.get(MOD + ".engine.state")


# ------------------------------------------------------------------ phases
def phase_checks():
    addons = bpy.context.preferences.addons
    check("add-on enabled", bool(MOD) and MOD in addons, MOD)
    if not MOD:
        finish()
    check("torch not imported by enabling", "torch" not in sys.modules)
    deps = sys.modules[MOD + ".common.deps"]
    missing = deps.missing_modules(("numpy",) + deps.CORE_MODULES)
    REPORT["missing"] = missing
    for name in ("NEURAL_AVATAR_OT_install_dependencies", "NEURAL_AVATAR_PT_body", "NEURAL_AVATAR_OT_add_body"):
        check(f"{name} registered", hasattr(bpy.types, name))
    scene = bpy.context.scene
    n_before = len(bpy.data.objects)
    res, err = op(bpy.ops.neural_avatar.add_body)
    if PHASE == "bare":
        check("numpy missing here", "numpy" in missing, missing)
        check("Add Body says to install the system numpy", res == {"CANCELLED"} and "python3-numpy" in err, err)
        check("failed Add Body changed nothing", len(bpy.data.objects) == n_before)
    else:
        check("Add Body works with numpy only" if PHASE == "numpy" else "Add Body", res == {"FINISHED"}, err)
    setup_camera_and_engine()
    still = os.path.join(OUT, f"f12_{PHASE}.png")
    if os.path.exists(still):
        os.unlink(still)
    scene.render.filepath = still
    res, err = op(bpy.ops.render.render, write_still=True)
    st = engine_state()
    if PHASE in ("bare", "numpy"):
        expect = "python3-numpy" if PHASE == "bare" else "Install the dependencies in the add-on's preferences"
        check("F12 reports the dependencies message", expect in err or expect in (st.LAST_ERROR if st else ""),
              err or (st.LAST_ERROR if st else ""))
        check("F12 wrote no frame", not os.path.exists(still))
    else:
        check("F12 renders", res == {"FINISHED"} and os.path.exists(still), err or (st.LAST_ERROR if st else ""))
        check("no engine error", st is not None and st.LAST_ERROR == "", st.LAST_ERROR if st else "")
        scene.frame_start, scene.frame_end = 1, 3
        scene.render.filepath = os.path.join(OUT, "anim_")
        path = os.path.join(OUT, "scene.blend")
        bpy.ops.wm.save_as_mainfile(filepath=path, copy=True)
        check("scene saved for blender -b -a", os.path.exists(path))


def phase_install():
    """The installer for real, CPU build, synchronously (progress lines on stdout)."""
    t0 = time.time()
    res, err = op(bpy.ops.neural_avatar.install_dependencies, "EXEC_DEFAULT", variant="CPU")
    REPORT["install"] = {"result": sorted(res), "error": err, "seconds": round(time.time() - t0, 1)}
    prefs_mod = sys.modules[MOD + ".ui.preferences"]
    target = prefs_mod.deps_target()
    deps = sys.modules[MOD + ".common.deps"]
    REPORT["install"]["target"] = target
    REPORT["install"]["manifest"] = deps.read_manifest(target)
    expect = os.environ.get("STOCK_EXPECT_INSTALL", "ok")
    if expect == "refused":
        check("CPU installer refuses when the PyTorch CPU index is unreachable",
              res == {"CANCELLED"} and "cannot be reached" in err and "Nothing was installed" in err, err)
        check("nothing was installed", not deps.read_manifest(target))
    else:
        check("installer CPU finished and checked the build", res == {"FINISHED"}, err)
        man = deps.read_manifest(target)
        check("manifest: CPU build", man.get("installed", {}).get("torch_cuda", "x") is None, man)
        numpy_file = __import__("numpy").__file__
        check("Blender's/the system's numpy still used", not numpy_file.startswith(target), numpy_file)


STEPS = []


def schedule():
    if PHASE == "install":
        STEPS.extend([(0.5, phase_install), (0.5, show_preferences), (2.0, lambda: screenshot("prefs_install.png")),
                      (0.1, finish)])
        return
    STEPS.extend([(0.5, phase_checks), (0.5, show_sidebar), (2.0, lambda: screenshot(f"sidebar_{PHASE}.png")),
                  (0.1, show_preferences), (2.0, lambda: screenshot(f"prefs_{PHASE}.png")),
                  (0.1, close_extra_windows)])
    if PHASE == "render":
        STEPS.extend([(0.5, rendered_viewport), (float(os.environ.get("STOCK_VIEWPORT_WAIT", "25")),
                                                 lambda: screenshot("viewport_render.png"))])
    STEPS.append((0.1, finish))


def rendered_viewport():
    win, area = view3d()
    space = area.spaces.active
    space.shading.type = "RENDERED"
    space.region_3d.view_perspective = "CAMERA"
    area.tag_redraw()


def tick():
    if not STEPS:
        return None
    delay, fn = STEPS.pop(0)
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        check(f"step {getattr(fn, '__name__', fn)}", False, traceback.format_exc())
        if fn in (phase_checks, phase_install):
            finish()
        del e
    return STEPS[0][0] if STEPS else None


schedule()
bpy.app.timers.register(tick, first_interval=2.0)
bpy.app.timers.register(lambda: (check("timeout", False, "the check ran out of time"), finish()),
                        first_interval=float(os.environ.get("STOCK_TIMEOUT", "900")))
