"""`-v`: each stage's settings in the log, as `key=value` lines a person can read and grep.

The runner and the stand-alone commands call `log_settings` with what a stage runs with; at the default
level nothing is shown (DEBUG). Lines stay short (LINE characters) so a batch log keeps to one screen width.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger("deid.settings")

LINE = 200


def _plain(value: Any) -> str:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return ",".join(_plain(v) for v in value) or "[]"
    return repr(value) if isinstance(value, str) and (" " in value or not value) else str(value)


def flatten(settings: Mapping[str, Any] | Any, prefix: str = "") -> dict[str, str]:
    """A dataclass or nested mapping as dotted keys -> text."""
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        settings = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    out: dict[str, str] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping) or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = _plain(value)
    return out


def wrap(head: str, items: list[str], width: int = LINE) -> list[str]:
    """`head item item ...` in lines of at most `width` characters; an item longer than a line (a long path)
    is cut across continuation lines rather than shortened, so nothing is lost from the log."""
    lines, line = [], head
    cont = f"{head.rstrip(':')} (cont.):"
    for item in items:
        if len(line) + 1 + len(item) > width and line != head and line != cont:
            lines.append(line)
            line = cont
        while len(line) + 1 + len(item) > width:
            room = max(width - len(line) - 1, 1)
            lines.append(f"{line} {item[:room]}")
            line, item = cont, item[room:]
        line += " " + item
    lines.append(line)
    return lines


def log_settings(stage: str, settings: Mapping[str, Any] | Any, decision: str | None = None) -> None:
    """DEBUG lines: `<stage>: <decision>` then `<stage> settings: k=v k=v ...`, each at most LINE characters."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    if decision:
        for line in wrap(f"{stage}:", decision.split(" ")):
            log.debug("%s", line)
    for line in wrap(f"{stage} settings:", [f"{k}={v}" for k, v in flatten(settings).items()]):
        log.debug("%s", line)
