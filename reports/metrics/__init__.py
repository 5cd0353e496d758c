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

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from deid.core.plugins import Registry

log = logging.getLogger("deid.evaluate")


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


class PerFrameMetric(Metric):
    """A metric that is one number per frame pair, summarised by `summarise`: subclasses write `measure`."""

    unit = ""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.values: dict[int, float] = {}

    @abstractmethod
    def measure(self, sample: Sample) -> float:
        """This pair's value; NaN where it cannot be measured (no face, a box too small)."""

    def add(self, sample: Sample) -> None:
        self.values[sample.index] = float(self.measure(sample))

    def result(self) -> MetricResult:
        return MetricResult(summarise(self.values, self.unit), dict(self.values))


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
    "metric", ["deid.reports.metrics.landmark_nme", "deid.reports.metrics.face_ssim", "deid.reports.metrics.expression_3dmm"])


def make_metrics(names: tuple[str, ...] | None, config: Any) -> MetricSet:
    """The named metrics (all registered ones when `names` is None), each with its name set."""
    chosen = METRICS.names() if names is None else names
    metrics = []
    for name in chosen:
        metric = METRICS.get(name, "evaluate.metrics")(config)
        metric.name = name
        metrics.append(metric)
    return MetricSet(metrics)


class MetricSet:
    """The metrics of one evaluation. A metric that raises is reported (`computed: false` with the error)
    and dropped for the rest of the run: a plugin's bug must never lose the identity results."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics
        self.failed: dict[str, str] = {}

    def add(self, sample: Sample) -> None:
        for metric in self.metrics:
            if metric.name not in self.failed:
                self._guard(metric, lambda: metric.add(sample))

    def results(self) -> dict[str, tuple[str, MetricResult]]:
        """name -> (description, result), in the order the metrics were chosen."""
        out = {}
        for metric in self.metrics:
            result = None if metric.name in self.failed else self._guard(metric, metric.result)
            if result is None:  # failed while adding or while summing up
                result = MetricResult({"computed": False, "reason": self.failed[metric.name], "n": 0})
            out[metric.name] = (metric.description, result)
        return out

    def _guard(self, metric: Metric, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except Exception as exc:  # any plugin error: reported in the summary, never fatal to the evaluation
            first = str(exc).splitlines()[0] if str(exc) else ""
            self.failed[metric.name] = f"{metric.name} failed ({type(exc).__name__}: {first})"
            log.warning("metric not computed: %s", self.failed[metric.name])
            return None
