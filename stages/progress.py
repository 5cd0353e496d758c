"""Progress for long loops: a tqdm bar on a terminal, a log line every few seconds otherwise.

A batch log or a CI log cannot show carriage-return bars; it gets `label: done/total (rate/s, ETA)`.
"""
from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from typing import Iterator

from tqdm import tqdm

log = logging.getLogger("deid.progress")
LOG_EVERY_S = 5.0


class _LogProgress:
    def __init__(self, total: int | None, label: str, unit: str) -> None:
        self.total, self.label, self.unit = total, label, unit
        self.done = 0
        self._start = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= LOG_EVERY_S:
            self._last = now
            self._log(now)

    def _log(self, now: float) -> None:
        rate = self.done / max(now - self._start, 1e-9)
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info("%s: %d/%d %ss (%.1f/s, ETA %.0f s)", self.label, self.done, self.total, self.unit, rate, eta)
        else:
            log.info("%s: %d %ss (%.1f/s)", self.label, self.done, self.unit, rate)

    def close(self) -> None:
        if self.done:  # the last line says where the loop ended, even when it took under LOG_EVERY_S
            self._log(time.monotonic())


@contextmanager
def progress_bar(total: int | None, label: str, unit: str, enabled: bool) -> Iterator:
    if enabled and sys.stderr.isatty():
        bar = tqdm(total=total, desc=label, unit=unit, dynamic_ncols=True)
    else:
        bar = _LogProgress(total, label, unit) if enabled else _LogProgress(None, label, unit)
        if not enabled:
            bar.update = lambda n=1: None  # quiet: no progress lines at all
    try:
        yield bar
    finally:
        bar.close()
