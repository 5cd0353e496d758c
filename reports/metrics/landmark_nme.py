"""Landmark NME: how far the swapped face's 68 landmarks sit from the original's, per frame.

The normalised mean error of face alignment (mean point distance / inter-ocular distance of the
original, the outer eye corners 36 and 45): 0 when mouth, eyes, brows and jaw are where the original's
were; ~0.05 is the scatter of a landmark detector on the same face; a closed mouth where the original
opened it shows here even when the geometry correlation over time looks fine. Lower is better.
"""
from __future__ import annotations

import numpy as np

from deid.reports.metrics import METRICS, PerFrameMetric, Sample


@METRICS.register("landmark_nme")
class LandmarkNme(PerFrameMetric):
    description = "mean landmark distance swapped vs original / original's inter-ocular distance (lower = kept)"

    def measure(self, sample: Sample) -> float:
        lo, ls = sample.landmarks_original, sample.landmarks_swapped
        if lo is None or ls is None:
            return float("nan")
        interocular = float(np.linalg.norm(lo[45] - lo[36]))
        return float(np.linalg.norm(lo - ls, axis=1).mean() / interocular) if interocular > 1 else float("nan")
