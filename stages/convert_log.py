"""What happened to every frame of a convert: the rows of `<name>.frames.csv`, the stage's summary, and
where the swap is, which the leak check must not count as a leak."""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from deid.core.atomic import write_text
from deid.stages.convert_plan import bounds
from deid.stages.convert_steps import FrameItem
from deid.stages.leak_check import LeakReport

log = logging.getLogger("deid.convert")


class FrameLog:
    def __init__(self) -> None:
        self.rows: list[list[Any]] = []
        self.swapped_at: dict[int, tuple[float, float, float, float]] = {}  # frame -> box of a swap left in view
        self.distances: dict[int, float] = {}  # frame -> its identity distance from the original

    def add(self, item: FrameItem) -> None:
        if item.swapped and not item.reidentified:
            self.swapped_at[item.index] = bounds(item.plan.target)
            self.distances[item.index] = item.distance
        unprotected = len(item.plan.protect) + len(item.plan.guard) - item.protected
        self.rows.append([item.index, item.status, int(item.swapped), item.protected, unprotected, item.reason,
                          "" if item.distance is None else round(item.distance, 4)])

    def write_csv(self, path: Path, report: LeakReport) -> None:
        leaks, unconfirmed = report.by_frame(), report.unconfirmed_by_frame()
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["frame", "status", "swapped", "protected", "unprotected", "reason", "swap_distance",
                         "checked", "leaks"])
        for row in self.rows:
            found = leaks.get(row[0], [])
            writer.writerow([row[0], "LEAK" if found else row[1], *row[2:], int(row[0] % report.every == 0),
                             "; ".join([leak.describe() for leak in found]
                                       + [f"unconfirmed: {u.describe()}" for u in unconfirmed.get(row[0], [])])])
        write_text(path, buffer.getvalue())

    def summary(self, seconds: float, out_path: Path, report: LeakReport, frames_csv: Path) -> dict[str, Any]:
        rows = self.rows
        counts: dict[str, int] = {}
        for row in rows:
            counts[row[1]] = counts.get(row[1], 0) + 1
        unprotected = sum(row[4] for row in rows)
        summary = {"frames": len(rows), "status": counts, "faces_protected": sum(row[3] for row in rows),
                   "faces_unprotected": unprotected, "leak_check": report.as_json(), "seconds": round(seconds, 2),
                   "frames_per_second": round(len(rows) / seconds, 2) if seconds else None, "output": str(out_path)}
        log.info("%s: %s; leak check (%s, %d frames): %d leaks", out_path.name,
                 ", ".join(f"{v} {k}" for k, v in sorted(counts.items())), report.checker, report.frames_checked,
                 len(report.leaks))
        if unprotected:
            log.warning("WARNING: %d face(s) in %d frame(s) were left UNPROTECTED (fallback: none); see %s",
                        unprotected, sum(1 for r in rows if r[4]), frames_csv)
        return summary
