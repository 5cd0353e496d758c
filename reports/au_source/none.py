"""none: no AU; the expression is scored from landmark geometry alone (reports/geometry.py)."""
from __future__ import annotations

from reports.au_source import AU_SOURCES, AuPlugin
from stages.evaluate_config import EvaluateConfig


@AU_SOURCES.register("none")
class NoAu(AuPlugin):
    def __init__(self, config: EvaluateConfig, device: str) -> None:
        super().__init__(config, device)
        self.reason = "disabled (evaluate.au: none)"
