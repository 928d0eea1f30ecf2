"""Add-on preferences: licensed body-model folder, compute device, and the dependency installer
(:mod:`..deps`) with its download size, progress and cancel."""
import os
import sys
import threading

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from .. import classes_registrar
from .properties import tag_redraw
from ..common import deps

ADDON_ID = __package__.rsplit(".", 1)[0]  # "neural_avatar" or "bl_ext.<repo>.neural_avatar"

# The running (or last) install, shared by the operator, the preferences and the sidebar.
INSTALL = {"running": False, "text": "", "downloaded": 0, "total": 0, "error": "", "cancel": False,
           "done": False, "result": None}


def default_deps_target() -> str:
    """The extension's own user folder: kept when the extension is updated, removed when it is
    uninstalled. One folder per Python version (Blender 4.2–5.0: 3.11; 5.1+: 3.13)."""
    sub = f"deps-{deps.python_tag()}"
    try:
        return bpy.utils.extension_path_user(ADDON_ID, path=sub, create=True)
    except (ValueError, AttributeError):  # not installed as an extension (tests, legacy add-on path)
        return bpy.utils.user_resource("SCRIPTS", path=os.path.join("neural_avatar_deps", sub), create=True)


def deps_target(prefs=None) -> str:
    """Where dependencies are installed and looked for: ``NEURAL_AVATAR_DEPS`` (farms), then the
    preference, then the extension's user folder."""
    env = os.environ.get(deps.DEPS_ENV, "")
    if env:
        return os.path.abspath(env)
    prefs = prefs if prefs is not None else get_prefs()
    if prefs is not None and prefs.deps_folder:
        return os.path.abspath(bpy.path.abspath(prefs.deps_folder))
    return default_deps_target()


def get_prefs(context=None):
    context = context or bpy.context
    try:
        addon = context.preferences.addons.get(ADDON_ID)
    except AttributeError:
        return None
    return addon.preferences if addon else None


def missing_now() -> list:
    """Missing modules, numpy first (the add-on needs it for everything)."""
    return deps.missing_modules(("numpy",) + deps.CORE_MODULES)


def _on_event(ev: dict) -> None:
    """Installer events → :data:`INSTALL` (read by the UI; called from the worker thread)."""
    kind = ev["kind"]
    if kind == "status":
        INSTALL["text"] = ev["text"]
    elif kind == "estimate":
        INSTALL["total"] = ev.get("bytes", 0)
        n = len(ev.get("packages", []))
        INSTALL["text"] = f"To download: {deps.format_mb(INSTALL['total']) if INSTALL['total'] else '?'} ({n} packages)"
    elif kind == "file":
        INSTALL["downloaded"] = ev["downloaded"]
        INSTALL["text"] = ("Cached " if ev["cached"] else "Downloading ") + ev["name"].split("-")[0] + (
            f" ({deps.format_mb(ev['size'])})" if ev["size"] else "")
    elif kind == "bytes":
        INSTALL["downloaded"] = ev["downloaded"]
    elif kind == "line" and ev["text"].startswith("Installing collected"):
        INSTALL["text"] = "Installing …"


def install_options(prefs):
    variant = prefs.install_variant if prefs is not None else "CPU"
    sets = ["core"] + (["openvino"] if prefs is not None and prefs.install_openvino else [])
    return variant, sets


class NEURAL_AVATAR_OT_install_dependencies(bpy.types.Operator):
    """Download and install PyTorch and the other Python packages Neural Avatar needs into the
    Dependencies Folder (Blender's own numpy is kept)"""

    bl_idname = "neural_avatar.install_dependencies"
    bl_label = "Install Dependencies"
    bl_options = {"REGISTER", "INTERNAL"}

    variant: EnumProperty(name="PyTorch Build", items=[
        ("PREFERENCES", "From Preferences", "The build chosen in the add-on preferences"),
        ("CPU", "CPU", "CPU build (about 200 MB), works everywhere; macOS: includes MPS"),
        ("CUDA", "CUDA", "NVIDIA GPUs (several GB)"),
        ("DEFAULT", "PyPI Default", "PyPI's own build (macOS: MPS; Linux: CUDA)"),
    ], default="PREFERENCES")
    target: StringProperty(name="Target", default="", options={"HIDDEN", "SKIP_SAVE"},
                           description="Install folder (default: the Dependencies Folder)")
    find_links: StringProperty(name="Wheel Folder", default="", options={"HIDDEN", "SKIP_SAVE"},
                               description="Also take wheels from this folder")
    offline: BoolProperty(name="Offline", default=False, options={"HIDDEN", "SKIP_SAVE"},
                          description="Use only the wheel folder, no package index")

    _timer = None

    def _args(self, context):
        prefs = get_prefs(context)
        variant, sets = install_options(prefs)
        if self.variant != "PREFERENCES":
            variant = self.variant
        fl = [self.find_links] if self.find_links else []
        return dict(target=self.target or deps_target(prefs), variant=variant, sets=sets,
                    python=deps.python_executable(), find_links=fl, offline=self.offline)

    @classmethod
    def poll(cls, context):
        return not INSTALL["running"]

    def execute(self, context):
        # Synchronous path (blender -b, scripts, tests): progress lines on stdout.
        INSTALL["error"] = ""
        try:
            kw = self._args(context)
            manifest = deps.install(on_event=deps.ConsoleProgress(), **kw)
        except deps.NeuralAvatarError as e:
            INSTALL["error"] = str(e)  # shown in the preferences until the next try
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        deps.add_to_path(kw["target"])
        self.report({"INFO"}, f"Installed and checked {', '.join(manifest['sets'])} in {kw['target']}")
        return {"FINISHED"}

    def invoke(self, context, event):
        if bpy.app.background or context.window is None:
            return self.execute(context)
        try:
            kw = self._args(context)
        except deps.NeuralAvatarError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        INSTALL.update(running=True, text="Starting …", downloaded=0, total=0, error="", cancel=False,
                       done=False, result=None, target=kw["target"])

        def work():
            try:
                INSTALL["result"] = deps.install(on_event=_on_event, should_stop=lambda: INSTALL["cancel"], **kw)
            except deps.NeuralAvatarError as e:
                INSTALL["error"] = str(e)
            except Exception as e:  # noqa: BLE001 - shown to the user, never lost
                INSTALL["error"] = f"Installing dependencies failed: {type(e).__name__}: {e}"
            INSTALL["done"] = True

        threading.Thread(target=work, daemon=True, name="neural_avatar_install").start()
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.25, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        tag_redraw(("PREFERENCES", "VIEW_3D", "PROPERTIES"))
        total = INSTALL["total"]
        done_mb = deps.format_mb(INSTALL["downloaded"]) if INSTALL["downloaded"] else ""
        size = f" — {done_mb} of {deps.format_mb(total)}" if total and done_mb else ""
        context.workspace.status_text_set(f"Neural Avatar: {INSTALL['text'][:100]}{size}")
        if not INSTALL["done"]:
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        context.workspace.status_text_set(None)
        INSTALL["running"] = False
        if INSTALL["error"]:
            self.report({"ERROR"}, INSTALL["error"])
            return {"CANCELLED"}
        deps.add_to_path(INSTALL["target"])
        INSTALL["text"] = "Installed and checked. Neural Avatar is ready."
        self.report({"INFO"}, "Dependencies installed and checked. Neural Avatar is ready.")
        return {"FINISHED"}


class NEURAL_AVATAR_OT_cancel_install(bpy.types.Operator):
    """Stop the running dependency install (nothing is changed)"""

    bl_idname = "neural_avatar.cancel_install"
    bl_label = "Cancel Install"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context):
        return INSTALL["running"]

    def execute(self, context):
        INSTALL["cancel"] = True
        return {"FINISHED"}


def wrapped(layout, text: str, context=None, icon="NONE"):
    """Labels wrapped to the region's width (long messages are not cut off in the sidebar)."""
    import textwrap

    try:
        width = (context or bpy.context).region.width
        scale = (context or bpy.context).preferences.system.ui_scale
    except AttributeError:
        width, scale = 300, 1.0
    chars = max(18, int(width / (6.5 * scale)) - 4)
    for i, line in enumerate(textwrap.wrap(text, chars) or [""]):
        layout.label(text=line, icon=icon if i == 0 else "NONE")


def draw_dependencies(layout, context, compact=False):
    """The *Dependencies* box: state, installer buttons, progress. Used by the preferences and,
    compact, by the sidebar when something is missing."""
    prefs = get_prefs(context)
    box = layout.box()
    missing = missing_now()
    col = box.column(align=True)
    if INSTALL["running"]:
        total = INSTALL["total"]
        frac = min(1.0, INSTALL["downloaded"] / total) if total else 0.0
        text = INSTALL["text"][:60]
        if hasattr(col, "progress"):
            col.progress(factor=frac, type="BAR", text=text)
        else:
            col.label(text=text)
        if total:
            col.label(text=f"{deps.format_mb(INSTALL['downloaded'])} of {deps.format_mb(total)}")
        col.operator(NEURAL_AVATAR_OT_cancel_install.bl_idname, icon="CANCEL")
        return
    if "numpy" in missing:
        col.label(text="Dependencies missing: numpy", icon="ERROR")
        wrapped(col, "Install your system's python3-numpy package, or use Install Dependencies, which "
                     "adds numpy too.", context)
    elif missing:
        col.label(text="Dependencies missing", icon="ERROR")
        wrapped(col, ", ".join(deps._PIP_NAMES.get(m, m) for m in missing), context)
    else:
        col.label(text="Dependencies installed", icon="CHECKMARK")
    if INSTALL["error"]:
        err = box.column(align=True)
        err.alert = True
        wrapped(err, " ".join(INSTALL["error"].splitlines()[:3 if compact else 8]), context)
    if compact:
        if missing:
            box.operator(NEURAL_AVATAR_OT_install_dependencies.bl_idname, icon="IMPORT")
            op = box.operator("preferences.addon_show", text="Preferences", icon="PREFERENCES")
            op.module = ADDON_ID
        return
    if prefs is not None:
        row = box.row(align=True)
        row.prop(prefs, "install_variant", expand=True)
        box.prop(prefs, "install_openvino")
    box.operator(NEURAL_AVATAR_OT_install_dependencies.bl_idname,
                 text="Reinstall Dependencies" if not missing else "Install Dependencies", icon="IMPORT")
    if prefs is not None:
        box.prop(prefs, "deps_folder", text="Folder")
    target = deps_target(prefs)
    info = deps.read_manifest(target)
    sub = box.column(align=True)
    sub.scale_y = 0.8
    wrapped(sub, f"In use: {target}", context)
    if info:
        inst = info.get("installed", {})
        sub.label(text=f"Installed: torch {inst.get('torch', '?')} ({info.get('variant', '?')}), "
                       f"{info.get('time', '')}")
    if os.environ.get(deps.DEPS_ENV):
        sub.label(text=f"From the {deps.DEPS_ENV} environment variable", icon="INFO")


def _variant_items(self, context):
    items = [("CPU", "CPU", "CPU build of PyTorch (about 200 MB)" + ("; includes MPS" if sys.platform == "darwin"
                                                                     else ""))]
    if sys.platform != "darwin":
        items.append(("CUDA", "CUDA", "CUDA build for NVIDIA GPUs (several GB)"))
    return items


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
    install_variant: EnumProperty(name="PyTorch Build", items=_variant_items,
                                  description="Which PyTorch build the installer downloads")
    install_openvino: BoolProperty(name="OpenVINO (faster CPU inference)", default=False,
                                   description="Also install the optional OpenVINO backend (about 60 MB)")
    deps_folder: StringProperty(
        name="Dependencies Folder", subtype="DIR_PATH", default="",
        description="Where the installer puts PyTorch and the rest, and where they are looked for. Empty: the "
                    "extension's own user folder (kept on updates, removed on uninstall). A shared folder suits "
                    "render farms (or set the NEURAL_AVATAR_DEPS environment variable)")

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "body_model_dir")
        layout.prop(self, "device")
        layout.label(text="Python Dependencies")
        draw_dependencies(layout, context)


_register_classes, _unregister_classes = classes_registrar(
    (NEURAL_AVATAR_OT_install_dependencies, NEURAL_AVATAR_OT_cancel_install, NEURAL_AVATAR_AddonPreferences))


def register():
    _register_classes()
    # Packages installed by the button in an earlier session become importable now.
    try:
        deps.add_to_path(deps_target())
    except Exception:  # noqa: BLE001 - never block registration on a path lookup
        pass


def unregister():
    _unregister_classes()
