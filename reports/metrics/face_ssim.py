"""Face SSIM: how much of the original face's pixels survive in the swapped frame, per frame.

Structural similarity (Wang et al. 2004, 7x7 Gaussian window) of the two frames' grey levels over the
original face's box (its 68 landmarks, grown 10 %), resized to 112 px. 1 means the face was not touched;
a swap that replaced the face lands well below (different eyes, nose, skin texture); a light blur stays
high. Read it with the identity scores: high SSIM with a hidden verdict is worth a look at the pictures.
"""
from __future__ import annotations

import cv2
import numpy as np

from deid.reports.metrics import METRICS, PerFrameMetric, Sample

SIDE = 112


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two grey images of the same size (floats 0..255)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda x: cv2.GaussianBlur(x, (7, 7), 1.5)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(value.mean())


@METRICS.register("face_ssim")
class FaceSsim(PerFrameMetric):
    description = "SSIM of the face box, swapped vs original (1 = face untouched; a real swap is far below)"

    def measure(self, sample: Sample) -> float:
        lm = sample.landmarks_original
        if lm is None or sample.swapped.shape != sample.original.shape:
            return float("nan")
        (x0, y0), (x1, y1) = lm.min(0), lm.max(0)
        pad_x, pad_y = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
        h, w = sample.original.shape[:2]
        left, top = int(max(0, x0 - pad_x)), int(max(0, y0 - pad_y))
        right, bottom = int(min(w, x1 + pad_x)), int(min(h, y1 + pad_y))
        if right - left < 8 or bottom - top < 8:
            return float("nan")
        crops = [cv2.resize(cv2.cvtColor(f[top:bottom, left:right], cv2.COLOR_RGB2GRAY), (SIDE, SIDE),
                            interpolation=cv2.INTER_AREA).astype(np.float64) for f in (sample.original, sample.swapped)]
        return ssim(*crops)
