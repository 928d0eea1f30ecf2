"""``python -m neural_avatar fit-identity``: a new person for a trained avatar, renderer frozen.

ANR's fitting (sec. 4, "new identities"): the shared renderer of ``--bundle`` stays as it is;
only the new identity's own parameters — the neural texture for NEURAL_TEXTURE (freshly
initialised, U[-1, 1] like every ANR identity), the per-limb appearance vectors for
GAUSSIAN_BONES — are optimised on ``--frames`` frames of the new person's capture. The result
(``OUT/avatar.*``) is a multi-identity bundle: the trained bundle's people plus ``--name``; pick
it per body in Blender (*Identity*). It is ``train --fit-identity`` with fitting defaults, so it
prints the same JSON progress lines, can be cancelled and resumed.
"""
from __future__ import annotations

import argparse
import sys

from ..common.guards import int_in


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m neural_avatar fit-identity",
                                 description="Fit a new identity with a trained avatar's renderer frozen.")
    ap.add_argument("--bundle", required=True, help="trained NEURAL_TEXTURE or GAUSSIAN_BONES bundle")
    ap.add_argument("--data", required=True, help="capture folder of the new person")
    ap.add_argument("--name", required=True, help="name of the new identity (letters, digits, _ . -)")
    ap.add_argument("--out", required=True, help="output folder (avatar.safetensors/.json)")
    ap.add_argument("--frames", type=int_in(1, 1_000_000, "--frames"), default=8, help="K frames to fit on")
    ap.add_argument("--steps", type=int_in(1, 1_000_000, "--steps"), default=300)
    ap.add_argument("--batch", type=int_in(1, 1024, "--batch"), default=4)
    ap.add_argument("--res", type=int_in(8, 16384, "--res"), default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args(argv)
    from ..neural.bundle import read_bundle_meta
    from . import train as train_cli

    mode = read_bundle_meta(a.bundle)["mode"]
    args = ["--data", a.data, "--mode", mode, "--out", a.out, "--init", a.bundle, "--fit-identity", a.name,
            "--frames-limit", str(a.frames), "--steps", str(a.steps), "--batch", str(a.batch), "--device", a.device,
            "--no-gan", "--val-every", "0", "--ckpt-every", "100"]
    if a.res:
        args += ["--res", str(a.res)]
    if a.resume:
        args.append("--resume")
    return train_cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
