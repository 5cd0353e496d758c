"""Action Unit tables from py-feat or OpenFace, aligned on frame index, and their preservation scores.

Every table is normalised to one row per 0-based frame index (the index the rest of the pipeline uses)
and one column per AU named `AU01`..`AU45` (intensities). Frames where the tool failed are NaN rows,
so they drop out of the comparison instead of counting as "no expression".

- OpenFace 2.x FeatureExtraction: `frame` is 1-based, column names carry a leading space, `AUxx_r`
  are intensities (0..5), `success` = 0 or `confidence` below 0.5 marks a failed frame. With
  several faces (FaceLandmarkVidMulti, `face_id`), the most confident face per frame is kept.
- py-feat (Fex CSV): `frame` is 0-based (absent in old outputs: row order), `AU01`..`AU43`; with
  several faces per frame the largest FaceRect is kept; rows without a face carry NaN AUs.

PCC is undefined when either side is constant (or fewer than 2 paired frames): it is reported as
None, left out of the mean, and counted.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from deid.core.errors import DeidError

AuFormat = Literal["openface", "pyfeat-csv"]
_OPENFACE_AU = re.compile(r"^AU(\d{2})_r$")
_PYFEAT_AU = re.compile(r"^AU(\d{2})$")
OPENFACE_MIN_CONFIDENCE = 0.5


def read_au_table(path: Path, fmt: AuFormat) -> pd.DataFrame:
    """Read an AU CSV into a DataFrame indexed by 0-based `frame`, columns AUxx (float)."""
    path = Path(path)
    if not path.is_file():
        raise DeidError(f"{path}: AU table not found; give the CSV written by {'OpenFace' if fmt == 'openface' else 'py-feat'}")
    try:
        raw = pd.read_csv(path, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DeidError(f"{path}: not a readable CSV ({str(exc).splitlines()[0] if str(exc) else 'parse error'})") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    if fmt == "openface":
        return _openface(raw, path)
    if fmt == "pyfeat-csv":
        return _pyfeat(raw, path)
    raise ValueError(f"unknown AU format {fmt!r}")


def _openface(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    au_cols = sorted(c for c in raw.columns if _OPENFACE_AU.match(c))
    if not au_cols:
        raise DeidError(f"{path}: no AUxx_r columns; is this an OpenFace FeatureExtraction CSV (run it with -aus)?")
    if "frame" not in raw.columns:
        raise DeidError(f"{path}: no `frame` column; is this an OpenFace FeatureExtraction CSV?")
    table = raw[au_cols].apply(pd.to_numeric, errors="coerce").astype(float)
    table.columns = [c[:-2] for c in au_cols]
    failed = np.zeros(len(raw), bool)
    if "success" in raw.columns:
        failed |= pd.to_numeric(raw["success"], errors="coerce").fillna(0).to_numpy() == 0
    confidence = (pd.to_numeric(raw["confidence"], errors="coerce").fillna(0.0).to_numpy()
                  if "confidence" in raw.columns else np.ones(len(raw)))
    failed |= confidence < OPENFACE_MIN_CONFIDENCE
    table.loc[failed, :] = np.nan
    table["frame"] = pd.to_numeric(raw["frame"], errors="coerce").to_numpy() - 1  # OpenFace counts from 1
    table["_rank"] = -confidence
    return _one_row_per_frame(table, path)


def _pyfeat(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    au_cols = sorted(c for c in raw.columns if _PYFEAT_AU.match(c))
    if not au_cols:
        raise DeidError(f"{path}: no AU01..AU43 columns; is this a py-feat detector CSV?")
    table = raw[au_cols].apply(pd.to_numeric, errors="coerce").astype(float)
    if "frame" in raw.columns:
        table["frame"] = pd.to_numeric(raw["frame"], errors="coerce").to_numpy()
    else:
        table["frame"] = np.arange(len(raw))
    if {"FaceRectWidth", "FaceRectHeight"} <= set(raw.columns):
        area = (pd.to_numeric(raw["FaceRectWidth"], errors="coerce") * pd.to_numeric(raw["FaceRectHeight"], errors="coerce"))
        table["_rank"] = -area.fillna(0.0).to_numpy()
    else:
        table["_rank"] = 0.0
    return _one_row_per_frame(table, path)


def _one_row_per_frame(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    table = table[table["frame"].notna()]
    if table.empty:
        raise DeidError(f"{path}: no rows with a frame number")
    table = table.assign(frame=table["frame"].astype(int))
    au = [c for c in table.columns if c not in ("frame", "_rank")]
    # A failed face must not win over a good one in the same frame: rank faces with AUs first.
    table = table.assign(_valid=table[au].notna().any(axis=1))
    table = table.sort_values(["frame", "_valid", "_rank"], ascending=[True, False, True], kind="stable")
    table = table.drop_duplicates("frame", keep="first").set_index("frame")
    return table[au].sort_index()


def align_tables(original: pd.DataFrame, swapped: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Both tables restricted to the frames and AUs they share; plus counts of what was left out."""
    aus = [c for c in original.columns if c in swapped.columns]
    if not aus:
        raise DeidError("the two AU tables share no AU column; were they written by the same tool?")
    frames = original.index.intersection(swapped.index).sort_values()
    a, b = original.loc[frames, aus], swapped.loc[frames, aus]
    paired = a.notna().any(axis=1) & b.notna().any(axis=1)
    info = {
        "frames_original": int(len(original)), "frames_swapped": int(len(swapped)),
        "frames_common": int(len(frames)), "frames_paired": int(paired.sum()),
        "frames_only_original": int(len(original.index.difference(swapped.index))),
        "frames_only_swapped": int(len(swapped.index.difference(original.index))),
        "failed_original": int(a.isna().all(axis=1).sum()), "failed_swapped": int(b.isna().all(axis=1).sum()),
        "aus": aus,
        "aus_only_original": [c for c in original.columns if c not in aus],
        "aus_only_swapped": [c for c in swapped.columns if c not in original.columns],
    }
    return a, b, info


def pcc_rmse(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None, int]:
    """Pearson r and RMSE over the frames where both are finite; r is None when undefined."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(ok.sum())
    if n == 0:
        return None, None, 0
    rmse = float(np.sqrt(np.mean((x - y) ** 2)))
    if n < 2:
        return None, rmse, n
    dx, dy = x - x.mean(), y - y.mean()
    sx, sy = math.sqrt(float(np.sum(dx * dx))), math.sqrt(float(np.sum(dy * dy)))
    scale = max(1.0, float(np.max(np.abs(x))), float(np.max(np.abs(y))))
    if sx <= 1e-12 * scale * math.sqrt(n) or sy <= 1e-12 * scale * math.sqrt(n):
        return None, rmse, n  # a constant series has no correlation
    r = float(np.sum(dx * dy) / (sx * sy))
    return max(-1.0, min(1.0, r)), rmse, n


def preservation_table(original: pd.DataFrame, swapped: pd.DataFrame) -> pd.DataFrame:
    """One row per column shared by the two (aligned) tables: pcc (None = undefined), rmse, frames."""
    rows = []
    for col in original.columns:
        r, rmse, n = pcc_rmse(original[col].to_numpy(), swapped[col].to_numpy())
        rows.append({"au": col, "pcc": r, "rmse": rmse, "frames": n, "pcc_defined": r is not None,
                     "mean_original": _finite_mean(original[col]), "mean_swapped": _finite_mean(swapped[col])})
    return pd.DataFrame(rows, columns=["au", "pcc", "rmse", "frames", "pcc_defined", "mean_original", "mean_swapped"])


def summarize(table: pd.DataFrame) -> dict:
    """Mean and sd (ddof=1) over AUs of PCC (defined ones only, with a count) and RMSE."""
    pcc = [float(v) for v in table["pcc"] if v is not None and np.isfinite(v)]
    rmse = [float(v) for v in table["rmse"] if v is not None and np.isfinite(v)]
    return {
        "pcc_mean": _mean(pcc), "pcc_sd": _sd(pcc), "pcc_n": len(pcc),
        "pcc_undefined": [str(a) for a, v in zip(table["au"], table["pcc"]) if v is None or not np.isfinite(v)],
        "rmse_mean": _mean(rmse), "rmse_sd": _sd(rmse), "rmse_n": len(rmse),
    }


def compare_tables(original: pd.DataFrame, swapped: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """align -> per-AU table -> summary (with the alignment counts)."""
    a, b, info = align_tables(original, swapped)
    table = preservation_table(a, b)
    return table, {**summarize(table), "alignment": info}


def _finite_mean(series: pd.Series) -> float | None:
    values = series.to_numpy(float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else None


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _sd(values: list[float]) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) >= 2 else (0.0 if len(values) == 1 else None)
