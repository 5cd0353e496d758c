"""A single-file report.html a privacy officer can read offline: the verdict first, then the detail.

Plots are embedded as base64 PNG data URIs, the style is inline, and nothing refers to the network.
"""
from __future__ import annotations

import base64
import html
import math
from typing import Any, Mapping, Sequence

_STYLE = """
body{font-family:sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222}
.verdict{font-size:1.35em;font-weight:bold;padding:.6em .8em;border-radius:6px}
.ok{background:#e3f4e1}.warn{background:#fdecc8}.bad{background:#f9d6d5}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.note{color:#555}
"""


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return html.escape(str(value))


def table_html(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in (headers or columns))
    body = "".join("<tr>" + "".join(f"<td>{fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def image_html(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def render_report(title: str, verdict: tuple[str, str], sections: Sequence[tuple[str, str]]) -> str:
    """sections: (heading, inner HTML) in order; the verdict paragraph is the first element of <body>."""
    text, cls = verdict
    parts = [f'<p class="verdict {cls}" id="verdict">{html.escape(text)}</p>', f"<h1>{html.escape(title)}</h1>"]
    for heading, inner in sections:
        parts.append(f"<section><h2>{html.escape(heading)}</h2>{inner}</section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body>{''.join(parts)}</body></html>\n")
