"""The lab (bpy): making and measuring data. The procedural demo subject and the subject
builder (:mod:`.subject`), capture of training datasets (:mod:`.capture`), evaluation against
ground truth (:mod:`.evaluate`), engine benchmarks (:mod:`.bench`), demo scenes
(:mod:`.scene_setup`, :mod:`.demo`). It uses the body layer and the pure core; operators and
the CLI call it. Nothing here is registered with Blender."""
