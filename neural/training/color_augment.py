"""Albedo colour augmentation for SMPLpix on many people (unseen subjects).

A multi-subject SMPLpix network must paint the colours its input vertices carry. Trained on a
dozen people it learns their palettes instead: an unseen subject's trousers come out in a
training subject's colour. The remedy is to show it many more palettes than there are people,
by changing a training person's albedo and the photograph *alike*.

Why a 3×3 matrix on linear RGB is (nearly) exact. The capture's ground truth is a Cycles render
with the Standard view transform (sRGB). In linear light a diffuse surface's radiance is
``albedo ⊙ E`` per channel, with ``E`` the irradiance. When ``E`` is grey (the white sun; the
world's ambient is only slightly blue), ``M·(albedo ⊙ E) = (M·albedo) ⊙ E`` for any matrix
``M``, so transforming the linear albedo by ``M`` transforms the linear image by the same ``M``.
Antialiased edges and the composite over the background are linear mixes, so they follow too,
*provided ``M`` maps the background to itself*: every matrix here maps the grey axis to itself
(rows sum to 1), and the training background is grey. Multiple bounces (``M²`` terms) and the
ambient tint are the residual error, small against what is learnt.

The family: ``M = H(θ) · S(s) · P`` with ``P`` a random channel permutation (what
``--color-permute`` did alone), ``S(s) = s·I + (1 − s)/3·J`` a saturation change, and ``H(θ)``
a rotation by ``θ`` about the grey axis (a hue rotation, Rodrigues' formula). Values leaving
[0, 1] are clipped on both sides.
"""
from __future__ import annotations

import math

import torch

MODES = ("none", "permute", "hue")
"""``none``; ``permute``: channel permutation only; ``hue``: permutation, saturation and hue
rotation in linear RGB."""

SATURATION_RANGE = (0.6, 1.3)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 decoding (the capture's Standard view transform), any shape."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp_min(1e-12) ** (1 / 2.4) - 0.055)


def hue_rotation(theta: float) -> torch.Tensor:
    """Rotation by ``theta`` about the unit grey axis ``n = (1,1,1)/√3`` (Rodrigues:
    ``R = cosθ·I + sinθ·[n]× + (1 − cosθ)·n nᵀ``); rows sum to 1."""
    n = torch.full((3,), 1.0 / math.sqrt(3.0), dtype=torch.float64)
    cross = torch.tensor([[0.0, -n[2], n[1]], [n[2], 0.0, -n[0]], [-n[1], n[0], 0.0]], dtype=torch.float64)
    c, s = math.cos(theta), math.sin(theta)
    return (c * torch.eye(3, dtype=torch.float64) + s * cross + (1 - c) * torch.outer(n, n)).float()


def saturation(s: float) -> torch.Tensor:
    """``s·I + (1 − s)/3·J``: scales the distance from the grey axis by ``s``; rows sum to 1."""
    return s * torch.eye(3) + (1.0 - s) / 3.0 * torch.ones(3, 3)


def random_matrix(mode: str, g: torch.Generator) -> torch.Tensor:
    """A random grey-preserving colour matrix (3,3) of ``mode`` (see :data:`MODES`)."""
    if mode not in MODES or mode == "none":
        raise ValueError(f"colour augmentation {mode!r}: expected one of {MODES[1:]}")
    perm = torch.randperm(3, generator=g)
    m = torch.eye(3)[perm]
    if mode == "hue":
        u = torch.rand(2, generator=g)
        lo, hi = SATURATION_RANGE
        m = hue_rotation(float((u[0] * 2 - 1) * math.pi)) @ saturation(float(lo + (hi - lo) * u[1])) @ m
    return m


def apply_to_colors(m: torch.Tensor, srgb: torch.Tensor) -> torch.Tensor:
    """Vertex colours ``(V,3)`` sRGB → sRGB with the linear albedo transformed by ``m``."""
    lin = srgb_to_linear(srgb.float()) @ m.to(srgb.device).T
    return linear_to_srgb(lin).to(srgb.dtype)


def apply_to_image(m: torch.Tensor, srgb: torch.Tensor) -> torch.Tensor:
    """Images ``(B,3,H,W)`` sRGB → sRGB with linear radiance transformed by ``m`` (per pixel)."""
    lin = torch.einsum("ij,bjhw->bihw", m.to(srgb.device), srgb_to_linear(srgb.float()))
    return linear_to_srgb(lin).to(srgb.dtype)


def is_grey(rgb) -> bool:
    """Whether a background colour lies on the grey axis (the matrices map it to itself)."""
    r, g, b = (float(v) for v in rgb)
    return max(r, g, b) - min(r, g, b) < 1e-6
