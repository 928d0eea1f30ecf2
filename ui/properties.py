"""PropertyGroups: ``Scene.neural_avatar`` (render, capture and training settings) and
``Object.neural_avatar`` (per body: model, shape sliders, avatar bundle).

Update callbacks forward to :mod:`..operators.rig`, which owns everything that edits
the body in the scene.
"""
import functools
import os

import bpy

from .. import classes_registrar, register_in_order, unregister_in_order
from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatProperty,
    FloatVectorProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

MAX_BETAS = 32  # Blender's limit for an array property; models with more use the first 32.

MODE_ITEMS = [
    ("VERTEX_PROJECTION", "Vertex Projection",
     "Coloured body vertices projected to an RGB-D image, painted by a UNet (SMPLpix)"),
    ("NEURAL_TEXTURE", "Neural Texture",
     "Learned neural texture rasterised through the body's UVs, two-stage renderer (ANR)"),
    ("GAUSSIAN_BONES", "Gaussian Bones",
     "One Gaussian per bone, feature image decoded by a style-modulated UNet (HumanViewSynthesis)"),
    ("PIXEL_ALIGNED", "Pixel Aligned",
     "A person read from a few source views, volume-rendered in any pose with no training for them (AniPixel)"),
]
DEVICE_ITEMS = [
    ("PREFERENCES", "From Preferences", "Use the device chosen in the add-on preferences"),
    ("AUTO", "Auto", "CUDA, then Apple MPS, then CPU"),
    ("CUDA", "CUDA", "NVIDIA GPU"),
    ("MPS", "MPS", "Apple GPU"),
    ("CPU", "CPU", "Processor"),
]
# Explicit numbers: .blend files store the number, so FP32/BF16/FP16 keep theirs (0-2) from before AUTO.
PRECISION_ITEMS = [
    ("AUTO", "Auto", "BFloat16 on CPUs that compute it natively (AVX512-BF16/AMX: about 4x faster, 75 dB from "
                     "Float32), Float32 elsewhere; with OpenVINO, int8 convolutions where they stay within 40 dB "
                     "of Float32", 3),
    ("FP32", "Float32", "Full precision", 0),
    ("BF16", "BFloat16", "Half precision (bfloat16) inference where the device supports it", 1),
    ("FP16", "Float16", "Half precision (float16) inference on GPUs; on a CPU it runs in Float32 "
                        "(CPU float16 is ~1000x slower)", 2),
    ("INT8", "Int8", "8-bit convolutions on the CPU with OpenVINO (SMPLpix, ANR), calibrated on each avatar's "
                     "first frame and used where it stays within 35 dB of Float32 (Auto asks for 40 dB); "
                     "elsewhere as Auto", 4),
]
MODEL_ITEMS = [
    ("DEFAULT", "Default (open)", "Embedded, freely licensed SMPL-format body (no download)"),
    ("SMPL", "SMPL", "SMPL from the licensed files in the preferences' body-model folder"),
    ("SMPLH", "SMPL-H", "SMPL+H from the licensed files in the preferences' body-model folder"),
    ("SMPLX", "SMPL-X", "SMPL-X from the licensed files in the preferences' body-model folder"),
]
GENDER_ITEMS = [
    ("NEUTRAL", "Neutral", ""),
    ("FEMALE", "Female", ""),
    ("MALE", "Male", ""),
]


def _betas_changed(self, context):
    from ..blender import rig

    obj = self.id_data
    if isinstance(obj, bpy.types.Object) and obj.type == "ARMATURE" and self.is_body:
        rig.on_betas_changed(obj)


def _avatar_changed(self, context):
    from ..engine import cache

    cache.clear()
    _redraw_views(self, context)


def bundle_summary(path: str) -> tuple:
    """``(mode, identity names)`` of a bundle's JSON, read without torch (``("", [])`` if
    unreadable). Panels draw on every redraw: the file is read again only when it changes."""
    js = os.path.splitext(bpy.path.abspath(path))[0] + ".json"
    try:
        mtime = os.stat(js).st_mtime_ns
    except OSError:
        return "", []
    return _summary_of(js, mtime)


@functools.lru_cache(maxsize=32)
def _summary_of(js: str, mtime: int) -> tuple:
    from ..common.guards import load_json
    from ..errors import NeuralAvatarError

    try:
        meta = load_json(js, os.path.basename(js))
    except NeuralAvatarError:
        return "", []
    if not isinstance(meta, dict):
        return "", []
    ids = meta.get("identities") or []
    ids = [x for x in ids if isinstance(x, str)] if isinstance(ids, list) else []
    return str(meta.get("mode", "")), ids


#: the identity menu's items per bundle (Blender needs the strings kept alive while shown)
_IDENTITY_ITEMS: dict = {}


def _identity_items(self, context):
    ids = bundle_summary(self.avatar)[1] if self.avatar else []
    items = [(n, n, f"Paint this body as '{n}' (renderer shared, this identity's own "
                    "texture / colours / appearance)") for n in ids] or [("NONE", "(one person)", "")]
    _IDENTITY_ITEMS[self.avatar] = items
    return items


def _identity_get(self):
    ids = bundle_summary(self.avatar)[1] if self.avatar else []
    return ids.index(self.identity) if self.identity in ids else 0


def _identity_set(self, value):
    ids = bundle_summary(self.avatar)[1] if self.avatar else []
    if 0 <= value < len(ids):
        self.identity = ids[value]


def tag_redraw(area_types=("VIEW_3D",)) -> None:
    """Redraw every area of ``area_types`` in every window (no-op without a window manager)."""
    try:
        for win in bpy.context.window_manager.windows:
            for area in win.screen.areas:
                if area.type in area_types:
                    area.tag_redraw()
    except (AttributeError, ReferenceError):
        pass


def _redraw_views(self, context):
    """A render setting changed (also from a script): redraw Rendered viewports."""
    tag_redraw()


def beta_label(i: int) -> str:
    """Slider label counting from β₁ like the README and the SMPL papers."""
    sub = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
    return "β" + str(i + 1).translate(sub)


class NEURAL_AVATAR_PG_object(bpy.types.PropertyGroup):
    is_body: BoolProperty(name="Is Body", default=False, options={"HIDDEN"},
                          description="This armature is a Neural Avatar body rig")
    model_type: EnumProperty(name="Body Model", items=MODEL_ITEMS, default="DEFAULT")
    gender: EnumProperty(name="Gender", items=GENDER_ITEMS, default="NEUTRAL")
    model_file: StringProperty(name="Model File", subtype="FILE_PATH",
                               description="Body-model file this rig was built from (empty: embedded default)")
    model_id: StringProperty(name="Model Id", description="Identifier of the body model (checked against avatars)")
    num_betas: IntProperty(name="Shape Components", default=10, min=0, max=MAX_BETAS)
    betas: FloatVectorProperty(name="Shape", size=MAX_BETAS, default=[0.0] * MAX_BETAS,
                               soft_min=-3.0, soft_max=3.0, min=-10.0, max=10.0,
                               update=_betas_changed,
                               description="Body-shape coefficients β₁, β₂, … in standard deviations of the "
                                           "model's shape space, largest effect first. β₁ is overall size: on "
                                           "the default body +2 makes it 21 cm taller and broader (92.7 % of the "
                                           "shape variance); later sliders change proportions by a few "
                                           "centimetres. The skeleton follows live")
    auto_correctives: BoolProperty(name="Pose Correctives", default=True,
                                   description="Apply the model's pose-corrective blend shapes while posing")
    avatar: StringProperty(name="Avatar", subtype="FILE_PATH", update=_avatar_changed,
                           description="Model bundle (.safetensors) that paints this body, in the mode it was "
                                       "trained for; empty: the shipped default avatar of the scene's mode")
    identity: StringProperty(name="Identity", update=_redraw_views,
                             description="Which person of a multi-identity bundle this body shows (empty: the "
                                         "first). The body keeps its own shape and pose: showing another "
                                         "identity is ANR's try-on")
    identity_menu: EnumProperty(name="Identity", items=_identity_items, get=_identity_get, set=_identity_set,
                                description="Which person of this multi-identity bundle the body shows")
    source_views: StringProperty(name="Source Views", subtype="DIR_PATH", update=_avatar_changed,
                                 description="PIXEL_ALIGNED: capture folder whose first synchronised views show the "
                                             "person this body becomes (Avatar from Views sets it)")


class NEURAL_AVATAR_PG_scene(bpy.types.PropertyGroup):
    mode: EnumProperty(name="Default Mode", items=MODE_ITEMS, default="VERTEX_PROJECTION", update=_redraw_views,
                       description="Neural mode of the shipped default avatar, for bodies without an avatar of "
                                   "their own (a body with an avatar renders in that avatar's mode)")
    device: EnumProperty(name="Device", items=DEVICE_ITEMS, default="PREFERENCES", update=_redraw_views)
    precision: EnumProperty(name="Precision", items=PRECISION_ITEMS, default="AUTO", update=_redraw_views)
    pass_input: BoolProperty(name="Neural Input Pass", default=False,
                             description="Write the network's input image (projected vertices, rasterised "
                                         "texture or Gaussian features) as the 'Neural Input' render pass")
    pass_mask: BoolProperty(name="Mask Pass", default=False,
                            description="Write the bodies' predicted coverage (0–1) as the 'Neural Mask' pass")
    pass_depth: BoolProperty(name="Depth Pass", default=False,
                             description="Write the bodies' camera depth in metres (0: background) as the "
                                         "'Neural Depth' pass")
    viewport_scale: FloatProperty(name="Viewport Scale", default=0.5, min=0.1, max=1.0, update=_redraw_views,
                                  subtype="FACTOR", description="Largest fraction of the viewport size rendered")
    # Capture
    capture_dir: StringProperty(name="Dataset Folder", subtype="DIR_PATH", default="//neural_avatar_capture")
    capture_frames: IntProperty(name="Frames", default=200, min=1)
    capture_res: IntProperty(name="Resolution", default=256, min=16, max=4096)
    capture_engine: EnumProperty(name="Renderer", description="Renderer of the ground-truth images", items=[
        ("CYCLES", "Cycles", ""), ("EEVEE", "EEVEE", ""), ("BLENDER_WORKBENCH", "Workbench", "")],
        default="CYCLES")
    capture_seed: IntProperty(name="Seed", default=0)
    # Training
    train_mode: EnumProperty(name="Train Mode", items=MODE_ITEMS, default="VERTEX_PROJECTION",
                             description="Neural mode of the avatar to train (independent of the render mode)")
    train_data: StringProperty(name="Dataset", subtype="DIR_PATH", default="//neural_avatar_capture")
    train_out: StringProperty(name="Output", subtype="DIR_PATH", default="//neural_avatar_training")
    train_steps: IntProperty(name="Steps", default=20000, min=1)
    train_res: IntProperty(name="Resolution", default=256, min=16, max=2048)
    train_running: BoolProperty(name="Training", default=False, options={"SKIP_SAVE"})
    train_progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR",
                                  options={"SKIP_SAVE"})
    train_status: StringProperty(name="Status", default="", options={"SKIP_SAVE"})
    fit_name: StringProperty(name="New Identity", default="person2",
                             description="Name of the person Fit Identity adds to the body's avatar (letters, "
                                         "digits, _ . -)")
    fit_frames: IntProperty(name="Fit Frames", default=8, min=1, max=100000,
                            description="Frames of the Dataset the new identity is fitted on (evenly spaced)")
    # New people without training
    views_dir: StringProperty(name="Views Folder", subtype="DIR_PATH", default="//neural_avatar_views",
                              description="Capture folder with synchronised views of the person (empty: Avatar "
                                          "from Views captures the selected dressed body into it)")
    views_count: IntProperty(name="Views", default=3, min=1, max=16,
                             description="Source views the PIXEL_ALIGNED avatar reads (AniPixel: 3)")
    views_bundle: StringProperty(name="Pixel-Aligned Avatar", subtype="FILE_PATH", default="",
                                 description="Generalizable PIXEL_ALIGNED bundle (empty: the shipped one)")
    image_dir: StringProperty(name="Image Folder", subtype="DIR_PATH", default="//neural_avatar_image",
                              description="Capture folder holding the image (empty: Avatar from Image renders the "
                                          "selected dressed body into it as the scene camera shows it now)")
    image_frame: IntProperty(name="Image Frame", default=0, min=0, description="Frame of the Image Folder")
    image_name: StringProperty(name="Person", default="person_from_image",
                               description="Name of the identity Avatar from Image adds")


CLASSES = (NEURAL_AVATAR_PG_object, NEURAL_AVATAR_PG_scene)


_register_classes, _unregister_classes = classes_registrar(CLASSES)


def _add_pointers():
    bpy.types.Object.neural_avatar = PointerProperty(type=NEURAL_AVATAR_PG_object)
    bpy.types.Scene.neural_avatar = PointerProperty(type=NEURAL_AVATAR_PG_scene)


def _remove_pointers():
    for owner in (bpy.types.Scene, bpy.types.Object):
        if hasattr(owner, "neural_avatar"):
            del owner.neural_avatar


def register():
    register_in_order([(_register_classes, _unregister_classes), (_add_pointers, _remove_pointers)])


def unregister():
    unregister_in_order([_remove_pointers, _unregister_classes])
