"""Evaluation: metrics (:mod:`.metrics`), the classical per-vertex-colour baseline
(:mod:`.baseline`), reports (:mod:`.report`) and the neural-stage benchmark (:mod:`.bench_core`)."""
