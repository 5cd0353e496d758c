"""Evaluation metrics beyond the verdict's own: each one module here, registered with
`@METRICS.register("name")`, streamed the sampled frame pairs as evaluate reads them.

A metric is a class built with the evaluate config; `add(sample)` gets each sampled pair (both frames,
RGB uint8, and the largest face's 68 landmarks in each, None where no face was found) and `result()`
returns a `MetricResult`: a few summary numbers (summary.json `metrics.<name>`, the report's "More
metrics" table, `deid compare`) and one value per frame (`reports/metrics.csv`). `evaluate.metrics` /
`deid evaluate --metric` choose among the registered names; by default all of them run.

The verdict does not read these: its three questions (hidden, became the donor, expression kept) are
answered by the identity pass, the parrot attack, landmark geometry and AU, which a plugin cannot switch
off or replace. A metric that cannot be computed says so in its summary (`computed: false`, `reason`).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from pipeline.plugins import Registry


@dataclass(frozen=True)
class Sample:
    """One sampled frame pair."""

    index: int                            # frame index in both videos
    original: np.ndarray                  # RGB uint8
    swapped: np.ndarray
    landmarks_original: np.ndarray | None  # 68x2, full-frame pixels
    landmarks_swapped: np.ndarray | None


@dataclass
class MetricResult:
    summary: dict[str, Any]                              # plain numbers (and computed/reason), JSON-ready
    per_frame: dict[int, float] = field(default_factory=dict)  # frame index -> value (NaN: not measurable there)


class Metric(ABC):
    """Base of a metric plugin. `description` is one line for the report: what it measures, which way is good."""

    name = ""
    description = ""

    def __init__(self, config: Any) -> None:
        self.config = config

    @abstractmethod
    def add(self, sample: Sample) -> None:
        """Look at one sampled pair (called in frame order, once per sampled frame both videos have)."""

    @abstractmethod
    def result(self) -> MetricResult:
        """The summary and per-frame values, once the videos have streamed past."""


def summarise(values: Mapping[int, float], unit: str = "") -> dict[str, Any]:
    """n / mean / median / max of the finite per-frame values; computed false with the reason when none are."""
    finite = np.array([v for v in values.values() if np.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return {"computed": False, "reason": "no sampled frame pair had what this metric needs (a face in both)",
                "n": 0}
    out: dict[str, Any] = {"computed": True, "n": int(finite.size), "mean": float(finite.mean()),
                           "median": float(np.median(finite)), "max": float(finite.max()), "min": float(finite.min())}
    if unit:
        out["unit"] = unit
    return out


METRICS: Registry[type[Metric]] = Registry(
    "metric", ["reports.metrics.landmark_nme", "reports.metrics.face_ssim"])


def make_metrics(names: tuple[str, ...] | None, config: Any) -> list[Metric]:
    """Instances of the named metrics (all registered ones when `names` is None), each with its name set."""
    chosen = METRICS.names() if names is None else names
    metrics = []
    for name in chosen:
        metric = METRICS.get(name, "evaluate.metrics")(config)
        metric.name = name
        metrics.append(metric)
    return metrics
