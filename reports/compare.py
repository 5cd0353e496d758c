"""`deid compare`: one table across evaluated runs (tools, baselines), like the study's Table 3.

Each input is an `deid evaluate` output folder (or its `reports/` sub-folder, or a summary.json).
Columns: name, SW-OR mean +- sd, re-id rate, AU PCC mean +- sd, AU RMSE mean +- sd, pose MAE; the
geometry PCC stands in where no AU was computed, and says so.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from pipeline.atomic import write_text
from pipeline.errors import DeidError

COLUMNS = ["name", "SW-OR", "re-id rate", "no-face share", "parrot re-id rate", "AU PCC", "AU RMSE", "AU source",
           "geometry PCC", "pose MAE (deg)", "frames"]


def find_summary(path: Path) -> Path:
    path = Path(path)
    for candidate in (path, path / "summary.json", path / "reports" / "summary.json"):
        if candidate.is_file():
            return candidate
    raise DeidError(f"{path}: no summary.json here or in reports/; give folders written by `deid evaluate`")


def _pm(mean: Any, sd: Any, digits: int = 3) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if sd is not None else f"{mean:.{digits}f}"


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def row_for(summary: dict, name: str) -> dict:
    ident = summary.get("identity", {})
    sw_or = ident.get("comparisons", {}).get("SW-OR", {})
    reid = ident.get("reidentification", {})
    au = summary.get("au", {})
    geo = summary.get("geometry", {})
    parrot = summary.get("parrot", {}) or {}
    return {
        "name": name,
        "SW-OR": _pm(sw_or.get("mean"), sw_or.get("sd")),
        "re-id rate": _pct(reid.get("reid_rate")),
        "no-face share": _pct(reid.get("no_face_share")),
        "parrot re-id rate": _pct(parrot.get("reid_rate")) if parrot.get("applied") else "-",
        "AU PCC": _pm(au.get("pcc_mean"), au.get("pcc_sd")) if au.get("computed") else "n/a",
        "AU RMSE": _pm(au.get("rmse_mean"), au.get("rmse_sd")) if au.get("computed") else "n/a",
        "AU source": au.get("source", "none") if au.get("computed") else f"not computed ({au.get('reason', '?')})",
        "geometry PCC": _pm(geo.get("geometry_pcc_mean"), geo.get("geometry_pcc_sd")),
        "pose MAE (deg)": "n/a" if geo.get("pose_mae") is None else f"{geo['pose_mae']:.2f}",
        "frames": reid.get("frames_sampled", "n/a"),
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
    rows = []
    for i, run in enumerate(run_dirs):
        path = find_summary(Path(run))
        try:
            summary = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DeidError(f"{path}: not a readable summary.json ({exc}); re-run deid evaluate") from None
        name = names[i] if names else (summary.get("name") or _default_name(Path(run)))
        rows.append(row_for(summary, name))
    table = pd.DataFrame(rows, columns=COLUMNS)
    out_dir = Path(out_dir)
    write_text(out_dir / f"{stem}.csv", table.to_csv(index=False))
    write_text(out_dir / f"{stem}.md", to_markdown(table))
    write_text(out_dir / f"{stem}.html", to_html(table, extra_html))
    return table


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


def to_html(table: pd.DataFrame, extra_html: str = "") -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>deid compare</title>"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #bbb;"
            "padding:3px 8px}th{background:#f0f0f0}</style></head><body><h1>De-identification and expression "
            f"preservation across runs</h1>{html_table(table)}"
            "<p>SW-OR: face_recognition distance of swapped frames to the original person (higher = identity "
            "hidden; 0.6 = same-person threshold). Re-id rate: share of sampled frames within the threshold.</p>"
            f"{extra_html}</body></html>\n")
