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
    def __init__(self, total: int | None, label: str, unit: str, initial: int = 0, enabled: bool = True) -> None:
        self.total, self.label, self.unit = total, label, unit
        self.done = self.initial = initial
        self.enabled = enabled
        self.postfix = ""
        self._start = self._last = time.monotonic()

    @property
    def n(self) -> int:
        return self.done

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last >= LOG_EVERY_S:
            self._last = now
            self._log(now)

    def _log(self, now: float) -> None:
        rate = (self.done - self.initial) / max(now - self._start, 1e-9)
        extra = f"; {self.postfix}" if self.postfix else ""
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info("%s: %d/%d %ss (%.1f/s, ETA %.0f s)%s", self.label, self.done, self.total, self.unit, rate, eta,
                     extra)
        else:
            log.info("%s: %d %ss (%.1f/s)%s", self.label, self.done, self.unit, rate, extra)

    def close(self) -> None:
        if self.enabled and self.done > self.initial:  # the last line says where the loop ended
            self._log(time.monotonic())


def make_progress(total: int | None, label: str, unit: str, enabled: bool, initial: int = 0):
    """A bar with tqdm's `update`, `n`, `set_postfix_str` and `close`: tqdm on a terminal, log lines otherwise,
    nothing when disabled (-q)."""
    if enabled and sys.stderr.isatty():
        return tqdm(total=total, initial=initial, desc=label, unit=unit, dynamic_ncols=True)
    return _LogProgress(total, label, unit, initial, enabled)


@contextmanager
def progress_bar(total: int | None, label: str, unit: str, enabled: bool, initial: int = 0) -> Iterator:
    bar = make_progress(total, label, unit, enabled, initial)
    try:
        yield bar
    finally:
        bar.close()
