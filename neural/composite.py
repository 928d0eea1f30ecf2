"""Compositing network outputs into a frame (pure torch/numpy; used by the engine).

Networks paint display-referred sRGB (they are trained on 8-bit sRGB captures); Blender's
Combined pass is scene-linear. :func:`srgb_to_linear` converts (IEC 61966-2-1), and
:func:`composite_layers` stacks several bodies back to front with the "over" operator
(I' = M·I + (1 − M)·B, ANR sec. 3.3), premultiplied alpha.
"""
from __future__ import annotations

import numpy as np


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


def composite_layers(layers: list[dict], background_linear: np.ndarray, transparent: bool,
                     size: tuple[int, int]) -> dict:
    """Composite per-body layers back to front.

    ``layers``: dicts with ``rgb`` (H,W,3) sRGB foreground (not yet composited), ``mask``
    (H,W) in [0,1], ``depth`` a scalar camera distance used for ordering (painter's
    algorithm, far first), optional ``input`` (H,W,3) preview. Returns ``rgba`` (H,W,4)
    linear premultiplied when ``transparent`` else opaque over ``background_linear``,
    ``mask`` (H,W) coverage and ``input`` (H,W,3) the composited neural-input preview.
    """
    H, W = size
    color = np.zeros((H, W, 3), np.float32)
    alpha = np.zeros((H, W), np.float32)
    preview = np.ones((H, W, 3), np.float32)
    for layer in sorted(layers, key=lambda d: -float(d["depth"])):
        m = np.clip(layer["mask"], 0.0, 1.0).astype(np.float32)
        fg = srgb_to_linear(layer["rgb"])
        color = fg * m[..., None] + color * (1.0 - m[..., None])
        alpha = m + alpha * (1.0 - m)
        if layer.get("input") is not None:
            cov = (layer.get("coverage", m) > 0.5)[..., None]
            preview = np.where(cov, layer["input"], preview)
    if transparent:
        rgba = np.concatenate([color, alpha[..., None]], axis=-1)
    else:
        bg = np.asarray(background_linear, np.float32).reshape(1, 1, 3)
        rgb = color + bg * (1.0 - alpha[..., None])
        rgba = np.concatenate([rgb, np.ones((H, W, 1), np.float32)], axis=-1)
    return {"rgba": np.ascontiguousarray(rgba, np.float32), "mask": alpha, "input": preview}
