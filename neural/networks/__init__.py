"""The networks: SMPLpix's UNet (:mod:`.unet`), ANR's two-stage renderer (:mod:`.anr`) and
HumanViewSynthesis's style-modulated UNet (:mod:`.style`). Encoders added later go here."""
