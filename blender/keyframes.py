"""Writing motion to a body rig as keyframes, in bulk.

One F-curve per channel, filled with ``keyframe_points.add`` + ``foreach_set`` (no
per-key ``keyframe_insert``). Works with Blender 4.2–4.3 (``Action.fcurves``) and with
layered actions (4.4+/5.0: slots + channelbags).
"""
from __future__ import annotations

import bpy
from ..common.deps import np

LINEAR = 1  # enum index of 'LINEAR' in Keyframe.interpolation


def _fcurve_container(action, arm_obj):
    """Something with ``fcurves.new`` / ``groups.new`` for this action and object."""
    if hasattr(action, "slots") and hasattr(action, "layers"):
        from bpy_extras import anim_utils

        slot = action.slots.new(id_type="OBJECT", name=arm_obj.name)
        arm_obj.animation_data.action_slot = slot
        return anim_utils.action_ensure_channelbag_for_slot(action, slot)
    return action  # Blender 4.2/4.3: legacy action.fcurves


def write_rig_keys(arm_obj, action_name: str, frame_start: int, bone_names: list[str],
                   quats: np.ndarray, root_bone: str | None = None, root_loc: np.ndarray | None = None):
    """Create an action named ``action_name`` on ``arm_obj`` with ``quats (N,J,4)`` (w,x,y,z) on
    ``bone_names`` and ``root_loc (N,3)`` on ``root_bone``'s location, keyed at
    ``frame_start … frame_start+N-1``. Returns the action. On any failure the action is removed."""
    n = quats.shape[0]
    frames = np.arange(frame_start, frame_start + n, dtype=np.float32)
    action = bpy.data.actions.new(action_name)
    try:
        if arm_obj.animation_data is None:
            arm_obj.animation_data_create()
        arm_obj.animation_data.action = action
        bag = _fcurve_container(action, arm_obj)
        co = np.empty((n, 2), dtype=np.float32)
        co[:, 0] = frames
        interp = np.full(n, LINEAR, dtype=np.int32)

        group_kw = "action_group" if bag is action else "group_name"  # 4.2 vs layered actions

        def channel(data_path, index, values, group):
            fc = bag.fcurves.new(data_path, index=index, **{group_kw: group})
            fc.keyframe_points.add(n)
            co[:, 1] = values
            fc.keyframe_points.foreach_set("co", co.ravel())
            fc.keyframe_points.foreach_set("interpolation", interp)
            fc.update()

        for j, name in enumerate(bone_names):
            pb = arm_obj.pose.bones.get(name)
            if pb is None:
                continue
            pb.rotation_mode = "QUATERNION"
            path = f'pose.bones["{name}"].rotation_quaternion'
            for c in range(4):
                channel(path, c, quats[:, j, c], name)
        if root_bone is not None and root_loc is not None:
            path = f'pose.bones["{root_bone}"].location'
            for c in range(3):
                channel(path, c, root_loc[:, c], root_bone)
    except Exception:
        bpy.data.actions.remove(action)
        raise
    return action
