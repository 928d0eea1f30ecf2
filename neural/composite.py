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
                     size: tuple[int, int], with_input: bool = True) -> dict:
    """Composite per-body layers back to front.

    ``layers``: dicts with ``rgb`` (H,W,3) sRGB foreground (not yet composited), ``mask``
    (H,W) in [0,1], ``depth`` a scalar camera distance used for ordering (painter's
    algorithm, far first), optional ``input`` (H,W,3) preview. Returns ``rgba`` (H,W,4)
    linear premultiplied when ``transparent`` else opaque over ``background_linear``,
    ``mask`` (H,W) coverage and ``input`` (H,W,3) the composited neural-input preview.

    A layer may name ``crop = (x0, y0, x1, y1)``, the frame pixels outside which its mask is 0
    (the engine's body windows): only those pixels are composited, so the cost follows the
    bodies' pixels, not the frame's. Its arrays are then either the whole frame or only the crop,
    ``(y1 - y0, x1 - x0, ...)``. ``with_input=False`` skips the preview (``input`` is then None):
    a full-frame array nobody asked for when the Neural Input pass is off.
    """
    H, W = size
    rgba = np.zeros((H, W, 4), np.float32)
    if not transparent:  # "over" an opaque background: start from it (the same as adding B·(1 − A) last)
        rgba[..., :3] = np.asarray(background_linear, np.float32).reshape(1, 1, 3)
    color, alpha = rgba[..., :3], np.zeros((H, W), np.float32)
    preview = np.ones((H, W, 3), np.float32) if with_input else None
    for layer in sorted(layers, key=lambda d: -float(d["depth"])):
        cx, cy, cx1, cy1 = (int(v) for v in (layer.get("crop") or (0, 0, W, H)))
        xa, ya, xb, yb = max(0, cx), max(0, cy), min(W, cx1), min(H, cy1)
        if xb <= xa or yb <= ya:
            continue
        win = (slice(ya, yb), slice(xa, xb))
        if layer["mask"].shape[:2] == (H, W):
            src = win
        elif layer["mask"].shape[:2] == (cy1 - cy, cx1 - cx):  # arrays of the crop only
            src = (slice(ya - cy, yb - cy), slice(xa - cx, xb - cx))
        else:
            raise ValueError(f"layer arrays {layer['mask'].shape[:2]} are neither the frame {(H, W)} "
                             f"nor its crop {(cy1 - cy, cx1 - cx)}")
        m = np.clip(layer["mask"][src], 0.0, 1.0).astype(np.float32)
        fg = srgb_to_linear(layer["rgb"][src])
        color[win] = fg * m[..., None] + color[win] * (1.0 - m[..., None])
        alpha[win] = m + alpha[win] * (1.0 - m)
        if with_input and layer.get("input") is not None:
            cov = (layer.get("coverage", layer["mask"])[src] > 0.5)[..., None]
            preview[win] = np.where(cov, layer["input"][src], preview[win])
    rgba[..., 3] = alpha if transparent else 1.0
    return {"rgba": rgba, "mask": alpha, "input": preview}
