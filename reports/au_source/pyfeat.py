"""pyfeat: py-feat on the sampled frames, batch by batch as the videos stream past (reports/pyfeat_au.py).

Optional: without py-feat or its weights `reason` says why and the expression is scored from landmark
geometry alone. The values are per-AU probabilities (0..1), not OpenFace's 0..5 intensities.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from deid.reports.au_source import AU_SOURCES, AuPlugin, AuSettings


@AU_SOURCES.register("pyfeat")
class PyFeat(AuPlugin):
    def __init__(self, config: AuSettings, device: str) -> None:
        super().__init__(config, device)
        from deid.reports.pyfeat_au import (
            load_detector,  # imports py-feat only when it is the chosen source
        )

        self.detector, self.reason = load_detector(config.pyfeat_model_dir, device)
        self.streaming = self.detector is not None
        self._tables: dict[str, list[pd.DataFrame]] = {"original": [], "swapped": []}

    @staticmethod
    def unavailable(config: AuSettings) -> str | None:
        from deid.reports.pyfeat_au import unavailable

        return unavailable(config.pyfeat_model_dir)

    def add(self, label: str, frames: list[tuple[int, np.ndarray]]) -> None:
        from deid.reports.pyfeat_au import detect_aus

        self._tables[label].append(detect_aus(self.detector, frames, self.config.batch_size))

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        empty = pd.DataFrame(index=pd.Index([], name="frame"))
        return tuple(pd.concat(self._tables[k]) if self._tables[k] else empty  # type: ignore[return-value]
                     for k in ("original", "swapped"))
