"""Evaluation report: a metrics table, a side-by-side image grid, metric plots (PNG drawn with
OpenCV; matplotlib is not a dependency) and an HTML page tying them together.

Pure (numpy + OpenCV, no bpy, no torch). Images passed in are RGB, row 0 = top, either
float in [0, 1] or uint8; everything written is 8-bit PNG. The metric names follow the
evaluation JSON (``lab/evaluate.py``): ``psnr_mask``, ``psnr_full``, ``ssim_mask``,
``ssim_full``, ``lpips_mask``, ``lpips_full``, ``flicker``.
"""

from __future__ import annotations

import html
import json
import math
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ...errors import NeuralAvatarError

__all__ = [
    "METRIC_KEYS",
    "METRIC_INFO",
    "table_rows",
    "table_markdown",
    "draw_table",
    "image_grid",
    "grouped_bar_chart",
    "line_chart",
    "write_png",
    "write_html",
    "write_report",
]

METRIC_KEYS = ("psnr_mask", "psnr_full", "ssim_mask", "ssim_full", "lpips_mask", "lpips_full", "flip_mask",
               "flip_full", "haze", "flicker")
#: metric -> (column title, True when higher is better)
METRIC_INFO = {
    "psnr_mask": ("PSNR bbox (dB)", True),
    "psnr_full": ("PSNR full (dB)", True),
    "ssim_mask": ("SSIM bbox", True),
    "ssim_full": ("SSIM full", True),
    "lpips_mask": ("LPIPS bbox", False),
    "lpips_full": ("LPIPS full", False),
    "flip_mask": ("FLIP bbox", False),
    "flip_full": ("FLIP full", False),
    "haze": ("haze", False),
    "flicker": ("|flicker - GT|", False),
}

#: RGB series colours (colour-blind friendly, Okabe-Ito)
PALETTE = [(0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233), (213, 94, 0),
           (240, 228, 66), (0, 0, 0)]
_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)
_GREY = (200, 200, 200)


def _cv2():
    import cv2

    return cv2


def _u8(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype == np.uint8:
        out = a
    else:
        out = np.round(np.clip(a.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, 2)
    if out.ndim != 3 or out.shape[2] != 3:
        raise NeuralAvatarError(f"An image for the report must be (H, W, 3) RGB, got {out.shape}.")
    return np.ascontiguousarray(out)


def _text(img, s, org, scale=0.4, color=_BLACK, thick=1):
    _cv2().putText(img, str(s), (int(org[0]), int(org[1])), _FONT, scale, color, thick, 16)  # 16 = LINE_AA


def _text_size(s, scale=0.4, thick=1) -> Tuple[int, int]:
    (w, h), base = _cv2().getTextSize(str(s), _FONT, scale, thick)
    return w, h + base


def _fmt(v: Optional[float], key: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    if key.startswith("psnr"):
        return f"{v:.2f}"
    return f"{v:.4f}"


# ------------------------------------------------------------------------------ table
def table_rows(methods: Mapping[str, Mapping[str, float]], keys: Sequence[str] = METRIC_KEYS) -> List[List[str]]:
    """Header + one row per method: ``[["method", titles...], [name, values...], ...]``."""
    rows = [["method"] + [METRIC_INFO.get(k, (k, True))[0] for k in keys]]
    for name, m in methods.items():
        rows.append([name] + [_fmt(m.get(k), k) for k in keys])
    return rows


def _best(methods: Mapping[str, Mapping[str, float]], keys: Sequence[str]) -> Dict[str, str]:
    """metric -> the method with the best finite value (ties: first)."""
    out = {}
    for k in keys:
        hib = METRIC_INFO.get(k, (k, True))[1]
        vals = [(n, m.get(k)) for n, m in methods.items()
                if isinstance(m.get(k), (int, float)) and math.isfinite(m.get(k))]
        if vals:
            out[k] = (max if hib else min)(vals, key=lambda x: x[1])[0]
    return out


def table_markdown(methods: Mapping[str, Mapping[str, float]], keys: Sequence[str] = METRIC_KEYS) -> str:
    """The table as Markdown; the best value of each column is bold."""
    rows = table_rows(methods, keys)
    best = _best(methods, keys)
    names = list(methods)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    for r, name in zip(rows[1:], names):
        cells = [r[0]] + [f"**{c}**" if best.get(k) == name else c for k, c in zip(keys, r[1:])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def draw_table(methods: Mapping[str, Mapping[str, float]], keys: Sequence[str] = METRIC_KEYS,
               title: str = "") -> np.ndarray:
    """The table as an RGB uint8 image (best value per column on a light green cell)."""
    rows = table_rows(methods, keys)
    best = _best(methods, keys)
    names = list(methods)
    pad, rh = 8, 22
    widths = [max(_text_size(r[c])[0] for r in rows) + 2 * pad for c in range(len(rows[0]))]
    top = 28 if title else 0
    H = top + rh * len(rows) + 1
    Wd = sum(widths) + 1
    img = np.full((H, Wd, 3), 255, np.uint8)
    if title:
        _text(img, title, (pad, 18), 0.5)
    cv2 = _cv2()
    for ri, r in enumerate(rows):
        y0 = top + ri * rh
        x0 = 0
        for ci, cell in enumerate(r):
            w = widths[ci]
            if ri == 0:
                img[y0:y0 + rh, x0:x0 + w] = (230, 230, 230)
            elif ci > 0 and best.get(keys[ci - 1]) == names[ri - 1]:
                img[y0:y0 + rh, x0:x0 + w] = (210, 240, 210)
            cv2.rectangle(img, (x0, y0), (x0 + w, y0 + rh), _GREY, 1)
            _text(img, cell, (x0 + pad, y0 + rh - 7))
            x0 += w
    return img


# ------------------------------------------------------------------------------ grid
def image_grid(tiles: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str] = (),
               col_labels: Sequence[str] = (), gap: int = 2) -> np.ndarray:
    """Tiles ``[row][col]`` (all the same (h, w, 3)) side by side with ``gap`` px white lines,
    column labels on a band above and row labels on a band at the left. Tile ``(r, c)``
    starts at ``(top + r (h + gap), left + c (w + gap))`` (see :func:`grid_origin`)."""
    if not tiles or not tiles[0]:
        raise NeuralAvatarError("The image grid needs at least one tile.")
    t0 = _u8(tiles[0][0])
    h, w = t0.shape[:2]
    nr, nc = len(tiles), max(len(r) for r in tiles)
    top, left = grid_origin(row_labels, col_labels)
    H = top + nr * h + (nr - 1) * gap
    W = left + nc * w + (nc - 1) * gap
    img = np.full((H, W, 3), 255, np.uint8)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            t = _u8(tile)
            if t.shape[:2] != (h, w):
                raise NeuralAvatarError(f"Grid tile ({r}, {c}) is {t.shape[1]}x{t.shape[0]}, the first is {w}x{h}.")
            y, x = top + r * (h + gap), left + c * (w + gap)
            img[y:y + h, x:x + w] = t
    for c, lab in enumerate(col_labels):
        x = left + c * (w + gap)
        _text(img, _fit(lab, w), (x + 2, top - 6))
    for r, lab in enumerate(row_labels):
        y = top + r * (h + gap) + h // 2
        _text(img, _fit(lab, left - 4), (3, y + 4))
    return img


def grid_origin(row_labels: Sequence[str] = (), col_labels: Sequence[str] = ()) -> Tuple[int, int]:
    """(top, left) pixel offsets of the first tile in :func:`image_grid`."""
    top = 20 if col_labels else 0
    left = (max(_text_size(s)[0] for s in row_labels) + 8) if row_labels else 0
    return top, left


def _fit(s: str, width: int) -> str:
    """``s`` shortened (with a trailing '.') until its rendered width fits ``width`` px."""
    s = str(s)
    if _text_size(s)[0] <= width:
        return s
    while len(s) > 1 and _text_size(s + ".")[0] > width:
        s = s[:-1]
    return s + "."


# ------------------------------------------------------------------------------ plots
def _nice_step(span: float, n: int = 5) -> float:
    raw = max(span, 1e-12) / n
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _legend(img, names: Sequence[str], x_start: int) -> None:
    """Colour swatch + name per series at the bottom of ``img``, wrapping onto a second
    (third, ...) row from the bottom up when the names do not fit in one."""
    cv2 = _cv2()
    Hh, Ww = img.shape[:2]
    rows: List[List[Tuple[int, str, int]]] = [[]]
    lx = x_start
    for si, name in enumerate(names):
        w = 14 + _text_size(name)[0] + 16
        if rows[-1] and lx + w > Ww:
            rows.append([])
            lx = x_start
        rows[-1].append((si, name, lx))
        lx += w
    for ri, row in enumerate(rows):
        yb = Hh - 8 - (len(rows) - 1 - ri) * 15
        for si, name, x in row:
            cv2.rectangle(img, (x, yb - 10), (x + 10, yb), PALETTE[si % len(PALETTE)], -1)
            _text(img, name, (x + 14, yb))


class _Axes:
    """A y range mapped onto pixel rows of a plot area ``[x0, x1] x [y0, y1]`` (y0 = top)."""

    def __init__(self, lo: float, hi: float, x0: int, y0: int, x1: int, y1: int):
        if not hi > lo:
            hi = lo + 1.0
        step = _nice_step(hi - lo)
        self.lo = math.floor(lo / step) * step
        self.hi = math.ceil(hi / step) * step
        self.step = step
        self.x0, self.y0, self.x1, self.y1 = x0, y0, x1, y1

    def y(self, v: float) -> float:
        return self.y1 - (v - self.lo) / (self.hi - self.lo) * (self.y1 - self.y0)

    def draw(self, img, ylabel: str = ""):
        cv2 = _cv2()
        v = self.lo
        while v <= self.hi + 1e-9 * self.step:
            yy = int(round(self.y(v)))
            cv2.line(img, (self.x0, yy), (self.x1, yy), (235, 235, 235), 1)
            lab = f"{v:g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"
            _text(img, lab, (self.x0 - _text_size(lab)[0] - 4, yy + 4))
            v += self.step
        cv2.line(img, (self.x0, self.y0), (self.x0, self.y1), _BLACK, 1)
        cv2.line(img, (self.x0, self.y1), (self.x1, self.y1), _BLACK, 1)
        if ylabel:
            _text(img, ylabel, (4, self.y0 - 8))


def grouped_bar_chart(groups: Mapping[str, Mapping[str, float]], title: str = "", ylabel: str = "",
                      size: Tuple[int, int] = (360, 560), return_boxes: bool = False):
    """Bars per category (outer key, e.g. method) and series (inner key, e.g. ``bbox`` /
    ``full``); each series has one :data:`PALETTE` colour, a legend names them. The y axis
    starts at 0 (or the smallest negative value). Non-finite values get no bar and "n/a".

    Returns the RGB uint8 image, and with ``return_boxes`` also ``{(category, series):
    (x0, y_top, x1, y_base)}`` of every bar drawn, plus the value-to-pixel scale."""
    cv2 = _cv2()
    Hh, Ww = size
    img = np.full((Hh, Ww, 3), 255, np.uint8)
    cats = list(groups)
    series: List[str] = []
    for c in cats:
        for s in groups[c]:
            if s not in series:
                series.append(s)
    vals = [float(v) for c in cats for v in groups[c].values() if v is not None and math.isfinite(float(v))]
    lo = min([0.0] + vals)
    hi = max([0.0] + vals)
    if hi == lo:
        hi = lo + 1.0
    ax = _Axes(lo, hi, 60, 40, Ww - 12, Hh - 60)
    ax.draw(img, ylabel)
    if title:
        _text(img, title, (60, 18), 0.5)
    boxes = {}
    n_c, n_s = max(1, len(cats)), max(1, len(series))
    slot = (ax.x1 - ax.x0) / n_c
    bw = max(2.0, slot * 0.75 / n_s)
    base = ax.y(0.0)
    for ci, c in enumerate(cats):
        cx0 = ax.x0 + ci * slot + slot * 0.125
        for si, s in enumerate(series):
            v = groups[c].get(s)
            x0 = int(round(cx0 + si * bw))
            x1 = int(round(cx0 + (si + 1) * bw)) - 1
            if v is None or not math.isfinite(float(v)):
                _text(img, "n/a", (x0, int(base) - 4), 0.3)
                continue
            yv = ax.y(float(v))
            y_top, y_bot = int(round(min(yv, base))), int(round(max(yv, base)))
            if y_bot > y_top:
                cv2.rectangle(img, (x0, y_top), (x1, y_bot - 1), PALETTE[si % len(PALETTE)], -1)
            boxes[(c, s)] = (x0, y_top, x1, y_bot)
        lab = _fit(c, int(slot) - 2)
        _text(img, lab, (int(ax.x0 + ci * slot + (slot - _text_size(lab)[0]) / 2), ax.y1 + 16))
    _legend(img, series, ax.x0)
    if return_boxes:
        scale = (ax.y1 - ax.y0) / (ax.hi - ax.lo)
        return img, boxes, scale
    return img


def line_chart(series: Mapping[str, Sequence[float]], title: str = "", xlabel: str = "", ylabel: str = "",
               size: Tuple[int, int] = (360, 560)) -> np.ndarray:
    """One poly-line per series over the sample index 0..n-1 (non-finite samples break the
    line), legend at the bottom. Returns an RGB uint8 image."""
    cv2 = _cv2()
    Hh, Ww = size
    img = np.full((Hh, Ww, 3), 255, np.uint8)
    vals = [float(v) for s in series.values() for v in s if v is not None and math.isfinite(float(v))]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    ax = _Axes(lo, hi, 60, 40, Ww - 12, Hh - 72)
    ax.draw(img, ylabel)
    if title:
        _text(img, title, (60, 18), 0.5)
    n = max([len(s) for s in series.values()] + [2])
    xs = lambda i: ax.x0 + 4 + i * (ax.x1 - ax.x0 - 8) / (n - 1)  # noqa: E731
    for k in range(n):
        if n <= 20 or k % max(1, n // 10) == 0:
            _text(img, str(k), (int(xs(k)) - 3, ax.y1 + 14), 0.3)
    if xlabel:
        _text(img, xlabel, (ax.x1 - _text_size(xlabel)[0], ax.y1 + 30))
    for si, (name, s) in enumerate(series.items()):
        col = PALETTE[si % len(PALETTE)]
        pts = []
        for i, v in enumerate(s):
            if v is None or not math.isfinite(float(v)):
                if len(pts) > 1:
                    cv2.polylines(img, [np.array(pts, np.int32)], False, col, 2, 16)
                pts = []
                continue
            pts.append((int(round(xs(i))), int(round(ax.y(float(v))))))
        if len(pts) > 1:
            cv2.polylines(img, [np.array(pts, np.int32)], False, col, 2, 16)
        elif len(pts) == 1:
            cv2.circle(img, pts[0], 3, col, -1)
    _legend(img, list(series), ax.x0)
    return img


def write_png(path: str, rgb: np.ndarray) -> str:
    """Write an RGB image (uint8 or float [0, 1]) as PNG; returns the path."""
    a = _u8(rgb)
    if not _cv2().imwrite(str(path), a[:, :, ::-1]):
        raise NeuralAvatarError(f"Could not write the image '{path}'.")
    return str(path)


# ------------------------------------------------------------------------------ HTML
def write_html(path: str, title: str, table_md_methods: Mapping[str, Mapping[str, float]],
               images: Sequence[Tuple[str, str]], notes: Sequence[str] = (),
               extra_tables: Sequence[Tuple[str, List[List[str]]]] = ()) -> str:
    """A self-contained HTML page: ``title``, the metrics table (best value per column in
    bold), ``notes`` (paragraphs, escaped), ``extra_tables`` ``(caption, rows)`` and
    ``images`` ``(caption, path relative to the page)``."""
    e = html.escape
    rows = table_rows(table_md_methods)
    best = _best(table_md_methods, METRIC_KEYS)
    names = list(table_md_methods)
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{e(title)}</title>",
           "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
           "margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
           "td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}"
           "figure{margin:1.5em 0}</style>", "</head><body>", f"<h1>{e(title)}</h1>", "<table>",
           "<tr>" + "".join(f"<th>{e(c)}</th>" for c in rows[0]) + "</tr>"]
    for r, name in zip(rows[1:], names):
        cells = [f"<td>{e(r[0])}</td>"]
        for k, c in zip(METRIC_KEYS, r[1:]):
            cells.append(f"<td><b>{e(c)}</b></td>" if best.get(k) == name else f"<td>{e(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    for n in notes:
        out.append(f"<p>{e(n)}</p>")
    for cap, trs in extra_tables:
        out.append(f"<h2>{e(cap)}</h2><table>")
        for i, r in enumerate(trs):
            tag = "th" if i == 0 else "td"
            out.append("<tr>" + "".join(f"<{tag}>{e(str(c))}</{tag}>" for c in r) + "</tr>")
        out.append("</table>")
    for cap, rel in images:
        out.append(f"<figure><img src='{e(rel, quote=True)}' alt='{e(cap, quote=True)}'>"
                   f"<figcaption>{e(cap)}</figcaption></figure>")
    out.append("</body></html>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    return str(path)


def write_report(out_dir: str, result: Mapping, grid: Optional[dict] = None,
                 per_frame: Optional[Mapping[str, Mapping[str, Sequence[float]]]] = None,
                 flicker_curves: Optional[Mapping[str, Sequence[float]]] = None,
                 notes: Sequence[str] = (), details: Optional[Mapping] = None) -> Dict[str, str]:
    """Write the whole report into ``out_dir`` and return ``{name: path}``.

    ``result``: the evaluation JSON (``{"frames", "methods": {name: M}}``);
    ``grid``: ``{"tiles": [[img]], "row_labels": [...], "col_labels": [...]}`` (optional);
    ``per_frame``: ``{metric: {method: [value per frame]}}`` for line plots (optional);
    ``flicker_curves``: ``{name: [mean |frame_t - frame_t-1| per step]}`` of one static-camera
    sequence, the ground truth included (optional);
    ``details``: written as ``details.json`` (per-frame values, settings, raw flicker).

    Files: ``table.md``, ``table.png``, ``grid.png``, ``psnr.png``, ``ssim.png``,
    ``lpips.png``, ``flicker.png``, ``psnr_per_frame.png`` …, ``flicker_curve.png``,
    ``details.json``, ``index.html``.
    """
    os.makedirs(out_dir, exist_ok=True)
    methods = result["methods"]
    files: Dict[str, str] = {}
    p = lambda name: os.path.join(out_dir, name)  # noqa: E731
    with open(p("table.md"), "w", encoding="utf-8") as f:
        f.write(f"{int(result.get('frames', 0))} frames\n\n" + table_markdown(methods))
    files["table.md"] = p("table.md")
    files["table.png"] = write_png(p("table.png"), draw_table(methods, title=f"{result.get('frames', 0)} frames"))
    images: List[Tuple[str, str]] = [("Metrics table (best per column highlighted)", "table.png")]
    if grid and grid.get("tiles"):
        files["grid.png"] = write_png(p("grid.png"), image_grid(grid["tiles"], grid.get("row_labels", ()),
                                                                grid.get("col_labels", ())))
        images.append(("Side by side: ground truth, classical baseline and each neural mode", "grid.png"))
    for metric, label in (("psnr", "PSNR (dB), higher is better"), ("ssim", "SSIM, higher is better"),
                          ("lpips", "LPIPS-style distance, lower is better")):
        groups = {n: {"bbox": m.get(f"{metric}_mask"), "full": m.get(f"{metric}_full")} for n, m in methods.items()}
        files[f"{metric}.png"] = write_png(p(f"{metric}.png"), grouped_bar_chart(groups, label, metric.upper()))
        images.append((label, f"{metric}.png"))
    fl = {n: {"|method - GT|": m.get("flicker")} for n, m in methods.items()}
    files["flicker.png"] = write_png(p("flicker.png"), grouped_bar_chart(
        fl, "Temporal flicker: |mean frame change - GT's|, lower is better", "flicker"))
    images.append(("Temporal flicker (absolute difference to the ground truth's frame-to-frame change)",
                   "flicker.png"))
    for metric, by_method in (per_frame or {}).items():
        name = f"{metric}_per_frame.png"
        files[name] = write_png(p(name), line_chart(by_method, f"{metric} per evaluated frame", "frame", metric))
        images.append((f"{metric} per frame (frames in evaluation order)", name))
    if flicker_curves:
        files["flicker_curve.png"] = write_png(p("flicker_curve.png"), line_chart(
            flicker_curves, "mean |frame t - frame t-1|, static camera", "t", "mean |delta|"))
        images.append(("Frame-to-frame change on one static-camera sequence, ground truth included",
                       "flicker_curve.png"))
    if details is not None:
        with open(p("details.json"), "w", encoding="utf-8") as f:
            json.dump(details, f, indent=1, default=float)
        files["details.json"] = p("details.json")
    files["index.html"] = write_html(p("index.html"), "Neural Avatar evaluation", methods, images, notes)
    return files
