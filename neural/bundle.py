"""Model bundles: a trained avatar (network + per-identity data + body-model buffers) as a
pair of files ``X.safetensors`` (every tensor of the state dict) and ``X.json`` (metadata:
format version, mode, resolution, body model, channels, the full :class:`AvatarConfig`,
training information, the SHA-256 of the tensor file). No pickle anywhere: safetensors
cannot carry code and JSON is parsed as data.

Writing is atomic per file (temporary file in the same folder, fsync, ``os.replace``); the
JSON is written last and names the tensor file's hash, so a half-written pair is reported
as inconsistent instead of loading mismatched weights.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import BundleError, NeuralAvatarError, ResourceLimitError
from ..common.guards import check_bytes, fmt_bytes
from .avatar import Avatar, GaussianBonesAvatar, NeuralTextureAvatar, VertexProjectionAvatar
from .config import GAUSSIAN_BONES, MODES, NEURAL_TEXTURE, PIXEL_ALIGNED, AvatarConfig

FORMAT = "neural_avatar.bundle"
FORMAT_VERSION = 1
_SUFFIXES = (".safetensors", ".json")


def bundle_paths(path) -> tuple[Path, Path]:
    """``(X.safetensors, X.json)`` for ``X``, ``X.safetensors`` or ``X.json``."""
    p = Path(os.fspath(path))
    if p.suffix in _SUFFIXES:
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(target: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temp file next to ``target``, fsync, rename over ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a saved file gets the usual permissions
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, (OSError, RuntimeError)) and not isinstance(e, NeuralAvatarError):
            # torch.save on a full disk says "unexpected pos …": say what happened instead.
            import shutil

            try:
                free = shutil.disk_usage(target.parent).free
            except OSError:
                free = -1
            if free >= 0 and (free < (64 << 20) or getattr(e, "errno", None) == 28 or "unexpected pos" in str(e)):
                raise NeuralAvatarError(
                    f"Could not write {target.name}: the disk is full ({free / (1 << 20):.0f} MB free in "
                    f"{target.parent}). Free some space; the previous {target.name}, if any, is unchanged.") from None
            raise NeuralAvatarError(f"Could not write {target.name} in {target.parent}: "
                                    f"{getattr(e, 'strerror', None) or e}. The previous file, if any, is unchanged.") from None
        raise


IDENTITY_PREFIX = "identities."


def save_bundle(avatar: Avatar, path, extra_meta: dict | None = None,
                identities: "list[tuple[str, dict]] | None" = None) -> tuple[Path, Path]:
    """Save ``avatar`` as ``X.safetensors`` + ``X.json`` and return both paths.

    ``extra_meta``: JSON-serialisable dict; its ``"training"`` entry (epochs, losses, data
    set, ...) is stored as the bundle's training info, the rest under ``"extra"``.
    ``identities``: a multi-identity bundle (one shared renderer, several people):
    ``[(name, {"identity.<param>": tensor, ...}), ...]``, the first being the avatar's own
    identity. The others are stored as ``identities.<name>.<param>`` (same shapes as the
    avatar's ``identity.*``); the JSON lists the names under ``"identities"``."""
    from safetensors.torch import save_file

    from ..common.guards import safe_name

    st_path, js_path = bundle_paths(path)
    cfg: AvatarConfig = avatar.config
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in avatar.state_dict().items()}
    names = []
    for i, (ident, params) in enumerate(identities or []):
        safe_name(ident, "identity name", BundleError)
        if ident in names:
            raise BundleError(f"The identity name '{ident}' is used twice.")
        names.append(ident)
        if i == 0:
            continue
        for k, v in params.items():
            if not k.startswith("identity.") or k not in tensors or tuple(v.shape) != tuple(tensors[k].shape):
                raise BundleError(f"Identity '{ident}': '{k}' is not one of the avatar's identity tensors.")
            tensors[f"{IDENTITY_PREFIX}{ident}.{k[len('identity.'):]}"] = v.detach().to("cpu").contiguous().clone()
    extra = dict(extra_meta or {})
    training = extra.pop("training", {})
    from .. import __version__ as pkg_version

    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mode": cfg.mode,
        "resolution": cfg.resolution,
        "body_model_id": cfg.body_model_id,
        "num_verts": cfg.num_verts,
        "num_joints": cfg.num_joints,
        "channels": {"input": avatar.input_channels, "output": avatar.output_channels},
        "config": cfg.to_dict(),
        "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in tensors.items()},
        "training": training,
        "extra": extra,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "neural_avatar_version": pkg_version,
    }
    if names:
        meta["identities"] = names
    try:
        text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise BundleError(f"The bundle metadata cannot be written as JSON: {e}") from e
    atomic_write(st_path, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT, "mode": cfg.mode}))
    meta["tensors_sha256"] = _sha256(st_path)
    text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False)

    def write_json(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(js_path, write_json)
    return st_path, js_path


def read_bundle_meta(path) -> dict:
    """The validated JSON metadata of a bundle (no tensors are read).

    Raises :class:`BundleError` for a missing file, invalid JSON, another format, a newer
    format version or an invalid config."""
    st_path, js_path = bundle_paths(path)
    if not js_path.is_file():
        raise BundleError(f"Model bundle description {js_path.name} not found in {js_path.parent}.")
    from ..common.guards import load_json

    meta = load_json(js_path, f"Model bundle description {js_path.name}", BundleError)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BundleError(f"{js_path.name} is not a Neural Avatar model bundle.")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BundleError(f"{js_path.name} has no valid format version.")
    if version > FORMAT_VERSION:
        raise BundleError(f"{js_path.name} uses bundle format {version}; this add-on reads up to "
                          f"{FORMAT_VERSION}. Update Neural Avatar.")
    for key in ("mode", "config"):
        if key not in meta:
            raise BundleError(f"{js_path.name} lacks the '{key}' entry.")
    if meta["mode"] not in MODES:
        raise BundleError(f"{js_path.name} names an unknown mode {meta['mode']!r}.")
    try:
        cfg = AvatarConfig.from_dict(meta["config"])
    except NeuralAvatarError as e:
        raise BundleError(f"{js_path.name} has an invalid configuration: {e}") from e
    except TypeError as e:
        raise BundleError(f"{js_path.name} has an invalid configuration: {e}") from e
    if cfg.mode != meta["mode"]:
        raise BundleError(f"{js_path.name} is inconsistent: mode {meta['mode']} but its config is for {cfg.mode}.")
    return meta


def check_meta(meta: dict, expected_mode: str | None, expected_body, name: str) -> None:
    """Raise :class:`BundleError` when the bundle's mode or body differs from the scene's."""
    if expected_mode is not None and meta["mode"] != expected_mode:
        raise BundleError(f"This bundle was trained for {meta['mode']}, the scene is set to {expected_mode}. "
                          f"Choose a {expected_mode} bundle or switch the mode.")
    if expected_body is None:
        return
    if isinstance(expected_body, str):
        exp_id, exp_verts = expected_body, None
    else:
        exp_id = str(getattr(expected_body, "model_id", "") or "")
        exp_verts = getattr(expected_body, "num_verts", None)
    have_id = meta.get("body_model_id") or ""
    if exp_id and have_id and exp_id != have_id:
        raise BundleError(f"The bundle {name} was trained on body model '{have_id}', the scene uses '{exp_id}'.")
    if exp_verts is not None and meta["mode"] != GAUSSIAN_BONES and int(exp_verts) != int(meta.get("num_verts", -1)):
        raise BundleError(f"The bundle {name} was trained on a body with {meta.get('num_verts')} vertices, "
                          f"the scene's body has {int(exp_verts)}.")


def bundle_identities(meta: dict) -> list:
    """The identity names of a multi-identity bundle's JSON (``[]`` for a one-person bundle)."""
    ids = meta.get("identities") or []
    if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
        raise BundleError("The bundle's 'identities' must be a list of names.")
    return ids


def _read_weights(path, meta: dict) -> dict:
    """The tensors of a bundle's ``.safetensors``: present, the file its JSON hashed, within the
    memory budget, readable (each failure a :class:`BundleError` naming the file)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    st_path, js_path = bundle_paths(path)
    if not st_path.is_file():
        raise BundleError(f"Model bundle weights {st_path.name} not found in {st_path.parent}.")
    want_hash = meta.get("tensors_sha256")
    if want_hash and _sha256(st_path) != want_hash:
        raise BundleError(f"The weights {st_path.name} do not belong to {js_path.name} (file changed or "
                          f"was only partly written). Save the bundle again.")
    try:
        check_bytes(st_path.stat().st_size, f"Model bundle weights {st_path.name}")
    except ResourceLimitError as e:
        raise BundleError(str(e)) from e
    try:
        return load_file(str(st_path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise BundleError(f"Model bundle weights {st_path.name} are corrupt: {e}") from e


def identity_bank(path) -> list:
    """Every person of a bundle as ``[(name, {"identity.<param>": tensor})]``, the avatar's own
    first (a one-person bundle: its training identity's name, else "subject"). The weights are
    read with :func:`load_bundle`'s checks (hash, size)."""
    meta = read_bundle_meta(path)
    names = bundle_identities(meta)
    tensors = _read_weights(path, meta)
    own = {k: v for k, v in tensors.items() if k.startswith("identity.")}
    if not names:
        ids = (meta.get("training") or {}).get("identities") or ["subject"]
        return [(str(ids[0]), own)]
    out = [(names[0], own)]
    for n in names[1:]:
        pre = f"{IDENTITY_PREFIX}{n}."
        out.append((n, {"identity." + k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)}))
    return out


def load_bundle(path, device="cpu", expected_mode: str | None = None, expected_body=None,
                identity: str | None = None) -> Avatar:
    """Load a bundle saved by :func:`save_bundle` onto ``device`` (eval mode).

    ``expected_mode``: the scene's mode; another mode raises :class:`BundleError` ("this
    bundle was trained for NEURAL_TEXTURE, the scene is set to GAUSSIAN_BONES").
    ``expected_body``: a body-model id string or an object with ``model_id`` / ``num_verts``.
    ``identity``: which person of a multi-identity bundle the avatar shows (None or "" = the
    first): its ``identities.<name>.*`` tensors replace the avatar's ``identity.*`` — for ANR
    the neural texture (try-on: any body wears any identity's texture), for SMPLpix the
    vertex colours, for HVS the appearance vectors.
    """
    st_path, js_path = bundle_paths(path)
    meta = read_bundle_meta(path)
    name = st_path.with_suffix("").name
    check_meta(meta, expected_mode, expected_body, name)
    tensors = _read_weights(path, meta)

    cfg = AvatarConfig.from_dict(meta["config"])

    def need(key):
        if key not in tensors:
            raise BundleError(f"Model bundle {name} is missing the tensor '{key}'.")
        return tensors[key]

    def build():
        if cfg.mode == NEURAL_TEXTURE:
            return NeuralTextureAvatar(cfg, need("faces"), need("uv"), need("uv_faces"))
        if cfg.mode == GAUSSIAN_BONES:
            return GaussianBonesAvatar(cfg, need("parents"))
        if cfg.mode == PIXEL_ALIGNED:
            from .pixel_aligned import PixelAlignedAvatar

            return PixelAlignedAvatar(cfg, need("template"), need("weights"), normals=need("normals"))
        return VertexProjectionAvatar(cfg, faces=need("faces") if cfg.unet.point_splat else None)

    try:
        # Sizes in the JSON (vertex count, widths, depth, texture size) are checked before anything is
        # allocated: the network is first built on the meta device (no memory), its bytes compared with
        # the weights actually in the file and with this machine's memory.
        with torch.device("meta"):
            ghost = build()
        need_bytes = sum(t.numel() * t.element_size() for t in ghost.state_dict().values())
        file_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
        del ghost
        if need_bytes > 2 * file_bytes + (1 << 20):
            raise BundleError(f"Model bundle {name} does not match its configuration: the configuration needs "
                              f"{fmt_bytes(need_bytes)} of weights, the file holds {fmt_bytes(file_bytes)}.")
        check_bytes(need_bytes, f"Model bundle {name}")
        avatar = build()
    except BundleError:
        raise
    except ResourceLimitError as e:
        raise BundleError(str(e)) from e
    except NeuralAvatarError as e:
        raise BundleError(f"Model bundle {name} is inconsistent: {e}") from e
    except (ValueError, TypeError, RuntimeError, OverflowError, IndexError) as e:  # a network refusing its config
        raise BundleError(f"Model bundle {name} has an unusable configuration: {e}") from None

    names = bundle_identities(meta)
    if identity and identity not in names:
        raise BundleError(f"The bundle {name} has no identity '{identity}'"
                          + (f" (it has {', '.join(names)})." if names else " (it holds one person)."))
    bank = {k: v for k, v in tensors.items() if k.startswith(IDENTITY_PREFIX)}
    tensors = {k: v for k, v in tensors.items() if not k.startswith(IDENTITY_PREFIX)}
    for k in bank:
        ident, _, param = k[len(IDENTITY_PREFIX):].partition(".")
        if ident not in names[1:] or f"identity.{param}" not in tensors or \
                tuple(bank[k].shape) != tuple(tensors[f"identity.{param}"].shape):
            raise BundleError(f"Model bundle {name}: tensor '{k}' does not match an identity of the bundle.")
    if identity and identity != names[0]:
        for k in list(tensors):
            if k.startswith("identity."):
                alt = f"{IDENTITY_PREFIX}{identity}.{k[len('identity.'):]}"
                if alt not in bank:
                    raise BundleError(f"Model bundle {name}: identity '{identity}' lacks '{k}'.")
                tensors[k] = bank[alt]
    expected = avatar.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}{' …' if len(unexpected) > 5 else ''}")
        raise BundleError(f"Model bundle {name} does not match its configuration ({'; '.join(parts)}).")
    fixed = {}
    for k, ref in expected.items():
        v = tensors[k]
        if tuple(v.shape) != tuple(ref.shape):
            raise BundleError(f"Model bundle {name}: tensor '{k}' has shape {tuple(v.shape)}, "
                              f"the configuration needs {tuple(ref.shape)}.")
        if v.dtype != ref.dtype:
            if v.is_floating_point() and ref.is_floating_point():
                v = v.to(ref.dtype)
            else:
                raise BundleError(f"Model bundle {name}: tensor '{k}' has type {v.dtype}, expected {ref.dtype}.")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise BundleError(f"Model bundle {name}: tensor '{k}' contains NaN or infinite values.")
        fixed[k] = v
    avatar.load_state_dict(fixed, strict=True)
    return avatar.to(device).eval()


def average_bundles(paths, out, device="cpu") -> tuple[Path, Path]:
    """Save at ``out`` the bundle whose floating-point tensors (weights, BN statistics, the
    person's texture / descriptors / appearance) are the mean of those of ``paths``: checkpoint
    (Polyak) averaging of snapshots of one training run, which smooths the step-to-step noise an
    adversarial stage leaves in the generator (the role of the generator's weight average in
    StyleGAN). Integer tensors (faces, BN step counts) are taken from the last bundle.

    The bundles must be one avatar: same mode, configuration, body and tensor names and shapes,
    each holding one person (a multi-identity bank is refused, not half-averaged). The training
    record is the last bundle's, with ``averaged_from`` naming every input and its tensor hash."""
    paths = [Path(os.fspath(p)) for p in paths]
    if len(paths) < 2:
        raise BundleError("Averaging needs at least two bundles of the same avatar.")
    metas = [read_bundle_meta(p) for p in paths]
    names = [bundle_paths(p)[0].with_suffix("").name for p in paths]
    for meta, name in zip(metas, names):
        if bundle_identities(meta)[1:]:
            raise BundleError(f"The bundle {name} holds several people; average single-person bundles.")
        for key in ("mode", "config", "body_model_id", "num_verts", "num_joints", "tensors"):
            if meta.get(key) != metas[0].get(key):
                raise BundleError(f"The bundles {names[0]} and {name} are not snapshots of one avatar: their "
                                  f"'{key}' differs.")
    avatars = [load_bundle(p, device=device) for p in paths]
    states = [a.state_dict() for a in avatars]
    with torch.no_grad():
        for k, v in states[-1].items():
            if v.is_floating_point():
                v.copy_(torch.stack([s[k].double() for s in states]).mean(0).to(v.dtype))
    training = dict(metas[-1].get("training") or {})
    training["averaged_from"] = [{"bundle": n, "tensors_sha256": m.get("tensors_sha256"),
                                  "steps": (m.get("training") or {}).get("steps")} for n, m in zip(names, metas)]
    return save_bundle(avatars[-1], out, extra_meta={"training": training, **(metas[-1].get("extra") or {})})


__all__ = ["save_bundle", "load_bundle", "read_bundle_meta", "check_meta", "average_bundles", "bundle_paths", "FORMAT", "FORMAT_VERSION"]
