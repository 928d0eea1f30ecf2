"""Evaluation report: table content and best-value marking, grid placement, bar heights
proportional to values, HTML escaping and links, full report files."""
import json
import os
import re

import numpy as np
import pytest

from neural_avatar.errors import NeuralAvatarError
from neural_avatar.neural.evaluation import report

METHODS = {
    "CLASSICAL": {"psnr_mask": 18.5, "psnr_full": 24.25, "ssim_mask": 0.61, "ssim_full": 0.9,
                  "lpips_mask": 0.31, "lpips_full": 0.12, "flip_mask": 0.3, "flip_full": 0.1, "haze": 0.01,
                  "flicker": 0.004},
    "VERTEX_PROJECTION": {"psnr_mask": 21.0, "psnr_full": 26.5, "ssim_mask": 0.7, "ssim_full": 0.93,
                          "lpips_mask": 0.2, "lpips_full": 0.08, "flip_mask": 0.2, "flip_full": 0.05, "haze": 0.0,
                          "flicker": 0.002},
}


def test_table_rows_and_markdown_mark_the_best_per_column():
    rows = report.table_rows(METHODS)
    assert rows[0][0] == "method" and len(rows[0]) == 1 + len(report.METRIC_KEYS)
    assert rows[1][:3] == ["CLASSICAL", "18.50", "24.25"]
    md = report.table_markdown(METHODS)
    lines = md.strip().splitlines()
    assert len(lines) == 4
    # higher PSNR/SSIM wins, lower LPIPS/flicker wins: every best value is VERTEX_PROJECTION's
    assert "**" not in lines[2]
    assert lines[3].count("**") == 2 * len(report.METRIC_KEYS)
    swapped = {"A": dict(METHODS["CLASSICAL"], lpips_full=0.01), "B": METHODS["VERTEX_PROJECTION"]}
    md2 = report.table_markdown(swapped).strip().splitlines()
    assert "**0.0100**" in md2[2] and "**0.0800**" not in md2[3]


def test_draw_table_is_an_image_with_one_band_per_row():
    img = report.draw_table(METHODS, title="2 frames")
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.shape[0] == 28 + 22 * 3 + 1
    # the best cells are tinted green (row of VERTEX_PROJECTION only)
    green = np.all(img == (210, 240, 210), axis=2)
    rows_with_green = np.unique(np.nonzero(green)[0])
    assert rows_with_green.min() >= 28 + 2 * 22 and rows_with_green.max() < 28 + 3 * 22


def test_image_grid_places_tiles_exactly():
    h, w = 10, 12
    tiles = [[np.full((h, w, 3), (r * 3 + c) * 25, np.uint8) for c in range(3)] for r in range(2)]
    img = report.image_grid(tiles, ["gt frame 0", "frame 1"], ["GT", "CLASSICAL", "NT"], gap=2)
    top, left = report.grid_origin(["gt frame 0", "frame 1"], ["GT", "CLASSICAL", "NT"])
    assert img.shape == (top + 2 * h + 2, left + 3 * w + 4, 3)
    for r in range(2):
        for c in range(3):
            y, x = top + r * (h + 2), left + c * (w + 2)
            want = (r * 3 + c) * 25
            assert np.all(img[y:y + h, x:x + w] == want), (r, c)
    assert np.all(img[top + h:top + h + 2, left:] == 255)  # the gap is white
    with pytest.raises(NeuralAvatarError, match="tile"):
        report.image_grid([[np.zeros((4, 4, 3)), np.zeros((5, 4, 3))]])
    with pytest.raises(NeuralAvatarError):
        report.image_grid([])


def test_bar_heights_are_proportional_to_values():
    groups = {"A": {"bbox": 10.0, "full": 20.0}, "B": {"bbox": 5.0, "full": float("nan")}}
    img, boxes, scale = report.grouped_bar_chart(groups, "t", "y", return_boxes=True)
    assert set(boxes) == {("A", "bbox"), ("A", "full"), ("B", "bbox")}
    for (cat, s), (x0, y0, x1, y1) in boxes.items():
        assert abs((y1 - y0) - groups[cat][s] * scale) <= 1.0
        col = report.PALETTE[["bbox", "full"].index(s)]
        xm = (x0 + x1) // 2
        painted = np.all(img[:, xm] == col, axis=1).sum()
        assert abs(painted - groups[cat][s] * scale) <= 1.5
    # a negative value hangs below the zero line
    img2, boxes2, _ = report.grouped_bar_chart({"A": {"s": -1.0}, "B": {"s": 2.0}}, return_boxes=True)
    assert boxes2[("A", "s")][1] == boxes2[("B", "s")][3]


def test_line_chart_draws_each_series_in_its_colour():
    img = report.line_chart({"gt": [0.1, 0.2, 0.15], "m": [0.3, 0.1, float("nan"), 0.2]}, "x", "t", "y")
    for k in range(2):
        assert np.all(img == report.PALETTE[k], axis=2).sum() > 20
    assert img.shape == (360, 560, 3)


def test_html_escapes_and_links_existing_images(tmp_path):
    methods = {"<script>": METHODS["CLASSICAL"]}
    path = report.write_html(str(tmp_path / "a.html"), "t & t", methods, [("c<", "x.png")], ["note <b>"])
    s = open(path, encoding="utf-8").read()
    assert "<script>" not in s and "&lt;script&gt;" in s and "note &lt;b&gt;" in s
    assert "src='x.png'" in s


def test_write_report_writes_all_files_and_links_them(tmp_path):
    result = {"frames": 4, "methods": METHODS}
    tile = np.zeros((16, 16, 3), np.float32)
    files = report.write_report(
        str(tmp_path / "r"), result, grid={"tiles": [[tile, tile, tile]], "row_labels": ["f0"],
                                           "col_labels": ["GT", "CLASSICAL", "VERTEX_PROJECTION"]},
        per_frame={"psnr_mask": {"CLASSICAL": [1, 2, 3, 4], "VERTEX_PROJECTION": [2, 3, 4, 5]}},
        flicker_curves={"GT": [0.1, 0.2], "CLASSICAL": [0.2, 0.1]},
        notes=["LPIPS weights: x"], details={"per_frame": [1.0, 2.0]})
    for name in ("table.md", "table.png", "grid.png", "psnr.png", "ssim.png", "lpips.png", "flicker.png",
                 "psnr_mask_per_frame.png", "flicker_curve.png", "details.json", "index.html"):
        assert os.path.isfile(files[name]), name
    html = open(files["index.html"], encoding="utf-8").read()
    for rel in re.findall(r"src='([^']+)'", html):
        assert os.path.isfile(os.path.join(str(tmp_path / "r"), rel))
    assert len(re.findall(r"src='", html)) == 8
    assert json.load(open(files["details.json"]))["per_frame"] == [1.0, 2.0]
    assert "4 frames" in open(files["table.md"]).read()
