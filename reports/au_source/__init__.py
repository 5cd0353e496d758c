"""Where an evaluation's Action Unit intensities come from: a registry of AU sources, one module each.

Built in: `pyfeat` (py-feat on the sampled frames), `openface` and `pyfeat-csv` (tables computed
elsewhere, evaluate.au_original / au_swapped), `none`. A source is a class registered with
`@AU_SOURCES.register("name")`, best a subclass of `AuPlugin` for its defaults; `evaluate.au` /
`deid evaluate --au` choices are the registered names. `AuSource` below is what the evaluate stage
holds: it drives the chosen plugin and compares its two tables (reports/au.py), so a plugin only says
where the numbers come from, and the summary's `au` section keeps one shape whatever the source.

A streaming source gets the frames batch by batch as the videos stream past, so memory stays bounded by
the batch, not by the sample. A source that fails at run time is reported, never allowed to lose the
identity results.
"""
from __future__ import annotations

import logging
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Protocol, Sequence

import numpy as np
import pandas as pd

from deid.core.errors import DeidError
from deid.core.plugins import Registry
from deid.reports import au as au_mod

log = logging.getLogger("deid.evaluate")

_EMPTY_TABLE_COLUMNS = ["au", "pcc", "rmse", "frames", "pcc_defined", "mean_original", "mean_swapped"]


class AuSettings(Protocol):
    """What an AU source reads of the evaluate settings. stages/evaluate_config.py's AuSettings has them
    all; reports take only what they need and import nothing from the stages above them."""

    @property
    def au(self) -> str: ...
    @property
    def au_original(self) -> Path | None: ...
    @property
    def au_swapped(self) -> Path | None: ...
    @property
    def pyfeat_model_dir(self) -> Path | None: ...
    @property
    def detector(self) -> str: ...
    @property
    def detect_side(self) -> int: ...
    @property
    def min_face_size(self) -> int: ...
    @property
    def batch_size(self) -> int: ...


class AuPlugin(ABC):
    """One evaluation's AU source. Tables are reports/au.py's layout: one row per frame index ("frame"),
    one column per AU (AU01, AU02, ...), the same AUs in both."""

    # True: the tables are the user's files (evaluate.au_original and au_swapped, then required); a table
    # that cannot be compared is the user's error to fix, where a computed one is only reported.
    needs_tables: ClassVar[bool] = False

    def __init__(self, config: AuSettings, device: str) -> None:
        self.config = config
        self.reason: str | None = None  # why no AU will be computed; None while they may be
        self.streaming = False          # True: wants every batch of sampled frames through `add`

    @staticmethod
    def unavailable(config: AuSettings) -> str | None:
        """Why this source cannot run on this machine (one line), None if it may; cheap: asked before a run."""
        return None

    def add(self, label: str, frames: list[tuple[int, np.ndarray]]) -> None:
        """One batch of (frame index, RGB frame) of the "original" or the "swapped" video."""

    @abstractmethod
    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(original, swapped) AU tables, once the videos have streamed past."""


AU_SOURCES: Registry[type[AuPlugin]] = Registry(
    "AU source", ["deid.reports.au_source.pyfeat", "deid.reports.au_source.blendshapes", "deid.reports.au_source.openface",
                  "deid.reports.au_source.pyfeat_csv", "deid.reports.au_source.none"])


def note_unavailable(configs: Sequence[AuSettings]) -> None:
    """One line on stderr at the start of a command when an AU source asked for cannot run on this machine
    (py-feat not installed, weights missing), so nobody learns it from the report at the end."""
    reasons = (AU_SOURCES.get(c.au, "evaluate.au").unavailable(c) for c in dict.fromkeys(configs))
    for reason in sorted({r for r in reasons if r}):
        print(f"deid: note: AU will not be computed: {reason}; expression is scored from the landmark measure "
              "(or use --au blendshapes)",
              file=sys.stderr)


class AuSource:
    """The evaluate stage's handle on the chosen source (evaluate.au)."""

    def __init__(self, config: AuSettings, device: str = "cpu") -> None:
        self.config = config
        self.plugin = AU_SOURCES.get(config.au, "evaluate.au")(config, device)

    @property
    def reason(self) -> str | None:
        return self.plugin.reason

    @property
    def streaming(self) -> bool:
        """True when frames must be handed to `add` (a streaming source, loaded and not failed)."""
        return self.plugin.streaming and self.plugin.reason is None

    def add(self, label: str, frames: list[tuple[int, np.ndarray]]) -> None:
        """AU intensities of one batch of (frame index, RGB frame) of the original or the swapped video."""
        if not self.streaming or not frames:
            return
        try:
            self.plugin.add(label, frames)
        except Exception as exc:  # a source failing at run time: report it, keep the identity results
            first = str(exc).splitlines()[0] if str(exc) else ""
            self.plugin.reason = f"{self.config.au} failed ({type(exc).__name__}: {first})"
            log.warning("AU will not be computed: %s", self.plugin.reason)

    def result(self) -> tuple[dict, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """(summary, original AU table, swapped AU table, per-AU PCC/RMSE table)."""
        empty = pd.DataFrame(index=pd.Index([], name="frame"))
        empty_table = pd.DataFrame(columns=_EMPTY_TABLE_COLUMNS)
        source = self.config.au
        if self.reason is not None:
            return {"computed": False, "source": source, "reason": self.reason}, empty, empty, empty_table
        original, swapped = self.plugin.tables()
        try:
            table, summary = au_mod.compare_tables(original, swapped)
        except DeidError as exc:
            if self.plugin.needs_tables:
                raise
            return {"computed": False, "source": source, "reason": str(exc)}, empty, empty, empty_table
        return {"computed": True, "source": source, **summary}, original, swapped, table
