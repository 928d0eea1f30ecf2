"""Add-on preferences: licensed body-model folder, compute device, dependency installer."""
import os
import threading

import bpy
from bpy.props import EnumProperty, StringProperty

from .. import deps

ADDON_ID = __package__.rsplit(".", 1)[0]  # "neural_avatar" or "bl_ext.<repo>.neural_avatar"


def deps_target() -> str:
    """Folder the dependency installer writes to (the extension's user directory)."""
    try:
        return bpy.utils.extension_path_user(ADDON_ID, path="site-packages", create=True)
    except (ValueError, AttributeError):  # not installed as an extension (e.g. tests, legacy add-on)
        return os.path.join(bpy.utils.user_resource("SCRIPTS", path="neural_avatar_deps", create=True))


def get_prefs(context=None):
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon else None


class NEURAL_AVATAR_OT_install_dependencies(bpy.types.Operator):
    """Install PyTorch and the other Python packages Neural Avatar needs into the extension's folder"""

    bl_idname = "neural_avatar.install_dependencies"
    bl_label = "Install Dependencies"
    bl_options = {"REGISTER", "INTERNAL"}

    variant: EnumProperty(name="PyTorch Build", items=[
        ("CPU", "CPU", "Small download, works everywhere"),
        ("CUDA", "CUDA", "NVIDIA GPUs (large download)"),
        ("DEFAULT", "Default", "PyPI's default build (macOS: includes MPS)"),
    ], default="CPU")
    target: StringProperty(name="Target", default="", options={"HIDDEN", "SKIP_SAVE"},
                           description="Install folder (default: the extension's user directory)")
    packages: StringProperty(name="Packages", default="", options={"HIDDEN", "SKIP_SAVE"},
                             description="Space-separated requirement list (default: what the add-on needs)")

    _thread = None
    _timer = None
    _state = None

    def execute(self, context):
        # Synchronous path (background mode, scripts, tests).
        target = self.target or deps_target()
        pkgs = self.packages.split() or list(deps.RUNTIME_PACKAGES)
        import sys

        try:
            deps.run_pip(deps.pip_command(sys.executable, target, pkgs, self.variant))
        except deps.DependencyInstallError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        deps.add_to_path(target)
        self.report({"INFO"}, f"Installed {' '.join(pkgs)} into {target}")
        return {"FINISHED"}

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        import sys

        target = self.target or deps_target()
        pkgs = self.packages.split() or list(deps.RUNTIME_PACKAGES)
        cmd = deps.pip_command(sys.executable, target, pkgs, self.variant)
        self._state = {"line": "Starting pip…", "error": None, "done": False, "target": target}
        state = self._state

        def work():
            try:
                deps.run_pip(cmd, on_line=lambda l: state.__setitem__("line", l))
            except deps.DependencyInstallError as e:
                state["error"] = str(e)
            state["done"] = True

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.25, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        state = self._state
        context.workspace.status_text_set(f"Neural Avatar: {state['line'][:120]}")
        if not state["done"]:
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        context.workspace.status_text_set(None)
        if state["error"]:
            self.report({"ERROR"}, state["error"])
            return {"CANCELLED"}
        deps.add_to_path(state["target"])
        self.report({"INFO"}, "Dependencies installed. Neural Avatar is ready.")
        return {"FINISHED"}


class NEURAL_AVATAR_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    body_model_dir: StringProperty(
        name="Body Model Folder", subtype="DIR_PATH", default="",
        description="Folder with your licensed SMPL / SMPL-H / SMPL-X files "
                    "(smplx layout: smpl/SMPL_NEUTRAL.pkl, smplx/SMPLX_FEMALE.npz, …)")
    device: EnumProperty(name="Compute Device", items=[
        ("AUTO", "Auto", "CUDA, then Apple MPS, then CPU"),
        ("CUDA", "CUDA", "NVIDIA GPU"),
        ("MPS", "MPS", "Apple GPU"),
        ("CPU", "CPU", "Processor"),
    ], default="AUTO")

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "body_model_dir")
        layout.prop(self, "device")
        box = layout.box()
        missing = deps.missing_modules()
        if missing:
            box.label(text="Missing Python packages: " + ", ".join(missing), icon="ERROR")
        else:
            box.label(text="All Python dependencies found.", icon="CHECKMARK")
        row = box.row()
        row.operator(NEURAL_AVATAR_OT_install_dependencies.bl_idname, text="Install (CPU)").variant = "CPU"
        row.operator(NEURAL_AVATAR_OT_install_dependencies.bl_idname, text="Install (CUDA)").variant = "CUDA"
        box.label(text=f"Target: {deps_target()}")


CLASSES = (NEURAL_AVATAR_OT_install_dependencies, NEURAL_AVATAR_AddonPreferences)


def register():
    for c in CLASSES:
        bpy.utils.register_class(c)
    # Packages installed by the button in an earlier session become importable now.
    try:
        deps.add_to_path(deps_target())
    except Exception:  # noqa: BLE001 - never block registration on a path lookup
        pass


def unregister():
    for c in reversed(CLASSES):
        bpy.utils.unregister_class(c)
