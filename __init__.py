"""deid: replace a person's face in video with a consenting donor's, keep the expressions, prove both.

The installed distribution is this one package; the repository's folders are its subpackages
(`deid.core`, `deid.models`, `deid.reports`, `deid.stages`, `deid.pipeline`, `deid.bench`). For scripts:

    import deid

    status = deid.protect(["footage/"], "protected/", audio="drop")   # 0: every clip published
    summary = deid.evaluate("talk.mp4", "swapped.mp4", "talk.jpg", "donor.jpg", "eval/", frames=200)
    print(summary.verdict.text)

Keyword settings are the fields of the matching pipeline.yaml section (`protect:`, `evaluate:`), checked
the same way: a wrong name or value raises deid.core.errors.ConfigError naming it. Heavy libraries
(torch, OpenCV, dlib) load on the first call, not on `import deid`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from deid.reports.summary import EvaluationSummary

__all__ = ["evaluate", "protect"]


def protect(inputs: Sequence[str | Path], out_dir: str | Path, *, crf: int = 18, device: str = "auto",
            recursive: bool = False, allow_leaks: bool = False, allow_damaged: bool = False, progress: bool = False,
            **settings: Any) -> int:
    """`deid protect`: hide every face of each video (files or folders) into `out_dir`, leak-checked.

    Returns the command's exit status: 0 every clip published, 1 a leak check failed, 2 a clip failed."""
    from deid.pipeline.config import build
    from deid.stages.protect_batch import protect_many
    from deid.stages.protect_config import ProtectConfig

    config = build(ProtectConfig, settings, "protect.")
    return protect_many([Path(p) for p in inputs], Path(out_dir), config, crf=crf, device=device,
                        allow_leaks=allow_leaks, progress=progress, allow_damaged=allow_damaged, recursive=recursive)


def evaluate(original: str | Path, swapped: str | Path, ref_original: str | Path, ref_donor: str | Path,
             out_dir: str | Path, *, device: str = "auto", name: str | None = None, allow_damaged: bool = False,
             progress: bool = False, **settings: Any) -> "EvaluationSummary":
    """`deid evaluate`: score `swapped` against `original` (identity and expression), reports in
    `out_dir/reports/`; returns the summary (its `verdict`, tables and numbers)."""
    from deid.pipeline.config import build
    from deid.stages.evaluate import evaluate as run
    from deid.stages.evaluate_config import EvaluateConfig

    config = build(EvaluateConfig, settings, "evaluate.")
    return run(Path(original), Path(swapped), Path(ref_original), Path(ref_donor), Path(out_dir), config,
               progress=progress, name=name, allow_damaged=allow_damaged, device=device)
