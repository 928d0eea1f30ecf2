"""PIXEL_ALIGNED: the AniPixel avatar (neural/networks/anipixel.py) as an :class:`Avatar`.

A generalizable bundle holds the shared fields; a person is given at render time as source
views (:meth:`PixelAlignedAvatar.set_sources`: a few synchronised images of them, with masks,
cameras and the body at that instant, e.g. the first views of a capture folder,
:func:`load_source_avatar`). No training for that person. No bpy here.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CancelledError, DatasetError, NeuralAvatarError
from .avatar import Avatar, FrameInputs, _check_frame
from .config import PIXEL_ALIGNED, AvatarConfig
from .inputs import skinning
from .inputs.source import SourceViews, crop_to_body
from .networks.anipixel import AniPixelFields, eval_colour, eval_geometry, eval_points, pose_code, volume_render


def vertex_normals(v: np.ndarray, faces: np.ndarray) -> np.ndarray:
    n = np.zeros_like(v)
    fn = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    for k in range(3):
        np.add.at(n, faces[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


RAY_CHUNK = 4096
"""Rays volume-rendered at once (memory bound; the render can be cancelled between chunks)."""
# Inference shades (eq. 6-7: the SDF normal, the views' blend and the shading MLP) only the samples
# whose volume-rendering weight exceeds this; the others' colours are left out of the sum. A ray
# has at most ``samples`` of them, so a pixel moves by at most samples x this (3.2e-3 at 32
# samples, 50 dB) and in practice far less. None shades every sample (training always does).
COLOUR_WEIGHT_EPS: Optional[float] = 1e-4


class PixelAlignedAvatar(Avatar):
    """AniPixel. Buffers from the body (not saved): the neutral template ``template (N,3)``,
    skinning ``weights (N,J)``, and their every-``vertex_stride``-th subsample with normals
    for the nearest-surface queries. Per-identity latents live in the fields (a new person
    takes the training identity whose body box is nearest, sec. 4 "the nearest person")."""

    mode = PIXEL_ALIGNED

    def __init__(self, config: AvatarConfig, template, weights, faces=None, normals=None):
        super().__init__(config)
        #: polled between ray chunks while rendering (the engine's test_break): True cancels
        self.should_stop = None
        p = config.pixel
        as_t = lambda a: torch.as_tensor(a if torch.is_tensor(a) else np.asarray(a, np.float32), dtype=torch.float32)  # noqa: E731
        v, w = as_t(template), as_t(weights)
        if tuple(v.shape) != (config.num_verts, 3) or tuple(w.shape) != (config.num_verts, config.num_joints):
            raise NeuralAvatarError("The body's template or skinning weights do not match the avatar's config.")
        if normals is None:
            if v.is_meta:
                n = torch.empty_like(v)
            else:
                n = torch.from_numpy(vertex_normals(v.double().numpy(), np.asarray(faces, np.int64)).astype(np.float32))
        else:
            n = as_t(normals)
        sub = torch.arange(0, v.shape[0], p.vertex_stride)
        # the body the avatar was trained with travels in the bundle (a bundle is self-contained)
        self.register_buffer("template", v.clone())
        self.register_buffer("weights", w.clone())
        self.register_buffer("normals", n.clone())
        self.register_buffer("sub", sub, persistent=False)
        self.fields = AniPixelFields(config.num_joints, p.num_identities, p.hidden, p.latent)
        # each training identity's body-box scale (log), for the nearest person at test time
        self.register_buffer("identity_scale", torch.zeros(p.num_identities, 3))
        self._src: Optional[Dict[str, Any]] = None

    @property
    def template_s(self):
        return self.template[self.sub]

    @property
    def normals_s(self):
        return self.normals[self.sub]

    @property
    def weights_s(self):
        return self.weights[self.sub]

    @property
    def input_channels(self) -> int:
        return 3

    def network_parameters(self):
        return [q for q in self.parameters() if q.requires_grad]

    # ---- bodies -----------------------------------------------------------------------
    def body_state(self, verts: torch.Tensor):
        """Bone transforms (template rest -> this body), box normalisation and pose code."""
        T = skinning.bone_transforms(self.template, verts, self.weights)
        U = skinning.unpose(verts, self.weights, T)
        scale, cs, c0 = skinning.box_normalisation(U, self.template)
        return {"T": T, "scale": scale, "cs": cs, "c0": c0, "theta": pose_code(T)}

    # ---- source views -----------------------------------------------------------------
    def encode_sources(self, src: SourceViews, identity: Optional[torch.Tensor] = None) -> Dict[str, Any]:
        """Read the source views: crops at ``source_res``, pixel-aligned features, global
        feature ``L``, the source body's transforms; the identity latent (given, or the nearest
        training person by body box)."""
        p = self.config.pixel
        src = src.to(self.device)
        V = src.num_views
        crop = crop_to_body(src, p.source_res)
        B = crop.batch_size
        feats, globs = [], []
        for v in range(V):
            f, g = self.fields.enc(crop.rgb[:, v], crop.mask[:, v])
            feats.append(f)
            globs.append(g)
        st = self.body_state(src.verts)
        if identity is None:
            d = ((torch.log(st["scale"])[:, None] - self.identity_scale[None]) ** 2).sum(-1)
            identity = d.argmin(1)
        return {"feat": torch.stack(feats, 1), "rgb": crop.rgb, "K": crop.K, "R": crop.R, "t": crop.t,
                "glob": torch.stack(globs, 1).mean(1), "size": (p.source_res, p.source_res), "body": st,
                "joints": src.joints, "identity": identity.to(self.device).long().reshape(B)}

    def set_sources(self, src: SourceViews) -> None:
        """The person this avatar renders (source views of one instant, batch 1)."""
        if src.batch_size != 1:
            raise NeuralAvatarError("Set the source views of one person (batch 1).")
        with torch.no_grad():
            self._src = self.encode_sources(src)

    # ---- rendering --------------------------------------------------------------------
    def render_rays(self, frame: FrameInputs, enc: Dict[str, Any], need_grad: bool, jitter: bool = False,
                    template_loss: bool = False) -> Dict[str, torch.Tensor]:
        """Volume-render every pixel of ``frame`` (batch items rendered one by one): rays that
        meet the box of the posed body grown by ``near_body`` are sampled ``samples`` times
        inside it; points farther than ``near_body`` from the body are empty (eq. 1's
        background weight) and not evaluated."""
        p = self.config.pixel
        _check_frame(frame, self.config.num_verts, None)
        B = frame.batch_size
        H, W = int(frame.size[0]), int(frame.size[1])
        bg = self._background(frame)
        st_t = self.body_state(frame.verts)
        out_rgb, out_acc, out_msdf, extras = [], [], [], {"grad": [], "disp": [], "fw_res": [], "tmpl": []}
        jj = torch.arange(W, device=self.device, dtype=torch.float32) + 0.5
        ii = torch.arange(H, device=self.device, dtype=torch.float32) + 0.5
        gy, gx = torch.meshgrid(ii, jj, indexing="ij")
        pix = torch.stack([gx.reshape(-1), gy.reshape(-1), torch.ones(H * W, device=self.device)], -1)
        for b in range(B):
            K = frame.K[min(b, frame.K.shape[0] - 1)]
            R = frame.R[min(b, frame.R.shape[0] - 1)]
            t = frame.t[min(b, frame.t.shape[0] - 1)]
            d_cam = pix @ torch.linalg.inv(K).T
            d = F.normalize(d_cam @ R, dim=-1)  # world directions (R^T d_cam)
            o = -(R.T @ t)
            vb = frame.verts[b]
            lo, hi = vb.amin(0) - p.near_body, vb.amax(0) + p.near_body
            inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
            t0, t1 = (lo - o) * inv, (hi - o) * inv
            near = torch.minimum(t0, t1).amax(-1).clamp_min(1e-3)
            far = torch.maximum(t0, t1).amin(-1)
            hit = far > near
            idx = torch.nonzero(hit)[:, 0]
            rgb = bg.view(1, 3).expand(H * W, 3).clone()
            acc = torch.zeros(H * W, device=self.device)
            msdf = torch.full((H * W,), 1.0, device=self.device)
            S = p.samples
            # per body, shared by its ray chunks
            u_mid = (torch.arange(S, device=self.device, dtype=torch.float32) + 0.5) / S
            vs = vb[self.sub][None]
            e = b if enc["feat"].shape[0] > 1 else 0  # one person's sources for the whole batch
            body = {"T_t": st_t["T"][b:b + 1], "T_o": enc["body"]["T"][e:e + 1],
                    "verts_t": vs, "weights": self.weights_s,
                    "scale_t": st_t["scale"][b:b + 1], "cs_t": st_t["cs"][b:b + 1], "c0": st_t["c0"],
                    "scale_o": enc["body"]["scale"][e:e + 1], "cs_o": enc["body"]["cs"][e:e + 1],
                    "template": self.template_s, "template_normals": self.normals_s,
                    "theta_t": st_t["theta"][b:b + 1], "theta_o": enc["body"]["theta"][e:e + 1],
                    "joints_o": enc["joints"][e:e + 1]}
            src = {k: (v[e:e + 1] if torch.is_tensor(v) else v) for k, v in enc.items()
                   if k in ("feat", "rgb", "K", "R", "t", "glob", "size")}
            for c0 in range(0, len(idx), RAY_CHUNK):  # bounded memory, and a cancel point per chunk
                if self.should_stop is not None and self.should_stop():
                    raise CancelledError("Render cancelled.")
                ci = idx[c0:c0 + RAY_CHUNK]
                if jitter:
                    u = ((torch.arange(S, device=self.device) + torch.rand(len(ci), S, device=self.device)) / S)
                else:
                    u = u_mid[None].expand(len(ci), S)
                z = near[ci, None] + (far[ci] - near[ci])[:, None] * u
                x = o + d[ci, None] * z[..., None]  # (R,S,3)
                # eq. 1's nearest surface, once; only distances below near_body matter (farther is background)
                dist, nn_i = skinning.nearest(x.reshape(1, -1, 3), vs, radius=p.near_body)
                valid = dist[0] < p.near_body
                vi = torch.nonzero(valid)[:, 0]
                sigma = torch.zeros(x.shape[0] * S, device=self.device)
                col = torch.zeros(x.shape[0] * S, 3, device=self.device)
                sdf = torch.ones(x.shape[0] * S, device=self.device)
                if len(vi):
                    xv = x.reshape(-1, 3)[vi][None]
                    dv = d[ci][:, None].expand(-1, S, -1).reshape(-1, 3)[vi][None]
                    if need_grad or COLOUR_WEIGHT_EPS is None:
                        ev = eval_points(self.fields, body, xv, dv, src, enc["identity"][e:e + 1], need_grad,
                                         p.near_body, nearest_t=(dist[:, vi], nn_i[:, vi]))
                    else:  # geometry at every sample, colour where the ray's weight is
                        ev = eval_geometry(self.fields, body, xv, src, enc["identity"][e:e + 1], False, p.near_body,
                                           nearest_t=(dist[:, vi], nn_i[:, vi]))
                    sigma = sigma.index_put((vi,), ev["sigma"][0])
                    sdf = sdf.index_put((vi,), ev["sdf"][0])
                    if "rgb" in ev:
                        col = col.index_put((vi,), ev["rgb"][0])
                    else:
                        _, _, w = volume_render(sigma.view(-1, S), col.view(-1, S, 3), z)
                        keep = torch.nonzero(w.reshape(-1)[vi] > COLOUR_WEIGHT_EPS)[:, 0]
                        if len(keep):
                            rgb_k, _ = eval_colour(self.fields, body, ev["ctx"], dv, src, sel=keep)
                            col = col.index_put((vi[keep],), rgb_k[0])
                    if need_grad:
                        extras["grad"].append(ev["grad"][0])
                        extras["disp"].append(ev["disp"][0])
                        extras["fw_res"].append(ev["fw_res"][0])
                c, a, _ = volume_render(sigma.view(-1, S), col.view(-1, S, 3), z)
                rgb = rgb.index_put((ci,), c + (1.0 - a)[:, None] * bg)
                acc = acc.index_put((ci,), a)
                msdf = msdf.index_put((ci,), sdf.view(-1, S).amin(1))
            out_rgb.append(rgb.T.reshape(3, H, W))
            out_acc.append(acc.reshape(1, H, W))
            out_msdf.append(msdf.reshape(1, H, W))
            if template_loss and need_grad:
                extras["tmpl"].append(self._template_terms(enc, b if enc["feat"].shape[0] > 1 else 0))
        res = {"rgb": torch.stack(out_rgb), "mask": torch.stack(out_acc).clamp(0, 1), "min_sdf": torch.stack(out_msdf)}
        for k, v in extras.items():
            if v:
                res[k] = torch.cat(v) if k != "tmpl" else v
        return res

    def _template_terms(self, enc, b: int, n: int = 256):
        """SDF and normal of the canonical field at neutral-body vertices (the shape loss, L_N)."""
        idx = torch.randint(0, self.template_s.shape[0], (n,), device=self.device)
        from .networks.anipixel import canonical_sdf

        x = self.template_s[idx][None].clone().requires_grad_(True)
        lid = self.fields.ident[enc["identity"][b:b + 1]][:, None].expand(1, n, -1)
        cond = torch.cat([torch.zeros(1, n, 3, device=self.device), lid, torch.zeros(1, n, 16, device=self.device)], -1)
        s = canonical_sdf(self.fields, x, cond, self.template_s, self.normals_s)
        g = torch.autograd.grad(s.sum(), x, create_graph=True)[0]
        return {"sdf": s, "normal": F.normalize(g, dim=-1), "target_normal": self.normals_s[idx][None]}

    def forward(self, frame: FrameInputs, enc: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        frame = self.prepare(frame)
        enc = enc if enc is not None else self._need_src()
        r = self.render_rays(frame, enc, need_grad=False)
        return self._pack(r)

    def _need_src(self):
        if self._src is None:
            raise NeuralAvatarError("A PIXEL_ALIGNED avatar renders a person from source views: give the body a "
                                    "source-views folder (Avatar from Views) first.")
        return self._src

    def _pack(self, r):
        mask = r["mask"]
        rgb = r["rgb"]
        logit = torch.logit(mask.clamp(1e-4, 1 - 1e-4))
        return {"rgb": rgb, "mask": mask, "input": rgb, "depth": None, "aux_rgb": None, "rgb_fg": rgb,
                "mask_logit": logit, **{k: v for k, v in r.items() if k not in ("rgb", "mask")}}

    def render(self, frame: FrameInputs, precision: str = "fp32") -> Dict[str, Any]:
        """Inference (no_grad, not inference_mode: the normals of eq. 4 are SDF gradients)."""
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                out = self.forward(frame)
            return {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in out.items()}
        finally:
            self.train(was)

    def render_bytes(self, h: int, w: int) -> int:
        p = self.config.pixel
        pts = h * w * p.samples
        return int(4 * pts * (3 * 8 + p.hidden * 6 + len(self.sub) // 8) + 4 * h * w * 16)


def build_pixel_avatar(cfg: AvatarConfig, body) -> PixelAlignedAvatar:
    from .avatar import _attr

    return PixelAlignedAvatar(cfg, _attr(body, "v_template"), _attr(body, "weights"), _attr(body, "faces"))


def source_views_from_capture(root: str, body_model, views: int = 3, group: Optional[int] = None,
                              res: Optional[int] = None, device="cpu") -> SourceViews:
    """The first ``views`` frames of one synchronised pose group of a capture folder (the
    first group with that many views, or ``group``) as :class:`SourceViews`."""
    from .training.dataset import CaptureDataset

    for split in ("train", "val", "test"):
        try:
            ds = CaptureDataset(root, split, body_model, res=res, device=device)
        except DatasetError:
            continue
        groups = ds.pose_group[np.asarray(ds.indices)]
        for g in ([group] if group is not None else list(dict.fromkeys(groups.tolist()))):
            pos = [int(k) for k in np.nonzero(groups == g)[0]]
            if len(pos) >= views:
                return ds.sources(pos[:views], views_per_item=views)
    raise DatasetError(f"'{os.path.basename(os.path.abspath(root))}' has no {views} synchronised views of one instant: "
                       f"capture it with --views {views} (or more), or Avatar from Views in Blender.")


def load_source_avatar(bundle: str, source_dir: str, device="cpu", body_model=None, views: Optional[int] = None):
    """A PIXEL_ALIGNED bundle given the person of ``source_dir`` (a capture folder)."""
    from .bundle import load_bundle
    from .. import body as body_lib

    body_model = body_model or body_lib.load_default()
    av = load_bundle(bundle, device=device, expected_body=body_model)
    if av.mode != PIXEL_ALIGNED:
        raise NeuralAvatarError(f"{os.path.basename(bundle)} is a {av.mode} avatar, not PIXEL_ALIGNED.")
    src = source_views_from_capture(source_dir, body_model, views or av.config.pixel.source_views, device=device)
    av.set_sources(src)
    return av
