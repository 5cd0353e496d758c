"""Errors a user can act on.

Every failure caused by input (a missing file, a bad config key, a video ffmpeg cannot read) is raised
as a `DeidError` whose message is one line naming the file and the fix; the CLI prints it without a
traceback and exits non-zero. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import errno
from pathlib import Path
from typing import Any


class DeidError(Exception):
    """A one-line, user-actionable failure."""


class ConfigError(DeidError):
    """pipeline.yaml or a command-line value is invalid."""


class MediaError(DeidError):
    """An input video or image cannot be used."""


class LeakError(DeidError):
    """The leak check found a face in a written output; it was kept aside, not published."""

    exit_status = 1

    def __init__(self, message: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary = summary  # the run's numbers (frames, faces, regions, leaks), for batch tables


# What the user can do about an output that cannot be written, by errno.
_DISK_FIXES = {
    errno.ENOSPC: "no space left on the device; free some space or choose an output folder on another disk",
    errno.EDQUOT: "disk quota exceeded; free some space or choose an output folder on another disk",
    errno.EROFS: "read-only filesystem; choose a writable output folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another output path",
    errno.EEXIST: "a file is in the way of a folder; choose another output path",
    errno.EACCES: "permission denied; choose a folder you can write, or fix its permissions",
    errno.EPERM: "operation not permitted; choose a folder you can write, or fix its permissions",
}


def disk_error(exc: OSError, path: Path | str | None = None) -> DeidError | None:
    """A one-line error for an OSError the user must fix on their side (full disk, read-only, a file in the
    way, permissions), naming the path; None for any other OSError (a bug, which keeps its traceback)."""
    fix = _DISK_FIXES.get(exc.errno or -1)
    if fix is None:
        return None
    where = exc.filename if exc.filename is not None else path
    return DeidError(f"{where}: {fix}" if where is not None else fix)
