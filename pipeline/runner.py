"""The stage runner: decide what is up to date, run what is not, record what happened.

A stage declares its inputs (files or folders, hashed by content), its parameters (JSON-able) and its
outputs. `manifest.json` keeps one record per stage: input hashes, parameters, outputs, timings and
package versions. A stage is skipped only when its record matches the current inputs and parameters,
its recorded code version is the current one, and every output still exists; the log says why a
stage ran or was skipped. The manifest itself is rewritten atomically after every stage, under a lock
and merged with what is on disk, because stages of one pair may run at once in different processes
(`deid batch --executor ray`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pipeline.atomic import write_json
from pipeline.errors import DeidError
from pipeline.locks import file_lock

log = logging.getLogger("deid.runner")

MANIFEST_SCHEMA = 1
_VERSIONED_PACKAGES = ("deid", "torch", "numpy", "opencv-python-headless", "dlib-bin", "mtcnn", "face-recognition")


@dataclass(frozen=True)
class StageSpec:
    """What a stage reads, how it is parameterised, what it writes, and the function that does it."""

    key: str
    inputs: Mapping[str, Path]
    params: Mapping[str, Any]
    outputs: Sequence[Path]
    run: Callable[[], Mapping[str, Any]]
    # Keys of the stages whose outputs this one reads (the batch executors schedule by them).
    needs: tuple[str, ...] = ()
    # Where the record goes when it is not the pair's manifest: a stage shared by several pairs (a donor's
    # extraction in `deid batch`) keeps its record, and its lock, next to its own outputs.
    manifest: Path | None = None
    record: str | None = None  # the record's key in that manifest (default: `key`)


@dataclass(frozen=True)
class StageOutcome:
    key: str
    ran: bool
    reason: str
    summary: Mapping[str, Any]


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


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass  # optional package not installed: nothing to record
    return versions


class Manifest:
    """runs/<pair>/manifest.json: one record per stage key."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            return dict(json.loads(self.path.read_text(encoding="utf-8")).get("stages", {}))
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            # A manifest we cannot read only costs a re-run; never a crash.
            log.warning("%s is unreadable; every stage will re-run", self.path)
            return {}

    @property
    def lock_path(self) -> Path:
        return self.path.with_name("." + self.path.name + ".lock")

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store one stage's record, keeping what other processes wrote for other stages meanwhile."""
        self.records[key] = record
        try:
            with file_lock(self.lock_path):
                on_disk = self._read()
                on_disk[key] = record
                write_json(self.path, {"schema": MANIFEST_SCHEMA, "stages": on_disk})
            self.records = on_disk
        except OSError as exc:
            raise DeidError(f"{self.path}: cannot write the manifest ({exc.strerror or exc}); "
                            "choose a writable output folder") from None


def why_stale(record: Mapping[str, Any] | None, input_hashes: Mapping[str, str], params: Mapping[str, Any],
              outputs: Sequence[Path]) -> str | None:
    """The reason a stage must run, or None when its record proves it is up to date."""
    if record is None:
        return "never ran"
    if record.get("status") != "done":
        return f"last run {record.get('status', 'unfinished')}"
    if record.get("versions", {}).get("deid") != package_versions().get("deid"):
        return "deid version changed"
    old_inputs = record.get("inputs", {})
    for name, digest in input_hashes.items():
        if old_inputs.get(name, {}).get("sha256") != digest:
            return f"input {name} changed"
    old_params = record.get("params", {})
    if old_params != _plain(params):
        changed = sorted(k for k in set(old_params) | set(_plain(params)) if old_params.get(k) != _plain(params).get(k))
        return "parameters changed: " + ", ".join(changed)
    for out in outputs:
        if not Path(out).exists():
            return f"output missing: {out}"
    return None


def _plain(params: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(params), default=str))


def pending_reason(spec: StageSpec, manifest: Manifest) -> str | None:
    """Why `spec` would run now (None: up to date), without running it: for dry runs."""
    target = Manifest(spec.manifest) if spec.manifest is not None else manifest
    record = target.records.get(spec.record or spec.key)
    return why_stale(record, {name: hash_input(path) for name, path in spec.inputs.items()}, spec.params,
                     spec.outputs)


def run_stage(spec: StageSpec, manifest: Manifest, force: bool = False) -> StageOutcome:
    """Run `spec` unless its manifest record shows it is up to date (or `force`).

    A stage with its own manifest (`spec.manifest`, shared by several pairs) runs under that manifest's
    lock: the second pair to need it waits for the first and then finds it up to date.
    """
    if spec.manifest is None:
        return _run_stage(spec, manifest, force)
    with file_lock(spec.manifest.with_name(f".{spec.manifest.name}.run")):
        return _run_stage(spec, Manifest(spec.manifest), force)


def _run_stage(spec: StageSpec, manifest: Manifest, force: bool) -> StageOutcome:
    record_key = spec.record or spec.key
    input_hashes = {name: hash_input(path) for name, path in spec.inputs.items()}
    record = manifest.records.get(record_key)
    reason = "forced" if force else why_stale(record, input_hashes, spec.params, spec.outputs)
    if reason is None:
        log.info("%s: up to date, skipped (inputs, parameters and outputs match %s)", spec.key, manifest.path.name)
        return StageOutcome(spec.key, ran=False, reason="up to date", summary=record.get("summary", {}))

    log.info("%s: running (%s)", spec.key, reason)
    entry: dict[str, Any] = {
        "status": "running",
        "inputs": {name: {"path": str(path), "sha256": input_hashes[name]} for name, path in spec.inputs.items()},
        "params": _plain(spec.params),
        "outputs": [str(p) for p in spec.outputs],
        "versions": package_versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    manifest.put(record_key, entry)
    start = time.perf_counter()
    try:
        summary = dict(spec.run())
    except BaseException as exc:
        entry["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        entry["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        entry["seconds"] = round(time.perf_counter() - start, 3)
        manifest.put(record_key, entry)
        raise
    entry.update(status="done", seconds=round(time.perf_counter() - start, 3), summary=_plain(summary))
    manifest.put(record_key, entry)
    log.info("%s: done in %.1f s", spec.key, entry["seconds"])
    return StageOutcome(spec.key, ran=True, reason=reason, summary=summary)
