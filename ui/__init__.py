"""Blender UI layer: PropertyGroups, add-on preferences and panels."""
from . import preferences, properties, panels

_MODULES = (properties, preferences, panels)


def register():
    for m in _MODULES:
        m.register()


def unregister():
    for m in reversed(_MODULES):
        m.unregister()
