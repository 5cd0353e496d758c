"""openface: OpenFace 2.x FeatureExtraction CSVs of both videos, computed elsewhere (0..5 intensities)."""
from __future__ import annotations

import pandas as pd

from deid.reports.au import read_au_table
from deid.reports.au_source import AU_SOURCES, AuPlugin


@AU_SOURCES.register("openface")
class OpenFace(AuPlugin):
    needs_tables = True

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return (read_au_table(self.config.au_original, "openface"),
                read_au_table(self.config.au_swapped, "openface"))
