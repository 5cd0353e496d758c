"""`deid run 2>log` when stderr is not a terminal: a log a person (and a batch log) can read.

Issue 13's bar, on the repository's 135-frame clip: no carriage-return bars, no line over 300 characters,
each stage that works for more than a moment writes progress lines, and no stretch of the log is silent for
more than 10 s (log lines carry HH:MM:SS, so a gap is measured to the second: 11 s is the most a 10 s gap
can read as). With -v the stages' settings are in the log too; at the default level they are not.
"""
from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

STAMP = re.compile(r"^(\d\d:\d\d:\d\d) ")


def _run(config: Path, *flags: str) -> str:
    result = subprocess.run([sys.executable, "-m", "deid.pipeline.cli", *flags, "run", str(config)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def _gaps(log: str) -> list[tuple[int, str]]:
    """(seconds since the previous timestamped line, the line) for every timestamped line."""
    out, last = [], None
    for line in log.splitlines():
        match = STAMP.match(line)
        if not match:
            continue
        now = datetime.strptime(match.group(1), "%H:%M:%S")
        if last is not None:
            out.append((int((now - last) % timedelta(days=1) / timedelta(seconds=1)), line))
        last = now
    return out


@pytest.mark.slow  # ~2 min: two whole runs; the batch test checks the log's readability in the default run
@pytest.mark.timeout(1500)  # two `deid run`s of every stage; the second finds them up to date
def test_run_log_is_readable_and_never_silent_for_long(tmp_path, data_dir):
    video = data_dir / "video"
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({
        "pair": "log", "runs_dir": str(tmp_path / "runs"), "device": "cpu",
        "target": str(video / "talking_1.mp4"), "donor": str(video / "talking_2.mp4"),
        "train": {"width": 16, "latent": 64, "batch_size": 8, "iterations": 40, "save_every": 1000,
                  "preview_every": 0, "identity_every": 0},
        "evaluate": {"frames": 20, "au": "none"},
    }))
    log = _run(config)
    (tmp_path / "run.log").write_text(log)
    lines = log.splitlines()
    assert "\r" not in log
    assert max(len(line) for line in lines) <= 300, max(lines, key=len)
    for label in (r"extract \S+: \d+/135 frames", r"train \w+: \d+/40 its", r"convert \S+: \d+/135 frames",
                  r"evaluate: \d+/\d+"):
        assert re.search(label, log), f"no progress line matching {label!r}:\n{log[-3000:]}"
    silent = [(gap, line) for gap, line in _gaps(log) if gap > 11]
    assert not silent, f"the log was silent for more than 10 s before: {silent}"
    assert "settings:" not in log

    verbose = _run(config, "-v", )
    assert "up to date" in verbose
    assert re.search(r"deid.settings: train settings: .*model=original", verbose)
    long_lines = [line for line in verbose.splitlines() if len(line) > 300]
    assert not long_lines, long_lines[:3]


def test_a_long_step_still_logs_and_the_heartbeat_stops_with_the_bar(monkeypatch, caplog):
    import logging
    import threading
    import time

    import deid.stages.progress as progress

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.5)
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    before = threading.active_count()
    with caplog.at_level(logging.INFO, logger="deid.progress"):
        with progress.progress_bar(2, "slow", "step", True) as bar:
            time.sleep(1.8)  # one step longer than three log periods, without any update
            bar.update(2)
    beats = [r.getMessage() for r in caplog.records if r.getMessage().startswith("slow: 0/2")]
    assert len(beats) >= 2, caplog.text
    assert threading.active_count() == before
