"""Pure helpers every layer may use (no bpy; numpy and torch only when a function needs them):
:mod:`.deps` (which packages a feature needs, lazy imports, the dependency installer),
:mod:`.guards` (checks on untrusted input: memory budget, names, paths, JSON/npz/npy/image
headers), :mod:`.paths` (files shipped with the package)."""
