"""Content hashes of inputs: what the runner records, and what a stage compares to know its input changed."""
from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hash_input(path: Path) -> str:
    """Content hash of a file, or of a folder's files (names and contents, hidden files excluded)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p, path)):
            digest.update(str(child.relative_to(path)).encode())
            digest.update(sha256_file(child).encode())
        return digest.hexdigest()
    return "missing"


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)
