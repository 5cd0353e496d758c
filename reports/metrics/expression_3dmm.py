"""3DMM expression and pose errors: the face-swap papers' measures, from 3DDFA_V2 (models/tddfa.py).

Per sampled frame pair, 3DDFA_V2 fits the original's and the swapped face (each cropped around its own
68 landmarks) and this metric compares:
- expression error: the L2 distance of the 10 expression coefficients, original vs swapped, same frame
  (per frame in metrics.csv; its mean is the headline). Identity lives in the 40 shape coefficients, so a
  different person making the same face scores low; 0 is a perfect copy. Lower is better.
- pose error: the mean absolute yaw / pitch / roll difference in degrees, each wrapped to [-180, 180).
- per-coefficient Pearson r over the frames (does the swap move when the original moves?) and its mean.
  A coefficient the original never moves has no r (None); one the swap holds still while the original
  moves it scores 0: no movement was transferred.
The model is named in the summary; it was never used to train anything deid makes, so the swap was not
optimised against it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from deid.models.tddfa import MODEL_NAME, POSE_AXES, FaceParams, Tddfa, wrap_degrees
from deid.reports.metrics import METRICS, Metric, MetricResult, Sample, summarise

MIN_PCC_FRAMES = 3  # Pearson r over fewer pairs is meaningless
FLAT = 1e-6  # a coefficient whose standard deviation is below this did not move


@METRICS.register("3dmm")
class Expression3dmm(Metric):
    description = ("3DMM expression error: L2 distance of 3DDFA_V2's 10 expression coefficients, swapped vs "
                   "original (lower = kept); pose error (deg) and per-coefficient PCC in the summary")

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.model: Tddfa | None = None  # loaded at the first pair with faces: no cost for a run without any
        self.errors: dict[int, float] = {}
        self.fits: dict[int, tuple[FaceParams, FaceParams]] = {}

    def add(self, sample: Sample) -> None:
        lo, ls = sample.landmarks_original, sample.landmarks_swapped
        if lo is None or ls is None:
            self.errors[sample.index] = float("nan")
            return
        if self.model is None:
            self.model = Tddfa("cpu")  # a 3.5 MB network on two 120 px crops: the CPU keeps up with evaluate
        original, swapped = self.model.fit_many([(sample.original, lo), (sample.swapped, ls)])
        self.fits[sample.index] = (original, swapped)
        self.errors[sample.index] = float(np.linalg.norm(original.expression - swapped.expression))

    def result(self) -> MetricResult:
        summary = summarise(self.errors)
        summary["model"] = MODEL_NAME
        if summary["computed"]:
            summary.update(pose_errors(self.fits))
            summary.update(coefficient_pcc(self.fits))
        return MetricResult(summary, dict(self.errors))


def pose_errors(fits: dict[int, tuple[FaceParams, FaceParams]]) -> dict[str, float]:
    """Mean absolute wrapped difference per axis, and over the three axes (mean / median / max over frames)."""
    delta = np.abs(wrap_degrees(np.array([o.pose - s.pose for o, s in fits.values()])))  # frames x 3
    per_frame = delta.mean(axis=1)
    return {"pose_error_mean": float(per_frame.mean()), "pose_error_median": float(np.median(per_frame)),
            "pose_error_max": float(per_frame.max()),
            **{f"pose_error_{axis}": float(delta[:, i].mean()) for i, axis in enumerate(POSE_AXES)}}


def coefficient_pcc(fits: dict[int, tuple[FaceParams, FaceParams]]) -> dict[str, Any]:
    """Pearson r of each expression coefficient over frames, original vs swapped, and their mean."""
    if len(fits) < MIN_PCC_FRAMES:
        return {"pcc": None, "pcc_mean": None, "pcc_frames": len(fits)}
    original = np.array([o.expression for o, _ in fits.values()])
    swapped = np.array([s.expression for _, s in fits.values()])
    rs = [pearson(original[:, k], swapped[:, k]) for k in range(original.shape[1])]
    defined = [r for r in rs if r is not None]
    return {"pcc": {f"exp{k + 1:02d}": r for k, r in enumerate(rs)},
            "pcc_mean": float(np.mean(defined)) if defined else None, "pcc_frames": len(fits)}


def pearson(original: np.ndarray, swapped: np.ndarray) -> float | None:
    """r; None when the original does not move (nothing to keep), 0 when only the swap holds still."""
    if original.std() < FLAT:
        return None
    if swapped.std() < FLAT:
        return 0.0
    return float(np.corrcoef(original, swapped)[0, 1])
