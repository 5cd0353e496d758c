"""One pair of a batch: run its stages in order, in this process, and say how it went.

Used by the local executor's worker processes (`main` on a JOB.json; executor_local.worker_command). The pair's
folder is locked for the run, so two batches over the same RUNS_DIR cannot write one pair at once.
Training and conversion hold a GPU slot (a lock file per GPU under RUNS_DIR/.locks/), so pairs running
side by side take turns on each GPU instead of running out of its memory; extraction, cleaning and
evaluation share the GPUs freely.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from deid.core.atomic import write_json
from deid.core.errors import DeidError, disk_error
from deid.core.locks import file_lock, try_lock
from deid.pipeline.config import PipelineConfig, config_from_mapping
from deid.pipeline.runner import Manifest, StageOutcome, run_stage
from deid.pipeline.workflow import PairLayout, plan

log = logging.getLogger("deid.batch")

GPU_EXCLUSIVE = ("train", "convert")
STATUS_FILE = "status.json"


@dataclass
class PairResult:
    name: str
    status: str  # done | skipped (everything was up to date) | failed | interrupted
    reason: str = ""
    ran: list[str] = field(default_factory=list)
    seconds: float = 0.0
    evaluate_dir: str | None = None

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def shared_root(runs_dir: Path) -> Path:
    return Path(runs_dir) / "_shared"


def locks_dir(runs_dir: Path) -> Path:
    return Path(runs_dir) / ".locks"


def result_from_outcomes(name: str, outcomes: list[StageOutcome], seconds: float, pair: PairLayout) -> PairResult:
    ran = [o.key for o in outcomes if o.ran]
    return PairResult(name, "done" if ran else "skipped", "" if ran else "every stage was up to date", ran,
                      round(seconds, 1), str(pair.evaluate_dir))


def link_shared(pair: PairLayout) -> None:
    """runs/<pair>/extract/<id> and clean/<id> as links to the shared folders, so the pair's folder reads
    like a single-pair run (the layout docs/runner.md shows under runs/<pair>/)."""
    for source in pair.sources():
        if not source.shared:
            continue
        for kind, target in (("extract", source.extract_dir), ("clean", source.clean_dir)):
            link = pair.root / kind / source.id
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() and Path(os.readlink(link)) == Path(os.path.relpath(target, link.parent)):
                continue
            tmp = link.with_name(f".{link.name}.link")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)
            os.replace(tmp, link)


def run_pair(config: PipelineConfig, force: bool = False, progress: bool = False) -> PairResult:
    """Every stage of one pair, stopping at its first failure; the failure is the result, not an exception."""
    runs_dir = Path(config.runs_dir)
    start = time.perf_counter()
    pair_root = runs_dir / config.pair
    try:
        with file_lock(pair_root / ".pair.lock", blocking=False,
                       busy_message=f"{pair_root} is being run by another process; wait for it to finish"):
            pair, specs = plan(config, progress=progress, shared=shared_root(runs_dir))
            link_shared(pair)
            manifest = Manifest(pair.manifest)
            outcomes: list[StageOutcome] = []
            for spec in specs:
                try:
                    with gpu_slot(runs_dir, config.device) if spec.key in GPU_EXCLUSIVE else _nothing():
                        # --force redoes the pair's own stages; shared ones serve other pairs too.
                        outcomes.append(run_stage(spec, manifest, force=force and spec.manifest is None))
                except Exception as exc:  # one pair's failure, whatever it is, must not take the batch down
                    return PairResult(config.pair, "failed", f"{spec.key}: {failure_reason(exc)}",
                                      [o.key for o in outcomes if o.ran], round(time.perf_counter() - start, 1))
            return result_from_outcomes(config.pair, outcomes, time.perf_counter() - start, pair)
    except KeyboardInterrupt:
        return PairResult(config.pair, "interrupted", "interrupted; run the batch again to resume",
                          seconds=round(time.perf_counter() - start, 1))
    except Exception as exc:  # planning failed: an unreadable input, a locked pair folder
        return PairResult(config.pair, "failed", failure_reason(exc), seconds=round(time.perf_counter() - start, 1))


def failure_reason(exc: BaseException) -> str:
    """One line: the message of a DeidError, the type and message of anything else (a bug: see the log)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, DeidError):
        return text
    known = disk_error(exc) if isinstance(exc, OSError) else None
    if known is not None:  # a full disk or a read-only mount: the user's to fix, not a bug
        return str(known)
    log.exception("unexpected failure")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@contextmanager
def gpu_slot(runs_dir: Path, device: str) -> Iterator[None]:
    """Hold one GPU exclusively (and make it torch's current device) while a heavy stage runs."""
    if device == "cpu":
        yield
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        yield
        return
    waited = False
    while True:
        for index in range(count):
            fd = try_lock(locks_dir(runs_dir) / f"gpu{index}.lock")
            if fd is not None:
                try:
                    torch.cuda.set_device(index)
                    yield
                finally:
                    os.close(fd)
                return
        if not waited:
            log.info("every GPU is busy with another pair's training or conversion; waiting")
            waited = True
        time.sleep(2.0)


def write_status(result: PairResult, pair_root: Path) -> None:
    write_json(Path(pair_root) / STATUS_FILE, result.as_json())


def main(argv: list[str] | None = None) -> int:
    """Worker entry point, on a JOB.json written by the local executor (see executor_local.worker_command)."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    if job.get("threads"):
        import torch

        torch.set_num_threads(int(job["threads"]))
    config = config_from_mapping(job["config"], Path("/"))
    # The worker's stderr is the pair's batch.log: progress arrives there as a log line every few seconds.
    result = run_pair(config, force=bool(job.get("force")), progress=True)
    write_status(result, Path(config.runs_dir) / config.pair)
    log.info("pair %s: %s %s", result.name, result.status, result.reason)
    return 0 if result.status in ("done", "skipped") else 1


if __name__ == "__main__":
    sys.exit(main())
