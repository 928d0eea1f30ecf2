"""AniPixel (Fan et al., "AniPixel: Towards Animatable Pixel-Aligned Human Avatar", MM 2023):
a generalizable, animatable volumetric avatar read from a few source views. No bpy here.

Pipeline for a target ray sample ``x_t`` (Fig. 1):

1. backward skinning (eq. 1) with the weights of the nearest posed-body vertex and a background
   weight beyond ``PixelConfig.near_body`` -> the template's rest pose, then the box
   normalisation to the neutral-sized body (sec. 3.2) and minus the displacement
   ``Delta_t = F_d(phi(x), l_idt, theta_t)``: ``x_c``;
2. forward skinning (eq. 2-3): ``w_f = softmax(F_w(phi(x_c), l_idt) + log w_init(x_c))``
   (``w_init`` from the template's nearest vertex), ``x_o = LBS_o(x_c) + Delta_o``;
3. appearance (eq. 6): project ``x_o`` into every source view, sample pixel-aligned features
   and colours, fuse the views' geometry features into ``f_geo`` and blend the colours with
   weights predicted from the features, the colour, the normal ``n_o`` and KeypointNeRF's
   relative spatial encoding (the point's depth relative to the joints' in each view);
4. canonical geometry (eq. 4): ``s = s_body(x_c) + F_s(phi(x_c), beta, l_idt, f_geo)``: the
   neutral-sized body's signed distance plus a subject-specific residual; normals
   ``n_c = grad s / |grad s|`` (sec. 3.2), carried to target/observation by the skinning
   rotations; density by the scaled Laplace CDF (eq. 5);
5. shading (eq. 7): ``c_t = F_l(v, theta_t, n_t, l_idt, L) * c_o``;
6. volume rendering over samples confined to the body's neighbourhood.

Scaled to a CPU (the paper trains ~1 day on four V100s): HashGrid of 8 levels x 2 features
(table 2^15; the paper follows Instant-NGP's 16 x 2, 2^19), MLPs of 64 units, 32 samples per
ray and no fine pass (paper 64 + 16), 128^2 images, source views cropped to 128^2.
``beta`` (the SMPL shape, which the engine does not know) is replaced by the log of the
subject's box scale relative to the neutral body, the part of the shape the box
normalisation removes.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..inputs import skinning

_PRIMES = (1, 2654435761, 805459861)


class HashGrid(nn.Module):
    """Multi-resolution hash encoding (Müller et al. 2022, eq. 3-4): per level ``l`` a grid of
    resolution ``N_l = floor(N_min b^l)`` whose corners hash into a table of ``T`` feature
    vectors; features trilinearly interpolated and concatenated over levels. Inputs are
    mapped from the box ``[lo, hi]`` to the unit cube."""

    def __init__(self, levels: int = 8, features: int = 2, log2_table: int = 15, base: int = 8,
                 finest: int = 256, lo=(-1.2, -1.5, -1.0), hi=(1.2, 1.0, 1.0)):
        super().__init__()
        self.levels, self.features, self.T = levels, features, 1 << log2_table
        b = math.exp((math.log(finest) - math.log(base)) / max(1, levels - 1))
        self.register_buffer("res", torch.tensor([math.floor(base * b ** i) for i in range(levels)], dtype=torch.float32),
                             persistent=False)
        self.register_buffer("lo", torch.tensor(lo, dtype=torch.float32), persistent=False)
        self.register_buffer("hi", torch.tensor(hi, dtype=torch.float32), persistent=False)
        self.table = nn.Parameter(torch.empty(levels, self.T, features).uniform_(-1e-4, 1e-4))
        self.out_dim = levels * features
        self.register_buffer("level_offset", (torch.arange(levels) * self.T).int(), persistent=False)
        self.register_buffer("_step", torch.tensor([0, 1]), persistent=False)
        self.register_buffer("_primes", torch.tensor(_PRIMES), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """All levels and the 8 corners of each point's cells at once (one gather from the
        levels' tables laid end to end): ``(..., 3) -> (..., levels * features)``, level-major."""
        shp = x.shape[:-1]
        u = ((x.reshape(-1, 3) - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)  # (P,3)
        p = u[:, None] * self.res[None, :, None]  # (P,L,3)
        p0 = torch.floor(p)
        f = p - p0  # the point's position in its cell
        c = p0.long()[..., None] + self._step  # (P,L,3,2): lower and upper corner per axis
        # eq. 4's spatial hash, XOR of the coordinates times large primes, modulo T: T is a power
        # of 2, so the modulo is a mask, and a mask of an XOR is the XOR of the masked terms, so
        # each axis is hashed once for its two corners (int32) and the 8 corners combine them
        hx = ((c * self._primes[:, None]) & (self.T - 1)).int()  # (P,L,3,2)
        # trilinear weights: per axis 1 - f for the lower corner, f for the upper one
        wa = torch.stack([1.0 - f, f], -1)  # (P,L,3,2)
        # corner k = dx + 2 dy + 4 dz, laid out as (dz, dy, dx)
        idx = (hx[:, :, 2, :, None, None] ^ hx[:, :, 1, None, :, None] ^ hx[:, :, 0, None, None, :]).reshape(*p.shape[:2], 8)
        w = (wa[:, :, 2, :, None, None] * wa[:, :, 1, None, :, None] * wa[:, :, 0, None, None, :]).reshape(*p.shape[:2], 8)
        idx = idx + self.level_offset[None, :, None]  # into the levels' tables laid end to end
        table = self.table.reshape(-1, self.features)
        if self.training:  # a gather: training differentiates the SDF twice (eq. Eikonal's gradient)
            out = (w[..., None] * table[idx.reshape(-1).long()].reshape(*idx.shape, self.features)).sum(2)
        else:  # inference: gathered, weighted and summed in one kernel (differentiable once, for the normals)
            out = F.embedding_bag(idx.reshape(-1, 8), table, per_sample_weights=w.reshape(-1, 8), mode="sum")
        return out.reshape(*shp, self.out_dim)


def mlp(i: int, h: int, o: int, layers: int = 2, last_zero: bool = False) -> nn.Sequential:
    mods, d = [], i
    for _ in range(layers):
        mods += [nn.Linear(d, h), nn.Softplus(beta=100)]
        d = h
    last = nn.Linear(d, o)
    if last_zero:
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    mods.append(last)
    return nn.Sequential(*mods)


def laplace_density(s: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """AniPixel eq. 5 (VolSDF): ``sigma = (1/b) (1/2 + 1/2 sign(s) (exp(-|s|/b) - 1))``,
    the scaled CDF of a zero-mean Laplace distribution of scale ``b`` at ``-s``."""
    return (0.5 + 0.5 * torch.sign(s) * (torch.exp(-s.abs() / b) - 1.0)) / b


def volume_render(sigma: torch.Tensor, rgb: torch.Tensor, z: torch.Tensor):
    """NeRF quadrature: ``alpha_k = 1 - exp(-sigma_k delta_k)``, ``T_k = prod_{j<k} (1 - alpha_j)``;
    returns colour ``sum T alpha c`` (R,3), opacity (R,) and the weights (R,S)."""
    delta = torch.cat([z[:, 1:] - z[:, :-1], (z[:, -1:] - z[:, -2:-1]).clamp_min(1e-3)], 1)
    alpha = 1.0 - torch.exp(-sigma * delta)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-10], 1), 1)[:, :-1]
    w = alpha * trans
    return (w[..., None] * rgb).sum(1), w.sum(1), w


class ImageEncoder(nn.Module):
    """Pixel-aligned features of a source view (``f^i_geo``, ``f^i_rgb`` of eq. 6) and its global
    feature ``L`` (sec. 3.4): a small encoder-decoder, stride-2 output."""

    def __init__(self, ch: int = 32, out: int = 32):
        super().__init__()
        self.e1 = nn.Sequential(nn.Conv2d(4, ch, 3, 2, 1), nn.ReLU(), nn.Conv2d(ch, ch, 3, 1, 1), nn.ReLU())
        self.e2 = nn.Sequential(nn.Conv2d(ch, 2 * ch, 3, 2, 1), nn.ReLU(), nn.Conv2d(2 * ch, 2 * ch, 3, 1, 1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(2 * ch, 2 * ch, 3, 2, 1), nn.ReLU())
        self.d = nn.Conv2d(ch + 2 * ch + 2 * ch, out, 3, 1, 1)
        self.out_dim, self.global_dim = out, 2 * ch

    def forward(self, rgb: torch.Tensor, mask: torch.Tensor):
        x1 = self.e1(torch.cat([rgb * 2 - 1, mask * 2 - 1], 1))
        x2 = self.e2(x1)
        x3 = self.e3(x2)
        up = lambda t: F.interpolate(t, size=x1.shape[-2:], mode="bilinear", align_corners=False)  # noqa: E731
        feat = self.d(torch.cat([x1, up(x2), up(x3)], 1))
        return feat, x3.mean((-2, -1))


class AniPixelFields(nn.Module):
    """The learnt parts: encoder, displacement F_d, forward weights F_w, SDF F_s, blending F_c,
    shading F_l, the Laplace scale ``b`` and per-identity latents ``l_idt``."""

    def __init__(self, num_joints: int, num_identities: int, hidden: int = 64, latent: int = 16,
                 feat: int = 32):
        super().__init__()
        J = num_joints
        self.J, self.latent = J, latent
        self.enc = ImageEncoder(32, feat)
        self.grid = HashGrid()
        g = self.grid.out_dim
        self.pose = nn.Linear(6 * J, 32)
        self.ident = nn.Parameter(torch.zeros(num_identities, latent))
        self.disp = mlp(g + latent + 32, hidden, 3, 2, last_zero=True)  # F_sigma_d
        self.fw = mlp(g + latent, hidden, J + 1, 2, last_zero=True)  # F_sigma_w (J bones + background)
        half = feat // 2
        self.geo_view = mlp(half + J, hidden, hidden, 1)  # per-view geometry feature -> fused f_geo
        self.geo_out = nn.Linear(2 * hidden, 16)
        self.blend = mlp(half + half + 3 + 3 + 3 + J + 16, hidden, 1, 2)  # F_sigma_c: weight logit per view (features, colour, n_o, ray, phi', f_geo)
        self.sdf = mlp(g + 3 + latent + 16, hidden, 1, 2, last_zero=True)  # F_sigma_s (residual)
        self.shade = mlp(3 + 32 + 3 + latent + 64, 32, 1, 1, last_zero=True)  # F_sigma_l
        self.log_b = nn.Parameter(torch.tensor(math.log(0.01)))

    def b(self) -> torch.Tensor:
        return self.log_b.exp().clamp_min(2e-3)


def pose_code(T: torch.Tensor) -> torch.Tensor:
    """theta as each bone's rotation relative to the root, 6-D (Zhou et al. 2019): ``(B, 6J)``."""
    R = T[..., :3, :3]
    rel = R[:, :1].transpose(-1, -2) @ R
    return rel[..., :2].reshape(R.shape[0], -1)


def relative_encoding(x: torch.Tensor, joints: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                      sigma: float = 0.1) -> torch.Tensor:
    """KeypointNeRF's relative spatial encoding phi'(x_o, J_o) for one view: the camera depth of
    the point minus each joint's, damped by a Gaussian of their distance; ``x (B,P,3)``,
    ``joints (B,J,3)``, view ``R (B,3,3)``, ``t (B,3)`` -> ``(B,P,J)``."""
    zx = (x @ R[:, 2:3].transpose(1, 2))[..., 0] + t[:, None, 2]
    zj = (joints @ R[:, 2:3].transpose(1, 2))[..., 0] + t[:, None, 2]
    d2 = ((x[:, :, None] - joints[:, None]) ** 2).sum(-1)
    return (zx[:, :, None] - zj[:, None]) * torch.exp(-d2 / (2 * sigma * sigma))


def sample_views(img: torch.Tensor, uv: torch.Tensor, size) -> torch.Tensor:
    """Bilinear samples of ``img (B,C,h,w)`` at pixel coordinates ``uv (B,P,2)`` of an image of
    ``size = (H, W)`` (the feature map may be coarser): ``(B,P,C)``, zeros outside."""
    H, W = size
    g = torch.stack([2 * uv[..., 0] / W - 1, 2 * uv[..., 1] / H - 1], -1)[:, :, None]
    return F.grid_sample(img, g, mode="bilinear", padding_mode="zeros", align_corners=False)[..., 0].transpose(1, 2)


def canonical_sdf(fields: "AniPixelFields", x_c: torch.Tensor, cond: torch.Tensor, template: torch.Tensor,
                  template_normals: torch.Tensor, nn_s: Optional[torch.Tensor] = None,
                  phi: Optional[torch.Tensor] = None) -> torch.Tensor:
    """AniPixel eq. 4 with the neutral-sized body split out (sec. 3.2): ``s(x_c) = s_body(x_c) +
    F_s(phi(x_c), cond)`` where ``s_body`` is the point-to-plane distance to the nearest
    vertex of the neutral template (positive outside) and ``cond = [beta, l_idt, f_geo]``.
    ``x_c (B,P,3)``, ``cond (B,P,C)``; ``nn_s (B,P)``: the template vertex nearest each point,
    when the caller has it; ``phi``: the hash-grid features ``fields.grid(x_c)``, when the caller
    has them (no gradient then flows through them to the point); returns ``(B,P)``."""
    B = x_c.shape[0]
    if nn_s is None:
        _, nn_s = skinning.nearest(x_c.detach(), template[None].expand(B, -1, -1))
    s_body = ((x_c - template[nn_s]) * template_normals[nn_s]).sum(-1)
    phi = fields.grid(x_c) if phi is None else phi
    return s_body + fields.sdf(torch.cat([phi, cond], -1))[..., 0]


def sdf_normal(fields: "AniPixelFields", x_c: torch.Tensor, cond: torch.Tensor, template: torch.Tensor,
               template_normals: torch.Tensor, create_graph: bool = False, nn_s: Optional[torch.Tensor] = None):
    """``(s, grad s)`` at ``x_c``: the normal of sec. 3.2 is ``grad s / |grad s|`` (autograd)."""
    with torch.enable_grad():
        x = x_c if (create_graph and x_c.requires_grad) else x_c.detach().requires_grad_(True)
        s = canonical_sdf(fields, x, cond if create_graph else cond.detach(), template, template_normals, nn_s)
        g = torch.autograd.grad(s.sum(), x, create_graph=create_graph)[0]
    return s, g


def eval_geometry(fields: AniPixelFields, body: Dict[str, torch.Tensor], x_t: torch.Tensor,
                  src: Dict[str, torch.Tensor], identity: torch.Tensor, need_grad: bool, near_body: float,
                  nearest_t: Optional[tuple] = None) -> Dict[str, torch.Tensor]:
    """The geometry half of :func:`eval_points` (eq. 1-5): where each target point ``x_t
    (B,P,3)`` lies in the canonical and observation spaces, the views' pixel-aligned features
    there and the SDF. Returns ``sigma (B,P)``, ``sdf``, ``valid``, ``disp``, ``fw_res``, and
    ``ctx``: what :func:`eval_colour` needs. With ``need_grad`` the SDF keeps its graph to the
    point (eq. Eikonal and the normals of training); without it, the SDF reuses the hash-grid
    features of the same canonical point instead of a second lookup (the same values)."""
    B, P, _ = x_t.shape
    Jn = fields.J
    # eq. 1: nearest-surface weights with a background weight beyond near_body
    dist, nn_i = nearest_t if nearest_t is not None else skinning.nearest(x_t, body["verts_t"])
    valid = dist < near_body
    w_b = body["weights"][nn_i]  # (B,P,J)
    Mb = skinning.blend(w_b, body["T_t"])
    x_u = skinning.apply_inverse(Mb, x_t)
    x_n = body["scale_t"][:, None] * (x_u - body["cs_t"][:, None]) + body["c0"]  # neutral-sized body
    lid = fields.ident[identity][:, None].expand(B, P, -1)
    phi_n = fields.grid(x_n)
    pose_t = fields.pose(body["theta_t"])[:, None].expand(B, P, -1)
    delta_t = fields.disp(torch.cat([phi_n, lid, pose_t], -1))
    x_c = x_n - delta_t
    # eq. 2: forward weights, initialised from the template's nearest vertex (which eq. 4's
    # neutral-body distance uses too)
    xc_d = x_c.detach()
    _, nn_c = skinning.nearest(xc_d, body["template"][None].expand(B, -1, -1))
    w_init = body["weights"][nn_c]
    phi_cd = fields.grid(xc_d)  # no gradient to the point: the observation path (see the SDF below)
    fw_res = fields.fw(torch.cat([phi_cd, lid], -1))
    w_f = torch.softmax(fw_res[..., :Jn] + torch.log(w_init.clamp_min(1e-6)), -1)
    # eq. 3: to the observation instant (undo the neutral-size normalisation of the source body)
    x_uo = (xc_d - body["c0"]) / body["scale_o"][:, None] + body["cs_o"][:, None]
    delta_o = fields.disp(torch.cat([phi_cd, lid, fields.pose(body["theta_o"])[:, None].expand(B, P, -1)], -1))
    Mf = skinning.blend(w_f, body["T_o"])
    x_o = skinning.apply(Mf, x_uo) + delta_o
    # eq. 6: pixel-aligned features and colours from every source view
    V = src["feat"].shape[1]
    half = src["feat"].shape[2] // 2
    per_geo, feats, uvs, rels = [], [], [], []
    for v in range(V):
        Kv, Rv, tv = src["K"][:, v], src["R"][:, v], src["t"][:, v]
        pc = x_o @ Rv.transpose(1, 2) + tv[:, None]
        uv = (pc @ Kv.transpose(1, 2))[..., :2] / pc[..., 2:3].clamp_min(1e-4)
        f = sample_views(src["feat"][:, v], uv, src["size"])
        rel = relative_encoding(x_o, body["joints_o"], Rv, tv)
        per_geo.append(fields.geo_view(torch.cat([f[..., :half], rel], -1)))
        feats.append(f)
        rels.append(rel)
        uvs.append(uv)  # the source colours are sampled by eval_colour, where they are needed
    G = torch.stack(per_geo, 2)  # (B,P,V,h)
    G_mean = G.mean(2)
    # the views' variance, written out: Tensor.var over this middle dimension is ~8x slower on CPU
    G_var = ((G - G_mean[:, :, None]) ** 2).mean(2)
    f_geo = fields.geo_out(torch.cat([G_mean, G_var], -1))
    # eq. 4: neutral body SDF + subject residual
    beta = torch.log(body["scale_t"]).neg()[:, None].expand(B, P, -1)
    cond = torch.cat([beta, lid, f_geo], -1)
    grad = None
    if need_grad:
        s = canonical_sdf(fields, x_c, cond, body["template"], body["template_normals"], nn_c)
        grad = torch.autograd.grad(s.sum(), x_c, create_graph=True)[0]
    else:
        s = canonical_sdf(fields, xc_d, cond, body["template"], body["template_normals"], nn_c, phi=phi_cd)
    sigma = laplace_density(s, fields.b()) * valid  # eq. 5
    ctx = {"x_c": x_c, "cond": cond, "nn_c": nn_c, "Mf": Mf, "Mb": Mb, "x_o": x_o, "feat": feats, "uv": uvs,
           "rel": rels, "f_geo": f_geo, "pose_t": pose_t, "lid": lid, "grad": grad}
    out = {"sigma": sigma, "sdf": torch.where(valid, s, torch.full_like(s, 1.0)), "valid": valid,
           "disp": torch.cat([delta_t, delta_o], -1), "fw_res": fw_res, "ctx": ctx}
    if need_grad:
        out["grad"] = grad
    return out


def _take(t: torch.Tensor, sel: Optional[torch.Tensor]) -> torch.Tensor:
    """Points ``sel`` (indices into P) of a ``(B,P,...)`` tensor, batch 1."""
    return t if sel is None else t[:, sel]


def eval_colour(fields: AniPixelFields, body: Dict[str, torch.Tensor], ctx: Dict[str, torch.Tensor],
                view_dir: torch.Tensor, src: Dict[str, torch.Tensor], sel: Optional[torch.Tensor] = None):
    """The appearance half of :func:`eval_points` (eq. 6-7) at the points ``sel`` of a
    :func:`eval_geometry` (all when None; a subset needs batch 1): the normal ``grad s/|grad s|``
    (sec. 3.2), the views' blend weights and colours, and the shading factor. Returns
    ``(rgb (B,P',3), n_c (B,P',3))``."""
    if sel is not None and view_dir.shape[0] != 1:
        raise ValueError("eval_colour: a subset of points needs batch 1")
    lid, pose_t, f_geo = _take(ctx["lid"], sel), _take(ctx["pose_t"], sel), _take(ctx["f_geo"], sel)
    if ctx["grad"] is not None and sel is None:
        grad = ctx["grad"]
    else:
        _, grad = sdf_normal(fields, _take(ctx["x_c"], sel), _take(ctx["cond"], sel), body["template"],
                             body["template_normals"], nn_s=_take(ctx["nn_c"], sel))
    n_c = F.normalize(grad, dim=-1)
    Mf, Mb, x_o = _take(ctx["Mf"], sel), _take(ctx["Mb"], sel), _take(ctx["x_o"], sel)
    n_o = F.normalize((Mf[..., :3, :3] @ n_c[..., None])[..., 0], dim=-1)
    n_t = F.normalize((Mb[..., :3, :3] @ n_c[..., None])[..., 0], dim=-1)
    half = src["feat"].shape[2] // 2
    logits, cs = [], []
    for v in range(len(ctx["feat"])):
        f, rel = _take(ctx["feat"][v], sel), _take(ctx["rel"][v], sel)
        c = sample_views(src["rgb"][:, v], _take(ctx["uv"][v], sel), src["size"])
        ray_o = F.normalize(x_o - (-(src["R"][:, v].transpose(1, 2) @ src["t"][:, v][..., None])[..., 0])[:, None], dim=-1)
        logits.append(fields.blend(torch.cat([f[..., :half], f[..., half:], c, n_o, ray_o, rel, f_geo], -1))[..., 0])
        cs.append(c)
    wv = torch.softmax(torch.stack(logits, -1), -1)  # (B,P,V)
    c_o = (wv[..., None] * torch.stack(cs, 2)).sum(2)
    # eq. 7: shading factor
    B, P = c_o.shape[:2]
    alpha = 2.0 * torch.sigmoid(fields.shade(torch.cat([_take(view_dir, sel), pose_t, n_t, lid,
                                                        src["glob"][:, None].expand(B, P, -1)], -1)))
    return (alpha * c_o).clamp(0.0, 1.0), n_c


def eval_points(fields: AniPixelFields, body: Dict[str, torch.Tensor], x_t: torch.Tensor, view_dir: torch.Tensor,
                src: Dict[str, torch.Tensor], identity: torch.Tensor, need_grad: bool, near_body: float,
                nearest_t: Optional[tuple] = None):
    """Density, colour and the regularisers' terms at target points ``x_t (B,P,3)`` (eq. 1-7):
    :func:`eval_geometry` then :func:`eval_colour` at every point.

    ``body``: ``T_t, T_o (B,J,4,4)`` bone transforms, ``verts_t (B,N,3)`` (a subsample),
    ``weights (N,J)`` (same subsample), ``scale_t/scale_o, cs_t/cs_o (B,3)``, ``c0 (3,)``,
    ``template (N,3)`` and ``template_normals (N,3)`` (same subsample), ``theta_t/theta_o (B,6J)``,
    ``joints_o (B,J,3)``; ``src``: ``feat (B,V,C,h,w)``, ``rgb (B,V,3,H,W)``, ``K, R, t (B,V,...)``,
    ``glob (B,64)``, ``size``. ``nearest_t``: ``(dist, idx)`` of :func:`..inputs.skinning.nearest`
    from ``x_t`` to ``verts_t`` when the caller already has it. Returns a dict with ``sigma (B,P)``, ``rgb (B,P,3)``, ``sdf``,
    ``valid``, and for training ``grad`` (eq. Eikonal), ``disp`` and ``fw_res``."""
    geo = eval_geometry(fields, body, x_t, src, identity, need_grad, near_body, nearest_t)
    rgb, n_c = eval_colour(fields, body, geo["ctx"], view_dir, src)
    out = {k: v for k, v in geo.items() if k != "ctx"}
    out.update(rgb=rgb, normal_c=n_c)
    return out
