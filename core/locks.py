"""Advisory file locks (fcntl) shared by every process on a machine, and by machines on a shared filesystem
that honours them (NFSv4, Lustre, CephFS do; check yours).

The kernel drops a lock when its holder dies, so a killed run never leaves a stale lock behind.
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from deid.core.errors import DeidError


@contextmanager
def file_lock(path: Path, blocking: bool = True, busy_message: str | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing). Without `blocking`, a held lock raises
    DeidError(busy_message)."""
    fd = _open_lock_file(Path(path))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise DeidError(busy_message or f"{path} is held by another process") from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _open_lock_file(path: Path) -> int:
    """The descriptor of `path` (created with its folder if missing), or one line saying why it cannot be."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DeidError(f"{path}: cannot create a lock file ({exc.strerror or exc}); choose a writable folder") from None


def try_lock(path: Path) -> int | None:
    """Take the lock on `path` without waiting: the open descriptor (close it to release), or None if held."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextmanager
def folder_lock(folder: Path, command: str) -> Iterator[None]:
    """Hold `folder`'s lock for `command` without waiting; a second run is told who holds it.

    The holder writes its pid, host and start time into the lock file, so the refusal names them.
    """
    fd = _open_lock_file(Path(folder) / ".deid.lock")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            raise DeidError(f"{folder}: another run is writing this folder ({holder}); wait for it to finish or "
                            "choose another output folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{command}, pid {os.getpid()} on {socket.gethostname()}, since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
