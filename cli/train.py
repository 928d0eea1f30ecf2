"""``python -m neural_avatar train``: train an avatar (any mode) from a dataset folder; ``torchrun`` for several processes."""
from __future__ import annotations

import json
import signal
import sys
from typing import List, Optional

from ..errors import NeuralAvatarError
import argparse

from ..common.guards import float_in, int_in
from ..neural.config import MODES
from ..neural.training.trainer import TrainConfig, pixel_weight_field_name, train, vgg_weight_field_name


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry: prints one JSON object per line (``{"event": "progress", "step", "loss",
    "eta_s"}``, ``validation``, ``done``/``cancelled``/``error``) for the Blender operator.
    SIGTERM/SIGINT cancel gracefully (checkpoint written). Exit code 0 / 1 (cancelled) / 2."""
    args = build_parser().parse_args(argv)
    stop = {"flag": False}

    def on_signal(signum, _frame):
        stop["flag"] = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(sig, on_signal)
        except (ValueError, OSError):  # not the main thread
            pass

    def emit(ev: dict) -> None:
        print(json.dumps(ev), flush=True)

    try:
        cfg = TrainConfig(data=args.data, mode=args.mode, out=args.out, steps=args.steps, res=args.res,
                          batch=args.batch, lr=args.lr, lr_identity=args.lr_identity, seed=args.seed,
                          log_every=args.log_every,
                          val_every=args.val_every, ckpt_every=args.ckpt_every, device=args.device,
                          resume=args.resume, use_gan=False if args.no_gan else (True if args.gan else None),
                          perceptual=args.perceptual, body_dir=args.body_dir,
                          avatar=json.loads(args.avatar_json) if args.avatar_json else {},
                          patch=args.patch, precision=args.precision, init=args.init, w_haze=args.haze_weight,
                          w_mask=args.mask_weight,
                          scale_range=list(args.scale_range) if args.scale_range else None,
                          threads=args.threads, stage1_fraction=args.stage1_fraction,
                          time_limit_s=args.time_limit, fit_identity=args.fit_identity,
                          frames_limit=args.frames_limit, color_permute=args.color_permute,
                          color_augment=args.color_augment,
                          **({"split_optimization": False} if args.fit_identity else {}),
                          **({"val_frames": args.val_frames} if args.val_frames else {}),
                          **vgg_weight_field(args.mode, args.vgg_weight),
                          **pixel_weight_field(args.mode, args.pixel_weight))
        res = train(cfg, progress=emit, should_stop=lambda: stop["flag"])
    except NeuralAvatarError as e:
        emit({"event": "error", "message": str(e)})
        return 2
    except Exception as e:  # noqa: BLE001 - the Blender operator reads this line, never a bare traceback
        import traceback

        traceback.print_exc(file=sys.stderr)
        emit({"event": "error", "message": f"Training failed: {type(e).__name__}: {e}"})
        return 2
    return 0 if res["status"] == "finished" else 1


def vgg_weight_field(mode: str, weight: Optional[float]) -> dict:
    """The TrainConfig field ``--vgg-weight`` sets for ``mode`` (each mode's perceptual weight
    has its own default); ``{}`` when not given."""
    return {} if weight is None else {vgg_weight_field_name(mode): float(weight)}


def pixel_weight_field(mode: str, weight: Optional[float]) -> dict:
    """The TrainConfig field ``--pixel-weight`` sets for ``mode`` (SMPLpix's extra image L1,
    default 0; ANR's eq. 3 pixel loss, default 1; HVS's eq. 17 L1, default 10); ``{}`` when not
    given. AniPixel has none: the flag is refused there rather than ignored."""
    if weight is None:
        return {}
    name = pixel_weight_field_name(mode)
    if name is None:
        raise NeuralAvatarError(f"--pixel-weight has no meaning for {mode}: its image loss weights are "
                                f"the paper's (TrainConfig.w_pixel_*).")
    return {name: float(weight)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m neural_avatar train",
                                description="Train a neural avatar on a capture folder.")
    p.add_argument("--data", required=True, help="capture folder (dataset.json, images/, ...)")
    p.add_argument("--mode", required=True, choices=MODES)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--steps", type=int_in(1, 10_000_000, "--steps"), default=2000)
    p.add_argument("--res", type=int_in(8, 16384, "--res"), default=None, help="training resolution (longer side)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--lr-identity", type=float, default=None,
                   help="learning rate of the per-identity parameters (ANR's texture: 1e-3; SMPLpix's "
                        "descriptors; HVS's appearance): default the mode's own")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--val-every", type=int, default=200)
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--device", default="cpu")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt")
    gan = p.add_mutually_exclusive_group()
    gan.add_argument("--no-gan", action="store_true", help="disable the adversarial loss")
    gan.add_argument("--gan", action="store_true",
                     help="enable the adversarial loss where the mode's default has none: HVS's adversarial "
                          "fine-tuning (eq. 18, lambda_A = 1 in eq. 21), started from a trained bundle (--init)")
    p.add_argument("--perceptual", default="auto", choices=("auto", "vgg", "l1_msssim"))
    p.add_argument("--avatar-json", default=None, help="JSON object of AvatarConfig overrides")
    p.add_argument("--body-dir", default=None, help="folder with SMPL-family model files (non-default bodies)")
    p.add_argument("--patch", type=int_in(16, 4096, "--patch"), default=None,
                   help="train on PATCH x PATCH windows around the body at the capture's pixel scale "
                        "(cost of a step follows the patch; the engine renders at the capture's scale)")
    p.add_argument("--scale-range", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="random rescale range (default 0.5 1.0 with --patch, ANR's 0.5 1.25 otherwise)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="bf16 autocast of the networks and losses (pays on CPUs with native bf16 and on GPUs)")
    p.add_argument("--init", default=None, help="start from this bundle's weights (same mode; coarse-to-fine)")
    p.add_argument("--haze-weight", type=float, default=1.0,
                   help="weight of the penalty on alpha outside the dilated ground-truth silhouette")
    p.add_argument("--mask-weight", type=float_in(0.0, 1e4, "--mask-weight"), default=1.0,
                   help="weight of the mask BCE (ANR eq. 4; also SMPLpix's and HVS's alpha): raise it when "
                        "the predicted alpha has holes inside the body")
    p.add_argument("--pixel-weight", type=float_in(0.0, 1e4, "--pixel-weight"), default=None,
                   help="weight of the image L1 term: SMPLpix's beside the VGG loss of eq. 6 (default 0 = the "
                        "paper's loss; keeps the colours where the perceptual terms let them drift), ANR's "
                        "eq. 3 pixel loss (default 1), HVS's eq. 17 (default 10)")
    p.add_argument("--vgg-weight", type=float_in(0.0, 1e4, "--vgg-weight"), default=None,
                   help="weight of the perceptual (VGG) term: SMPLpix eq. 6 and ANR's feature loss (default 1), "
                        "HVS's lambda_phi of eq. 21 (default 10; VGG at 10 turned a 512² HVS run blue, where "
                        "the L1 term is ten times smaller), AniPixel's eq. 8 (default 0.1)")
    p.add_argument("--stage1-fraction", type=float, default=0.5,
                   help="SMPLpix: share of the steps before the adversarial stage (eq. 7)")
    p.add_argument("--threads", type=int_in(0, 1024, "--threads"), default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--color-permute", action="store_true",
                   help="SMPLpix on several people: permute the RGB channels of input colours and target together "
                        "(half the steps), so the network paints the colours it is given (unseen subjects); "
                        "the same as --color-augment permute")
    p.add_argument("--color-augment", choices=("none", "permute", "hue"), default="none",
                   help="SMPLpix on several people: transform the linear albedo of the input colours and the "
                        "target alike on half the steps: 'permute' the channels, or 'hue' (permutation, "
                        "saturation 0.6-1.3 and a random hue rotation about the grey axis)")
    p.add_argument("--fit-identity", default=None, metavar="NAME",
                   help="fit a new identity NAME with the renderer of --init frozen (ANR / HVS)")
    p.add_argument("--frames-limit", type=int_in(0, 10_000_000, "--frames-limit"), default=0,
                   help="use at most K train frames, evenly spaced (0 = all)")
    p.add_argument("--time-limit", type=float, default=0.0,
                   help="finish normally (validation, bundle) after this many seconds; 0 = run all steps")
    p.add_argument("--val-frames", type=int_in(1, 100000, "--val-frames"), default=None,
                   help="validation frames per validation (default 8)")
    return p
