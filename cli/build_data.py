"""``python -m neural_avatar build-body`` and ``build-motions``: rebuild the shipped data
(``data/bodies/neutral.npz`` from the anny package, ``data/motions/`` from pybullet's DeepMimic
clips). Both need the build-time packages of ``requirements-build.txt``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..common.deps import np
from ..body.build_default import LICENCE_TEXT, build as build_body, default_output_path
from ..errors import MotionFileError
from ..motion.deepmimic import DEFAULT_CLIPS, _default_out, build as build_motions, default_source


def body_main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m neural_avatar build-body [--output PATH] [--samples N] ...``"""
    p = argparse.ArgumentParser(prog="neural_avatar build-body",
                                description="Build the default body file from the anny package.")
    p.add_argument("--output", type=Path, default=default_output_path())
    p.add_argument("--samples", type=int, default=400)
    p.add_argument("--components", type=int, default=10)
    p.add_argument("--neighbours", type=int, default=400)
    p.add_argument("--ridge", type=float, default=1e-7)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        import anny  # noqa: F401
    except ImportError:
        print("build-body needs the anny package: pip install anny==0.6.2")
        return 2
    data = build_body(samples=args.samples, components=args.components, seed=args.seed,
                 neighbours=args.neighbours, ridge=args.ridge)
    report = data.pop("_report")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.output, **data)
    (args.output.parent / "LICENSE-anny.txt").write_text(LICENCE_TEXT)
    ev = ", ".join(f"{x:.3f}" for x in report["explained_variance"])
    print(f"wrote {args.output.name}: {data['v_template'].shape[0]} vertices, "
          f"{data['f'].shape[0]} faces, {args.output.stat().st_size / 1e6:.2f} MB")
    print(f"shape PCA: explained variance {ev} (total {report['explained_total']:.4f}); "
          f"held-out reconstruction error mean {report['recon_err_mm_mean']:.2f} mm, "
          f"max {report['recon_err_mm_max']:.2f} mm; held-out beta std "
          + ", ".join(f"{x:.2f}" for x in report["beta_std_holdout"]))
    print(f"joint regressor: worst error {report['joint_err_mm_max_train']:.2f} mm "
          f"({report['worst_joint']}), mean {report['joint_err_mm_mean_train']:.2f} mm, "
          f"held-out worst {report['joint_err_mm_max_holdout']:.2f} mm; "
          f"largest row sum of |weights| {report['regressor_abs_sum_max']:.1f}")
    print(f"T-posing moved vertices off the arms by at most {report['tpose_leak_mm']:.3g} mm")
    print(f"sample heights {report['height_m'][0]:.2f}-{report['height_m'][1]:.2f} m; "
          f"{report['seconds']:.0f} s")
    return 0


def motions_main(argv=None) -> int:
    """``build-motions``: convert pybullet's DeepMimic clips into ``data/motions/*.npz``."""
    ap = argparse.ArgumentParser(
        prog="neural_avatar build-motions",
        description="Convert pybullet 3.2.7's DeepMimic humanoid clips (zlib licence) into "
        "AMASS SMPL-H .npz files under data/motions/.",
    )
    ap.add_argument("--source", type=Path, default=None,
                    help="pybullet_data folder, pybullet wheel (.whl) or sdist (.tar.gz); "
                    "default: the installed pybullet_data package")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: the "
                    "package's data/motions)")
    ap.add_argument("--clips", nargs="+", default=list(DEFAULT_CLIPS),
                    help=f"clip names (default: {' '.join(DEFAULT_CLIPS)})")
    ap.add_argument("--smpl-landmarks", action="store_true",
                    help="fit root height and translation to average SMPL landmarks instead "
                    "of the default body")
    ap.add_argument("--preview", type=Path, default=None,
                    help="also write side/front PNG previews of each clip into this folder")
    args = ap.parse_args(argv)
    try:
        source = args.source if args.source is not None else default_source()
        build_motions(source, args.out or _default_out(), args.clips,
              fit_default_body=not args.smpl_landmarks, preview=args.preview)
    except MotionFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
