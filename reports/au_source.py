"""Where an evaluation's Action Unit intensities come from: py-feat on the sampled frames, tables computed
elsewhere (OpenFace, py-feat CSV), or nowhere, with the reason.

py-feat gets the frames batch by batch as the videos stream past, so memory stays bounded by the batch,
not by the sample. A py-feat that fails at run time is reported, never allowed to lose the identity results.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import DeidError
from reports import au as au_mod
from stages.evaluate_config import EvaluateConfig

log = logging.getLogger("deid.evaluate")

_EMPTY_TABLE_COLUMNS = ["au", "pcc", "rmse", "frames", "pcc_defined", "mean_original", "mean_swapped"]


def note_unavailable(configs: "list[EvaluateConfig]") -> None:
    """One line on stderr at the start of a command when py-feat AU is asked for and cannot run on this
    machine (not installed, weights missing), so nobody learns it from the report at the end."""
    import sys

    from reports.pyfeat_au import unavailable

    asked = {c.pyfeat_model_dir for c in configs if c.au == "pyfeat"}
    for reason in sorted({r for r in (unavailable(d) for d in asked) if r}):
        print(f"deid: note: AU will not be computed: {reason}; expression is scored from landmark geometry",
              file=sys.stderr)


class AuSource:
    def __init__(self, config: EvaluateConfig, device: str = "cpu") -> None:
        self.config = config
        self.detector: Any = None
        self.reason: str | None = None
        self._tables: dict[str, list[pd.DataFrame]] = {"original": [], "swapped": []}
        if config.au == "none":
            self.reason = "disabled (evaluate.au: none)"
        elif config.au == "pyfeat":
            from reports.pyfeat_au import load_detector

            self.detector, self.reason = load_detector(config.pyfeat_model_dir, device)

    @property
    def streaming(self) -> bool:
        """True when frames must be handed to `add` (py-feat loaded and not failed)."""
        return self.detector is not None and self.reason is None

    def add(self, label: str, frames: list[tuple[int, np.ndarray]]) -> None:
        """AU intensities of one batch of (frame index, RGB frame) of the original or the swapped video."""
        if not self.streaming or not frames:
            return
        from reports.pyfeat_au import detect_aus

        try:
            self._tables[label].append(detect_aus(self.detector, frames, self.config.batch_size))
        except Exception as exc:  # py-feat at run time: report it, keep the identity results
            self.reason = f"py-feat failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            log.warning("AU will not be computed: %s", self.reason)

    def result(self) -> tuple[dict, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """(summary, original AU table, swapped AU table, per-AU PCC/RMSE table)."""
        empty = pd.DataFrame(index=pd.Index([], name="frame"))
        empty_table = pd.DataFrame(columns=_EMPTY_TABLE_COLUMNS)
        source = self.config.au
        if self.reason is not None:
            return {"computed": False, "source": source, "reason": self.reason}, empty, empty, empty_table
        if source == "pyfeat":
            original, swapped = (pd.concat(self._tables[k]) if self._tables[k] else empty for k in ("original", "swapped"))
        else:
            fmt = "openface" if source == "openface" else "pyfeat-csv"
            original = au_mod.read_au_table(self.config.au_original, fmt)
            swapped = au_mod.read_au_table(self.config.au_swapped, fmt)
        try:
            table, summary = au_mod.compare_tables(original, swapped)
        except DeidError as exc:
            if source != "pyfeat":
                raise
            return {"computed": False, "source": source, "reason": str(exc)}, empty, empty, empty_table
        return {"computed": True, "source": source, **summary}, original, swapped, table
