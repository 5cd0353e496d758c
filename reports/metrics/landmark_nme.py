"""Landmark NME: how far the swapped face's 68 landmarks sit from the original's, per frame.

The normalised mean error of face alignment (mean point distance / inter-ocular distance of the
original, the outer eye corners 36 and 45): 0 when mouth, eyes, brows and jaw are where the original's
were; ~0.05 is the scatter of a landmark detector on the same face; a closed mouth where the original
opened it shows here even when the geometry correlation over time looks fine. Lower is better.
"""
from __future__ import annotations

import numpy as np

from reports.metrics import METRICS, Metric, MetricResult, Sample, summarise


@METRICS.register("landmark_nme")
class LandmarkNme(Metric):
    description = "mean landmark distance swapped vs original / original's inter-ocular distance (lower = kept)"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.values: dict[int, float] = {}

    def add(self, sample: Sample) -> None:
        lo, ls = sample.landmarks_original, sample.landmarks_swapped
        if lo is None or ls is None:
            self.values[sample.index] = float("nan")
            return
        interocular = float(np.linalg.norm(lo[45] - lo[36]))
        self.values[sample.index] = (float(np.linalg.norm(lo - ls, axis=1).mean() / interocular)
                                     if interocular > 1 else float("nan"))

    def result(self) -> MetricResult:
        return MetricResult(summarise(self.values), dict(self.values))
