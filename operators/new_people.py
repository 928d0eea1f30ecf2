"""New people without training (issue "new people" / AniPixel), thin operators over
:mod:`..lab.new_people` and :mod:`..neural.new_people`:

* ``neural_avatar.avatar_from_views`` — the selected body becomes a PIXEL_ALIGNED avatar of the
  person in *Views Folder* (a capture folder with synchronised views); with an empty folder the
  selected dressed body is first captured from ``views`` cameras into it.
* ``neural_avatar.avatar_from_image`` — a new identity for a generalizable GAUSSIAN_BONES avatar
  from one image (frame *Image Frame* of *Image Folder*; with an empty folder, the selected
  dressed body as the scene camera shows it at the current frame, or one fresh view of it when
  the scene has no camera); the body's Avatar becomes the bundle with that identity.

Both change the scene only when they succeed.
"""
from __future__ import annotations

import os

import bpy

from .. import classes_registrar
from ..blender import rig
from ..errors import NeuralAvatarError


def _folder(path: str) -> str:
    p = bpy.path.abspath(path) if path else ""
    if not p:
        raise NeuralAvatarError("Choose a folder first.")
    return p


def _capture_if_empty(folder: str, capture) -> bool:
    """Run ``capture(folder)`` unless ``folder`` already holds a capture; refuse a folder holding
    other files. True when it captured."""
    from ..lab.new_people import source_dir_ok

    if source_dir_ok(folder):
        return False
    if os.path.isdir(folder) and os.listdir(folder):
        raise NeuralAvatarError(f"'{folder}' holds files but no capture (dataset.json): choose an empty folder "
                                "to capture into, or a capture folder.")
    capture(folder)
    return True


class NEURAL_AVATAR_OT_avatar_from_views(bpy.types.Operator):
    """Make the selected body a PIXEL_ALIGNED (AniPixel) avatar of the person seen in the Views
    Folder, with no training; an empty folder first gets synchronised views of the selected dressed body"""

    bl_idname = "neural_avatar.avatar_from_views"
    bl_label = "Avatar from Views"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        if not rig.deps_ok(self, "numpy", "torch", "safetensors", feature="Avatar from Views"):
            return {"CANCELLED"}
        from ..engine.avatars import default_avatar_path
        from ..neural.new_people import check_source_views

        s = context.scene.neural_avatar
        arm = rig.find_body(context)
        try:
            if arm is None:
                raise NeuralAvatarError("Select the body that should become the avatar.")
            folder = _folder(s.views_dir)
            bundle = bpy.path.abspath(s.views_bundle) if s.views_bundle else default_avatar_path("PIXEL_ALIGNED")
            if not os.path.isfile(bundle):
                raise NeuralAvatarError(f"No PIXEL_ALIGNED bundle at {bundle}.")
            from ..lab.new_people import capture_views

            captured = _capture_if_empty(
                folder, lambda d: capture_views(context, arm, d, views=s.views_count, res=s.capture_res))
            info = check_source_views(folder, s.views_count)
        except (NeuralAvatarError, OSError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        arm.neural_avatar.avatar = bundle
        arm.neural_avatar.source_views = s.views_dir
        self.report({"INFO"}, f"'{arm.name}' now shows the person of {info['views']} source views"
                              + (" (captured)" if captured else ""))
        return {"FINISHED"}


class NEURAL_AVATAR_OT_avatar_from_image(bpy.types.Operator):
    """Add the person of one image to a generalizable GAUSSIAN_BONES avatar (appearance encoder,
    no training) and show them on the selected body; an empty Image Folder first gets the selected dressed
    body as the scene camera shows it now"""

    bl_idname = "neural_avatar.avatar_from_image"
    bl_label = "Avatar from Image"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        if not rig.deps_ok(self, "numpy", "torch", "safetensors", feature="Avatar from Image"):
            return {"CANCELLED"}
        from ..engine.avatars import zoo_avatar_path
        from ..neural.bundle import bundle_paths, read_bundle_meta
        from ..neural.new_people import avatar_from_image

        s = context.scene.neural_avatar
        arm = rig.find_body(context)
        try:
            if arm is None:
                raise NeuralAvatarError("Select the body that should show the new person.")
            folder = _folder(s.image_dir)
            own = bpy.path.abspath(arm.neural_avatar.avatar) if arm.neural_avatar.avatar else ""
            if own and bundle_paths(own)[0].is_file() and read_bundle_meta(own)["mode"] == "GAUSSIAN_BONES":
                bundle = own
            else:
                bundle = zoo_avatar_path("GAUSSIAN_BONES")
            from ..lab.new_people import capture_current_view, capture_views

            if context.scene.camera is not None:  # the body as the scene camera shows it now
                _capture_if_empty(folder, lambda d: capture_current_view(context, arm, d, s.capture_res))
            else:
                _capture_if_empty(folder, lambda d: capture_views(context, arm, d, views=1, res=s.capture_res))
            out = os.path.join(folder, f"avatar_{s.image_name}")
            res = avatar_from_image(bundle, folder, s.image_frame, s.image_name, out)
        except (NeuralAvatarError, OSError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        arm.neural_avatar.avatar = res["bundle"]
        arm.neural_avatar.identity = res["identity"]
        self.report({"INFO"}, f"'{arm.name}' shows '{res['identity']}' ({len(res['identities'])} people in the bundle)")
        return {"FINISHED"}


CLASSES = (NEURAL_AVATAR_OT_avatar_from_views, NEURAL_AVATAR_OT_avatar_from_image)

register, unregister = classes_registrar(CLASSES)
