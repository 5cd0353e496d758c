"""`deid batch MANIFEST -o RUNS_DIR`: every pair of a manifest through the pipeline, then one table.

Each pair runs the stages of its PipelineConfig into RUNS_DIR/<name>/. Footage shared by several pairs
is concatenated, extracted and cleaned once under RUNS_DIR/_shared/ (content-addressed). A re-run skips
what is up to date and resumes what was interrupted; a failing pair is reported and the others go on.
At the end: RUNS_DIR/status.{csv,md} (done / skipped / failed with the one-line reason) and
RUNS_DIR/comparison.{csv,md,html} (the `deid compare` table over every evaluated pair).
Pairs that share a donor start from the first such pair's model (pipeline/donor_start.py;
`train.share_donor_model: false` turns it off).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Literal, Sequence

import pandas as pd

from deid.core.atomic import write_json, write_text
from deid.core.errors import ConfigError
from deid.pipeline.batch_manifest import load_batch
from deid.pipeline.batch_pair import PairResult, write_status
from deid.pipeline.donor_start import plan_donor_starts, with_start

log = logging.getLogger("deid.batch")

Executor = Literal["local", "ray"]
STATUS_COLUMNS = ["name", "status", "reason", "stages run", "seconds", "report"]


def run_batch(manifest: Path, runs_dir: Path, executor: Executor = "local", address: str | None = None,
              sets: Sequence[str] = (), config: Path | None = None, workers: int | None = None,
              force: bool = False, progress: bool = True) -> list[PairResult]:
    """Run every pair; write the status and comparison tables; return one result per pair."""
    runs_dir = Path(runs_dir).resolve()
    jobs = load_batch(manifest, runs_dir, sets=sets, config=config)
    if address and executor != "ray":
        raise ConfigError("--address is for --executor ray")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    runs_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    invalid = [PairResult(job.name, "failed", job.error or "invalid pair") for job in jobs if job.config is None]
    for result in invalid:
        write_status(result, runs_dir / result.name)
    runnable = [job.config for job in jobs if job.config is not None]
    from deid.reports.au_source import note_unavailable

    note_unavailable([c.evaluate for c in runnable])
    bar = _progress_bar(len(jobs), len(invalid), progress)

    def report(result: PairResult) -> None:
        log.info("pair %s: %s%s", result.name, result.status, f" ({result.reason})" if result.reason else "")
        if bar is not None:
            bar.set_postfix_str(f"{result.name}: {result.status}")
            bar.update(1)

    starts = plan_donor_starts(runnable)
    try:
        if not runnable:
            results = []
        elif executor == "ray":
            from deid.pipeline.executor_ray import run_ray

            results = run_ray(runnable, runs_dir, address=address, force=force, on_result=report, starts=starts)
            for result in results:
                write_status(result, runs_dir / result.name)
        else:
            from deid.pipeline.executor_local import run_local

            results = run_local(runnable, runs_dir, workers=workers, force=force, on_result=report, starts=starts)
    finally:
        if bar is not None:
            bar.close()
    by_name = {r.name: r for r in [*invalid, *results]}
    ordered = [by_name[job.name] for job in jobs]
    write_tables(ordered, runs_dir, time.perf_counter() - start)
    return ordered


def dry_run(manifest: Path, runs_dir: Path, sets: Sequence[str] = (), config: Path | None = None) -> pd.DataFrame:
    """What a batch would do, stage by stage, without running anything (`deid batch --dry-run`)."""
    from deid.pipeline.batch_pair import shared_root
    from deid.pipeline.runner import Manifest, pending_reason
    from deid.pipeline.workflow import plan

    runs_dir = Path(runs_dir).resolve()
    rows = []
    jobs = load_batch(manifest, runs_dir, sets=sets, config=config)
    starts = plan_donor_starts([job.config for job in jobs if job.config is not None])
    for job in jobs:
        if job.config is None:
            rows.append({"pair": job.name, "stage": "-", "state": f"invalid: {job.error}"})
            continue
        pair, specs = plan(with_start(job.config, starts.get(job.name), True), progress=False,
                           shared=shared_root(runs_dir))
        pair_manifest = Manifest(pair.manifest)
        would_run: set[str] = set()
        for spec in specs:
            after = [need for need in spec.needs if need in would_run]
            reason = f"after {after[0]}" if after else pending_reason(spec, pair_manifest)
            if reason is not None:
                would_run.add(spec.key)
            shared = " (shared)" if spec.manifest is not None else ""
            rows.append({"pair": job.name, "stage": spec.key + shared,
                         "state": "up to date" if reason is None else f"would run: {reason}"})
    return pd.DataFrame(rows, columns=["pair", "stage", "state"])


def _progress_bar(total: int, done: int, enabled: bool):
    from deid.stages.progress import make_progress

    return make_progress(total, "batch", "pair", enabled, initial=done)


def status_table(results: Sequence[PairResult]) -> pd.DataFrame:
    rows = []
    for r in results:
        report = Path(r.evaluate_dir) / "reports" / "report.html" if r.evaluate_dir else None
        rows.append({"name": r.name, "status": r.status, "reason": r.reason, "stages run": ", ".join(r.ran) or "-",
                     "seconds": r.seconds, "report": str(report) if report and report.exists() else "-"})
    return pd.DataFrame(rows, columns=STATUS_COLUMNS)


def write_tables(results: Sequence[PairResult], runs_dir: Path, seconds: float) -> None:
    from deid.reports.compare import compare, html_table, to_markdown

    table = status_table(results)
    write_text(runs_dir / "status.csv", table.to_csv(index=False))
    write_text(runs_dir / "status.md", to_markdown(table))
    write_json(runs_dir / "status.json", {"seconds": round(seconds, 1), "pairs": [r.as_json() for r in results]})
    evaluated = [(r.name, Path(r.evaluate_dir)) for r in results
                 if r.evaluate_dir and (Path(r.evaluate_dir) / "reports" / "summary.json").exists()]
    comparison = compare([d for _, d in evaluated], runs_dir, names=[n for n, _ in evaluated], stem="comparison",
                         extra_html="<h2>Pairs</h2>" + html_table(table), allow_empty=True)
    counts = table["status"].value_counts().to_dict()
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(table.to_string(index=False))
    if len(comparison):
        print()
        print(comparison.drop(columns=["verdict"]).to_string(index=False))
        print()
        for name, verdict in zip(comparison["name"], comparison["verdict"]):
            print(f"{name}: {verdict}")
    print(f"batch: {summary} in {seconds:.0f} s; {runs_dir / 'status.md'}, {runs_dir / 'comparison.html'}")
