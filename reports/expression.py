"""A calibrated expression score from dlib's 68 landmarks: a number that can tell a frozen face from a kept one.

The averaged geometry PCC (reports/geometry.py) could not: it mixed measures that carry signal with
measures that carry only landmark noise, let head pose drive the correlation (a frozen face still scored
up to 0.45 on single measures), and had no idea what chance looks like. Here, per measure:

1. **Scale-free ratios** (no face size, no inter-ocular jitter where it can be avoided):
   `mouth_open` inner-mouth aspect ratio (mean inner-lip gap / inner mouth width), `eye_open` eye aspect
   ratio (both eyes), `brow_raise` brow height above the eye line / nose-bridge length (27 to 30),
   `mouth_width` lip-corner distance / inter-ocular distance.
2. **Head pose regressed out**: least squares of each measure on yaw, pitch, roll of the ORIGINAL frames;
   the same fitted part is removed from both series (a swap is meant to follow the original's pose, and the
   pose axis judges that separately). A face that does not move at all then correlates exactly 0.
3. **Informative only above the noise**: a measure counts when the original's residual SD is at least
   `snr` (3) times its re-encode noise, the robust SD of (measure on a re-encoded copy - measure on the
   original) over the same frames (see reencode_noise). The caller supplies that copy's landmarks: evaluate re-encodes sampled original
   frames with libx264 (crf 23) and landmarks them again with the same detector, so the noise includes
   what a re-encode really changes: compression artefacts and the detector's box moving.
4. **Chance made explicit**: Pearson r between the two residual series, with a 95 % band of r under a
   circular-shift null (the swapped series rotated against the original by every lag of at least a tenth
   of the series: same values, same smoothness, no alignment); and the amplitude **gain**, the slope of
   swapped on original (Pearson ignores amplitude: a blur that halves the mouth movement keeps r).

Judgement: "passed" when every informative measure has r > `min_r` (0.5) and above its null band's upper
edge, with gain in [0.5, 2]; "failed" otherwise; "not judged" when no measure is informative (the
original's expression barely changes) or there are too few paired frames for a null band.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

MEASURES = ("mouth_open", "eye_open", "brow_raise", "mouth_width")
DESCRIPTIONS = {"mouth_open": "inner-mouth aspect ratio", "eye_open": "eye aspect ratio",
                "brow_raise": "brow height / nose-bridge length", "mouth_width": "lip-corner distance / inter-ocular"}
POSE = ("yaw", "pitch", "roll")
COLUMNS = ["measure", "informative", "sd_original", "noise_sd", "snr", "pose_r2", "r", "null_low", "null_high",
           "gain", "passed", "frames"]
NOISE_SOURCE = "landmarks of a libx264 crf 23 re-encode of the original's sampled frames"


@dataclass(frozen=True)
class ExpressionBars:
    min_r: float = 0.5        # every informative measure's r must exceed this ...
    gain_low: float = 0.5     # ... and its amplitude gain lie in [gain_low, gain_high]
    gain_high: float = 2.0
    snr: float = 3.0          # a measure is informative when the original's SD >= snr x its re-encode noise
    min_frames: int = 10      # fewer paired frames: no null band worth the name, not judged
    null_level: float = 0.95  # width of the circular-shift null band


def frame_ratios(landmarks: np.ndarray | None) -> dict[str, float]:
    """The four ratios of one face (68 landmarks in any pixel frame); NaN when landmarks are missing."""
    nan = {k: float("nan") for k in MEASURES}
    if landmarks is None:
        return nan
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (68, 2) or not np.isfinite(lm).all():
        return nan
    d = lambda a, b: float(np.linalg.norm(lm[a] - lm[b]))  # noqa: E731 - a local shorthand
    left_eye, right_eye = lm[36:42].mean(0), lm[42:48].mean(0)
    iod = float(np.linalg.norm(right_eye - left_eye))
    bridge = d(27, 30)
    inner_width = d(60, 64)
    eye_widths = d(36, 39), d(42, 45)
    if min(iod, bridge, inner_width, *eye_widths) < 1e-6:
        return nan
    gap = np.mean([d(61, 67), d(62, 66), d(63, 65)])
    ear = np.mean([(d(37, 41) + d(38, 40)) / (2 * eye_widths[0]), (d(43, 47) + d(44, 46)) / (2 * eye_widths[1])])
    axis = (right_eye - left_eye) / iod
    up = np.array([axis[1], -axis[0]])  # perpendicular to the eye line, up the face (image y grows down)
    brows = np.mean([np.dot(lm[17:22].mean(0) - left_eye, up), np.dot(lm[22:27].mean(0) - right_eye, up)])
    return {"mouth_open": float(gap / inner_width), "eye_open": float(ear), "brow_raise": float(brows / bridge),
            "mouth_width": d(48, 54) / iod}


def ratio_table(landmarks: Sequence[np.ndarray | None], frames: Sequence[int]) -> pd.DataFrame:
    """One row per frame (index `frame`), one column per measure."""
    return pd.DataFrame([frame_ratios(lm) for lm in landmarks], index=pd.Index(list(frames), name="frame"),
                        columns=list(MEASURES))


def reencode_noise(original: pd.DataFrame, reencoded: pd.DataFrame) -> dict[str, float | None]:
    """Per measure: the robust SD (1.4826 x median absolute deviation) of (re-encoded - original) over frames
    with a face in both; None under 3 such frames.

    Robust because dlib's landmarks under a re-encode move a little on most frames and jump on a few (an
    inner lip point switching sides on a half-open mouth): on WolfgangLanger the plain SD of mouth_open's
    change was 3x its typical size, driven by 4 of 40 frames. The typical size says whether the measure
    moves above landmark noise; the rare jumps still lower r, which the null band and r > 0.5 judge."""
    frames = original.dropna(how="any").index.intersection(reencoded.dropna(how="any").index)
    out: dict[str, float | None] = {}
    for m in MEASURES:
        diff = (reencoded.loc[frames, m] - original.loc[frames, m]).to_numpy(float)
        out[m] = float(1.4826 * np.median(np.abs(diff - np.median(diff)))) if len(diff) >= 3 else None
    return out


def pose_residuals(original: np.ndarray, swapped: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Both series minus the part of the ORIGINAL explained by its pose (intercept + yaw, pitch, roll).

    Returns (original residual, swapped residual, share of the original's variance pose explains)."""
    design = np.column_stack([np.ones(len(original)), pose])
    beta, *_ = np.linalg.lstsq(design, original, rcond=None)
    fitted = design @ beta
    res_o, res_s = original - fitted, swapped - fitted
    total = float(np.sum((original - original.mean()) ** 2))
    r2 = 1.0 - float(np.sum(res_o ** 2)) / total if total > 0 else 0.0
    return res_o, res_s, r2


def shift_null(x: np.ndarray, y: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` band of Pearson r between x and y circularly shifted by every lag in
    [n/10, n - n/10]: a near-zero lag of a smooth series is the series itself, not chance."""
    n = len(x)
    skip = max(1, math.ceil(n / 10))
    rs = [_pearson(x, np.roll(y, k)) for k in range(skip, n - skip + 1)]
    rs = [r for r in rs if r is not None]
    if not rs:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(rs, [tail, 100 - tail])
    return float(low), float(high)


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    sx, sy = float(np.std(x)), float(np.std(y))
    if sx < 1e-12 or sy < 1e-12:
        return None
    return float(np.mean((x - x.mean()) * (y - y.mean())) / (sx * sy))


def expression_preservation(original: pd.DataFrame, swapped: pd.DataFrame, pose: pd.DataFrame,
                            noise: Mapping[str, float | None], bars: ExpressionBars = ExpressionBars(),
                            noise_source: str = NOISE_SOURCE) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-measure table (COLUMNS) and a summary: `judgement` ("passed", "failed", "not judged"), `finding`
    (one clause with the numbers), `measures` (the table's rows), r_min/r_mean, gain_min/gain_max.

    `original` / `swapped`: ratio_table of each video; `pose`: yaw/pitch/roll of the original (same index);
    `noise`: reencode_noise of the original."""
    ok = original.notna().all(axis=1) & pose.reindex(original.index)[list(POSE)].notna().all(axis=1)
    frames = original.index[ok].intersection(swapped.dropna(how="any").index)
    o, s = original.loc[frames], swapped.loc[frames]
    p = pose.loc[frames, list(POSE)].to_numpy(float)
    rows = [_measure_row(m, o[m].to_numpy(float), s[m].to_numpy(float), p, noise.get(m), bars) for m in MEASURES]
    table = pd.DataFrame(rows, columns=COLUMNS)
    summary = _summary(table, len(frames), bars, noise_source)
    summary["finding"] = describe(table, summary)
    summary["measures"] = table.to_dict("records")  # summary.json carries the per-measure table
    return table, summary


def _measure_row(name: str, x: np.ndarray, y: np.ndarray, pose: np.ndarray, noise: float | None,
                 bars: ExpressionBars) -> dict[str, Any]:
    row: dict[str, Any] = {"measure": name, "informative": False, "sd_original": None, "noise_sd": noise,
                           "snr": None, "pose_r2": None, "r": None, "null_low": None, "null_high": None,
                           "gain": None, "passed": None, "frames": int(len(x))}
    if len(x) < bars.min_frames:
        return row
    res_o, res_s, r2 = pose_residuals(x, y, pose)
    sd = float(np.std(res_o, ddof=1))
    row.update(sd_original=sd, pose_r2=r2)
    if noise is None or not np.isfinite(noise):
        return row
    snr = sd / noise if noise > 0 else float("inf")
    row.update(snr=snr, informative=bool(snr >= bars.snr))
    r = _pearson(res_o, res_s)
    low, high = shift_null(res_o, res_s, bars.null_level)
    var_o = float(np.var(res_o))
    gain = float(np.mean((res_o - res_o.mean()) * (res_s - res_s.mean())) / var_o) if var_o > 0 else None
    row.update(r=r, null_low=low, null_high=high, gain=gain)
    if row["informative"]:
        # r undefined (a swapped series that does not vary after the pose part) is no transfer at all.
        row["passed"] = bool(r is not None and gain is not None and r > bars.min_r and r > high
                             and bars.gain_low <= gain <= bars.gain_high)
    return row


def _summary(table: pd.DataFrame, frames: int, bars: ExpressionBars, noise_source: str) -> dict[str, Any]:
    informative = table[table["informative"]]
    summary: dict[str, Any] = {
        "frames": frames, "informative": list(informative["measure"]), "noise_source": noise_source,
        "bars": {"min_r": bars.min_r, "gain": [bars.gain_low, bars.gain_high], "snr": bars.snr,
                 "null_level": bars.null_level},
        "r_min": None, "r_mean": None, "gain_min": None, "gain_max": None, "failing": []}
    if frames < bars.min_frames:
        summary.update(judgement="not judged", reason=f"only {frames} distinct frames with a face in both videos "
                                                      f"({bars.min_frames} needed for a null band)")
        return summary
    if informative.empty:
        summary.update(judgement="not judged", reason="the original's expression barely changes (no measure varies "
                                                      f"{bars.snr:g}x its re-encode noise)")
        return summary
    rs = [v if v is not None and np.isfinite(v) else 0.0 for v in informative["r"]]
    gains = [float(v) for v in informative["gain"] if v is not None and np.isfinite(v)]
    failing = list(informative.loc[~informative["passed"].astype(bool), "measure"])
    summary.update(r_min=float(min(rs)), r_mean=float(np.mean(rs)),
                   gain_min=min(gains) if gains else None, gain_max=max(gains) if gains else None,
                   failing=failing, judgement="failed" if failing else "passed", reason=None)
    return summary


def describe(table: pd.DataFrame, summary: Mapping[str, Any]) -> str:
    """One clause for the verdict and `deid compare`: the judgement with each informative measure's numbers."""
    if summary.get("judgement") in (None, "not judged"):
        return str(summary.get("reason") or "not computed")
    rows = table.set_index("measure") if "measure" in table.columns else table
    parts = []
    for name in summary["informative"]:
        row = rows.loc[name]
        parts.append(f"{name} r {_num(row['r'])} (null {_num(row['null_low'])}..{_num(row['null_high'])}), "
                     f"gain {_num(row['gain'])}")
    return f"{len(summary['informative'])} of {len(MEASURES)} measures informative: " + "; ".join(parts)


def headline(summary: Mapping[str, Any]) -> str:
    """Short form for a table cell: 'passed, r min 0.91 (2 measures)' / 'not judged: ...'."""
    judgement = summary.get("judgement")
    if judgement is None:
        return "n/a"
    if judgement == "not judged":
        return f"not judged: {summary.get('reason')}"
    gains = "" if summary.get("gain_min") is None else \
        f", gain {summary['gain_min']:.2f}..{summary['gain_max']:.2f}"
    return (f"{judgement}, r min {summary['r_min']:.2f} over {len(summary['informative'])} measure"
            f"{'s' if len(summary['informative']) != 1 else ''}{gains}")


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{float(value):.2f}"
