"""Pure-torch neural rendering: cameras, input renderers, networks, bundles, training.

No bpy here."""
