"""Where a pass spends its time: seconds per named phase (decode, search, hide, encode, check ...).

The phases of one pass run interleaved, frame batch by frame batch, so each is timed where it runs and
the totals are summed; `as_json` is what a summary and bench/protect.py report.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


class PhaseClock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def timed(self, name: str, items: Iterable[T]) -> Iterator[T]:
        """`items`, with the time spent producing each one (a decoder's) counted under `name`."""
        iterator = iter(items)
        while True:
            with self.phase(name):
                try:
                    item = next(iterator)
                except StopIteration:
                    return
            yield item

    def as_json(self) -> dict[str, float]:
        return {name: round(seconds, 2) for name, seconds in self.seconds.items()}
