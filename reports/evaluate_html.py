"""report.html of one evaluation: the verdict first, then the result itself (frames side by side, identity
over time), then the numbers behind each of the verdict's three questions."""
from __future__ import annotations

import html
import math
import sys

import pandas as pd

from deid.core.errors import DeidError
from deid.reports import html as h
from deid.reports.identity import COMPARISONS
from deid.reports.summary import EvaluationSummary


def render_html(summary: EvaluationSummary, table: pd.DataFrame, geo_table: pd.DataFrame, au_table: pd.DataFrame,
                images: dict[str, bytes], expr_table: pd.DataFrame | None = None) -> str:
    sections = [("Verdict, question by question", _axes(summary)),
                ("The result", _result(summary, images)),
                ("Identity", _identity(summary, images)),
                ("Parrot attack (naive obfuscation)", _parrot(summary))]
    if summary.gallery:
        sections.append(_gallery(summary))
    sections += [(f"Expression: Action Units ({summary.au.get('source') or 'no source named'})",
                  _au(summary, au_table, images)),
                 ("Expression: calibrated landmark measure", _expression(summary, expr_table)),
                 ("Expression and pose: landmark geometry", _geometry(summary, geo_table, images))]
    if summary.metrics:
        sections.append(("More metrics", _metrics(summary)))
    sections.append(("Inputs and provenance", _inputs(summary)))
    return h.render_report(f"De-identification report: {summary.name}", (summary.verdict.text, summary.verdict.level),
                           sections)


def _axes(summary: EvaluationSummary) -> str:
    rows = [{"question": a.name, "answer": {True: "yes", False: "NO", None: "not judged"}[a.passed],
             "finding": a.finding} for a in summary.verdict.axes]
    return (h.table_html(rows, ["question", "answer", "finding"])
            + "<p class=\"note\">Green only when all three hold; red when the original person is re-identified.</p>")


def _result(summary: EvaluationSummary, images: dict[str, bytes]) -> str:
    inner = ""
    if "frames.png" in images:
        inner += ("<p>Reference photos, then sampled frames (original above, swapped below), the frames "
                  "closest to the original person by SW-OR first.</p>" + h.image_html(images["frames.png"], "frames"))
    return inner + h.image_html(images["identity_over_time.png"], "identity distance over time")


def _identity(summary: EvaluationSummary, images: dict[str, bytes]) -> str:
    ident, reid = summary.identity, summary.reidentification
    donor = ident.get("donor", {})
    stats = [{"comparison": c, **summary.comparison(c)} for c in COMPARISONS]
    return (f"<p>Recogniser: {h.fmt(summary.recogniser)}; distance &lt; {summary.threshold:g} = same person. "
            f"{reid['frames_sampled']} frames sampled (seed {summary.seed}) of {summary.frames_total}; "
            f"re-identified: {_pct(reid['reid_rate'])} of sampled frames ({_pct(reid['reid_rate_detected'])} of "
            f"frames with a face); swapped face matches the donor in {_pct(donor.get('share'))} of frames where the "
            f"original shows a face; no face found in {_pct(ident['no_face_share_swapped'])} of swapped and "
            f"{_pct(ident['no_face_share_original'])} of original frames.</p>"
            + _recognisers(summary)
            + h.table_html(stats, ["comparison", "n", "mean", "sd", "median", "q1", "q3"])
            + "<p class=\"note\">OR-OR: original vs original's photo (should be low); OR-SW: original vs donor "
              "(high); SW-OR: swapped vs original's photo (high = identity hidden); SW-SW: swapped vs donor "
              "(low = looks like the donor).</p>"
            + h.image_html(images["identity_boxplot.png"], "identity distances"))


def _recognisers(summary: EvaluationSummary) -> str:
    """Both recognisers side by side: which one the verdict rests on, and their re-id and donor numbers."""
    ident, second = summary.identity, summary.second
    trained = ident.get("trained_against")
    first_role = ("the training recogniser: the swap model was trained against it, its numbers are shown, not "
                  "judged" if trained else "judges")
    rows = [{"recogniser": summary.recogniser, "role": first_role, "same person": f"distance < {summary.threshold:g}",
             "SW-OR mean": summary.comparison("SW-OR").get("mean"),
             "SW-SW mean": summary.comparison("SW-SW").get("mean"),
             "re-id rate": _pct(summary.reidentification.get("reid_rate")),
             "donor match": _pct(ident.get("donor", {}).get("share"))}]
    if second.get("available"):
        comparisons = second.get("comparisons", {})
        rows.append({"recogniser": second.get("recogniser"), "role": "judges (never used in training)",
                     "same person": f"cosine similarity >= {second['threshold']:g}",
                     "SW-OR mean": comparisons.get("SW-OR", {}).get("mean"),
                     "SW-SW mean": comparisons.get("SW-SW", {}).get("mean"),
                     "re-id rate": _pct(second.get("reidentification", {}).get("reid_rate")),
                     "donor match": _pct(second.get("donor", {}).get("share"))})
        note = ("SFace scores cosine similarity: higher = more alike, so a hidden identity has a low SW-OR and a "
                "convincing swap a high SW-SW (the opposite of dlib's distances). Per-frame values: identity.csv, "
                "columns sface_*.")
    else:
        reason = second.get("reason") or "not measured (a summary from an older deid)"
        note = (f"The second recogniser is unavailable: {h.fmt(reason)}. The identity findings rest on one "
                "recogniser only.")
    columns = ["recogniser", "role", "same person", "SW-OR mean", "SW-SW mean", "re-id rate", "donor match"]
    return ("<h3>Two recognisers</h3>" + h.table_html(rows, columns) + f"<p class=\"note\">{note} The verdict "
            "calls the swap the donor only when every judging recogniser reaches the bar, and hidden only when "
            "none re-identifies the original person.</p>")


def _parrot(summary: EvaluationSummary) -> str:
    parrot, reid = summary.parrot, summary.reidentification
    if not parrot.get("applied"):
        return f"<p>Not run: {h.fmt(parrot.get('reason'))}.</p>"
    return (f"<p>The swapped video looks like a {h.fmt(parrot['method'])} of the original (strength "
            f"{parrot['strength']:g}, {h.fmt(parrot['strength_meaning'])}). Reference degraded the same way: "
            f"{parrot['frames_reidentified']} of {reid['frames_sampled']} frames re-identified "
            f"({_pct(parrot['reid_rate'])}) against {reid['frames_reidentified']} by the naive score; SW-OR mean "
            f"{h.fmt(parrot['SW-OR']['mean'])} vs naive {h.fmt(summary.comparison('SW-OR').get('mean'))}.</p>"
            f"<p>{h.fmt(parrot['explanation'])}</p>")


def _gallery(summary: EvaluationSummary) -> tuple[str, str]:
    g = summary.gallery or {}
    rows = [{"video": k, **{kk: g[k].get(kk) for kk in ("faces", "rank1", "rank5")}} for k in ("swapped", "original")]
    return (f"Identification among {g['people']} gallery people",
            h.table_html(rows, ["video", "faces", "rank1", "rank5"])
            + f"<p>True identity: {h.fmt(g['swapped']['true_identity'])}.</p>")


def _au(summary: EvaluationSummary, au_table: pd.DataFrame, images: dict[str, bytes]) -> str:
    au = summary.au
    source = f"<p>AU source: {_au_source(au.get('source'))}.</p>"
    if not au.get("computed"):
        return (f"{source}<p>AU: not computed: {h.fmt(au.get('reason'))}. The calibrated landmark measure below "
                "carries the expression score.</p>")
    undefined = ", ".join(au["pcc_undefined"]) or "none"
    return (f"{source}<p>{au['alignment']['frames_paired']} frames paired. PCC "
            f"{h.fmt(au['pcc_mean'])} ± {h.fmt(au['pcc_sd'])} over {au['pcc_n']} AUs (undefined for constant AUs: "
            f"{h.fmt(undefined)}); RMSE {h.fmt(au['rmse_mean'])} ± {h.fmt(au['rmse_sd'])}.</p>"
            + h.table_html(au_table.to_dict("records"), ["au", "pcc", "rmse", "frames"])
            + h.image_html(images["au_bars.png"], "AU PCC and RMSE")
            + h.image_html(images["au_timeseries.png"], "AU time series"))


def _au_source(name: str | None) -> str:
    """`<b>blendshapes</b>: Action Unit intensities from MediaPipe's 52 face blendshapes, ...`: the source's
    name and what it is, from the first line of its plugin module's docstring (which starts `name: `); the
    name alone for a summary naming a source this deid does not have."""
    if not name:
        return "not named (a summary from an older deid)"
    try:
        from deid.reports.au_source import AU_SOURCES

        module = sys.modules.get(AU_SOURCES.get(name).__module__)
    except (DeidError, ImportError):  # an unknown or unloadable source must not cost the report: its name is enough
        module = None
    first = ((module.__doc__ if module else None) or "").strip().splitlines()[:1]
    what = first[0][len(name) + 1:].strip().rstrip(".") if first and first[0].startswith(f"{name}:") else ""
    return f"<b>{h.fmt(name)}</b>" + (f": {h.fmt(what)}" if what else "")


def _expression(summary: EvaluationSummary, expr_table: pd.DataFrame | None) -> str:
    expr = summary.expression
    if not expr:
        return "<p>Not computed (a summary from an older deid).</p>"
    rows = expr_table.to_dict("records") if expr_table is not None else list(expr.get("measures", []))
    used = "" if summary.au.get("computed") else " It is the verdict's expression input (no AU model ran)."
    return (f"<p>Judgement: <b>{h.fmt(expr.get('judgement'))}</b>: {h.fmt(expr.get('finding'))}. "
            f"{expr.get('frames', 0)} distinct frames with a face in both videos"
            + (f" ({summary.frames_repeated} repeated frames of the original left out)" if summary.frames_repeated
               else "") + f".{used}</p>"
            + h.table_html(rows, ["measure", "informative", "sd_original", "noise_sd", "snr", "pose_r2", "r",
                                  "null_low", "null_high", "gain", "passed", "frames"])
            + "<p class=\"note\">Scale-free ratios from the 68 landmarks (mouth_open: inner-mouth aspect ratio; "
              "eye_open: eye aspect ratio; brow_raise: brow height over nose-bridge length; mouth_width: lip-corner "
              "distance over inter-ocular distance), each with the part explained by the original's head pose "
              "removed from both videos (pose_r2: the share it explained). A measure is informative when the "
              f"original's SD is at least {h.fmt(expr.get('bars', {}).get('snr'))}x its noise (noise_sd: "
              f"{h.fmt(expr.get('noise_source'))}). r: Pearson correlation of original and swapped; null_low.."
              "null_high: the 95 % band of r when the swapped series is circularly shifted (chance); gain: slope of "
              "swapped on original (1 = the movement's full amplitude). Passed: every informative measure has "
              "r above 0.5 and above its band, with gain in [0.5, 2].</p>")


def _geometry(summary: EvaluationSummary, geo_table: pd.DataFrame, images: dict[str, bytes]) -> str:
    geo = summary.geometry
    return (f"<p>Head pose mean absolute error {h.fmt(geo['pose_mae'], 2)}° (yaw {h.fmt(geo['pose_mae_yaw'], 2)}, "
            f"pitch {h.fmt(geo['pose_mae_pitch'], 2)}, roll {h.fmt(geo['pose_mae_roll'], 2)}); averaged expression "
            f"geometry PCC {h.fmt(geo['geometry_pcc_mean'])} ± {h.fmt(geo['geometry_pcc_sd'])} over "
            f"{geo['frames_paired']} frames with a face in both (uncalibrated, not used by the verdict).</p>"
            + h.table_html(geo_table.to_dict("records"), ["measure", "pcc", "rmse", "mae", "frames"])
            + h.image_html(images["geometry_bars.png"], "geometry PCC and RMSE")
            + (h.image_html(images["geometry_timeseries.png"], "geometry time series")
               if "geometry_timeseries.png" in images else ""))


def _inputs(summary: EvaluationSummary) -> str:
    notes = "".join(f"<li>{h.fmt(n)}</li>" for n in summary.notes)
    damaged = "".join(f"<li>{h.fmt(path)}: damaged input ({h.fmt(what)})</li>" for path, what in
                      summary.damaged_input.items())
    return (f"<p>Original: {h.fmt(summary.original)}<br>Swapped: {h.fmt(summary.swapped)}<br>References: "
            f"{h.fmt(summary.ref_original)}, {h.fmt(summary.ref_donor)}<br>deid {h.fmt(summary.version)}"
            f"{', commit ' + h.fmt(summary.commit) if summary.commit else ''}; evaluated on {h.fmt(summary.device)}.</p>"
            + (f"<ul>{damaged}{notes}</ul>" if notes or damaged else ""))


# The summary keys every metric has (reports/metrics.summarise) and those the table shows in columns already.
_METRIC_COLUMNS = ("n", "mean", "median", "min", "max")
_METRIC_HIDDEN = {"computed", "reason", "description", *_METRIC_COLUMNS}


def _metrics(summary: EvaluationSummary) -> str:
    """One row per metric plugin: n/mean/median/min/max, then whatever else its summary carries (pose error,
    PCC mean, model, ...) as one `details` cell, and each dict it carries (per-coefficient PCC) as a line."""
    rows, lines = [], []
    for name, m in summary.metrics.items():
        row = ({k: m.get(k) for k in _METRIC_COLUMNS} if m.get("computed")
               else {"n": m.get("n", 0), "mean": f"not computed: {m.get('reason', '')}"})
        rows.append({"metric": name, "measures": m.get("description", ""), **row, "details": _metric_extras(m)})
        lines += [_metric_dict_line(name, key, value, m) for key, value in m.items()
                  if key not in _METRIC_HIDDEN and isinstance(value, dict) and value]
    lines_html = "".join(f"<p>{line}</p>" for line in lines)
    return (h.table_html(rows, ["metric", "measures", *_METRIC_COLUMNS, "details"]) + lines_html
            + "<p class=\"note\">Per-frame values: metrics.csv. These do not enter the verdict.</p>")


def _metric_extras(m: dict) -> str:
    """A metric's extra scalar summary keys as `key value; ...` (dicts get their own line, lists none)."""
    return "; ".join(f"{key.replace('_', ' ')} {_plain(value)}" for key, value in m.items()
                     if key not in _METRIC_HIDDEN and (value is None or isinstance(value, (str, int, float))))


def _metric_dict_line(name: str, key: str, values: dict, m: dict) -> str:
    """e.g. `3dmm pcc (30 frames): exp01 0.970, exp02 n/a, ...` (escaped); the frame count when the metric
    gives one as `<key>_frames`."""
    frames = m.get(f"{key}_frames")
    over = f" ({frames} frames)" if isinstance(frames, int) else ""
    cells = ", ".join(f"{k} {_plain(v)}" for k, v in values.items())
    return html.escape(f"{name} {key.replace('_', ' ')}{over}: {cells}")


def _plain(value: object) -> str:
    """Unescaped text of a summary value (table_html escapes its cells): floats to 3 decimals, None n/a."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"
