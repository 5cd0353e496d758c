"""Which deid produced a result: the package version and, when run from a git checkout, the commit."""
from __future__ import annotations

import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def deid_version() -> str:
    try:
        return metadata.version("deid")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The checkout's commit, with `-dirty` when tracked files differ from it; None outside a checkout."""
    if not (ROOT / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def version_line() -> str:
    commit = git_commit()
    return f"deid {deid_version()}" + (f" (commit {commit})" if commit else "")
