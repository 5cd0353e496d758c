"""`deid compare`: one table across evaluated runs (tools, baselines, pairs), like the study.

Each input is a `deid evaluate` output folder (or its `reports/` sub-folder, or a summary.json). Outputs:
<stem>.csv and <stem>.md (one row per run: the verdict, the four comparisons, re-identification and donor
match by dlib's recogniser and again by SFace, the one no training uses (a dlib cell ends "(training
recogniser)" when the swap model was trained against dlib), AU scores and their source, the calibrated
landmark expression measure's headline, geometry PCC, pose, the 3DMM metric's expression error, coefficient
PCC and pose error (reports/metrics/expression_3dmm.py), then one column per other metric plugin), and a
self-contained <stem>.html with the same table, the study's figure (per run, box plots of OR-OR, OR-SW,
SW-OR and SW-SW side by side, read from each run's identity.csv) and a per-AU PCC/RMSE table across runs
when AU was computed.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from deid.core.atomic import write_text
from deid.core.errors import DeidError
from deid.models.face_distance import SAME_PERSON_DISTANCE
from deid.reports import html as report_html
from deid.reports.expression import headline
from deid.reports.identity import COMPARISONS
from deid.reports.summary import EvaluationSummary

COLUMNS = ["name", "verdict", "OR-OR", "OR-SW", "SW-OR", "SW-SW", "re-id rate", "donor match", "SFace SW-OR",
           "SFace SW-SW", "re-id rate (SFace)", "donor match (SFace)", "no-face share",
           "parrot re-id rate", "AU PCC", "AU RMSE", "AU source", "landmark expression", "geometry PCC",
           "pose MAE (deg)", "3DMM expression error", "3DMM PCC", "3DMM pose error (deg)", "frames", "threshold"]
THREE_DMM = "3dmm"  # reports/metrics/expression_3dmm.py: its three columns above replace the generic one


def find_summary(path: Path) -> Path:
    path = Path(path)
    for candidate in (path, path / "summary.json", path / "reports" / "summary.json"):
        if candidate.is_file():
            return candidate
    raise DeidError(f"{path}: no summary.json here or in reports/; give folders written by `deid evaluate`")


def _pm(stats: dict[str, Any] | None, mean_key: str = "mean", sd_key: str = "sd", digits: int = 3) -> str:
    stats = stats or {}
    mean, sd = stats.get(mean_key), stats.get(sd_key)
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if sd is not None else f"{mean:.{digits}f}"


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _second_cells(summary: EvaluationSummary) -> dict[str, str]:
    """The SFace columns: its cosine similarities, re-id rate and donor match; why not where it did not run."""
    second = summary.second
    if not second.get("available"):
        missing = "not measured" if not second else f"unavailable ({second.get('reason', '?')})"
        return {"SFace SW-OR": "n/a", "SFace SW-SW": "n/a", "re-id rate (SFace)": missing,
                "donor match (SFace)": missing}
    comparisons = second.get("comparisons", {})
    return {"SFace SW-OR": _pm(comparisons.get("SW-OR")), "SFace SW-SW": _pm(comparisons.get("SW-SW")),
            "re-id rate (SFace)": _pct(second.get("reidentification", {}).get("reid_rate")),
            "donor match (SFace)": _pct(second.get("donor", {}).get("share"))}


def _3dmm_cells(summary: EvaluationSummary) -> dict[str, str]:
    """The 3DMM metric's headline numbers; n/a where it did not run (an older deid, --metric) or found no face."""
    m = summary.metrics.get(THREE_DMM) or {}
    computed = bool(m.get("computed"))

    def number(key: str, digits: int) -> str:
        value = m.get(key) if computed else None
        return "n/a" if value is None else f"{value:.{digits}f}"

    return {"3DMM expression error": number("mean", 3), "3DMM PCC": number("pcc_mean", 3),
            "3DMM pose error (deg)": number("pose_error_mean", 2)}


def row_for(summary: EvaluationSummary, name: str) -> dict:
    reid, au, geo, parrot = summary.reidentification, summary.au, summary.geometry, summary.parrot
    trained = " (training recogniser)" if summary.identity.get("trained_against") else ""
    return {
        "name": name,
        "verdict": f"{summary.verdict.level.upper()}: {summary.verdict.text}",
        **{c: _pm(summary.comparison(c)) for c in COMPARISONS},
        "re-id rate": _pct(reid.get("reid_rate")) + trained,
        "donor match": _pct(summary.identity.get("donor", {}).get("share")) + trained,
        **_second_cells(summary),
        "no-face share": _pct(reid.get("no_face_share")),
        "parrot re-id rate": _pct(parrot.get("reid_rate")) if parrot.get("applied") else "-",
        "AU PCC": _pm(au, "pcc_mean", "pcc_sd") if au.get("computed") else "n/a",
        "AU RMSE": _pm(au, "rmse_mean", "rmse_sd") if au.get("computed") else "n/a",
        "AU source": au.get("source", "none") if au.get("computed") else f"not computed ({au.get('reason', '?')})",
        "landmark expression": headline(summary.expression) if summary.expression else "n/a",
        "geometry PCC": _pm(geo, "geometry_pcc_mean", "geometry_pcc_sd"),
        "pose MAE (deg)": "n/a" if geo.get("pose_mae") is None else f"{geo['pose_mae']:.2f}",
        **_3dmm_cells(summary),
        "frames": reid.get("frames_sampled", "n/a"),
        "threshold": f"{summary.threshold:g}",  # each run's own evaluate.threshold: its re-id and donor cells use it
        **{name: _pm(m) if m.get("computed") else "n/a" for name, m in summary.metrics.items()
           if name != THREE_DMM},
    }


def compare(run_dirs: Sequence[Path], out_dir: Path, names: Sequence[str] | None = None, stem: str = "compare",
            extra_html: str = "", allow_empty: bool = False) -> pd.DataFrame:
    """Write <stem>.csv, <stem>.md and <stem>.html into out_dir; return the table.

    `extra_html` is appended to the HTML page (the batch's status table); `allow_empty` writes a table
    without rows instead of failing (a batch in which no pair got as far as evaluation).
    """
    if not run_dirs and not allow_empty:
        raise DeidError("deid compare needs at least one evaluate output folder")
    if names is not None and len(names) != len(run_dirs):
        raise DeidError(f"{len(names)} names for {len(run_dirs)} folders; give one name per folder or none")
    rows, identity, au_rows, thresholds = [], {}, [], {}
    for i, run in enumerate(run_dirs):
        path = find_summary(Path(run))
        summary = EvaluationSummary.read(path)
        name = names[i] if names else (summary.name or _default_name(Path(run)))
        rows.append(row_for(summary, name))
        identity[name] = _read_csv(path.parent / "identity.csv")
        thresholds[name] = summary.threshold
        if summary.au.get("computed"):
            table = _read_csv(path.parent / "au_preservation.csv")
            if table is not None:
                au_rows += [{"name": name, "au": r["au"], "pcc": r.get("pcc"), "rmse": r.get("rmse")}
                            for r in table.to_dict("records")]
    metric_columns = list(dict.fromkeys(k for row in rows for k in row if k not in COLUMNS))  # reports/metrics/
    table = pd.DataFrame(rows, columns=COLUMNS + metric_columns)
    out_dir = Path(out_dir)
    write_text(out_dir / f"{stem}.csv", table.to_csv(index=False))
    write_text(out_dir / f"{stem}.md", to_markdown(table))
    write_text(out_dir / f"{stem}.html", to_html(table, extra_html, _figure(identity, thresholds), _au_html(au_rows)))
    return table


def _read_csv(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None


def _figure(identity: dict[str, pd.DataFrame | None], thresholds: dict[str, float]) -> str:
    """The study's figure: per run, the four comparisons as box plots side by side, each run's threshold."""
    runs = {name: t for name, t in identity.items() if t is not None and set(COMPARISONS) <= set(t.columns)}
    if not runs:
        return ""
    from deid.reports.plots import comparisons_by_run

    return report_html.image_html(comparisons_by_run(runs, {n: thresholds[n] for n in runs}),
                                  "identity distances per run")


def _au_html(rows: list[dict]) -> str:
    if not rows:
        return "<p>AU: not computed for any run.</p>"
    table = pd.DataFrame(rows)
    wide = table.pivot_table(index="au", columns="name", values=["pcc", "rmse"], aggfunc="first")
    wide.columns = [f"{name} {metric.upper()}" for metric, name in wide.columns]
    wide = wide.reset_index()
    cells = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
             for r in wide.to_dict("records")]
    return "<h2>Per-AU PCC and RMSE</h2>" + report_html.table_html(cells, list(wide.columns))


def _default_name(run: Path) -> str:
    run = run.parent if run.name in ("reports", "summary.json") else run
    return run.parent.name if run.name == "reports" else run.name


def to_markdown(table: pd.DataFrame) -> str:
    cells = [[str(v).replace("|", "\\|") for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def html_table(table: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in table.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(table: pd.DataFrame, extra_html: str = "", figure: str = "", au: str = "") -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>deid compare</title>"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #bbb;"
            "padding:3px 8px}th{background:#f0f0f0}img{max-width:100%}</style></head><body><h1>De-identification "
            f"and expression preservation across runs</h1>{html_table(table)}"
            "<p>Distances: face_recognition (dlib ResNet, 128-d); below the run's threshold (column threshold, "
            f"evaluate.threshold, default {SAME_PERSON_DISTANCE}) = same person. OR-OR: original vs "
            "the original's photo; OR-SW: original vs the donor's; SW-OR: swapped vs the original's (higher = "
            "identity hidden); SW-SW: swapped vs the donor's (lower = looks like the donor). Re-id rate: share "
            "of sampled frames within the threshold of the original person. SFace columns: the same faces by "
            "SFace (OpenCV Zoo, never used in training), cosine similarity, at or above 0.363 = same person "
            "(higher = more alike: a hidden identity has a low SFace SW-OR, a convincing swap a high SFace "
            "SW-SW). A dlib cell marked \"training recogniser\": the swap model was trained against dlib, so "
            "the verdict rests on SFace. AU source: where AU PCC and RMSE come from (compare AU numbers only "
            "between runs of the same source: blendshape activations are 0..1, OpenFace intensities 0..5). 3DMM "
            "columns (3DDFA_V2, never used in training): expression error, the mean L2 distance of the 10 "
            "expression coefficients, swapped vs original, same frame (lower = expression kept); PCC, the mean "
            "Pearson r of each coefficient over frames; pose error, the mean absolute yaw / pitch / roll "
            "difference.</p>"
            f"{figure}{au}{extra_html}</body></html>\n")
