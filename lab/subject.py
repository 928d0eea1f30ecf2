"""The built-in demo subject: the default body dressed so that the networks have something to
paint that the coarse body lacks, plus the lighting and render set-up of its ground truth.

Appearance is one colour rule, :func:`region_albedo`, evaluated in numpy on rest-pose points
of the body (model frame, Y-up, +Z = the body's front) together with their interpolated
skinning weights. It is evaluated

* per texel of the body's UV map (the rest position and weights are interpolated inside the
  UV triangle covering the texel, found by rasterizing the UV layout with
  :func:`..neural.raster.rasterize`) -> an image created in memory that the body's materials
  sample through ``UVMap``: sharp stripes, belt, soles and face features finer than the mesh;
* per body vertex -> the SMPLpix input colours (``vertex_colors``, sRGB in [0, 1]), written
  (as scene-linear) into the colour attribute ``neural_avatar_color``. Where the extra
  geometry covers the body in the rest pose (hair cap over the scalp, skirt over the hips and
  thighs) a vertex takes the covering garment's colour, since that is what a camera sees there.

Regions come from the skinning weights (summed per joint group): shirt = spine and upper arms
(short sleeves in a solid colour, horizontal stripes on the torso), trousers = pelvis, thighs
and shins (with a dark belt), shoes = ankles and feet (light soles), skin = neck, forearms,
hands and head, hair = the scalp above the forehead and the back of the head; the face gets
eyes (white, iris), eyebrows and a mouth placed from the head's own vertex bounding box.

Extra geometry skinned to the same rig (vertex groups + Armature modifier, parented to the body
mesh so its object space is the model frame and the armature keeps one mesh child): a hair cap (a half ellipsoid fitted to the
head, lower edge at the brow in front and at the nape behind, streaked texture; 100 % ``head``)
and a flared, checked skirt (rings fitted to the body at the waist, flaring to above the knee;
top rings on ``pelvis``, lower rings blending smoothly into ``left_hip``/``right_hip`` by side).

Lighting (fixed): world colour ``WORLD_RGB`` at strength 1 (ambient) + a sun of strength
``SUN_STRENGTH`` from elevation 50 deg, azimuth 35 deg (front-left-above of a body facing -Y).

Ground truth (:func:`setup_ground_truth_render`, :func:`render_ground_truth`): Cycles on the
CPU with ``CYCLES_SAMPLES`` samples (denoising off: OIDN is not used so results do not depend on
the CPU's instruction set), or Workbench (texture colours, studio light), or EEVEE when it can
render here (headless Blender often has no GPU context: detected, clear error). View transform
``Standard``, no dither, ``film_transparent``; the RGBA result is composited over a fixed
background colour in numpy and the mask is ``alpha > 0.5``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from dataclasses import dataclass
from typing import Optional, Tuple

import bpy
from ..common.deps import np

from ..errors import BodyModelError, NeuralAvatarError
from ..blender import rig

# ------------------------------------------------------------------------------ palette (sRGB)
PALETTE = {
    "skin": (0.87, 0.68, 0.56),
    "shirt_a": (0.13, 0.27, 0.62),   # torso stripes: navy / mustard
    "shirt_b": (0.93, 0.72, 0.20),
    "sleeve": (0.70, 0.12, 0.14),    # solid red short sleeves
    "trousers": (0.22, 0.24, 0.28),
    "belt": (0.30, 0.17, 0.08),
    "shoe": (0.36, 0.19, 0.10),
    "sole": (0.85, 0.85, 0.80),
    "hair": (0.20, 0.11, 0.05),
    "hair_light": (0.36, 0.22, 0.10),
    "eye_white": (0.95, 0.95, 0.93),
    "iris": (0.10, 0.18, 0.30),
    "brow": (0.15, 0.08, 0.04),
    "mouth": (0.62, 0.22, 0.22),
    "skirt_a": (0.10, 0.45, 0.28),   # green / cream check
    "skirt_b": (0.90, 0.86, 0.70),
}
REGIONS = ("skin", "shirt", "trousers", "shoes", "hair")
WORLD_RGB = (0.42, 0.45, 0.50)
SUN_STRENGTH = 3.0
SUN_ELEVATION_DEG = 50.0
SUN_AZIMUTH_DEG = 35.0
CYCLES_SAMPLES = 16
DEFAULT_BACKGROUND = (1.0, 1.0, 1.0)
SUBJECT_TAG = "neural_avatar_demo"  # custom property on every object the subject adds

# ------------------------------------------------------------------------------ the subject zoo
SHIRTS = ("stripes", "solid", "checks")
BOTTOMS = ("skirt", "trousers")
SKIRT_PATTERNS = ("checks", "stripes", "solid")
HAIRS = ("cap", "short")
#: sRGB skin tones the zoo draws from (light to dark)
SKIN_TONES = ((0.95, 0.80, 0.69), (0.87, 0.68, 0.56), (0.78, 0.57, 0.44), (0.63, 0.45, 0.33),
              (0.48, 0.33, 0.23), (0.33, 0.22, 0.16))
HAIR_TONES = ((0.20, 0.11, 0.05), (0.06, 0.05, 0.05), (0.55, 0.40, 0.20), (0.80, 0.65, 0.38),
              (0.45, 0.18, 0.08), (0.62, 0.62, 0.60))


@dataclass(frozen=True)
class SubjectSpec:
    """What a subject looks like: colours, patterns, garments, hair and body shape.

    :meth:`demo` is the shipped demo subject (the default avatars' person); :meth:`random` draws a
    new person from a seed (issue "new people": the subject zoo). Pure data (numpy only), so the
    zoo is testable without Blender and a capture's ``subjects.json`` records it."""

    name: str = "subject"
    seed: Optional[int] = None
    palette: Tuple[Tuple[str, Tuple[float, float, float]], ...] = ()
    shirt: str = "stripes"
    stripe: float = 0.045
    bottom: str = "skirt"
    skirt_pattern: str = "checks"
    skirt_checks: Tuple[int, int] = (16, 6)
    hair: str = "cap"
    betas: Tuple[float, ...] = ()

    @classmethod
    def demo(cls) -> "SubjectSpec":
        return cls()

    @classmethod
    def random(cls, seed: int, name: Optional[str] = None) -> "SubjectSpec":
        """A new person from ``seed``: skin and hair tones, shirt colours and pattern, skirt or
        trousers (and the skirt's pattern), hair cap or short hair, and the first four shape
        coefficients ~ N(0, 0.8²) clipped to ±2 (heights about ±20 cm, build, ...)."""
        import colorsys

        rng = np.random.default_rng([int(seed), 7151])

        def hue_colour(s_lo, s_hi, v_lo, v_hi, hue=None):
            h = float(rng.uniform()) if hue is None else hue % 1.0
            return tuple(round(c, 4) for c in colorsys.hsv_to_rgb(h, float(rng.uniform(s_lo, s_hi)),
                                                                   float(rng.uniform(v_lo, v_hi))))

        h1 = float(rng.uniform())
        pal = {
            "skin": SKIN_TONES[int(rng.integers(len(SKIN_TONES)))],
            "shirt_a": hue_colour(0.5, 0.9, 0.25, 0.6, h1),
            "shirt_b": hue_colour(0.4, 0.9, 0.75, 0.98, h1 + float(rng.uniform(0.25, 0.75))),
            "sleeve": hue_colour(0.5, 0.9, 0.4, 0.9),
            "trousers": hue_colour(0.1, 0.6, 0.12, 0.45),
            "belt": hue_colour(0.3, 0.8, 0.1, 0.35),
            "shoe": hue_colour(0.2, 0.8, 0.1, 0.5),
            "sole": (0.85, 0.85, 0.80),
            "skirt_a": hue_colour(0.5, 0.9, 0.25, 0.65),
            "skirt_b": hue_colour(0.05, 0.4, 0.8, 0.95),
        }
        hair = HAIR_TONES[int(rng.integers(len(HAIR_TONES)))]
        pal["hair"] = hair
        pal["hair_light"] = tuple(round(min(1.0, c * 1.6 + 0.05), 4) for c in hair)
        betas = np.clip(rng.normal(0.0, 0.8, 4), -2.0, 2.0)
        return cls(name=name or f"zoo{int(seed):04d}", seed=int(seed), palette=tuple(sorted(pal.items())),
                   shirt=SHIRTS[int(rng.integers(len(SHIRTS)))], stripe=round(float(rng.uniform(0.03, 0.07)), 4),
                   bottom=BOTTOMS[int(rng.integers(len(BOTTOMS)))],
                   skirt_pattern=SKIRT_PATTERNS[int(rng.integers(len(SKIRT_PATTERNS)))],
                   skirt_checks=(int(rng.integers(8, 20)), int(rng.integers(3, 8))),
                   hair=HAIRS[int(rng.integers(len(HAIRS)))],
                   betas=tuple(round(float(b), 4) for b in betas))

    def colors(self) -> dict:
        """The palette: the demo subject's, with this subject's colours over it."""
        out = {k: np.asarray(v, np.float64) for k, v in PALETTE.items()}
        out.update({k: np.asarray(v, np.float64) for k, v in self.palette})
        return out

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["palette"] = {k: list(v) for k, v in self.palette}
        d["skirt_checks"] = list(self.skirt_checks)
        d["betas"] = list(self.betas)
        return d


DEMO = SubjectSpec.demo()

_GROUPS = {
    "shirt": ("spine1", "spine2", "spine3", "left_collar", "right_collar"),
    "sleeve": ("left_shoulder", "right_shoulder"),
    "trousers": ("pelvis", "left_hip", "right_hip", "left_knee", "right_knee"),
    "shoes": ("left_ankle", "right_ankle", "left_foot", "right_foot"),
    "skin": ("neck", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand"),
    "head": ("head", "jaw", "left_eye_smplhf", "right_eye_smplhf"),
}


def srgb_to_linear(c):
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c):
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1.0 / 2.4) - 0.055)


# ------------------------------------------------------------------------------ geometry facts
class SubjectLayout:
    """Where things are on a rest body (model frame): joints, head box, face landmarks."""

    def __init__(self, v_rest: np.ndarray, joints: np.ndarray, weights: np.ndarray, joint_names):
        self.names = list(joint_names)
        self.idx = {n: i for i, n in enumerate(self.names)}
        self.joints = np.asarray(joints, dtype=np.float64)
        w = np.asarray(weights, dtype=np.float64)
        hw = self.group_weight(w, "head")
        head = v_rest[hw > 0.5]
        if len(head) < 8:
            raise BodyModelError("The body has too few head vertices to dress the demo subject.")
        self.head_lo = head.min(0)
        self.head_hi = head.max(0)
        self.head_c = 0.5 * (self.head_lo + self.head_hi)
        self.head_size = self.head_hi - self.head_lo
        top, chin = self.head_hi[1], self.head_lo[1]
        h = top - chin
        self.eye_y = top - 0.47 * h
        self.brow_y = self.eye_y + 0.09 * h
        self.mouth_y = chin + 0.22 * h
        self.hairline_y = top - 0.27 * h
        self.front_z = self.head_hi[2]
        self.eye_dx = 0.16 * self.head_size[0]
        self.pelvis = self.joint("pelvis")
        self.knees_y = 0.5 * (self.joint("left_knee")[1] + self.joint("right_knee")[1])
        self.ankles_y = 0.5 * (self.joint("left_ankle")[1] + self.joint("right_ankle")[1])
        self.floor_y = float(v_rest[:, 1].min())
        self.stripe = 0.045  # metres per shirt stripe

    def joint(self, name):
        return self.joints[self.idx[name]] if name in self.idx else np.zeros(3)

    def group_weight(self, w, group):
        cols = [self.idx[n] for n in _GROUPS[group] if n in self.idx]
        return w[:, cols].sum(1) if cols else np.zeros(w.shape[0])


def _ellipse(p, cx, cy, rx, ry):
    return ((p[:, 0] - cx) / rx) ** 2 + ((p[:, 1] - cy) / ry) ** 2 <= 1.0


def region_albedo(points: np.ndarray, weights: np.ndarray, lay: SubjectLayout, spec: SubjectSpec = DEMO):
    """A subject's albedo (sRGB) and region index at rest-pose ``points (P,3)`` with
    interpolated skinning ``weights (P,J)`` (``spec``: the subject; default the demo subject).
    Returns ``(rgb (P,3) float64, region (P,) int)`` with region indices into :data:`REGIONS`."""
    p = np.asarray(points, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    P = len(p)
    g = {k: lay.group_weight(w, k) for k in _GROUPS}
    keys = ["shirt", "sleeve", "trousers", "shoes", "skin", "head"]
    which = np.argmax(np.stack([g[k] for k in keys], 1), 1)
    rgb = np.empty((P, 3))
    region = np.zeros(P, np.int64)
    col = spec.colors()

    sel = which == 0  # torso: horizontal stripes (the demo), a solid colour or checks
    stripe = spec.stripe
    band = np.floor((p[:, 1] - lay.pelvis[1]) / stripe).astype(np.int64) % 2 == 0
    if spec.shirt == "solid":
        band = np.ones(P, bool)
    elif spec.shirt == "checks":
        band = (np.floor((p[:, 1] - lay.pelvis[1]) / stripe) + np.floor((p[:, 0] - lay.pelvis[0]) / stripe)
                ).astype(np.int64) % 2 == 0
    rgb[sel] = np.where(band[sel, None], col["shirt_a"], col["shirt_b"])
    region[sel] = 1
    sel = which == 1
    rgb[sel], region[sel] = col["sleeve"], 1
    sel = which == 2
    belt = np.abs(p[:, 1] - (lay.pelvis[1] + 0.075)) < 0.02
    rgb[sel] = np.where(belt[sel, None], col["belt"], col["trousers"])
    region[sel] = 2
    sel = which == 3
    sole = p[:, 1] < lay.floor_y + 0.025
    rgb[sel] = np.where(sole[sel, None], col["sole"], col["shoe"])
    region[sel] = 3
    sel = (which == 4) | (which == 5)
    rgb[sel], region[sel] = col["skin"], 0

    head = which == 5
    front = head & (p[:, 2] > lay.head_c[2])
    # hair: scalp above the hairline in front, down to the nape behind
    back = (p[:, 2] - lay.head_c[2]) / max(lay.head_size[2], 1e-6)  # -0.5 back .. 0.5 front
    line = lay.hairline_y - np.clip(-back, 0.0, 0.5) * 1.1 * (lay.hairline_y - lay.head_lo[1])
    hair = head & (p[:, 1] > line)
    rgb[hair], region[hair] = col["hair"], 4
    # face features on the front of the head
    fx = p[:, 0] - lay.head_c[0]
    fz_ok = front & (p[:, 2] > lay.front_z - 0.45 * lay.head_size[2])
    s = lay.head_size[0]
    for side in (-1.0, 1.0):
        q = np.stack([fx - side * lay.eye_dx, p[:, 1]], 1)
        white = fz_ok & _ellipse(q, 0.0, lay.eye_y, 0.085 * s, 0.045 * s)
        iris = fz_ok & _ellipse(q, 0.0, lay.eye_y, 0.04 * s, 0.04 * s)
        brow = fz_ok & _ellipse(q, 0.0, lay.brow_y, 0.10 * s, 0.022 * s)
        rgb[white] = col["eye_white"]
        rgb[iris] = col["iris"]
        rgb[brow] = col["brow"]
    mouth = fz_ok & _ellipse(np.stack([fx, p[:, 1]], 1), 0.0, lay.mouth_y, 0.14 * s, 0.035 * s)
    rgb[mouth] = col["mouth"]
    return rgb, region


# ------------------------------------------------------------------------------ UV baking
def _uv_raster(vt: np.ndarray, ft: np.ndarray, size: int):
    """Rasterize the UV layout: per texel (row 0 = top = v 1) the face id and barycentrics."""
    import torch

    from ..neural.inputs.raster import rasterize

    pts = np.zeros((len(vt), 3), np.float32)
    pts[:, 0] = vt[:, 0] * size
    pts[:, 1] = (1.0 - vt[:, 1]) * size
    pts[:, 2] = 1.0
    eye = torch.eye(3)[None]
    with torch.no_grad():
        ras = rasterize(torch.from_numpy(pts)[None], torch.tensor(np.array(ft, np.int64)), eye, eye,
                        torch.zeros(1, 3), (size, size), compute_normals=False)
    return ras.face_id[0].numpy(), ras.bary[0].numpy()


def _dilate(img: np.ndarray, mask: np.ndarray, iters: int = 8) -> np.ndarray:
    """Grow the colours of covered texels into empty ones (no seam bleeding under filtering)."""
    import cv2

    img = img.astype(np.float32).copy()
    m = mask.astype(np.float32)
    k = np.ones((3, 3), np.float32)
    for _ in range(iters):
        num = cv2.filter2D(img * m[..., None], -1, k, borderType=cv2.BORDER_REPLICATE)
        den = cv2.filter2D(m, -1, k, borderType=cv2.BORDER_REPLICATE)
        grow = (m == 0) & (den > 0)
        img[grow] = num[grow] / den[grow, None]
        m = np.where(grow, 1.0, m).astype(np.float32)
    img[m == 0] = img[m > 0].mean(0) if np.any(m > 0) else 0.5
    return img


def bake_body_texture(model, v_rest, lay: SubjectLayout, size: int = 1024, spec: SubjectSpec = DEMO) -> np.ndarray:
    """(size, size, 3) float32 sRGB albedo over the body's UV map, row 0 = top (v = 1)."""
    faces = np.asarray(model.faces, np.int64)
    face_id, bary = _uv_raster(np.asarray(model.vt, np.float64), np.asarray(model.ft, np.int64), size)
    cov = face_id >= 0
    fid = face_id[cov]
    b = bary[cov].astype(np.float64)
    tri = faces[fid]  # (P,3)
    pts = np.einsum("pk,pkc->pc", b, v_rest[tri])
    w = np.einsum("pk,pkj->pj", b, np.asarray(model.weights, np.float64)[tri])
    rgb, _ = region_albedo(pts, w, lay, spec)
    img = np.zeros((size, size, 3), np.float32)
    img[cov] = rgb
    return _dilate(img, cov)


def _new_image(name: str, rgb_top_first: np.ndarray):
    """A byte image (sRGB) in memory, packed so it survives saving the .blend."""
    H, W = rgb_top_first.shape[:2]
    if name in bpy.data.images:
        bpy.data.images.remove(bpy.data.images[name])
    img = bpy.data.images.new(name, W, H, alpha=False, float_buffer=False)
    px = np.ones((H, W, 4), np.float32)
    px[..., :3] = rgb_top_first[::-1]  # Blender row 0 = bottom
    img.pixels.foreach_set(px.ravel())
    img.update()
    try:
        img.pack()
    except RuntimeError:  # packing needs a non-empty buffer; an in-memory image stays usable
        pass
    return img


# ------------------------------------------------------------------------------ materials
def _material(name: str, image=None, roughness: float = 0.6, sheen: float = 0.0):
    mat = bpy.data.materials.get(name) or bpy.data.materials.new(name)
    mat.use_nodes = True
    nt = mat.node_tree
    nt.nodes.clear()
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    bsdf = nt.nodes.new("ShaderNodeBsdfPrincipled")
    bsdf.inputs["Roughness"].default_value = roughness
    if "Sheen Weight" in bsdf.inputs:
        bsdf.inputs["Sheen Weight"].default_value = sheen
    nt.links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    if image is not None:
        uv = nt.nodes.new("ShaderNodeUVMap")
        uv.uv_map = "UVMap"
        tex = nt.nodes.new("ShaderNodeTexImage")
        tex.image = image
        tex.interpolation = "Linear"
        nt.links.new(uv.outputs["UV"], tex.inputs["Vector"])
        nt.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
        nt.nodes.active = tex  # Workbench "Texture" colour shows the active image node
    else:
        attr = nt.nodes.new("ShaderNodeVertexColor")
        attr.layer_name = rig.COLOR_ATTR
        nt.links.new(attr.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def _set_color_attr(mesh, rgb_srgb: np.ndarray):
    attr = mesh.color_attributes.get(rig.COLOR_ATTR)
    if attr is None:
        attr = mesh.color_attributes.new(rig.COLOR_ATTR, "FLOAT_COLOR", "POINT")
    col = np.ones((len(mesh.vertices), 4), np.float32)
    col[:, :3] = srgb_to_linear(rgb_srgb)  # FLOAT_COLOR attributes are scene-linear
    attr.data.foreach_set("color", col.ravel())
    mesh.color_attributes.active_color = attr


# ------------------------------------------------------------------------------ extra geometry
def _grid_faces(rows: int, cols: int, closed: bool = True, offset: int = 0):
    f = []
    cc = cols if closed else cols - 1
    for r in range(rows - 1):
        for c in range(cc):
            a = offset + r * cols + c
            b = offset + r * cols + (c + 1) % cols
            f.append((a, b, b + cols))
            f.append((a, b + cols, a + cols))
    return f


def hair_cap_geometry(lay: SubjectLayout, n_lat: int = 12, n_lon: int = 40):
    """Half-ellipsoid cap around the head: verts (V,3), faces, uv (per vertex), lon/lat params.

    Latitude runs from the crown (0) to an edge at 62 deg in front (the brow) and 105 deg behind
    (the nape); radii are the head box half-extents grown by 10 % plus streaky bumps."""
    c = lay.head_c.copy()
    c[1] = lay.eye_y
    r = np.array([0.5 * lay.head_size[0] * 1.12, (lay.head_hi[1] - lay.eye_y) * 1.10,
                  0.5 * lay.head_size[2] * 1.12])
    verts, uvs = [c + np.array([0.0, r[1], 0.0])], [(0.5, 1.0)]
    for i in range(1, n_lat + 1):
        for j in range(n_lon):
            phi = 2 * math.pi * j / n_lon  # 0 = front (+Z)
            tmax = math.radians(62.0 + 43.0 * (1.0 - math.cos(phi)) / 2.0)
            th = tmax * i / n_lat
            bump = 1.0 + 0.03 * math.sin(9 * phi) * math.sin(math.pi * i / n_lat)
            verts.append(c + bump * np.array([r[0] * math.sin(th) * math.sin(phi), r[1] * math.cos(th),
                                              r[2] * math.sin(th) * math.cos(phi)]))
            uvs.append((j / n_lon, 1.0 - i / n_lat))
    faces = [(0, 1 + j, 1 + (j + 1) % n_lon) for j in range(n_lon)]
    faces += _grid_faces(n_lat, n_lon, True, offset=1)
    return np.asarray(verts), np.asarray(faces, np.int64), np.asarray(uvs), c, r


def skirt_geometry(v_rest: np.ndarray, lay: SubjectLayout, n_rings: int = 10, n_seg: int = 48):
    """Flared skirt rings: fitted to the body 6 cm above the pelvis joint, flaring down to
    10 cm above the knees. Returns verts, faces, uv, the vertical fraction ``t`` (0 top, 1 hem)
    and the per-ring centre/radii (for coverage tests)."""
    y_top = lay.pelvis[1] + 0.06
    y_bot = lay.knees_y + 0.10
    cx, cz = lay.pelvis[0], lay.pelvis[2]

    def extent(y, band=0.02):
        s = v_rest[np.abs(v_rest[:, 1] - y) < band]
        s = s[np.abs(s[:, 0] - cx) < 0.35]  # leave the hands out
        if len(s) < 4:
            raise BodyModelError("The body's waist could not be measured for the skirt.")
        return np.abs(s[:, 0] - cx).max(), np.abs(s[:, 2] - cz).max()

    top = np.array(extent(y_top)) * 1.06 + 0.01
    hip = np.array(extent(0.5 * (y_top + y_bot))) * 1.10 + 0.015
    bot = np.maximum(np.array(extent(y_bot)) * 1.25, hip) * 1.25 + 0.02
    verts, uvs, ts, rings = [], [], [], []
    for i in range(n_rings):
        t = i / (n_rings - 1)
        y = y_top + (y_bot - y_top) * t
        # waist -> hip (smooth), then flare to the hem
        rad = top + (hip - top) * math.sin(min(t * 2, 1.0) * math.pi / 2) if t < 0.5 else \
            hip + (bot - hip) * ((t - 0.5) * 2) ** 1.3
        rings.append((y, rad[0], rad[1]))
        for j in range(n_seg):
            phi = 2 * math.pi * j / n_seg
            verts.append((cx + rad[0] * math.sin(phi), y, cz + rad[1] * math.cos(phi)))
            uvs.append((j / n_seg, 1.0 - t))
            ts.append(t)
    faces = _grid_faces(n_rings, n_seg, True)
    return (np.asarray(verts), np.asarray(faces, np.int64), np.asarray(uvs), np.asarray(ts),
            (cx, cz, np.asarray(rings)))


def skirt_weights(verts: np.ndarray, t: np.ndarray, lay: SubjectLayout):
    """Smooth skinning of the skirt: pelvis at the waist, blending to the hip (thigh) of the
    vertex's side towards the hem: ``w_side = 0.9 t^1.2 s_side`` with ``s_left`` a smooth step
    of ``x`` across the body's midline; the pelvis takes the rest (rows sum to 1)."""
    cx = lay.pelvis[0]
    half = max(np.abs(verts[:, 0] - cx).max(), 1e-6)
    s_left = np.clip(0.5 + 0.5 * (verts[:, 0] - cx) / (0.6 * half), 0.0, 1.0)
    s_left = s_left * s_left * (3 - 2 * s_left)
    k = 0.9 * np.clip(t, 0, 1) ** 1.2
    return {"pelvis": 1.0 - k, "left_hip": k * s_left, "right_hip": k * (1.0 - s_left)}


def _pattern_hair(u, v, spec: SubjectSpec = DEMO):
    """Hair texture: streaks along the latitude lines (sRGB)."""
    s = 0.5 + 0.5 * np.sin(2 * np.pi * (u * 60.0 + 0.3 * np.sin(2 * np.pi * v * 3)))
    col = spec.colors()
    lo, hi = col["hair"], col["hair_light"]
    return lo + (hi - lo) * (s ** 3)[..., None]


def _pattern_skirt(u, v, spec: SubjectSpec = DEMO):
    """Skirt texture (sRGB): the demo's 16 x 6 check, or the subject's check / vertical stripes / solid."""
    cu, cv = spec.skirt_checks
    if spec.skirt_pattern == "stripes":
        chk = np.floor(u * cu) % 2 == 0
    elif spec.skirt_pattern == "solid":
        chk = np.ones(np.broadcast(u, v).shape, bool)
    else:
        chk = (np.floor(u * cu) + np.floor(v * cv)) % 2 == 0
    col = spec.colors()
    return np.where(chk[..., None], col["skirt_a"], col["skirt_b"])


def _pattern_image(fn, size=256):
    v, u = np.meshgrid((np.arange(size)[::-1] + 0.5) / size, (np.arange(size) + 0.5) / size, indexing="ij")
    return fn(u, v).astype(np.float32)  # row 0 = top = v 1


def _add_skinned_mesh(context, arm, body_obj, name, verts, faces, uvs_per_vertex, groups: dict, material,
                      colors):
    mesh = bpy.data.meshes.new(name + "_mesh")
    mesh.from_pydata(np.asarray(verts, np.float32).tolist(), [], np.asarray(faces).tolist())
    uv_layer = mesh.uv_layers.new(name="UVMap")
    loop_v = np.asarray(faces, np.int64).reshape(-1)
    uv = np.asarray(uvs_per_vertex, np.float32)[loop_v]
    # seam fix: a face spanning u ~ 1 -> 0 gets u + 1 on its small corners
    uv = uv.reshape(-1, 3, 2)
    wrap = (uv[:, :, 0].max(1) - uv[:, :, 0].min(1)) > 0.5
    uv[wrap, :, 0] = np.where(uv[wrap, :, 0] < 0.5, uv[wrap, :, 0] + 1.0, uv[wrap, :, 0])
    uv_layer.data.foreach_set("uv", uv.ravel())
    if hasattr(mesh, "shade_smooth"):
        mesh.shade_smooth()
    mesh.materials.append(material)
    _set_color_attr(mesh, colors)
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    for coll in arm.users_collection:
        coll.objects.link(obj)
    # Parented to the body mesh (object space = armature space = model frame, like the body
    # mesh itself), not to the armature: the rig's code takes the armature's mesh child as *the*
    # body mesh. The Armature modifier deforms it with the armature's bones all the same.
    obj.parent = body_obj
    for gname, w in groups.items():
        vg = obj.vertex_groups.new(name=gname)
        w = np.broadcast_to(np.asarray(w, np.float64), (len(verts),))
        for i in np.nonzero(w > 1e-6)[0].tolist():
            vg.add([i], float(w[i]), "REPLACE")
    mod = obj.modifiers.new("Armature", "ARMATURE")
    mod.object = arm
    mod.use_vertex_groups = True
    obj[SUBJECT_TAG] = True
    return obj


# ------------------------------------------------------------------------------ lighting
def setup_lighting(scene):
    """World colour ``WORLD_RGB`` (strength 1) and a sun ``SUN_STRENGTH`` from elevation
    ``SUN_ELEVATION_DEG``, azimuth ``SUN_AZIMUTH_DEG``; replaces a previous demo sun."""
    world = scene.world or bpy.data.worlds.new("NeuralAvatarWorld")
    scene.world = world
    world.use_nodes = True
    bg = next((n for n in world.node_tree.nodes if n.type == "BACKGROUND"), None)
    if bg is None:
        bg = world.node_tree.nodes.new("ShaderNodeBackground")
        out = next((n for n in world.node_tree.nodes if n.type == "OUTPUT_WORLD"), None) or \
            world.node_tree.nodes.new("ShaderNodeOutputWorld")
        world.node_tree.links.new(bg.outputs["Background"], out.inputs["Surface"])
    bg.inputs["Color"].default_value = (*srgb_to_linear(WORLD_RGB).tolist(), 1.0)
    bg.inputs["Strength"].default_value = 1.0
    if hasattr(world, "color"):
        world.color = tuple(srgb_to_linear(WORLD_RGB).tolist())
    name = "NeuralAvatar_Sun"
    old = bpy.data.objects.get(name)
    if old is not None:
        bpy.data.objects.remove(old)
    light = bpy.data.lights.get(name) or bpy.data.lights.new(name, "SUN")
    light.energy = SUN_STRENGTH
    light.angle = math.radians(3.0)
    sun = bpy.data.objects.new(name, light)
    scene.collection.objects.link(sun)
    el, az = math.radians(SUN_ELEVATION_DEG), math.radians(SUN_AZIMUTH_DEG)
    # the sun shines along its local -Z; point -Z from the light direction towards the origin
    from mathutils import Vector

    d = Vector((math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)))
    sun.rotation_mode = "QUATERNION"
    sun.rotation_quaternion = d.to_track_quat("Z", "Y")
    sun[SUBJECT_TAG] = True
    return sun


# ------------------------------------------------------------------------------ subject
def build_demo_subject(context, body_arm=None, texture_size: int = 1024, model=None,
                       spec: SubjectSpec = DEMO) -> dict:
    """Dress ``body_arm`` (default: a new default body) as the demo subject, or as the zoo
    subject ``spec`` (its shape coefficients are set on a new body; an existing body keeps its own).

    Returns ``{"armature", "body", "hair", "garment", "image", "materials", "vertex_colors"
    (V,3) float32 sRGB, "regions" (V,) int, "sun", "spec"}`` (``hair`` / ``garment`` None when
    the subject has short hair / trousers). On failure the objects it added are removed again.
    """
    added = []
    hair = garment = None
    try:
        if body_arm is None:
            from .. import body as body_lib

            model = model or body_lib.load_default()
            body_arm = rig.create_body(context, model, name="Subject" if spec.seed is None else spec.name)
            added.append(body_arm)
            added.extend(body_arm.children)
            if spec.betas:
                n = min(len(spec.betas), len(body_arm.neural_avatar.betas))
                vals = list(body_arm.neural_avatar.betas)
                vals[:n] = [float(b) for b in spec.betas[:n]]
                body_arm.neural_avatar.betas = vals  # the update callback reshapes mesh and bones
                rig.apply_shape(context, body_arm)
        model = model or rig.model_for(body_arm)
        mesh_obj = rig.body_mesh(body_arm)
        if mesh_obj is None:
            raise BodyModelError(f"'{body_arm.name}' has no body mesh to dress.")
        from ..body import kinematics

        betas = rig.current_betas(body_arm, model)
        v_rest, joints = kinematics.shape(model, betas)
        W = np.asarray(model.weights, np.float64)
        lay = SubjectLayout(v_rest, joints, W, model.joint_names)

        # ---- per-vertex colours (body albedo, overridden where garments cover the body)
        vcol, regions = region_albedo(v_rest, W, lay, spec)
        hv, hf, huv, hc, hr = hair_cap_geometry(lay)
        sv, sf, suv, st, (scx, scz, rings) = skirt_geometry(v_rest, lay)
        if spec.hair == "cap":
            # coverage by the hair cap: inside the ellipsoid, above the cap's local lower edge
            q = (v_rest - hc) / hr
            inside_cap = (np.sum(q * q, 1) <= 1.0) & (q[:, 1] > -0.25) & (regions == 4)
            phi = np.arctan2(q[:, 0], q[:, 2]) % (2 * np.pi)
            th = np.arccos(np.clip(q[:, 1] / np.maximum(np.linalg.norm(q, axis=1), 1e-9), -1, 1))
            vcol[inside_cap] = _pattern_hair(phi[inside_cap] / (2 * np.pi), 1.0 - th[inside_cap] / np.pi * 1.6, spec)
        if spec.bottom == "skirt":
            # coverage by the skirt: between waist and hem, inside the ring ellipse at that height
            ys = rings[:, 0]
            y = v_rest[:, 1]
            in_h = (y <= ys[0]) & (y >= ys[-1])
            tt = np.clip((ys[0] - y) / max(ys[0] - ys[-1], 1e-9), 0, 1)
            rx = np.interp(tt, np.linspace(0, 1, len(ys)), rings[:, 1])
            rz = np.interp(tt, np.linspace(0, 1, len(ys)), rings[:, 2])
            inside_skirt = in_h & (((v_rest[:, 0] - scx) / rx) ** 2 + ((v_rest[:, 2] - scz) / rz) ** 2 <= 1.0)
            sphi = np.arctan2(v_rest[:, 0] - scx, v_rest[:, 2] - scz) % (2 * np.pi)
            vcol[inside_skirt] = _pattern_skirt(sphi[inside_skirt] / (2 * np.pi), 1.0 - tt[inside_skirt], spec)
        vcol = np.clip(vcol, 0.0, 1.0).astype(np.float32)
        _set_color_attr(mesh_obj.data, vcol)

        # ---- body materials: one per region, sharing the baked albedo texture
        mats = {}
        has_uv = model.vt is not None and model.ft is not None and "UVMap" in mesh_obj.data.uv_layers
        image = _new_image("NeuralAvatar_SubjectAlbedo", bake_body_texture(model, v_rest, lay, texture_size, spec)) \
            if has_uv else None
        rough = {"skin": 0.55, "shirt": 0.8, "trousers": 0.85, "shoes": 0.35, "hair": 0.5}
        mesh = mesh_obj.data
        mesh.materials.clear()
        for r in REGIONS:
            mats[r] = _material(f"NeuralAvatar_{r.capitalize()}", image, rough[r],
                                sheen=0.3 if r in ("shirt", "trousers") else 0.0)
            mesh.materials.append(mats[r])
        faces = np.asarray(model.faces, np.int64)
        counts = np.stack([(regions[faces] == k).sum(1) for k in range(len(REGIONS))], 1)
        mesh.polygons.foreach_set("material_index", np.argmax(counts, 1).astype(np.int32))
        mesh.update()

        # ---- extra geometry
        if spec.hair == "cap":
            hair_img = _new_image("NeuralAvatar_HairAlbedo", _pattern_image(lambda u, v: _pattern_hair(u, v, spec)))
            mats["hair_cap"] = _material("NeuralAvatar_HairCap", hair_img, 0.45)
            hair = _add_skinned_mesh(context, body_arm, mesh_obj, body_arm.name + "_hair", hv, hf, huv,
                                     {"head": 1.0}, mats["hair_cap"], _pattern_hair(huv[:, 0], huv[:, 1], spec))
            added.append(hair)
        if spec.bottom == "skirt":
            skirt_img = _new_image("NeuralAvatar_SkirtAlbedo", _pattern_image(lambda u, v: _pattern_skirt(u, v, spec)))
            mats["skirt"] = _material("NeuralAvatar_Skirt", skirt_img, 0.8, sheen=0.3)
            garment = _add_skinned_mesh(context, body_arm, mesh_obj, body_arm.name + "_skirt", sv, sf, suv,
                                        skirt_weights(sv, st, lay), mats["skirt"],
                                        _pattern_skirt(suv[:, 0], suv[:, 1], spec))
            added.append(garment)
        body_arm[SUBJECT_TAG] = True
        sun = setup_lighting(context.scene)
        added.append(sun)
    except Exception:
        for o in added:
            if o is not None and o.name in bpy.data.objects:
                bpy.data.objects.remove(o)
        raise
    return {"armature": body_arm, "body": mesh_obj, "hair": hair, "garment": garment, "image": image,
            "materials": mats, "vertex_colors": vcol, "regions": regions, "sun": sun, "spec": spec}


# ------------------------------------------------------------------------------ rendering
ENGINES = ("CYCLES", "BLENDER_WORKBENCH", "EEVEE")


def _eevee_id() -> str:
    items = bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items.keys()
    for k in ("BLENDER_EEVEE_NEXT", "BLENDER_EEVEE"):
        if k in items:
            return k
    raise NeuralAvatarError("This Blender has no EEVEE render engine.")


def eevee_available() -> bool:
    """Whether EEVEE can render here: it needs a GPU context, which headless Blender (the
    module, ``blender -b``) usually lacks. Checked once by rendering 8x8 in a child process
    (a failing EEVEE can abort the whole process, so it is never tried in this one)."""
    global _EEVEE_OK
    if _EEVEE_OK is None:
        import subprocess
        import sys

        code = ("import bpy,sys\nbpy.ops.wm.read_factory_settings(use_empty=True)\n"
                "s=bpy.context.scene\nk=[e for e in ('BLENDER_EEVEE_NEXT','BLENDER_EEVEE') if e in "
                "bpy.types.RenderSettings.bl_rna.properties['engine'].enum_items.keys()][0]\n"
                "s.render.engine=k\ns.render.resolution_x=s.render.resolution_y=8\n"
                "c=bpy.data.objects.new('c',bpy.data.cameras.new('c'))\ns.collection.objects.link(c)\n"
                "s.camera=c\nbpy.ops.render.render()\nprint('EEVEE_OK')\n")
        try:
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                               env={**os.environ})
            _EEVEE_OK = r.returncode == 0 and "EEVEE_OK" in r.stdout
        except (OSError, subprocess.TimeoutExpired):
            _EEVEE_OK = False
    return _EEVEE_OK


_EEVEE_OK = None


def setup_ground_truth_render(scene, res: int, engine: str = "CYCLES", samples: int = CYCLES_SAMPLES,
                              res_y: int | None = None):
    """Render settings of the ground truth: ``res`` x ``res_y`` (default square) at 100 %,
    ``film_transparent``, view transform Standard, no dither; Cycles on the CPU with
    ``samples`` samples and no denoiser / Workbench with texture colours / EEVEE (checked)."""
    engine = {"WORKBENCH": "BLENDER_WORKBENCH", "EEVEE_NEXT": "EEVEE", "BLENDER_EEVEE": "EEVEE",
              "BLENDER_EEVEE_NEXT": "EEVEE"}.get(str(engine).upper(), str(engine).upper())
    if engine not in ENGINES:
        raise NeuralAvatarError(f"Unknown ground-truth engine '{engine}'; use CYCLES, WORKBENCH or EEVEE.")
    if not isinstance(res, (int, np.integer)) or res < 8:
        raise NeuralAvatarError(f"The capture resolution must be at least 8 pixels, got {res!r}.")
    r = scene.render
    r.resolution_x = int(res)
    r.resolution_y = int(res_y or res)
    r.resolution_percentage = 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    r.film_transparent = True
    r.dither_intensity = 0.0
    r.use_border = False
    r.image_settings.file_format = "PNG"
    r.image_settings.color_mode = "RGBA"
    r.image_settings.color_depth = "16"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    scene.display_settings.display_device = "sRGB"
    if engine == "CYCLES":
        r.engine = "CYCLES"
        c = scene.cycles
        c.device = "CPU"
        c.samples = int(samples)
        c.use_adaptive_sampling = False
        c.use_denoising = False
        c.max_bounces = 4
        c.seed = 0
        c.pixel_filter_type = "BLACKMAN_HARRIS"
        c.filter_width = 1.5
    elif engine == "BLENDER_WORKBENCH":
        r.engine = "BLENDER_WORKBENCH"
        sh = scene.display.shading
        sh.light = "STUDIO"
        sh.color_type = "TEXTURE"
        sh.show_shadows = False
        sh.show_cavity = False
        scene.display.render_aa = "8"
    else:
        if not eevee_available():
            raise NeuralAvatarError(
                "EEVEE cannot render here (no GPU/OpenGL context in headless Blender). "
                "Use Cycles or Workbench for the ground truth, or capture from Blender with a display.")
        r.engine = _eevee_id()
        if hasattr(scene, "eevee"):
            scene.eevee.taa_render_samples = int(samples)
    return r.engine


def render_ground_truth(scene, tmp_dir: str | None = None) -> np.ndarray:
    """Render the scene camera; returns straight-alpha RGBA float32 (H,W,4), row 0 = top, RGB sRGB."""
    import cv2

    if scene.camera is None:
        raise NeuralAvatarError("The scene has no camera to render the ground truth with.")
    own = tmp_dir is None
    tmp_dir = tmp_dir or tempfile.mkdtemp(prefix="na_gt_")
    path = os.path.join(tmp_dir, "frame.png")
    old = scene.render.filepath
    try:
        scene.render.filepath = path
        bpy.ops.render.render(write_still=True, scene=scene.name)
        a = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    finally:
        scene.render.filepath = old
        if os.path.exists(path):
            os.remove(path)
        if own:
            os.rmdir(tmp_dir)
    if a is None or a.ndim != 3 or a.shape[2] != 4:
        raise NeuralAvatarError("The ground-truth render produced no RGBA image.")
    scale = 65535.0 if a.dtype == np.uint16 else 255.0
    rgba = a[:, :, [2, 1, 0, 3]].astype(np.float32) / scale
    return rgba


def composite(rgba: np.ndarray, background=DEFAULT_BACKGROUND):
    """Straight-alpha RGBA over ``background`` (sRGB): returns 8-bit RGB and 8-bit mask
    (``alpha > 0.5`` -> 255)."""
    a = rgba[..., 3:4]
    rgb = rgba[..., :3] * a + np.asarray(background, np.float32) * (1.0 - a)
    img = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    mask = np.where(rgba[..., 3] > 0.5, 255, 0).astype(np.uint8)
    return img, mask


CLASSES = ()


def register():
    pass


def unregister():
    pass
