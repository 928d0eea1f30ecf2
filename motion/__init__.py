"""Motion data for SMPL-family bodies: AMASS / SMPL ``.npz`` loading and validation,
resampling by time (slerp), and the converter that builds the bundled open clips.

Pure numpy: no bpy here (the Blender key writing lives in ``blender/``).
"""

from .amass import (
    FPS_KEYS,
    SMPL_JOINT_NAMES,
    SMPLH_JOINT_NAMES,
    SMPLX_JOINT_NAMES,
    SOURCE_TYPES,
    Motion,
    joint_names_for,
    load_motion,
    save_amass_smplh,
)
from .resample import (
    axis_angle_from_quat,
    make_quats_continuous,
    output_frame_count,
    quat_from_axis_angle,
    resample,
    slerp,
    to_rig_quaternions,
)


def bundled_motions_dir():
    """The folder of the bundled open clips (``data/motions`` in the package)."""
    from pathlib import Path

    return Path(__file__).resolve().parent.parent / "data" / "motions"


def bundled_motion_paths():
    """Sorted paths of the bundled ``*_poses.npz`` clips."""
    return sorted(bundled_motions_dir().glob("*_poses.npz"))


__all__ = [
    "FPS_KEYS",
    "SMPL_JOINT_NAMES",
    "SMPLH_JOINT_NAMES",
    "SMPLX_JOINT_NAMES",
    "SOURCE_TYPES",
    "Motion",
    "joint_names_for",
    "load_motion",
    "save_amass_smplh",
    "axis_angle_from_quat",
    "make_quats_continuous",
    "output_frame_count",
    "quat_from_axis_angle",
    "resample",
    "slerp",
    "to_rig_quaternions",
    "bundled_motions_dir",
    "bundled_motion_paths",
]
