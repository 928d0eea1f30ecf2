"""Building and updating body rigs in Blender (bpy side of the body layer).

A body is an armature object (``Object.neural_avatar.is_body``) whose object space is the
body model's own frame (SMPL: Y-up metres). Every bone's head sits at its joint and every
bone points along model +Y with roll 0, so each bone's local frame *is* the model frame and
an axis-angle vector ``v`` is ``rotation_quaternion = Quaternion(v/|v|, |v|)``. The armature
object carries a +90° X rotation so the body stands Z-up in Blender (model ``(x, y, z)`` →
Blender ``(x, -z, y)``). Its child mesh holds the model's vertices/faces, one vertex group
per joint (skinning weights), an Armature modifier, the UV map and a colour attribute.

Shape (SMPL eq. 1–3: ``T + B_S(β)``, ``J(β) = 𝒥 (T + B_S(β))``) is applied to the rest mesh
and to the bone heads whenever the betas change; pose correctives ``B_P(θ)`` are written to a
shape key by a depsgraph/frame handler whenever the pose changes (only for models with
non-zero ``posedirs``).
"""
from __future__ import annotations

import math
import time

import bpy
from ..common.deps import np

from ..common.deps import lazy

kinematics = lazy("..body.kinematics", __package__)
from ..errors import BodyModelError, NeuralAvatarError

BONE_LENGTH = 0.08  # metres; bones only need a visible length, their frames are what matter
COLOR_ATTR = "neural_avatar_color"
CORRECTIVE_KEY = "neural_avatar_correctives"
_MODEL_CACHE: dict = {}
STATS = {"shape_ms": [], "correctives_ms": []}  # measured costs, read by tests/bench


# --------------------------------------------------------------------------- model lookup
def _prefs_model_dir() -> str:
    from ..ui.preferences import get_prefs

    prefs = get_prefs()
    return bpy.path.abspath(prefs.body_model_dir) if prefs and prefs.body_model_dir else ""


def resolve_model(model_type: str, gender: str, model_file: str = "", folder: str | None = None):
    """Load (cached) the body model for a rig: the embedded default, or a licensed file."""
    from .. import body

    key = (model_type, gender, model_file)
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    if model_type == "DEFAULT":
        model = body.load_default()
    else:
        mt = {"SMPL": "smpl", "SMPLH": "smplh", "SMPLX": "smplx"}[model_type]
        path = bpy.path.abspath(model_file) if model_file else ""
        if not path:
            folder = folder if folder is not None else _prefs_model_dir()
            if not folder:
                raise BodyModelError(
                    f"No body-model folder set. Put your licensed {model_type} files in a folder and "
                    "choose it in Preferences → Add-ons → Neural Avatar → Body Model Folder.")
            path = body.find_model_file(folder, mt, gender.lower())
        model = body.load_model_file(path, mt, gender.lower())
        key = (model_type, gender, model_file or path)
    _MODEL_CACHE[key] = model
    return model


def model_for(obj):
    s = obj.neural_avatar
    return resolve_model(s.model_type, s.gender, s.model_file)


def body_armatures(scene):
    return [o for o in scene.objects if o.type == "ARMATURE" and o.neural_avatar.is_body]


BODY_MESH_TAG = "neural_avatar_body_mesh"


def body_mesh(arm_obj):
    """The body's own mesh: the child tagged at creation (other children, e.g. clothes or
    hair parented to the armature, are not the body); else the first mesh child."""
    meshes = [c for c in arm_obj.children if c.type == "MESH"]
    for child in meshes:
        if child.get(BODY_MESH_TAG):
            return child
    return meshes[0] if meshes else None


def find_body(context):
    """The body rig the user means: the active object or its armature parent."""
    obj = context.active_object if hasattr(context, "active_object") else None
    if obj is None:
        return None
    if obj.type == "ARMATURE" and obj.neural_avatar.is_body:
        return obj
    if obj.parent is not None and obj.parent.type == "ARMATURE" and obj.parent.neural_avatar.is_body:
        return obj.parent
    return None


def current_betas(arm_obj, model) -> np.ndarray:
    n = min(model.num_betas, len(arm_obj.neural_avatar.betas))
    b = np.zeros(model.num_betas)
    b[:n] = np.asarray(arm_obj.neural_avatar.betas[:n], dtype=np.float64)
    return b


# --------------------------------------------------------------------------- creation
def create_body(context, model, name: str = "Body", model_type: str = "DEFAULT", gender: str = "NEUTRAL",
                model_file: str = "", collection=None):
    """Create the armature + mesh for ``model``; returns the armature object.

    Nothing is linked to the scene until everything has been built, so a failure leaves the
    scene unchanged.
    """
    collection = collection or context.scene.collection
    v_rest, j_rest = kinematics.shape(model, np.zeros(model.num_betas))
    names = list(model.joint_names)
    parents = list(int(p) for p in model.parents)

    arm_data = bpy.data.armatures.new(name + "_rig")
    arm_obj = bpy.data.objects.new(name, arm_data)
    mesh = bpy.data.meshes.new(name + "_mesh")
    mesh_obj = bpy.data.objects.new(name + "_mesh", mesh)
    try:
        _build_mesh(mesh, model, v_rest)
        collection.objects.link(arm_obj)
        collection.objects.link(mesh_obj)
        arm_obj.rotation_mode = "XYZ"
        arm_obj.rotation_euler = (math.pi / 2, 0.0, 0.0)
        arm_data.display_type = "STICK"
        arm_obj.show_in_front = True
        _build_bones(context, arm_obj, names, parents, j_rest)
        for pb in arm_obj.pose.bones:
            pb.rotation_mode = "QUATERNION"
        mesh_obj.parent = arm_obj
        mesh_obj[BODY_MESH_TAG] = True
        for j, jn in enumerate(names):
            vg = mesh_obj.vertex_groups.new(name=jn)
            w = model.weights[:, j]
            idx = np.nonzero(w > 1e-6)[0]
            # vertex groups have no foreach API: one call per influenced vertex (~4 per vertex).
            for i in idx.tolist():
                vg.add([i], float(w[i]), "REPLACE")
        mod = mesh_obj.modifiers.new("Armature", "ARMATURE")
        mod.object = arm_obj
        mod.use_vertex_groups = True
        s = arm_obj.neural_avatar
        s.is_body = True
        s.model_type = model_type
        s.gender = gender
        s.model_file = model_file
        s.model_id = str(model.model_id)
        s.num_betas = min(model.num_betas, len(s.betas))
        if model.has_posedirs:
            mesh_obj.shape_key_add(name="Basis", from_mix=False)
            key = mesh_obj.shape_key_add(name=CORRECTIVE_KEY, from_mix=False)
            key.value = 1.0
    except Exception:
        for o in (mesh_obj, arm_obj):
            if o.name in bpy.data.objects:
                bpy.data.objects.remove(o)
        bpy.data.meshes.remove(mesh) if mesh.users == 0 else None
        bpy.data.armatures.remove(arm_data) if arm_data.users == 0 else None
        raise
    return arm_obj


def _build_mesh(mesh, model, v_rest):
    faces = np.asarray(model.faces, dtype=np.int64)
    mesh.from_pydata(v_rest.astype(np.float32).tolist(), [], faces.tolist())
    if model.vt is not None and model.ft is not None:
        uv_layer = mesh.uv_layers.new(name="UVMap")
        loop_uv = np.asarray(model.vt, dtype=np.float32)[np.asarray(model.ft, dtype=np.int64).reshape(-1)]
        # from_pydata keeps face order and corner order, so loop i = face i//3, corner i%3.
        uv_layer.data.foreach_set("uv", loop_uv.ravel())
    attr = mesh.color_attributes.new(COLOR_ATTR, "FLOAT_COLOR", "POINT")
    col = np.full((len(mesh.vertices), 4), 0.8, dtype=np.float32)
    col[:, 3] = 1.0
    attr.data.foreach_set("color", col.ravel())
    mesh.color_attributes.active_color = attr
    if hasattr(mesh, "shade_smooth"):
        mesh.shade_smooth()
    mesh.update()


def _edit_mode(context, arm_obj):
    """Context manager-ish helper: enter edit mode on ``arm_obj``, return a restore function."""
    view_layer = context.view_layer
    prev_active = view_layer.objects.active
    prev_mode = arm_obj.mode
    if view_layer.objects.get(arm_obj.name) is None:
        raise BodyModelError(f"The body '{arm_obj.name}' is not in the current view layer; "
                             "its joints cannot be updated.")
    hidden = arm_obj.hide_get()
    arm_obj.hide_set(False)
    view_layer.objects.active = arm_obj
    if context.mode != "OBJECT" and prev_active is not None and prev_active != arm_obj:
        with context.temp_override(active_object=prev_active, object=prev_active):
            bpy.ops.object.mode_set(mode="OBJECT")
    bpy.ops.object.mode_set(mode="EDIT")

    def restore():
        bpy.ops.object.mode_set(mode=prev_mode if prev_mode in {"OBJECT", "POSE"} else "OBJECT")
        view_layer.objects.active = prev_active
        arm_obj.hide_set(hidden)

    return restore


def _build_bones(context, arm_obj, names, parents, joints):
    restore = _edit_mode(context, arm_obj)
    try:
        ebs = arm_obj.data.edit_bones
        bones = []
        for n, j in zip(names, joints):
            eb = ebs.new(n)
            eb.head = tuple(j)
            eb.tail = (j[0], j[1] + BONE_LENGTH, j[2])
            eb.roll = 0.0
            bones.append(eb)
        for i, p in enumerate(parents):
            if p >= 0:
                bones[i].parent = bones[p]
                bones[i].use_connect = False
    finally:
        restore()


def set_rest_joints(context, arm_obj, joints: np.ndarray):
    """Move the bone heads (rest pose) to ``joints`` (J,3) in model/object space."""
    restore = _edit_mode(context, arm_obj)
    try:
        ebs = arm_obj.data.edit_bones
        model_names = list(model_for(arm_obj).joint_names)
        for n, j in zip(model_names, joints):
            eb = ebs.get(n)
            if eb is None:
                continue
            eb.head = tuple(j)
            eb.tail = (j[0], j[1] + BONE_LENGTH, j[2])
            eb.roll = 0.0
    finally:
        restore()


# --------------------------------------------------------------------------- shape & correctives
def pose_axis_angle(arm_obj, names) -> np.ndarray:
    """Current pose as (J,3) axis-angle vectors read from the pose bones' quaternions."""
    out = np.zeros((len(names), 3))
    pbs = arm_obj.pose.bones
    for i, n in enumerate(names):
        pb = pbs.get(n)
        if pb is None:
            continue
        q = pb.rotation_quaternion if pb.rotation_mode == "QUATERNION" else pb.matrix_basis.to_quaternion()
        axis, angle = q.to_axis_angle()
        out[i] = np.asarray(axis) * angle
    return out


def _write_coords(mesh_obj, coords: np.ndarray, key_name: str | None = None):
    mesh = mesh_obj.data
    flat = np.ascontiguousarray(coords, dtype=np.float32).ravel()
    if mesh.shape_keys is None:
        mesh.vertices.foreach_set("co", flat)
    elif key_name is None:
        mesh.shape_keys.key_blocks[0].data.foreach_set("co", flat)
        mesh.vertices.foreach_set("co", flat)
    else:
        kb = mesh.shape_keys.key_blocks.get(key_name)
        if kb is not None:
            kb.data.foreach_set("co", flat)
    mesh.update()


def apply_shape(context, arm_obj):
    """SMPL eq. (shape): rest mesh ← T + B_S(β), bone heads ← 𝒥(T + B_S(β)); then correctives."""
    t0 = time.perf_counter()
    model = model_for(arm_obj)
    v_shaped, joints = kinematics.shape(model, current_betas(arm_obj, model))
    mesh_obj = body_mesh(arm_obj)
    if mesh_obj is not None:
        _write_coords(mesh_obj, v_shaped)
    set_rest_joints(context, arm_obj, joints)
    update_correctives(arm_obj, force=True)
    STATS["shape_ms"].append((time.perf_counter() - t0) * 1e3)


def on_betas_changed(arm_obj):
    import math

    betas = list(arm_obj.neural_avatar.betas)
    if not all(math.isfinite(b) for b in betas):
        # NaN/inf (from a script or a file) would make the mesh and skeleton NaN: never stored.
        print(f"Neural Avatar: non-finite shape values on {arm_obj.name} were reset to 0.")
        arm_obj.neural_avatar.betas = [b if math.isfinite(b) else 0.0 for b in betas]  # re-enters once
        return
    try:
        apply_shape(bpy.context, arm_obj)
    except BodyModelError as e:  # surfaced in the UI by the panel/status bar
        print(f"Neural Avatar: {e}")


_POSE_HASH: dict = {}


def update_correctives(arm_obj, force: bool = False) -> bool:
    """Pose correctives (SMPL eq. 9: B_P(θ) = Σ (R_n(θ) − R_n(θ*)) P_n) into the corrective key."""
    s = arm_obj.neural_avatar
    mesh_obj = body_mesh(arm_obj)
    if mesh_obj is None or mesh_obj.data.shape_keys is None:
        return False
    kb = mesh_obj.data.shape_keys.key_blocks.get(CORRECTIVE_KEY)
    if kb is None:
        return False
    model = model_for(arm_obj)
    pose = pose_axis_angle(arm_obj, model.joint_names)
    h = (hash(pose.round(7).tobytes()), hash(tuple(round(b, 7) for b in s.betas)), s.auto_correctives)
    if not force and _POSE_HASH.get(arm_obj.name) == h:
        return False
    _POSE_HASH[arm_obj.name] = h
    t0 = time.perf_counter()
    v_shaped, _ = kinematics.shape(model, current_betas(arm_obj, model))
    offsets = kinematics.corrective_offsets(model, pose) if s.auto_correctives else 0.0
    kb.data.foreach_set("co", np.ascontiguousarray(v_shaped + offsets, dtype=np.float32).ravel())
    mesh_obj.data.update()
    STATS["correctives_ms"].append((time.perf_counter() - t0) * 1e3)
    return True


def deps_ok(op, *modules, feature="") -> bool:
    """An operator's up-front check: report what is missing and return False (nothing changed)."""
    from ..common import deps

    try:
        deps.require(*modules, feature=feature)
    except NeuralAvatarError as e:
        op.report({"ERROR"}, str(e))
        return False
    return True


def _on_depsgraph(scene, depsgraph=None):
    from ..common import deps

    if deps.missing_modules(("numpy",)):  # a stock Blender without numpy: nothing to keep up to date
        return
    for arm in body_armatures(scene):
        try:
            if model_for(arm).has_posedirs:
                update_correctives(arm)
        except Exception as e:  # noqa: BLE001 - a handler must never raise into Blender
            print(f"Neural Avatar: pose correctives not updated for {arm.name}: {e}")


def register():
    from bpy.app.handlers import persistent

    global _handler
    _handler = persistent(_on_depsgraph)
    bpy.app.handlers.depsgraph_update_post.append(_handler)
    bpy.app.handlers.frame_change_post.append(_handler)


def unregister():
    for lst in (bpy.app.handlers.depsgraph_update_post, bpy.app.handlers.frame_change_post):
        for h in list(lst):
            if getattr(h, "__name__", "") == "_on_depsgraph" and getattr(h, "__module__", "") == __name__:
                lst.remove(h)
    _MODEL_CACHE.clear()
    _POSE_HASH.clear()


_handler = None
