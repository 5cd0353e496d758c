"""Publishing a checked video: the final name only for an output that passed the leak check.

A video is written to a hidden `.<name>.unchecked.mp4`, checked, then renamed to `<name>.mp4` when it
has no leak (or `--allow-leaks` was given), else to `<name>.leaky.mp4` for inspection. Whatever a
previous run left under the other name is removed, so the final path never holds an unchecked or
leaking video.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from deid.core.errors import DeidError, LeakError
from deid.stages.leak_check import LeakReport


def unchecked_path(out_path: Path) -> Path:
    return out_path.with_name(f".{out_path.stem}.unchecked{out_path.suffix or '.mp4'}")


def leaky_path(out_path: Path) -> Path:
    return out_path.with_name(f"{out_path.stem}.leaky{out_path.suffix or '.mp4'}")


def frames_csv_path(out_path: Path) -> Path:
    return out_path.with_name(out_path.stem + ".frames.csv")


def refuse_to_replace(inputs: Iterable[Path], out_path: Path) -> None:
    """One line, before any work, when an output file of `out_path` (the video, its .leaky twin, its
    frames.csv, the hidden files written before the rename) is one of the inputs: publishing would
    destroy the evidence it was made from."""
    outputs = (out_path, leaky_path(out_path), frames_csv_path(out_path), unchecked_path(out_path),
               out_path.with_name(f".{out_path.stem}.part{out_path.suffix or '.mp4'}"))
    for source in inputs:
        for output in outputs:
            if same_file(source, output):
                raise DeidError(f"{output}: this output would replace the input {source}; choose an output folder "
                                "other than the input's (-o)")


def same_file(a: Path, b: Path) -> bool:
    """The same file on disk (hard links and symlinks included), or the same path once resolved."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def publish(written: Path, out_path: Path, report: LeakReport, allow_leaks: bool) -> Path:
    """Move the checked video to its final name (clean or allowed) or aside (leaky); return where it went."""
    if report.passed or allow_leaks:
        os.replace(written, out_path)
        leaky_path(out_path).unlink(missing_ok=True)
        return out_path
    os.replace(written, leaky_path(out_path))
    out_path.unlink(missing_ok=True)
    return leaky_path(out_path)


def raise_if_leaky(report: LeakReport, out_path: Path, allow_leaks: bool, summary: dict | None = None) -> None:
    """A LeakError carrying the run's summary (frames, faces, regions, leaks) when the output was kept aside."""
    if report.passed or allow_leaks:
        return
    first = report.leaks[0]
    raise LeakError(f"{out_path}: leak check ({report.checker}) found {len(report.leaks)} face(s) in "
                    f"{len(report.by_frame())} of {report.frames_checked} checked frames (first: frame {first.frame}, "
                    f"{first.describe()}); not published: kept as {leaky_path(out_path).name}, every leak in "
                    f"{frames_csv_path(out_path).name}; --allow-leaks publishes it anyway", summary=summary)
