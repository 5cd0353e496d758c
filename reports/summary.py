"""The evaluation summary: one typed record that summary.json, report.html, `deid compare` and the CLI read.

Sections with many numbers (the four comparisons' statistics, the AU, geometry and calibrated expression
summaries, the parrot estimate) stay mappings of plain numbers; what the readers decide on has a field.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from deid.core.errors import DeidError
from deid.reports.verdict import Verdict

RECOGNISER = "dlib face_recognition ResNet (128-d embedding, 68-point alignment)"
SCHEMA = 2


@dataclass
class EvaluationSummary:
    name: str
    original: str
    swapped: str
    ref_original: str
    ref_donor: str
    frames_total: int
    frames_sampled: int
    seed: int
    fps: float | None
    threshold: float
    verdict: Verdict
    # comparisons (OR-OR, OR-SW, SW-OR, SW-SW stats), reidentification, donor, no-face shares (all dlib's);
    # second: the same by SFace (reports.identity.second_recogniser_summary, or available False and why);
    # trained_against: "dlib" when the swap model was trained against it, else None
    identity: dict[str, Any]
    parrot: dict[str, Any]
    geometry: dict[str, Any]
    au: dict[str, Any]
    gallery: dict[str, Any] | None = None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # reports/metrics/ plugins: name -> summary
    expression: dict[str, Any] = field(default_factory=dict)  # reports/expression.py: judgement, measures, ...
    frames_repeated: int = 0  # the original's frames left out of the sample as repeats of the frame before
    recogniser: str = RECOGNISER
    notes: list[str] = field(default_factory=list)
    damaged_input: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    version: str = ""
    commit: str | None = None
    schema: int = SCHEMA

    @property
    def reidentification(self) -> dict[str, Any]:
        return self.identity.get("reidentification", {})

    @property
    def second(self) -> dict[str, Any]:
        """The second recogniser's identity numbers; {} in a summary written before it existed."""
        return self.identity.get("second") or {}

    def comparison(self, name: str) -> dict[str, Any]:
        """Statistics of one comparison (OR-OR, OR-SW, SW-OR, SW-SW): n, mean, sd, median, q1, q3, min, max."""
        return self.identity.get("comparisons", {}).get(name, {})

    def as_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["verdict"] = self.verdict.as_json()
        return _plain(data)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: Path | str = "summary.json") -> "EvaluationSummary":
        if data.get("schema") != SCHEMA:
            raise DeidError(f"{source}: written by an older deid evaluate (schema {data.get('schema')!r}, expected "
                            f"{SCHEMA}); run deid evaluate again")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["verdict"] = Verdict.from_json(data.get("verdict") or {})
        try:
            return cls(**values)
        except TypeError as exc:
            raise DeidError(f"{source}: incomplete summary ({exc}); run deid evaluate again") from None

    @classmethod
    def read(cls, path: Path) -> "EvaluationSummary":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DeidError(f"{path}: not a readable summary.json ({exc}); run deid evaluate again") from None
        return cls.from_json(data, path)


def _plain(obj: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, so summary.json is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj
