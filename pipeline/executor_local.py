"""`deid batch --executor local`: pairs in parallel worker processes on this machine.

Each pair runs in its own process (pipeline.batch_pair's main), its output in RUNS_DIR/<pair>/batch.log,
so a pair that crashes the interpreter (out of memory, a native library fault) fails alone with its exit
status and the others go on. Workers are told to die with the batch (Linux PR_SET_PDEATHSIG): a killed
batch leaves no orphan writing into RUNS_DIR, and training saves its checkpoint on the SIGTERM.

A worker imports the installed deid (the same interpreter's), never a folder in the current directory: it
is not started with `python -m` (which puts the working directory first on sys.path, so a `deid/` folder
where the user starts the batch would replace deid's code) but with `-c` code that drops the working
directory from sys.path before importing.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from deid.core.atomic import write_json
from deid.pipeline.batch_pair import STATUS_FILE, PairResult
from deid.pipeline.config import PipelineConfig, as_plain
from deid.pipeline.donor_start import DonorStart, is_trained, with_start

log = logging.getLogger("deid.batch")

_PR_SET_PDEATHSIG = 1


def worker_command(job: Path) -> list[str]:
    """The worker's command line: deid.pipeline.batch_pair's main on JOB, with deid from this interpreter's
    installation and nothing from the working directory."""
    boot = ("import sys\n"
            "sys.path[:] = [p for p in sys.path if p not in ('', '.')]\n"
            "from deid.pipeline.batch_pair import main\n"
            "sys.exit(main())\n")
    # -P (Python >= 3.11) also keeps the working directory off sys.path before the code above runs.
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *safe_path, "-c", boot, str(job)]


def default_workers(pairs: int) -> int:
    """As many pairs at once as the machine holds: ~4 cores and ~6 GB of memory per CPU pair (training
    uses every core it gets), and at least one pair per GPU so every GPU has work."""
    cores = os.cpu_count() or 1
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else 8
    workers = min(max(1, cores // 4), max(1, int(memory_gb // 6)))
    return max(1, min(pairs, max(workers, _gpu_count())))


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: workers may outlive a killed batch; each pair's lock still prevents double runs


def run_local(configs: Sequence[PipelineConfig], runs_dir: Path, workers: int | None = None, force: bool = False,
              on_result: Callable[[PairResult], None] | None = None,
              starts: Mapping[str, DonorStart] | None = None) -> list[PairResult]:
    """Run every pair, `workers` at a time, in manifest order; results in the same order. A pair in `starts`
    waits until the pair whose model it starts from has finished."""
    runs_dir = Path(runs_dir)
    starts = starts or {}
    workers = workers or default_workers(len(configs))
    threads = max(1, (os.cpu_count() or 1) // workers)
    log.info("local executor: %d pair(s), %d at a time, %d CPU thread(s) each", len(configs), workers, threads)
    pending = list(configs)
    running: dict[str, tuple[subprocess.Popen, PipelineConfig, float]] = {}
    results: dict[str, PairResult] = {}
    try:
        while pending or running:
            while len(running) < workers:
                ready = [c for c in pending if c.pair not in starts or starts[c.pair].source in results]
                if not ready:
                    break
                config = ready[0]
                pending.remove(config)
                start = starts.get(config.pair)
                config = with_start(config, start, start is not None and is_trained(start.model_dir))
                running[config.pair] = (_start(config, runs_dir, threads, force), config, time.perf_counter())
            for name, (process, config, started) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[name]
                results[name] = _collect(process.returncode, config, runs_dir, time.perf_counter() - started)
                if on_result:
                    on_result(results[name])
            time.sleep(0.2)
    except KeyboardInterrupt:
        for process, _, _ in running.values():
            process.send_signal(signal.SIGTERM)  # training saves a checkpoint on SIGTERM
        for name, (process, _, started) in running.items():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
            results[name] = PairResult(name, "interrupted", "interrupted; run the batch again to resume",
                                       seconds=round(time.perf_counter() - started, 1))
        raise
    return [results[c.pair] for c in configs]


def _start(config: PipelineConfig, runs_dir: Path, threads: int, force: bool) -> subprocess.Popen:
    pair_root = runs_dir / config.pair
    pair_root.mkdir(parents=True, exist_ok=True)
    (pair_root / STATUS_FILE).unlink(missing_ok=True)
    job = runs_dir / ".jobs" / f"{config.pair}.json"
    write_json(job, {"config": as_plain(config), "threads": threads, "force": force})
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    log.info("pair %s: started (log: %s)", config.pair, pair_root / "batch.log")
    with open(pair_root / "batch.log", "ab") as log_file:
        return subprocess.Popen(worker_command(job.resolve()), stdout=log_file,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                preexec_fn=_die_with_parent)


def _collect(returncode: int, config: PipelineConfig, runs_dir: Path, seconds: float) -> PairResult:
    pair_root = runs_dir / config.pair
    status = pair_root / STATUS_FILE
    if status.exists():
        try:
            return PairResult(**json.loads(status.read_text(encoding="utf-8")))
        except (ValueError, TypeError):
            pass  # a status cut short: report the worker's exit below, as if there were none
    # The worker died before it could write its status: name the signal and point at the log.
    how = f"killed by signal {signal.Signals(-returncode).name}" if returncode < 0 else f"exit status {returncode}"
    hint = " (out of memory?)" if returncode == -signal.SIGKILL else ""
    last = _last_line(pair_root / "batch.log")
    return PairResult(config.pair, "failed", f"worker {how}{hint}; last log line: {last}", seconds=round(seconds, 1))


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][-200:] if lines else "(empty log)"
