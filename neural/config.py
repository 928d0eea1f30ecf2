"""Typed configurations of the three neural avatars.

Every field carries its documentation in its annotation
(``Annotated[type, "docstring"]``), so :func:`field_docs` can list them (UI tooltips,
``--help`` texts) and a test can check that none is missing. ``to_dict`` /
``from_dict`` give JSON-safe dictionaries (stored in a model bundle's ``.json``) and
validate every value on the way back in.

Modes (see ARCHITECTURE.md): ``VERTEX_PROJECTION`` (SMPLpix, Prokudin et al. WACV
2021), ``NEURAL_TEXTURE`` (ANR, Raj et al. CVPR 2021), ``GAUSSIAN_BONES``
(HumanViewSynthesis, Rochette et al.).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Optional

from ..errors import NeuralAvatarError

VERTEX_PROJECTION = "VERTEX_PROJECTION"
NEURAL_TEXTURE = "NEURAL_TEXTURE"
GAUSSIAN_BONES = "GAUSSIAN_BONES"
PIXEL_ALIGNED = "PIXEL_ALIGNED"
MODES = (VERTEX_PROJECTION, NEURAL_TEXTURE, GAUSSIAN_BONES, PIXEL_ALIGNED)
#: modes whose network paints an image-space input (PIXEL_ALIGNED volume-renders a field instead)
IMAGE_MODES = (VERTEX_PROJECTION, NEURAL_TEXTURE, GAUSSIAN_BONES)

NORMS = ("batch", "instance", "none")
UPSAMPLING = ("bilinear", "nearest")


class ConfigError(NeuralAvatarError):
    """A configuration dictionary (e.g. from a bundle's JSON) has a wrong field or value."""


def field_docs(cls) -> dict[str, str]:
    """``{field name: docstring}`` of a config dataclass, read from its ``Annotated`` hints."""
    hints = typing.get_type_hints(cls, include_extras=True)
    docs = {}
    for f in dataclasses.fields(cls):
        meta = getattr(hints[f.name], "__metadata__", ())
        docs[f.name] = next((m for m in meta if isinstance(m, str)), "")
    return docs


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _ConfigBase:
    """Shared ``to_dict`` / ``from_dict`` for the flat configs (ints, floats, strs, bools, tuples)."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        _check(isinstance(d, dict), f"{cls.__name__}: expected a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        _check(not unknown, f"{cls.__name__}: unknown field(s) {unknown}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in d:
                v = d[f.name]
                if isinstance(v, list):
                    v = tuple(v)
                kwargs[f.name] = v
        obj = cls(**kwargs)
        obj.validate()
        return obj

    def validate(self) -> None:  # pragma: no cover - overridden
        pass


@dataclass
class UNetConfig(_ConfigBase):
    """SMPLpix neural renderer G (Prokudin et al. 2021, sec. 3.2, eq. 5): a UNet with
    ``depth`` down/up levels of [Conv3x3, BN, ReLU]x2, max-pool down, resize + conv up."""

    in_ch: Annotated[int, "Input channels: 4 for the RGB-D vertex projection image (eq. 3-4), more for extra features."] = 4
    out_ch: Annotated[int, "Output channels: 3 = RGB, 4 = RGB + a soft-mask logit."] = 4
    width: Annotated[int, "Channels of the first level; level i has min(width * 2**i, max_width). SMPLpix's reference UNet uses 64; 32 is the CPU-friendly default."] = 32
    depth: Annotated[int, "Number of down (and up) levels; 4 in SMPLpix."] = 4
    max_width: Annotated[int, "Upper bound on the channels of any level."] = 512
    norm: Annotated[str, "Normalisation after each conv: 'batch' (SMPLpix), 'instance' or 'none'."] = "batch"
    up: Annotated[str, "Resize mode of the up path before its conv: 'bilinear' (SMPLpix) or 'nearest'. Never transposed convs."] = "bilinear"
    point_splat: Annotated[bool, "Densify the projected points: each vertex is a square splat sized to its pixel footprint (its longest incident edge seen from the camera), so the input stays dense at every scale. Off = one pixel per vertex (SMPLpix eq. 4; bundles made before splats)."] = False
    subdivide: Annotated[int, "Levels of 1-to-4 midpoint subdivision of the body's mesh before projection (SMPLpix sec. 4 projects an upsampled 27k-vertex topology: 1 level turns SMPL's 6 890 vertices into 27 554). The new points' positions and colours are their edges' midpoints; descriptors are learnt per point, so they resolve detail 4x finer per level. Needs point_splat (the subdivided mesh's edges size the splats)."] = 0
    descriptors: Annotated[int, "Learnt per-vertex descriptor channels projected beside the RGB-D (SMPLpix sec. 6: 'per-vertex image descriptors [...] or deep point descriptors' of Neural Point-Based Graphics, the paper's proposed cure for blurred high-frequency textures); per identity, so a new person needs fitting. in_ch = 4 + descriptors. 0 = SMPLpix's RGB-D input."] = 0

    def validate(self) -> None:
        for name in ("in_ch", "out_ch", "width", "depth", "max_width"):
            v = getattr(self, name)
            _check(_is_int(v) and v >= (0 if name == "depth" else 1), f"UNetConfig.{name} must be a positive integer, got {v!r}")
        _check(self.depth <= 8, f"UNetConfig.depth must be at most 8, got {self.depth}")
        for name in ("in_ch", "out_ch", "width", "max_width"):
            _check(getattr(self, name) <= MAX_CHANNELS, f"UNetConfig.{name} must be at most {MAX_CHANNELS}")
        _check(self.norm in NORMS, f"UNetConfig.norm must be one of {NORMS}, got {self.norm!r}")
        _check(self.up in UPSAMPLING, f"UNetConfig.up must be one of {UPSAMPLING}, got {self.up!r}")
        _check(isinstance(self.point_splat, bool), "UNetConfig.point_splat must be true or false")
        _check(_is_int(self.subdivide) and 0 <= self.subdivide <= 2,
               f"UNetConfig.subdivide must be 0, 1 or 2, got {self.subdivide!r}")
        _check(self.subdivide == 0 or self.point_splat is True,
               "UNetConfig.subdivide needs point_splat (the subdivided mesh's edges size the splats)")
        _check(_is_int(self.descriptors) and 0 <= self.descriptors <= 64,
               f"UNetConfig.descriptors must be an integer from 0 to 64, got {self.descriptors!r}")
        _check(self.descriptors == 0 or self.in_ch == 4 + self.descriptors,
               f"UNetConfig.in_ch must be 4 + descriptors = {4 + self.descriptors} (RGB-D and the "
               f"descriptors), got {self.in_ch}")


@dataclass
class AnrConfig(_ConfigBase):
    """Articulated Neural Rendering (Raj et al. 2021, sec. 3.2, eq. 2): a neural texture T
    sampled through the rasterised UV image, R1 (texture image -> latent, first 3 channels
    supervised as RGB), the view-space normal image concatenated, R2 -> RGB + soft mask."""

    texture_channels: Annotated[int, "Channels C of the neural texture (8 in ANR)."] = 8
    texture_size: Annotated[int, "Side S of the square neural texture in texels (256 in ANR)."] = 256
    pyramid_levels: Annotated[int, "Levels of the Laplacian-pyramid parameterisation of the texture (1 = a plain texture)."] = 4
    latent_channels: Annotated[int, "Channels of R1's output latent image; its first 3 are the auxiliary RGB J-hat of eq. 2-3."] = 16
    r1_width: Annotated[int, "First-level channels of the shallow UNet R1."] = 32
    r1_depth: Annotated[int, "Down/up levels of R1 (shallow: 2-3)."] = 3
    r2_width: Annotated[int, "First-level channels of the shallow UNet R2."] = 32
    r2_depth: Annotated[int, "Down/up levels of R2 (shallow: 2-3)."] = 3
    norm: Annotated[str, "Normalisation inside R1 and R2: 'batch', 'instance' or 'none'."] = "batch"
    use_normals: Annotated[bool, "Concatenate the rasterised view-space normal image to R1's output before R2 (ANR eq. 2); off = the DNR-like ablation."] = True

    def validate(self) -> None:
        for name in ("texture_channels", "texture_size", "pyramid_levels", "latent_channels",
                     "r1_width", "r1_depth", "r2_width", "r2_depth"):
            v = getattr(self, name)
            _check(_is_int(v) and v >= 1, f"AnrConfig.{name} must be a positive integer, got {v!r}")
        _check(self.latent_channels >= 3, "AnrConfig.latent_channels must be at least 3 (its first 3 are RGB)")
        # Counts of layers/levels make Python objects, not tensors: capped here (tensor sizes are
        # checked against memory when a bundle loads).
        _check(self.pyramid_levels <= 16, f"AnrConfig.pyramid_levels must be at most 16, got {self.pyramid_levels}")
        _check(self.r1_depth <= 8 and self.r2_depth <= 8, "AnrConfig.r1_depth / r2_depth must be at most 8")
        for name in ("texture_channels", "texture_size", "latent_channels", "r1_width", "r2_width"):
            _check(getattr(self, name) <= MAX_CHANNELS, f"AnrConfig.{name} must be at most {MAX_CHANNELS}")
        _check(self.texture_size >= 2 ** (self.pyramid_levels - 1),
               f"AnrConfig.texture_size {self.texture_size} is too small for {self.pyramid_levels} pyramid levels")
        _check(self.norm in NORMS, f"AnrConfig.norm must be one of {NORMS}, got {self.norm!r}")
        _check(isinstance(self.use_normals, bool), "AnrConfig.use_normals must be true or false")


@dataclass
class StyleConfig(_ConfigBase):
    """HumanViewSynthesis image synthesis (Rochette et al., sec. III-C, eq. 16): a UNet
    encoder-decoder over the Gaussian feature image F whose decoder convolutions are
    StyleGAN2 modulated convolutions styled by the flattened appearance vectors a."""

    num_primitives: Annotated[int, "Number M of bone primitives (= joints - 1, one per skeleton edge; 23 for SMPL)."] = 23
    appearance_dim: Annotated[int, "Dimension A of each appearance vector and channels of the feature image (16 in the paper)."] = 16
    widths: Annotated[tuple, "Channels of each encoder/decoder level, finest first; its length is the UNet depth + 1."] = (32, 64, 128, 128)
    w_dim: Annotated[int, "Dimension of the style vector w produced by the mapping network from the flattened appearance."] = 128
    mapping_layers: Annotated[int, "Fully connected layers of the mapping network (StyleGAN uses 8; a few suffice for M x A inputs)."] = 2
    bone_width: Annotated[float, "Initial limb width w_ij of eq. 10 (metres), before training adjusts it per bone."] = 0.08
    learn_widths: Annotated[bool, "Learn one width per bone as a per-identity parameter."] = True
    encoder: Annotated[bool, "Appearance from one image (eq. 4, networks.style.AppearanceEncoder) instead of a learnt vector per identity: the avatar generalises to new people."] = False
    encoder_width: Annotated[int, "Channels of the appearance encoder's first stage (4 stages: w, 2w, 4w, 4w)."] = 32
    encoder_res: Annotated[int, "Side of the body crop the appearance encoder reads (HVS: 256)."] = 128

    def validate(self) -> None:
        for name in ("num_primitives", "appearance_dim", "w_dim", "mapping_layers"):
            v = getattr(self, name)
            _check(_is_int(v) and v >= 1, f"StyleConfig.{name} must be a positive integer, got {v!r}")
        _check(isinstance(self.widths, tuple) and len(self.widths) >= 1
               and all(_is_int(w) and w >= 1 for w in self.widths),
               f"StyleConfig.widths must be a non-empty list of positive integers, got {self.widths!r}")
        _check(len(self.widths) <= 9, "StyleConfig.widths allows at most 9 levels")
        _check(self.mapping_layers <= 32, f"StyleConfig.mapping_layers must be at most 32, got {self.mapping_layers}")
        _check(self.num_primitives <= 256, f"StyleConfig.num_primitives must be at most 256, got {self.num_primitives}")
        _check(max(self.widths) <= MAX_CHANNELS and self.appearance_dim <= MAX_CHANNELS and self.w_dim <= MAX_CHANNELS,
               f"StyleConfig widths, appearance_dim and w_dim must be at most {MAX_CHANNELS}")
        _check(_is_num(self.bone_width) and self.bone_width > 0, f"StyleConfig.bone_width must be > 0, got {self.bone_width!r}")
        _check(isinstance(self.learn_widths, bool), "StyleConfig.learn_widths must be true or false")
        _check(isinstance(self.encoder, bool), "StyleConfig.encoder must be true or false")
        for name in ("encoder_width", "encoder_res"):
            v = getattr(self, name)
            _check(_is_int(v) and 8 <= v <= 1024, f"StyleConfig.{name} must be an integer 8–1024, got {v!r}")


@dataclass
class PixelConfig(_ConfigBase):
    """AniPixel (Fan et al. 2023): a generalizable volumetric avatar read from source views
    (neural/networks/anipixel.py; the scale-down from the paper is listed there)."""

    hidden: Annotated[int, "Units of the field MLPs (displacement, weights, SDF, blending)."] = 64
    latent: Annotated[int, "Dimension of the per-identity latent l_idt."] = 16
    num_identities: Annotated[int, "Training identities (their latents; a new person takes the nearest one)."] = 1
    samples: Annotated[int, "Samples per ray inside the body's neighbourhood (paper: 64 coarse + 16 fine)."] = 32
    near_body: Annotated[float, "Distance (m) from the posed body beyond which a point is background (skinning weight w_bg = 1, density 0)."] = 0.12
    source_res: Annotated[int, "Side of the body crop each source view is read at."] = 128
    source_views: Annotated[int, "Source views the avatar reads (AniPixel: 3)."] = 3
    vertex_stride: Annotated[int, "Every n-th body vertex is used for the nearest-surface queries."] = 4

    def validate(self) -> None:
        for name in ("hidden", "latent", "num_identities", "samples", "source_res", "source_views", "vertex_stride"):
            v = getattr(self, name)
            _check(_is_int(v) and 1 <= v <= 4096, f"PixelConfig.{name} must be an integer 1–4096, got {v!r}")
        _check(self.samples >= 2, "PixelConfig.samples must be at least 2")
        _check(_is_num(self.near_body) and 0.0 < self.near_body <= 1.0, "PixelConfig.near_body must be in (0, 1] metres")


MAX_CHANNELS = 65536  # any width, channel count or texture side in a config

_SUB_FIELDS = {VERTEX_PROJECTION: "unet", NEURAL_TEXTURE: "anr", GAUSSIAN_BONES: "style", PIXEL_ALIGNED: "pixel"}
_SUB_TYPES = {"unet": UNetConfig, "anr": AnrConfig, "style": StyleConfig, "pixel": PixelConfig}


@dataclass
class AvatarConfig:
    """Everything needed to rebuild an avatar's networks (stored in a bundle's JSON).
    Exactly the sub-config of ``mode`` is set; :meth:`default` fills it."""

    mode: Annotated[str, "Rendering mode: VERTEX_PROJECTION, NEURAL_TEXTURE or GAUSSIAN_BONES."]
    resolution: Annotated[int, "Square training resolution in pixels; rendering at other sizes works but looks best here."] = 256
    body_model_id: Annotated[str, "Identifier of the body model the avatar was trained on (BodyModel.model_id)."] = ""
    num_verts: Annotated[int, "Vertex count of that body model."] = 0
    num_joints: Annotated[int, "Joint count of that body model (24 for SMPL)."] = 24
    unet: Annotated[Optional[UNetConfig], "SMPLpix UNet settings (VERTEX_PROJECTION only)."] = None
    anr: Annotated[Optional[AnrConfig], "ANR settings (NEURAL_TEXTURE only)."] = None
    style: Annotated[Optional[StyleConfig], "Style UNet settings (GAUSSIAN_BONES only)."] = None
    pixel: Annotated[Optional[PixelConfig], "AniPixel settings (PIXEL_ALIGNED only)."] = None
    background: Annotated[tuple, "RGB in [0, 1] the output is composited over when a frame gives no background."] = (1.0, 1.0, 1.0)
    output_mask: Annotated[bool, "The network predicts a soft mask (alpha); off = the mask is 1 everywhere."] = True

    @classmethod
    def default(cls, mode: str, **kw) -> "AvatarConfig":
        """The shipping configuration of ``mode`` (sub-config with its defaults)."""
        _check(mode in MODES, f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        sub = _SUB_FIELDS[mode]
        if sub not in kw:
            if mode == GAUSSIAN_BONES:
                kw[sub] = StyleConfig(num_primitives=max(1, kw.get("num_joints", 24) - 1))
            elif mode == VERTEX_PROJECTION:
                kw[sub] = UNetConfig(point_splat=True)  # new avatars: dense input at every scale
            else:
                kw[sub] = _SUB_TYPES[sub]()
        cfg = cls(mode=mode, **kw)
        cfg.validate()
        return cfg

    @property
    def sub(self):
        """The sub-config of this mode."""
        return getattr(self, _SUB_FIELDS[self.mode])

    def validate(self) -> None:
        _check(self.mode in MODES, f"unknown mode {self.mode!r}; expected one of {', '.join(MODES)}")
        _check(_is_int(self.resolution) and 8 <= self.resolution <= 8192,
               f"AvatarConfig.resolution must be an integer in [8, 8192], got {self.resolution!r}")
        _check(isinstance(self.body_model_id, str), "AvatarConfig.body_model_id must be a string")
        _check(_is_int(self.num_verts) and self.num_verts >= 0, f"AvatarConfig.num_verts must be >= 0, got {self.num_verts!r}")
        _check(_is_int(self.num_joints) and self.num_joints >= 2, f"AvatarConfig.num_joints must be >= 2, got {self.num_joints!r}")
        _check(self.num_verts <= 10_000_000, f"AvatarConfig.num_verts must be at most 10 million, got {self.num_verts}")
        _check(self.num_joints <= 257, f"AvatarConfig.num_joints must be at most 257, got {self.num_joints}")
        _check(isinstance(self.background, tuple) and len(self.background) == 3
               and all(_is_num(c) and 0.0 <= c <= 1.0 for c in self.background),
               f"AvatarConfig.background must be 3 numbers in [0, 1], got {self.background!r}")
        _check(isinstance(self.output_mask, bool), "AvatarConfig.output_mask must be true or false")
        want = _SUB_FIELDS[self.mode]
        for name, typ in _SUB_TYPES.items():
            v = getattr(self, name)
            if name == want:
                _check(isinstance(v, typ), f"mode {self.mode} needs the '{name}' settings")
                v.validate()
            else:
                _check(v is None, f"mode {self.mode} does not use the '{name}' settings")
        if self.mode == GAUSSIAN_BONES:
            _check(self.style.num_primitives == self.num_joints - 1,
                   f"StyleConfig.num_primitives ({self.style.num_primitives}) must be num_joints - 1 "
                   f"({self.num_joints - 1}): one primitive per bone")

    def to_dict(self) -> dict[str, Any]:
        out = {
            "mode": self.mode,
            "resolution": self.resolution,
            "body_model_id": self.body_model_id,
            "num_verts": self.num_verts,
            "num_joints": self.num_joints,
            "background": [float(c) for c in self.background],
            "output_mask": self.output_mask,
        }
        for name in _SUB_TYPES:
            v = getattr(self, name)
            out[name] = None if v is None else v.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AvatarConfig":
        _check(isinstance(d, dict), f"AvatarConfig: expected a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        _check(not unknown, f"AvatarConfig: unknown field(s) {unknown}")
        _check("mode" in d, "AvatarConfig: the 'mode' field is missing")
        kw = dict(d)
        for name, typ in _SUB_TYPES.items():
            if kw.get(name) is not None:
                kw[name] = typ.from_dict(kw[name])
        if isinstance(kw.get("background"), list):
            kw["background"] = tuple(kw["background"])
        cfg = cls(**kw)
        cfg.validate()
        return cfg


__all__ = [
    "MODES", "VERTEX_PROJECTION", "NEURAL_TEXTURE", "GAUSSIAN_BONES", "ConfigError",
    "UNetConfig", "AnrConfig", "StyleConfig", "AvatarConfig", "field_docs",
]
