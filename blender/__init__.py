"""The Blender body layer (bpy): building a body's rig and mesh, which mesh and which model
belong to a body, shape and pose-corrective updates, key writing and motion import. Used by
:mod:`..operators` (thin shells), :mod:`..engine` (reading bodies for a render) and
:mod:`..lab` (demo subject, capture, evaluation); it imports none of them."""
from . import rig


def register():
    rig.register()


def unregister():
    rig.unregister()
