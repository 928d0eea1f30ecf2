"""Blender UI layer: PropertyGroups, add-on preferences and panels."""
from .. import modules_registrar
from . import panels, preferences, properties

register, unregister = modules_registrar(lambda: (properties, preferences, panels))
