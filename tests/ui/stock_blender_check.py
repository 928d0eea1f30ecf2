"""Run inside a Python with bpy (``python stock_blender_check.py ZIP OUT HIDE``): hide the pip
packages in HIDE (an import blocker, as in a stock Blender), then install the extension zip,
enable it, and check what a new user meets. Prints ``STOCK_OK`` at the end; any failed check
raises. Used by tests/ui/test_stock_blender.py."""
import importlib.abc
import os
import sys

ZIP, OUT, HIDE = sys.argv[1], sys.argv[2], set(sys.argv[3].split(","))


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDE:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
for m in [m for m in sys.modules if m.split(".")[0] in HIDE]:
    del sys.modules[m]

import bpy  # noqa: E402
import addon_utils  # noqa: E402  (Blender's, on the path once bpy is imported)

MOD = "bl_ext.user_default.neural_avatar"
NUMPY_HIDDEN = "numpy" in HIDE


def ours():
    return sorted(n for n in dir(bpy.types) if n.startswith("NEURAL_AVATAR"))


class Layout:
    """Records what a draw() puts on screen (labels, operators, props)."""

    def __init__(self, log):
        self.log = log
        self.alert = False
        self.scale_y = 1.0
        self.use_property_split = False

    def _child(self, *a, **k):
        return Layout(self.log)

    box = row = column = split = _child

    def label(self, text="", icon="NONE", **k):
        self.log.append(("label", text, icon))

    def operator(self, idname, text="", icon="NONE", **k):
        self.log.append(("operator", idname, text))

        class _Props:
            pass
        return _Props()

    def prop(self, data, name, text=None, **k):
        self.log.append(("prop", name, text))

    def progress(self, **k):
        self.log.append(("progress", k.get("text", "")))


r = bpy.ops.extensions.package_install_files(filepath=ZIP, repo="user_default", enable_on_install=True)
assert r == {"FINISHED"}, r
assert MOD in bpy.context.preferences.addons, "the add-on did not enable"
assert "torch" not in sys.modules and not any(m.startswith("smplx") for m in sys.modules)
if NUMPY_HIDDEN:
    assert "numpy" not in sys.modules
registered = ours()
for name in ("NEURAL_AVATAR_OT_install_dependencies", "NEURAL_AVATAR_OT_add_body", "NEURAL_AVATAR_PT_body"):
    assert name in registered, (name, registered)
assert hasattr(bpy.types.Scene, "neural_avatar")

# Preferences and sidebar say what is missing and offer the installer.
prefs = bpy.context.preferences.addons[MOD].preferences
log = []


class _Drawn:
    """``self`` for a draw(): our recording layout, the real preferences' properties."""

    def __init__(self, layout, real=None):
        self.layout, self._real = layout, real

    def __getattr__(self, name):
        return getattr(self._real, name)


type(prefs).draw(_Drawn(Layout(log), prefs), bpy.context)
labels = [e[1] for e in log if e[0] == "label"]
ops = [e[1] for e in log if e[0] == "operator"]
assert any(t.startswith("Dependencies missing") for t in labels), labels
assert "neural_avatar.install_dependencies" in ops, ops
if NUMPY_HIDDEN:
    assert any("python3-numpy" in t for t in labels), labels
sidebar = sys.modules[MOD + ".ui.panels"]
log = []
sidebar.NEURAL_AVATAR_PT_body.draw(_Drawn(Layout(log)), bpy.context)
assert any(t.startswith("Dependencies missing") for t in [e[1] for e in log if e[0] == "label"]), log
assert "neural_avatar.install_dependencies" in [e[1] for e in log if e[0] == "operator"], log

# Add Body: numpy only.
n_objects = len(bpy.data.objects)
if NUMPY_HIDDEN:
    try:
        bpy.ops.neural_avatar.add_body()
        raise AssertionError("Add Body worked without numpy")
    except RuntimeError as e:
        assert "python3-numpy" in str(e), e
    assert len(bpy.data.objects) == n_objects, "a failed Add Body changed the scene"
else:
    assert bpy.ops.neural_avatar.add_body() == {"FINISHED"}
    arm = [o for o in bpy.data.objects if o.type == "ARMATURE"][0]
    assert arm.neural_avatar.is_body and len(arm.data.bones) == 24

# Training needs torch: reported, nothing changes.
scene = bpy.context.scene
before = (scene.neural_avatar.train_status, len(bpy.data.objects))
try:
    bpy.ops.neural_avatar.train()
    raise AssertionError("training started without torch")
except RuntimeError as e:
    assert "Install the dependencies" in str(e) or "python3-numpy" in str(e), e
assert (scene.neural_avatar.train_status, len(bpy.data.objects)) == before

# F12 and an animation: a clear error, no frame written.
cam_data = bpy.data.cameras.new("Cam")
cam = bpy.data.objects.new("Cam", cam_data)
scene.collection.objects.link(cam)
cam.location = (0, -4, 1)
cam.rotation_euler = (1.5708, 0, 0)
scene.camera = cam
scene.render.engine = "NEURAL_AVATAR"
scene.render.resolution_x = scene.render.resolution_y = 32
state = sys.modules[MOD + ".engine.state"]
still = os.path.join(OUT, "still.png")
scene.render.filepath = still
try:
    bpy.ops.render.render(write_still=True)
    raise AssertionError("F12 did not fail")
except RuntimeError as e:
    msg = str(e)
expect = "python3-numpy" if NUMPY_HIDDEN else "Install the dependencies in the add-on's preferences"
assert expect in msg and expect in state.LAST_ERROR, (msg, state.LAST_ERROR)
assert not os.path.exists(still), "a frame was written for a failed render"
scene.frame_start, scene.frame_end = 1, 3
scene.render.filepath = os.path.join(OUT, "anim_")
try:
    bpy.ops.render.render(animation=True)
    raise AssertionError("the animation render did not fail")
except RuntimeError as e:
    assert expect in str(e), e
assert not [f for f in os.listdir(OUT) if f.startswith("anim_")], os.listdir(OUT)

# Disable / enable twice: nothing left behind, everything back.
for cycle in range(2):
    addon_utils.disable(MOD, default_set=True)
    assert not ours(), ("leftovers", cycle, ours())
    assert not hasattr(bpy.types.Scene, "neural_avatar") and not hasattr(bpy.types.Object, "neural_avatar")
    addon_utils.enable(MOD, default_set=True)
    assert ours() == registered, (cycle, ours())
assert "torch" not in sys.modules
print("STOCK_OK")
