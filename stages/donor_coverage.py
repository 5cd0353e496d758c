"""Does the donor's footage cover what the target does? Decoder B can only draw what B's frames show.

A per-pair autoencoder renders A's expression with B's face only as far as B was ever seen doing it: if
B never opens the mouth as wide as A, never blinks, never raises the brows, or never looks as far down,
decoder B has nothing to draw for those frames of A and falls back to B's average face there (a frozen
expression in the swap, whatever the loss). This check reads both extractions' 68 landmarks before
training and compares, per measure, A's range with B's:

    mouth_open   inner-mouth aspect ratio           eye_open   eye aspect ratio (a blink is low)
    brow_raise   brow height / nose-bridge length   yaw, pitch head pose, degrees

A measure is *not covered* when more than `MAX_OUTSIDE` of A's faces lie outside B's own 1st-99th
percentile range, widened by a tenth of A's 5th-95th percentile spread (so landmark jitter alone never
warns). The finding goes to train's log (a warning with the numbers), `<model>/coverage.json`, train's
summary, and the evaluation report's notes of `deid run` / `deid batch`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from deid.core.atomic import write_json
from deid.models.face_quality import head_pose
from deid.reports.expression import frame_ratios

log = logging.getLogger("deid.train")

MEASURES = ("mouth_open", "eye_open", "brow_raise", "yaw", "pitch")
WORDS = {"mouth_open": ("open the mouth wider", "close the mouth more"),
         "eye_open": ("open the eyes wider", "close the eyes more (blink)"),
         "brow_raise": ("raise the brows higher", "lower the brows more"),
         "yaw": ("turn further (yaw above B's range)", "turn further the other way (yaw below B's range)"),
         "pitch": ("tilt further (pitch above B's range)", "tilt further the other way (pitch below B's range)")}
MAX_OUTSIDE = 0.10     # share of A's faces outside B's range above which a measure is not covered
MAX_FACES = 600        # faces per side measured (evenly spread): enough for percentiles, seconds not minutes
COVERAGE_JSON = "coverage.json"


def face_measures(landmarks: np.ndarray) -> dict[str, float]:
    """The five measures of one face (68 landmarks in frame pixels)."""
    lm = np.asarray(landmarks, np.float64)
    ratios = frame_ratios(lm)
    lo, hi = lm.min(0), lm.max(0)
    side = int(round(2.0 * float(max(hi - lo))))
    # A square crop with the face centred, as evaluate's geometry does: the pose's camera depends on no frame size.
    yaw, pitch, _ = head_pose(lm - (lo + hi) / 2 + side / 2, side)
    return {"mouth_open": ratios["mouth_open"], "eye_open": ratios["eye_open"], "brow_raise": ratios["brow_raise"],
            "yaw": yaw, "pitch": pitch}


def measure_faces(landmarks: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """measure -> finite values over (at most MAX_FACES evenly spread) faces."""
    picked = [landmarks[int(i)] for i in np.linspace(0, len(landmarks) - 1, min(MAX_FACES, len(landmarks)))] \
        if len(landmarks) else []
    rows = [face_measures(lm) for lm in picked]
    out = {}
    for name in MEASURES:
        values = np.array([r[name] for r in rows], np.float64)
        out[name] = values[np.isfinite(values)]
    return out


def donor_coverage(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> dict[str, Any]:
    """Per measure: A's and B's ranges, the share of A outside B's, and whether B covers A; plus the findings."""
    ma, mb = measure_faces(a), measure_faces(b)
    measures: dict[str, dict[str, Any]] = {}
    findings: list[str] = []
    for name in MEASURES:
        xa, xb = ma[name], mb[name]
        if len(xa) < 5 or len(xb) < 5:
            measures[name] = {"covered": None, "reason": "too few faces with landmarks"}
            continue
        a_lo, a_hi = np.percentile(xa, [5, 95])
        b_lo, b_hi = np.percentile(xb, [1, 99])
        slack = 0.1 * (a_hi - a_lo)
        above = float(np.mean(xa > b_hi + slack))
        below = float(np.mean(xa < b_lo - slack))
        covered = above + below <= MAX_OUTSIDE
        measures[name] = {"a_p5": round(float(a_lo), 4), "a_p95": round(float(a_hi), 4),
                          "b_p1": round(float(b_lo), 4), "b_p99": round(float(b_hi), 4),
                          "a_sd": round(float(np.std(xa)), 4), "b_sd": round(float(np.std(xb)), 4),
                          "a_above_b": round(above, 4), "a_below_b": round(below, 4), "covered": covered}
        if not covered:
            more, less = WORDS[name]
            parts = [f"{share:.0%} of A's faces {words} than B ever does"
                     for share, words in ((above, more), (below, less)) if share > MAX_OUTSIDE / 2]
            findings.append(f"{name}: {'; '.join(parts) or f'{above + below:.0%} of A outside B'} (A p5-p95 "
                            f"{a_lo:.3g}..{a_hi:.3g}, B p1-p99 {b_lo:.3g}..{b_hi:.3g})")
    return {"measures": measures, "covered": not findings, "findings": findings,
            "faces": {"a": int(min(len(a), MAX_FACES)), "b": int(min(len(b), MAX_FACES))},
            "rule": f"not covered when > {MAX_OUTSIDE:.0%} of A's faces lie outside B's p1-p99 range "
                    "(widened by a tenth of A's p5-p95 spread)"}


def extreme_faces(landmarks: Sequence[np.ndarray]) -> list[int]:
    """Indices of the faces with the widest and the most closed mouth, then the most closed and the widest
    eyes: the frames a preview must show to tell whether expression transfers (distinct, in that order)."""
    rows = [frame_ratios(lm) for lm in landmarks]
    mouth = np.array([r["mouth_open"] for r in rows], np.float64)
    eyes = np.array([r["eye_open"] for r in rows], np.float64)
    picks: list[int] = []
    for values, pick in ((mouth, np.nanargmax), (mouth, np.nanargmin), (eyes, np.nanargmin), (eyes, np.nanargmax)):
        if np.isfinite(values).any():
            index = int(pick(values))
            if index not in picks:
                picks.append(index)
    return picks


def check_donor_coverage(a: Iterable[np.ndarray], b: Iterable[np.ndarray], model_dir: Path) -> dict[str, Any]:
    """donor_coverage, logged (a warning with the numbers when B does not cover A) and written to coverage.json."""
    result = donor_coverage(list(a), list(b))
    for finding in result["findings"]:
        log.warning("donor coverage: B does not cover A: %s; decoder B cannot render those frames of A as they are",
                    finding)
    if result["covered"]:
        log.info("donor coverage: B's footage covers A's range of mouth, eyes, brows, yaw and pitch")
    write_json(Path(model_dir) / COVERAGE_JSON, result)
    return result


def coverage_caveats(model_dir: Path) -> tuple[str, ...]:
    """The evaluation report's notes from a trained model's coverage.json (none when covered or absent)."""
    import json

    path = Path(model_dir) / COVERAGE_JSON
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return ()
    return tuple(f"donor coverage: B's footage does not cover A: {finding}; expect the swap to freeze there"
                 for finding in result.get("findings", []))
