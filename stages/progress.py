"""Progress for long loops: a tqdm bar on a terminal, a log line every few seconds otherwise.

A batch log or a CI log cannot show carriage-return bars; it gets `label: done/total (rate/s, ETA)`.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from tqdm import tqdm

log = logging.getLogger("deid.progress")
LOG_EVERY_S = 5.0


class _LogProgress:
    """Log lines every LOG_EVERY_S seconds. A heartbeat thread writes them even while one step of the loop
    (a batch of frames on a loaded machine, a model loading) takes longer than that, so a log is never
    silent for long while a stage works."""

    def __init__(self, total: int | None, label: str, unit: str, initial: int = 0, enabled: bool = True) -> None:
        self.total, self.label, self.unit = total, label, unit
        self.done = self.initial = initial
        self.enabled = enabled
        self.postfix = ""
        self._start = self._last = time.monotonic()
        self._logged: int | None = None  # `done` of the last line written
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heart = None
        if enabled:
            self._heart = threading.Thread(target=self._beat, name=f"progress {label}", daemon=True)
            self._heart.start()

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, LOG_EVERY_S / 2)):
            self._maybe_log()

    def _maybe_log(self) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last >= LOG_EVERY_S:
                self._last = now
                self._log(now)

    @property
    def n(self) -> int:
        return self.done

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.enabled:
            self._maybe_log()

    def _log(self, now: float) -> None:
        self._logged = self.done
        rate = (self.done - self.initial) / max(now - self._start, 1e-9)
        extra = f"; {self.postfix}" if self.postfix else ""
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info("%s: %d/%d %ss (%.1f/s, ETA %.0f s)%s", self.label, self.done, self.total, self.unit, rate, eta,
                     extra)
        else:
            log.info("%s: %d %ss (%.1f/s)%s", self.label, self.done, self.unit, rate, extra)

    def close(self) -> None:
        self._stop.set()
        if self._heart is not None:
            self._heart.join()
        if self.enabled and self.done > self.initial and self._logged != self.done:  # where the loop ended
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
