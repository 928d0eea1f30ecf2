"""Training: capture folders (:mod:`.dataset`, format in ``DATASET_FORMAT.md``; real-capture
converters such as :mod:`.convert_zju`), losses (:mod:`.losses`, VGG trunk :mod:`.vgg`) and the
trainer with the papers' schedules (:mod:`.trainer`)."""
