"""pyfeat-csv: py-feat output tables of both videos, computed elsewhere (e.g. on a machine with py-feat)."""
from __future__ import annotations

import pandas as pd

from deid.reports.au import read_au_table
from deid.reports.au_source import AU_SOURCES, AuPlugin


@AU_SOURCES.register("pyfeat-csv")
class PyFeatCsv(AuPlugin):
    needs_tables = True

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return (read_au_table(self.config.au_original, "pyfeat-csv"),
                read_au_table(self.config.au_swapped, "pyfeat-csv"))
