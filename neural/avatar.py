"""Per-mode avatar pipelines: input renderer + network, one ``nn.Module`` per mode.

* ``VERTEX_PROJECTION`` — SMPLpix (Prokudin et al. 2021): coloured vertices projected to an
  RGB-D image (eq. 3-4), UNet G (eq. 5) -> RGB + soft mask.
* ``NEURAL_TEXTURE`` — ANR (Raj et al. 2021): a learnable neural texture sampled through the
  rasterised UV image, R1 -> [normals] -> R2 -> RGB + soft mask (eq. 2).
* ``GAUSSIAN_BONES`` — HumanViewSynthesis (Rochette et al.): one anisotropic Gaussian per
  bone (eq. 7-10) rendered to a feature image with per-bone appearance vectors (eq. 11-15),
  style UNet (eq. 16) -> RGB + soft mask.

Parameters are split in two groups that training gives their own optimiser settings:
everything under ``avatar.identity`` is per-identity data (vertex colours, neural texture,
appearance vectors, bone widths; :meth:`Avatar.identity_parameters`), everything else is the
shared network (:meth:`Avatar.network_parameters`). Body-model data needed at render time
(faces, UVs, parents) are buffers, so a bundle is self-contained.

Every forward is batched and device-agnostic; :meth:`Avatar.render` is the inference helper
(``torch.inference_mode`` + autocast for ``bf16`` / ``fp16`` where the device supports it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ..errors import NeuralAvatarError
from .networks.anr import AnrRenderer, composite
from .config import GAUSSIAN_BONES, NEURAL_TEXTURE, PIXEL_ALIGNED, VERTEX_PROJECTION, AvatarConfig
from .networks.style import AppearanceEncoder, StyleUNet
from .networks.unet import SMPLpixUNet

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class FrameInputs:
    """One batch of frames to render.

    ``verts (B,V,3)`` posed vertices and ``joints (B,J,3)`` posed joints, both in the world
    frame (metres); ``K (B|1,3,3)``, ``R (B|1,3,3)``, ``t (B|1,3)`` OpenCV camera
    (ARCHITECTURE.md); ``size = (H, W)``; ``background`` optional RGB ``(3,)`` in [0, 1]
    (default: the avatar config's). ``joints`` may be None for modes that do not use it
    (VERTEX_PROJECTION, NEURAL_TEXTURE); ``verts`` may be None for GAUSSIAN_BONES.
    """

    verts: Optional[torch.Tensor]
    joints: Optional[torch.Tensor]
    K: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    size: tuple
    background: Optional[torch.Tensor] = None

    @property
    def batch_size(self) -> int:
        ref = self.verts if self.verts is not None else self.joints
        return int(ref.shape[0])

    def to(self, device, dtype=torch.float32) -> "FrameInputs":
        """Copy with every tensor on ``device`` as ``dtype`` (float tensors only)."""
        def cv(x):
            if x is None:
                return None
            x = torch.as_tensor(x)
            return x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device=device)
        return dataclasses.replace(
            self, verts=cv(self.verts), joints=cv(self.joints), K=cv(self.K), R=cv(self.R), t=cv(self.t),
            background=cv(self.background), size=(int(self.size[0]), int(self.size[1])),
        )


def _gb_render_bytes(self, h, w):
    s = self.config.style
    hw = h * w
    # per pixel and primitive (+ background): ray integral terms, occlusion and weights (~4 work arrays)
    gauss = 4 * hw * (s.num_primitives + 1) * 4 + 4 * hw * s.appearance_dim
    return int(gauss + _unet_bytes(hw, list(s.widths), s.appearance_dim, 4))


def _check_frame(frame: FrameInputs, num_verts: int | None, num_joints: int | None) -> None:
    """Shape checks with messages a user understands."""
    if frame.verts is None and frame.joints is None:
        raise NeuralAvatarError("A frame needs posed vertices or joints.")
    B = frame.batch_size
    if num_verts is not None:
        if frame.verts is None or frame.verts.ndim != 3 or frame.verts.shape[-1] != 3:
            raise NeuralAvatarError("This avatar needs the posed body vertices as a (B, V, 3) array.")
        if frame.verts.shape[1] != num_verts:
            raise NeuralAvatarError(
                f"This avatar was trained on a body with {num_verts} vertices; the scene's body has "
                f"{frame.verts.shape[1]}. Use the body model the avatar was trained with."
            )
    if num_joints is not None:
        if frame.joints is None or frame.joints.ndim != 3 or frame.joints.shape[-1] != 3:
            raise NeuralAvatarError("This avatar needs the posed joints as a (B, J, 3) array.")
        if frame.joints.shape[1] != num_joints:
            raise NeuralAvatarError(
                f"This avatar was trained on a skeleton with {num_joints} joints; the scene's has "
                f"{frame.joints.shape[1]}."
            )
    for name, shape in (("K", (3, 3)), ("R", (3, 3)), ("t", (3,))):
        x = getattr(frame, name)
        if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape or x.shape[0] not in (1, B):
            raise NeuralAvatarError(f"Camera {name} must have shape (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}.")
    H, W = frame.size
    if int(H) < 1 or int(W) < 1:
        raise NeuralAvatarError(f"Image size must be positive, got {frame.size}.")


def autocast_context(device: torch.device, precision: str):
    """``torch.autocast`` for ``bf16``/``fp16`` where the device type supports that dtype,
    else a no-op (fp32)."""
    if precision in ("auto", "int8"):
        from .inference import resolve_precision

        precision = resolve_precision(precision, device)
    if precision not in PRECISIONS:
        raise NeuralAvatarError(f"Unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = PRECISIONS[precision]
    dev_type = torch.device(device).type
    if dev_type == "cpu" and dtype == torch.float16:
        # CPU autocast to fp16 is ~1000× slower (tens of seconds a frame): fp16 means fp32 on a CPU.
        return contextlib.nullcontext()
    try:
        if not torch.amp.is_autocast_available(dev_type):
            return contextlib.nullcontext()
        if dev_type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return contextlib.nullcontext()
        return torch.autocast(device_type=dev_type, dtype=dtype)
    except (RuntimeError, AttributeError):  # dtype not supported by this backend's autocast
        return contextlib.nullcontext()


class Avatar(nn.Module):
    """Base class. Subclasses implement :meth:`make_input` (the input renderer, not
    differentiable w.r.t. geometry) and :meth:`run_network`; ``forward = run_network(make_input)``.

    ``forward(frame)`` returns a dict:
      ``rgb (B,3,H,W)`` composited over the background; ``mask (B,1,H,W)`` soft mask in [0,1];
      ``input (B,C,H,W)`` the neural input (for previews); ``depth (B,1,H,W)`` camera-space
      z in metres of the body's input geometry, ``inf`` where it has none (None for
      GAUSSIAN_BONES, which has no surface);
      ``aux_rgb (B,3,H,W)`` (ANR's R1 RGB) or None; plus ``rgb_fg`` (before compositing) and
      ``mask_logit`` (None when the config has no mask) for the losses.
    """

    mode: str = ""

    def __init__(self, config: AvatarConfig):
        super().__init__()
        config.validate()
        if config.mode != self.mode:
            raise NeuralAvatarError(f"{type(self).__name__} renders {self.mode}, the config is for {config.mode}.")
        self.config = config
        self.identity = nn.Module()
        self.register_buffer("default_background", torch.tensor(config.background, dtype=torch.float32),
                             persistent=False)

    # ---- parameter groups -------------------------------------------------------------
    def identity_parameters(self) -> list[nn.Parameter]:
        """Per-identity parameters (everything under ``self.identity``)."""
        return [p for p in self.identity.parameters() if p.requires_grad]

    def network_parameters(self) -> list[nn.Parameter]:
        """Shared network parameters (everything not under ``self.identity``)."""
        return [p for n, p in self.named_parameters() if not n.startswith("identity.") and p.requires_grad]

    # ---- description for bundles / UI -------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.default_background.device

    @property
    def input_channels(self) -> int:
        raise NotImplementedError

    @property
    def output_channels(self) -> int:
        return 3 + int(self.config.output_mask)

    # ---- pipeline ---------------------------------------------------------------------
    def make_input(self, frame: FrameInputs) -> dict[str, Any]:
        raise NotImplementedError

    def run_network(self, inputs: dict[str, Any], frame: FrameInputs) -> dict[str, Any]:
        raise NotImplementedError

    def _background(self, frame: FrameInputs) -> torch.Tensor:
        if frame.background is None:
            return self.default_background
        bg = torch.as_tensor(frame.background, dtype=torch.float32, device=self.device)
        if bg.shape != (3,):
            raise NeuralAvatarError(f"Background must be an RGB triple, got shape {tuple(bg.shape)}.")
        return bg

    def _finish(self, y: torch.Tensor, frame: FrameInputs, inputs: dict[str, Any],
                aux_rgb: torch.Tensor | None = None) -> dict[str, Any]:
        """Split a network output (sigmoid RGB [+ mask logit]) and composite
        I' = M * I + (1 - M) * B (ANR sec. 3.3; also used for SMPLpix and HVS)."""
        rgb_fg = y[:, :3].float()
        if self.config.output_mask:
            mask_logit = y[:, 3:4].float()
            mask = torch.sigmoid(mask_logit)
            rgb = composite(rgb_fg, mask, self._background(frame))
        else:
            mask_logit = None
            mask = torch.ones_like(rgb_fg[:, :1])
            rgb = rgb_fg
        return {"rgb": rgb, "mask": mask, "input": inputs["input"], "depth": inputs.get("depth"),
                "aux_rgb": aux_rgb, "rgb_fg": rgb_fg, "mask_logit": mask_logit}

    def prepare(self, frame: FrameInputs) -> FrameInputs:
        return frame.to(self.device)

    def render_bytes(self, h: int, w: int) -> int:
        """Upper estimate of the memory one render at ``h`` × ``w`` needs (activations of the input
        renderer and the network, float32, batch 1), checked before rendering
        (:func:`..guards.check_bytes`) so a huge frame is refused instead of killing Blender."""
        raise NotImplementedError

    def forward(self, frame: FrameInputs) -> dict[str, Any]:
        frame = self.prepare(frame)
        with fp32_inputs(frame.verts.device):  # the input renderer in fp32 even under autocast
            inputs = self.make_input(frame)
        return self.run_network(inputs, frame)

    def render(self, frame: FrameInputs, precision: str = "fp32") -> dict[str, Any]:
        """Inference: eval mode, ``torch.inference_mode()``, the network under autocast for
        ``bf16`` / ``fp16`` where supported (the input renderer stays fp32). Float32 outputs."""
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                frame = self.prepare(frame)
                inputs = self.make_input(frame)
                if getattr(self, "channels_last", False):  # weights prepared channels-last (neural/inference.py)
                    inputs = {k: (v.contiguous(memory_format=torch.channels_last)
                                  if torch.is_tensor(v) and v.ndim == 4 and v.is_floating_point() else v)
                              for k, v in inputs.items()}
                if hasattr(self.net, "set_precision"):  # the OpenVINO backend (neural/inference.py)
                    from .inference import resolve_precision

                    self.net.set_precision(resolve_precision(precision, self.device), requested=precision)
                with autocast_context(self.device, precision):
                    out = self.run_network(inputs, frame)
                return {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in out.items()}
        finally:
            self.train(was_training)


# ---------------------------------------------------------------------------------------
def _unet_bytes(hw: float, widths, in_ch: int, out_ch: int) -> float:
    """Peak live activations of a UNet forward in eval mode: every skip tensor, plus at the finest
    decoder level the upsampled input, the concatenation and two conv outputs (× 1.5 margin)."""
    widths = list(widths) or [in_ch]
    skips = sum(c / 4 ** level for level, c in enumerate(widths))
    c0, c1 = widths[0], widths[1] if len(widths) > 1 else widths[0]
    return 1.5 * 4 * hw * (in_ch + skips + c1 + (c0 + c1) + 2 * c0 + out_ch)


def _levels(width: int, depth: int, max_width: int = 1 << 30):
    return [min(width * 2 ** i, max_width) for i in range(depth + 1)]


def fp32_inputs(device: torch.device):
    """Autocast off (the input renderers' geometry, erfc and scatter maths stay float32)."""
    return torch.autocast(device.type if device.type in ("cpu", "cuda", "mps") else "cpu", enabled=False)


class VertexProjectionAvatar(Avatar):
    """SMPLpix: P_X = project(X, colours) (eq. 3-4), G(P_X) (eq. 5).

    Per-identity: ``identity.vertex_colors (V,3)`` in [0, 1] (a parameter: training may fit
    it by gradient through the projection, or set it from data; it is clamped to [0, 1] when
    used), and with ``unet.descriptors = D > 0`` learnt ``identity.vertex_descriptors (V,D)``
    splatted like the colours (input channels: RGB, depth, then the D descriptors). The depth channel is normalised per frame by the body's bounding sphere seen from
    the camera: with c the centre of the body's world-space axis-aligned bounding box, s half
    its diagonal and z_c the camera-space depth of c, ``depth_range = (z_c - s, z_c + s)``,
    so every body point maps into [0, 1] (background = 1, SMPLpix eq. 4) and the scale does
    not depend on the camera distance or viewing direction.
    """

    mode = VERTEX_PROJECTION

    def __init__(self, config: AvatarConfig, vertex_colors: torch.Tensor | None = None, faces=None):
        super().__init__(config)
        V = config.num_verts
        if V < 1:
            raise NeuralAvatarError("VERTEX_PROJECTION needs the body's vertex count in the config.")
        if vertex_colors is None:
            vertex_colors = torch.full((V, 3), 0.5)
        vertex_colors = torch.as_tensor(vertex_colors, dtype=torch.float32)
        if vertex_colors.shape != (V, 3):
            raise NeuralAvatarError(f"Vertex colours must be ({V}, 3), got {tuple(vertex_colors.shape)}.")
        self.identity.vertex_colors = nn.Parameter(vertex_colors.clone())
        if config.unet.point_splat:
            # footprint splats (project.footprint_radii) need the mesh's edges; the faces travel
            # in the bundle like ANR's
            if faces is None:
                raise NeuralAvatarError("VERTEX_PROJECTION with point splats needs the body's faces.")
            faces = (faces if torch.is_tensor(faces) else torch.from_numpy(np.array(faces, dtype=np.int64))).long()
            if faces.dim() != 2 or faces.shape[1] != 3 or (faces.numel() and (faces.min() < 0 or faces.max() >= V)):
                raise NeuralAvatarError("The body's faces do not index its vertices.")
            self.register_buffer("faces", faces)
            # the mesh's edges, derived from the faces on first use (not saved)
            self.register_buffer("edges", torch.empty(0, 2, dtype=torch.long, device=faces.device), persistent=False)
        # SMPLpix's upsampled topology (UNetConfig.subdivide, which needs point_splat and so the
        # faces above): per level, the edges whose midpoints are appended (derived from the
        # faces, not saved); the projected points are the body's vertices followed by them, and
        # the splats are sized by the subdivided mesh's edges
        self._levels: list[str] = []
        self.num_points = V
        if config.unet.subdivide:
            from .inputs.project import footprint_sources, subdivide_midpoints

            if not config.unet.point_splat or faces.is_meta:
                raise NeuralAvatarError("VERTEX_PROJECTION with a subdivided mesh needs point splats and the body's faces.")
            f = faces
            for level in range(int(config.unet.subdivide)):
                edges, f = subdivide_midpoints(f, self.num_points)
                self.register_buffer(f"subdivision_edges_{level}", edges, persistent=False)
                self._levels.append(f"subdivision_edges_{level}")
                self.num_points += int(edges.shape[0])
            # the splats' sizes from the base mesh (midsegment theorem, project.footprint_sources):
            # the base edges and each point's incidences, instead of the subdivided mesh's edges
            e0, point, edge = footprint_sources(faces, V, len(self._levels))
            self.edges = e0
            self.register_buffer("footprint_point", point, persistent=False)
            self.register_buffer("footprint_edge", edge, persistent=False)
        D = config.unet.descriptors
        if D:
            # learnt per-vertex descriptors (SMPLpix sec. 6; NPBG's point descriptors), U[-1, 1]
            # like ANR's neural texture and the same for every identity (fixed seed). Not small:
            # a warm start zero-extends the first conv (trainer._warm_start), and under Adam the
            # descriptors' effect then grows with lr x their magnitude
            g = torch.Generator().manual_seed(0)
            self.identity.vertex_descriptors = nn.Parameter(torch.rand(self.num_points, D, generator=g) * 2.0 - 1.0)
        self.net = SMPLpixUNet(config.unet)
        if config.unet.out_ch != 3 + int(config.output_mask):
            raise NeuralAvatarError(
                f"UNet out_ch {config.unet.out_ch} does not match output_mask={config.output_mask}")

    @property
    def input_channels(self) -> int:
        return self.config.unet.in_ch

    def densify(self, x: torch.Tensor) -> torch.Tensor:
        """Per-vertex ``x (..., V, C)`` -> per projected point ``(..., num_points, C)``: the
        subdivision levels' edge midpoints appended (identity without ``unet.subdivide``)."""
        from .inputs.project import midpoints

        for name in self._levels:
            x = midpoints(x, getattr(self, name))
        return x

    def point_features(self) -> torch.Tensor:
        """What each projected point carries, ``(num_points, 3 + D)``: its colour (clamped to
        [0, 1], midpoints' colours their edges' means) and its learnt descriptors. Pose-free, so
        at render time (no gradient recorded) it is kept until the identity's tensors change
        (another identity, an in-place update, a move to another device); while training it is recomputed every step."""
        params = [self.identity.vertex_colors]
        if self.config.unet.descriptors:
            params.append(self.identity.vertex_descriptors)
        cached = getattr(self, "_features_cache", None)
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        if (not grad and cached is not None and len(cached[0]) == len(params)
                and all(p is q and k == (p._version, p.data_ptr(), p.dtype) for p, (q, k) in zip(params, cached[0]))):
            return cached[1]
        colors = self.densify(params[0].clamp(0.0, 1.0))
        if len(params) > 1:
            colors = torch.cat([colors, params[1].to(colors.dtype)], -1)
        # the tensors themselves are held (compared by identity, so a freed one's address is never mistaken)
        self._features_cache = None if grad else ([(p, (p._version, p.data_ptr(), p.dtype)) for p in params], colors)
        return colors

    @staticmethod
    def depth_range(verts: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame ``(near (B,), far (B,))`` from the body's bounding sphere (class docstring)."""
        with torch.no_grad():
            lo = verts.amin(dim=1)
            hi = verts.amax(dim=1)
            c = 0.5 * (lo + hi)  # (B,3)
            s = (0.5 * (hi - lo).norm(dim=-1)).clamp_min(1e-3)
            R = R.expand(verts.shape[0], 3, 3)
            t = t.expand(verts.shape[0], 3)
            zc = (R[:, 2, :] * c).sum(-1) + t[:, 2]
            near = (zc - s).clamp_min(1e-4)
            far = torch.maximum(zc + s, near + 1e-3)
        return near, far

    def make_input(self, frame: FrameInputs) -> dict[str, Any]:
        from .inputs.project import project_vertices

        _check_frame(frame, self.config.num_verts, None)
        near, far = self.depth_range(frame.verts, frame.R, frame.t)
        verts = frame.verts
        if self._levels:  # the upsampled topology: midpoints of posed positions (colours below)
            verts = self.densify(verts)
        lengths = None
        if self.config.unet.point_splat:  # footprint splats (project.footprint_radii)
            from .inputs.project import longest_incident_edges, mesh_edges

            if self.edges.numel() == 0:
                self.edges = mesh_edges(self.faces)
            if self._levels:  # from the base mesh's edges (project.footprint_sources)
                lengths = longest_incident_edges(frame.verts, self.edges, self.footprint_point, self.footprint_edge,
                                                 len(self._levels), self.num_points)
            else:
                lengths = longest_incident_edges(verts, self.edges)
        D = self.config.unet.descriptors
        colors = self.point_features()
        img, hit = project_vertices(verts, colors, frame.K, frame.R, frame.t, frame.size,
                                    depth_range=(near, far), return_mask=True, splat_lengths=lengths)
        if D:  # RGB-D first (SMPLpix's channels, whatever the descriptors), then the descriptors
            img = torch.cat([img[:, :3], img[:, -1:], img[:, 3:-1]], 1)
        if img.shape[1] != self.input_channels:
            raise NeuralAvatarError(f"UNet expects {self.input_channels} input channels, projection gives {img.shape[1]}.")
        with torch.no_grad():  # metric depth for the Z pass: z = near + d (far - near), inf off the body
            z = near.view(-1, 1, 1, 1) + img[:, 3:4].float() * (far - near).view(-1, 1, 1, 1)
            z = torch.where(hit > 0.5, z, torch.full_like(z, float("inf")))
        return {"input": img, "depth": z}

    def run_network(self, inputs: dict[str, Any], frame: FrameInputs) -> dict[str, Any]:
        return self._finish(self.net(inputs["input"]), frame, inputs)


# ---------------------------------------------------------------------------------------
def _vp_render_bytes(self, h, w):
    u = self.config.unet
    # projection: int64 depth keys + RGB-D image + index buffers per pixel
    return int(_unet_bytes(h * w, _levels(u.width, u.depth, u.max_width), u.in_ch, u.out_ch) + 48 * h * w)


class NeuralTextureAvatar(Avatar):
    """ANR: I_uv = rasterise(UV), neural image = T(I_uv), R2(R1(.), I_norm) (eq. 2).

    Per-identity: ``identity.texture`` (a learnable ``LaplacianPyramidTexture``, C x S x S,
    initialised U[-1, 1] as in ANR). Buffers: ``faces (F,3)``, ``uv (T,2)``, ``uv_faces (F,3)``.
    The normal image is in view space (camera frame, OpenCV axes), zero off the body.
    """

    mode = NEURAL_TEXTURE

    def __init__(self, config: AvatarConfig, faces: torch.Tensor, uv: torch.Tensor, uv_faces: torch.Tensor):
        from .inputs.raster import LaplacianPyramidTexture

        super().__init__(config)
        faces = torch.as_tensor(np.array(faces, dtype=np.int64) if not torch.is_tensor(faces) else faces).long()
        uv_faces = torch.as_tensor(np.array(uv_faces, dtype=np.int64) if not torch.is_tensor(uv_faces)
                                   else uv_faces).long()
        uv = torch.as_tensor(np.array(uv, dtype=np.float32) if not torch.is_tensor(uv) else uv).float()
        if faces.ndim != 2 or faces.shape[1] != 3 or uv_faces.shape != faces.shape:
            raise NeuralAvatarError("NEURAL_TEXTURE needs faces (F,3) and UV faces of the same shape.")
        if uv.ndim != 2 or uv.shape[1] != 2:
            raise NeuralAvatarError(f"UV coordinates must be (T,2), got {tuple(uv.shape)}.")
        if faces.numel() and not faces.is_meta and (int(faces.max()) >= config.num_verts or int(faces.min()) < 0):
            raise NeuralAvatarError("Face indices do not fit the body's vertex count.")
        if uv_faces.numel() and not uv_faces.is_meta and (int(uv_faces.max()) >= uv.shape[0]
                                                          or int(uv_faces.min()) < 0):
            raise NeuralAvatarError("UV face indices do not fit the UV coordinates.")
        self.register_buffer("faces", faces)
        self.register_buffer("uv", uv)
        self.register_buffer("uv_faces", uv_faces)
        a = config.anr
        # ANR: U[-1, 1] initialisation, the same for every identity (fixed seed)
        self.identity.texture = LaplacianPyramidTexture(a.pyramid_levels, a.texture_channels, a.texture_size,
                                                        init="uniform", generator=torch.Generator().manual_seed(0))
        self.net = AnrRenderer(a)

    @property
    def input_channels(self) -> int:
        return self.config.anr.texture_channels

    def make_input(self, frame: FrameInputs) -> dict[str, Any]:
        from .inputs.raster import rasterize, sample_texture

        _check_frame(frame, self.config.num_verts, None)
        use_n = self.config.anr.use_normals
        if self.__dict__.get("_closed") is None:
            from .inputs.raster import is_closed_oriented

            self.__dict__["_closed"] = is_closed_oriented(self.faces)
        # a closed, consistently oriented body seen from outside shows only front faces: culling
        # the others gives the same image for about 20 % less rasterization
        raster = rasterize(frame.verts, self.faces, frame.K, frame.R, frame.t, frame.size,
                           uv=self.uv, uv_faces=self.uv_faces, compute_normals=use_n,
                           cull_backfaces=self._closed)
        neural = sample_texture(self.identity.texture(), raster, background=0.0)
        # raster.normals are already in the camera frame (OpenCV axes), 0 off the body
        normals = raster.normals if use_n else None
        return {"input": neural, "normals": normals, "depth": raster.depth[:, None], "raster_mask": raster.mask}

    def run_network(self, inputs: dict[str, Any], frame: FrameInputs) -> dict[str, Any]:
        out = self.net(inputs["input"], inputs["normals"], self._background(frame))
        y = torch.cat([out["rgb_fg"], out["mask_logit"]], dim=1) if self.config.output_mask else out["rgb_fg"]
        return self._finish(y, frame, inputs, aux_rgb=out["aux_rgb"].float())


# ---------------------------------------------------------------------------------------
def _nt_render_bytes(self, h, w):
    a = self.config.anr
    hw = h * w
    r1 = _unet_bytes(hw, _levels(a.r1_width, a.r1_depth), a.texture_channels, a.latent_channels)
    r2 = _unet_bytes(hw, _levels(a.r2_width, a.r2_depth), a.latent_channels + 3, 4)
    # rasteriser: face index, depth key, barycentrics, uv, normals; the sampled texture
    raster = 4 * hw * (16 + a.texture_channels)
    return int(max(r1, r2) + raster + 4 * hw * (a.latent_channels + 8))


class GaussianBonesAvatar(Avatar):
    """HumanViewSynthesis: Gaussian bone primitives (eq. 7-10), feature image (eq. 11-15),
    style UNet (eq. 16).

    Per-identity: ``identity.appearance (M,A)`` (one vector per bone, eq. 4),
    ``identity.background_appearance (A,)`` (b, initialised to 0 as in the paper) and
    ``identity.log_widths (M,)`` (w_ij of eq. 10, learnt when ``learn_widths``).
    Buffer: ``parents (J,)`` (root = -1).
    """

    mode = GAUSSIAN_BONES

    def __init__(self, config: AvatarConfig, parents):
        super().__init__(config)
        parents = torch.as_tensor(np.array(parents, dtype=np.int64) if not torch.is_tensor(parents) else parents).long()
        J = config.num_joints
        if parents.shape != (J,):
            raise NeuralAvatarError(f"The skeleton has {parents.shape[0]} joints, the config {J}.")
        parents = torch.where((parents < 0) | (parents >= J), torch.full_like(parents, -1), parents)
        if not parents.is_meta and int((parents < 0).sum()) != 1:
            raise NeuralAvatarError("The skeleton must have exactly one root joint.")
        self.register_buffer("parents", parents)
        s = config.style
        gen = torch.Generator().manual_seed(0)
        self.identity.appearance = nn.Parameter(torch.randn(s.num_primitives, s.appearance_dim, generator=gen,
                                                            device=torch.empty(0).device))
        self.identity.background_appearance = nn.Parameter(torch.zeros(s.appearance_dim))
        log_w = torch.full((s.num_primitives,), math.log(s.bone_width))
        if s.learn_widths:
            self.identity.log_widths = nn.Parameter(log_w)
        else:
            self.identity.register_buffer("log_widths", log_w)
        self.net = StyleUNet(s, out_mask=config.output_mask)
        self.encoder = AppearanceEncoder(s) if s.encoder else None

    @property
    def input_channels(self) -> int:
        return self.config.style.appearance_dim

    def _appearance(self, B: int) -> torch.Tensor:
        """``(B, M, A)``: the identity's vectors, or per-sample ones swapped in for training
        (``identity.appearance`` given as ``(B, M, A)`` through ``functional_call``)."""
        app = self.identity.appearance
        return app[None].expand(B, -1, -1) if app.dim() == 2 else app

    def encode_appearance(self, src) -> torch.Tensor:
        """HVS eq. 4: ``a (B, M, A)`` from source views (:class:`.inputs.source.SourceViews`)
        of a person, none of whom need be a trained identity: each view is cropped to the body
        at ``encoder_res``, the primitives' weights are rendered in it from its camera and the
        source pose (eq. 11-14), and :class:`.networks.style.AppearanceEncoder` reads it. With
        several views the vectors are averaged, weighted by each limb's visibility."""
        from .inputs.gaussians import bone_gaussians, gaussian_weights
        from .inputs.source import crop_to_body

        if self.encoder is None:
            raise NeuralAvatarError("This GAUSSIAN_BONES avatar has no appearance encoder: it was trained for its "
                                    "own people only. Use a generalizable (zoo-trained) HVS bundle.")
        s = self.config.style
        fs = max(1, s.encoder_res // 4)
        with fp32_inputs(src.rgb.device):
            crop = crop_to_body(src, s.encoder_res)
            mu, cov = bone_gaussians(crop.joints, self.parents, self.identity.log_widths.exp().detach())
            ws = []
            for v in range(crop.num_views):
                K = crop.K[:, v].clone()
                K[:, :2] = K[:, :2] * (fs / s.encoder_res)
                ws.append(gaussian_weights(mu, cov, K, crop.R[:, v], crop.t[:, v], (fs, fs)))
        outs, vis = [], []
        for v, w in enumerate(ws):
            outs.append(self.encoder(crop.rgb[:, v], crop.mask[:, v], w))
            vis.append(w[:, : s.num_primitives].flatten(2).mean(-1, keepdim=True) + 1e-4)
        if len(outs) == 1:
            return outs[0]
        wv = torch.stack(vis, 0)
        return (torch.stack(outs, 0) * wv).sum(0) / wv.sum(0)

    def make_input(self, frame: FrameInputs) -> dict[str, Any]:
        from .inputs.gaussians import bone_gaussians, feature_stride, render_gaussians

        _check_frame(frame, None, self.config.num_joints)
        B = frame.batch_size
        widths = self.identity.log_widths.exp()
        mu, cov = bone_gaussians(frame.joints, self.parents, widths)
        M = self.config.style.num_primitives
        if mu.shape[1] != M:
            raise NeuralAvatarError(f"The skeleton gives {mu.shape[1]} bone primitives, the avatar has {M}.")
        app = self._appearance(B)
        # the feature image is smooth on the scale of the narrowest primitive: coarser where it is wide
        stride = feature_stride(mu, cov, frame.K, frame.R, frame.t) if not torch.is_grad_enabled() else 1
        feat = render_gaussians(mu, cov, app, frame.K, frame.R, frame.t, frame.size,
                                self.identity.background_appearance, stride=stride)
        return {"input": feat, "depth": None}

    def run_network(self, inputs: dict[str, Any], frame: FrameInputs) -> dict[str, Any]:
        y = self.net(inputs["input"], self._appearance(inputs["input"].shape[0]))
        return self._finish(y, frame, inputs)


AVATAR_CLASSES = {
    VERTEX_PROJECTION: VertexProjectionAvatar,
    NEURAL_TEXTURE: NeuralTextureAvatar,
    GAUSSIAN_BONES: GaussianBonesAvatar,
}


def _attr(body, *names, required=True):
    for n in names:
        v = getattr(body, n, None)
        if v is not None:
            return v
    if required:
        raise NeuralAvatarError(f"The body model has no {names[0]!r}, which this mode needs.")
    return None


def build_avatar(config: AvatarConfig, body) -> Avatar:
    """A fresh (untrained) avatar of ``config.mode`` for ``body`` — any object with
    ``faces (F,3)``, ``vt (T,2)``, ``ft (F,3)``, ``parents (J,)``, ``num_verts`` and
    ``model_id`` (e.g. ``neural_avatar.body.BodyModel``). Empty ``body_model_id`` /
    ``num_verts`` in the config are filled from the body; set ones must match it."""
    config.validate()
    num_verts = int(_attr(body, "num_verts"))
    parents = np.asarray(_attr(body, "parents"), dtype=np.int64).reshape(-1)
    model_id = str(getattr(body, "model_id", "") or "")
    upd = {}
    if config.num_verts in (0, num_verts):
        upd["num_verts"] = num_verts
    else:
        raise NeuralAvatarError(f"The config is for a body with {config.num_verts} vertices, this body has {num_verts}.")
    if config.body_model_id and model_id and config.body_model_id != model_id:
        raise NeuralAvatarError(f"The config is for body model {config.body_model_id!r}, this body is {model_id!r}.")
    upd["body_model_id"] = config.body_model_id or model_id
    if config.num_joints != parents.shape[0]:
        if config.mode == GAUSSIAN_BONES and config.style.num_primitives != parents.shape[0] - 1:
            upd["style"] = dataclasses.replace(config.style, num_primitives=parents.shape[0] - 1)
        upd["num_joints"] = int(parents.shape[0])
    cfg = dataclasses.replace(config, **upd)
    cfg.validate()
    if cfg.mode == VERTEX_PROJECTION:
        return VertexProjectionAvatar(cfg, faces=_attr(body, "faces") if cfg.unet.point_splat else None)
    if cfg.mode == NEURAL_TEXTURE:
        vt = _attr(body, "vt")
        ft = _attr(body, "ft")
        return NeuralTextureAvatar(cfg, _attr(body, "faces"), vt, ft)
    if cfg.mode == PIXEL_ALIGNED:
        from .pixel_aligned import build_pixel_avatar

        return build_pixel_avatar(cfg, body)
    return GaussianBonesAvatar(cfg, parents)


__all__ = [
    "FrameInputs", "Avatar", "VertexProjectionAvatar", "NeuralTextureAvatar", "GaussianBonesAvatar",
    "AVATAR_CLASSES", "build_avatar", "autocast_context", "PRECISIONS",
]


# Memory estimates (defined with the helpers above; attached here, after the classes).
VertexProjectionAvatar.render_bytes = _vp_render_bytes
NeuralTextureAvatar.render_bytes = _nt_render_bytes
GaussianBonesAvatar.render_bytes = _gb_render_bytes
