"""none: no AU; the expression is scored from landmark geometry alone (reports/geometry.py)."""
from __future__ import annotations

import pandas as pd

from deid.reports.au_source import AU_SOURCES, AuPlugin, AuSettings


@AU_SOURCES.register("none")
class NoAu(AuPlugin):
    def __init__(self, config: AuSettings, device: str) -> None:
        super().__init__(config, device)
        self.reason = "disabled (evaluate.au: none)"

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Never read: `reason` is set from the start, so AuSource reports "not computed" instead."""
        empty = pd.DataFrame(index=pd.Index([], name="frame"))
        return empty, empty
