"""``python -m neural_avatar average``: one bundle from several snapshots of a training run.

Checkpoint (Polyak) averaging: the floating-point tensors of the given bundles — snapshots of
one avatar, e.g. two validation checkpoints of an adversarial run — are averaged into
``--out`` (``neural/bundle.py`` :func:`average_bundles`). The bundles must agree in mode,
configuration, body and tensor shapes; the result's training record names its inputs.
"""
from __future__ import annotations

import argparse
import json


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m neural_avatar average",
                                 description="Average the weights of snapshots of one avatar into a new bundle.")
    ap.add_argument("bundles", nargs="+", help="two or more bundles (X, X.json or X.safetensors) of one avatar")
    ap.add_argument("--out", required=True, help="the averaged bundle (X: writes X.safetensors and X.json)")
    a = ap.parse_args(argv)
    from ..neural.bundle import average_bundles

    st, js = average_bundles(a.bundles, a.out)
    print(json.dumps({"event": "done", "bundle": str(st), "json": str(js), "inputs": len(a.bundles)}))
    return 0
