"""Input renderers: what each network sees. Cameras (:mod:`.camera`), SMPLpix's vertex projection
(:mod:`.project`), the z-buffer rasteriser and neural textures of ANR (:mod:`.raster`), and
HumanViewSynthesis's Gaussian bone primitives (:mod:`.gaussians`)."""
