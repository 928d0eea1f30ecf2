"""``python -m neural_avatar demo``: render the embedded default avatar — a still for each mode
and a short animation of a bundled motion — into ``out/demo/``, plus a contact sheet."""
from __future__ import annotations

import argparse
import os
import sys

from ..common.guards import float_in, int_in

MODES = ("VERTEX_PROJECTION", "NEURAL_TEXTURE", "GAUSSIAN_BONES")


def _bundled_motion():
    from ..common.paths import bundled_walk

    return bundled_walk()


def contact_sheet(paths, out_path, cols=4, label=True):
    import cv2
    import numpy as np

    imgs = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]
    imgs = [i for i in imgs if i is not None]
    if not imgs:
        return None
    h, w = imgs[0].shape[:2]
    rows = (len(imgs) + cols - 1) // cols
    sheet = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for k, (img, p) in enumerate(zip(imgs, paths)):
        img = cv2.resize(img, (w, h))
        if label:
            cv2.putText(img, os.path.splitext(os.path.basename(str(p)))[0][:28], (4, 14),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        r, c = divmod(k, cols)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    cv2.imwrite(str(out_path), sheet)
    return out_path
