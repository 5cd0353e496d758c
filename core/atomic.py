"""Atomic writes: a killed run never leaves a half-written file that looks finished.

Everything is written to a temporary sibling and renamed into place; `os.replace` is atomic on POSIX
when source and destination are on the same filesystem, which a sibling guarantees.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from deid.core.errors import DeidError, disk_error


def writable_folder(folder: Path) -> None:
    """Create `folder` and prove it takes a file, before a stage spends minutes on work it could not save.

    A read-only mount, a file where a folder should be, or missing permissions is one line naming the
    folder and the fix.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        known = disk_error(exc, folder)
        if known is None:
            raise
        raise DeidError(f"{folder}: output folder is not usable ({str(known).split(': ', 1)[-1]})") from None


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)  # mkstemp makes owner-only files; outputs are meant to be shared
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any, indent: int | None = 1) -> None:
    write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")
