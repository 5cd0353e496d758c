"""The stage runner: decide what is up to date, run what is not, record what happened.

A stage declares its inputs (files or folders, hashed by content), its parameters (JSON-able) and its
outputs. `manifest.json` keeps one record per stage: input hashes, parameters, outputs, timings,
package versions and a fingerprint of the code. A stage is skipped only when its record matches the
current inputs and parameters, its code fingerprint is the current one, and every output still exists;
the log (and `--dry-run`) says why a stage ran or would run, e.g. "code changed: stages/extract.py".
The manifest itself is rewritten atomically after every stage, under a lock and merged with what is on
disk, because stages of one pair may run at once in different processes (`deid batch --executor ray`).

The code fingerprint is the deid version plus a sha256 of the source of the stage's modules
(`StageSpec.code`) and of every module of this repository they import, followed transitively (minus
`_NOT_CODE`). The specs list, besides their own module, the modules of every stage upstream of them, so
a change to extract re-runs clean, train, convert and evaluate too, even when extract's outputs come out
the same: a downstream stage hashes only part of what an upstream one wrote (clean and train hash
alignments.json, not the face images next to it), so unchanged hashed inputs do not prove unchanged
inputs. A record without a fingerprint (written before them) counts as "code changed".
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from deid.core.atomic import write_json
from deid.core.errors import DeidError
from deid.core.hashing import hash_input
from deid.core.locks import file_lock
from deid.core.plugins import PLUGINS_ENV
from deid.pipeline.settings_log import log_settings

log = logging.getLogger("deid.runner")

MANIFEST_SCHEMA = 1
_VERSIONED_PACKAGES = ("deid", "torch", "numpy", "opencv-python-headless", "dlib-bin", "mtcnn", "face-recognition")
SOURCE_ROOT = Path(__file__).resolve().parents[1]  # the `deid` package: a checkout's root, or site-packages/deid
_CODE_PACKAGES = ("core", "stages", "models", "pipeline", "reports")
# `deid` itself (the scripting facade, the root __init__.py) is outside these prefixes: it runs no stage's code.
_CODE_PREFIXES = [["deid", package] for package in _CODE_PACKAGES]
# Modules stages import that cannot change what they write: bookkeeping, and the config loader (whose results
# reach each record as parameter values). Editing them re-runs nothing.
_NOT_CODE = frozenset({"deid.pipeline.runner", "deid.core.locks", "deid.core.errors", "deid.core.hashing",
                       "deid.pipeline.config"})


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
    # Modules whose source (with every in-repo module they import) makes the stage's code fingerprint.
    code: tuple[str, ...] = ()
    code_root: Path | None = None  # where those modules' packages live; default SOURCE_ROOT


@dataclass(frozen=True)
class StageOutcome:
    key: str
    ran: bool
    reason: str
    summary: Mapping[str, Any]


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass  # optional package not installed: nothing to record
    return versions


@functools.lru_cache(maxsize=None)
def code_fingerprint(modules: tuple[str, ...], root: Path | None = None) -> dict[str, Any]:
    """{"version": deid version, "sha256": digest of the files, "files": {path: sha256}} for `modules` and
    every module of this repository's packages they import (at any depth, function-level imports included).

    Cached per process: a run executes the code it imported, so later edits on disk are the next run's.
    """
    root = Path(root) if root is not None else SOURCE_ROOT
    files: dict[str, str] = {}
    seen: set[str] = set()
    for name in modules:
        if _module_file(root, name) is None:
            raise ModuleNotFoundError(f"stage module {name} not found under {root}")  # a bug in the stage's spec
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen or name in _NOT_CODE or name.split(".")[:2] not in _CODE_PREFIXES:
            continue
        seen.add(name)
        path = _module_file(root, name)
        if path is None:
            continue  # `from deid.stages.train import train`: a name inside a module, not a module
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        files[path.relative_to(root).as_posix()] = digest
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a module runs its packages
        key = (digest, name, path.name == "__init__.py")
        if key not in _IMPORTS:  # parsing is most of the cost, and the stages share most of their modules
            _IMPORTS[key] = _imports(data, name, key[2])
        todo += _IMPORTS[key]
    files.update(_external_plugin_files())
    digest = hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()
    return {"version": package_versions().get("deid"), "sha256": digest, "files": dict(sorted(files.items()))}


_IMPORTS: dict[tuple[str, str, bool], list[str]] = {}  # (sha256, module, is package) -> what it imports


def _external_plugin_files() -> dict[str, str]:
    """{"$DEID_PLUGINS:module": sha256} for the user's own plugins: any stage may look one up by name, and
    editing one must re-run what it made, as a built-in plugin's edit does."""
    out: dict[str, str] = {}
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        origin = Path(spec.origin) if spec is not None and spec.origin and spec.has_location else None
        out[f"${PLUGINS_ENV}:{module}"] = (hashlib.sha256(origin.read_bytes()).hexdigest()
                                           if origin is not None and origin.is_file() else "missing")
    return out


def _module_file(root: Path, name: str) -> Path | None:
    """The file of module `deid.a.b` under `root` (the folder that is the `deid` package)."""
    base = root.joinpath(*name.split(".")[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(source: bytes, name: str, is_package: bool) -> list[str]:
    """Every module name an import statement of `source` may refer to (`from a import b`: a and a.b)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []  # the stage fails on import anyway; its bytes are still hashed
    package = name.split(".") if is_package else name.split(".")[:-1]
    found: list[str] = []
    for node in _statements(tree.body):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[:len(package) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append(base)
            found += [f"{base}.{alias.name}" for alias in node.names]
    return found + _registry_builtins(tree)


def _registry_builtins(tree: ast.Module) -> list[str]:
    """The built-in plugin modules of a module-level `X = Registry("family", ["pkg.mod", ...])`: loaded by
    name at the first lookup, not by an import statement, yet code the stage runs."""
    found: list[str] = []
    for node in tree.body:
        call = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        if not isinstance(call, ast.Call):
            continue
        func = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
        if not func.endswith("Registry"):
            continue
        for arg in call.args:
            if isinstance(arg, (ast.List, ast.Tuple)):
                found += [e.value for e in arg.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return found


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement, nested ones included (imports inside functions count); expressions are skipped,
    which makes this several times faster than ast.walk."""
    for node in body:
        yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            inner = getattr(node, field, None)
            if isinstance(inner, list):
                yield from _statements(inner)


def _code_change(old: Any, new: Mapping[str, Any]) -> str | None:
    if not isinstance(old, Mapping) or "sha256" not in old:
        return "code changed: recorded before code fingerprints"
    if old.get("version") != new["version"]:
        return f"code changed: deid {old.get('version')} -> {new['version']}"
    if old["sha256"] == new["sha256"]:
        return None
    before, now = old.get("files") or {}, new["files"]
    changed = sorted(f for f in set(before) | set(now) if before.get(f) != now.get(f))
    shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    return f"code changed: {shown or 'its modules'}"


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
              outputs: Sequence[Path], code: Mapping[str, Any]) -> str | None:
    """The reason a stage must run, or None when its record proves it is up to date.

    `code` is the stage's current `code_fingerprint`.
    """
    if record is None:
        return "never ran"
    if record.get("status") != "done":
        return f"last run {record.get('status', 'unfinished')}"
    changed = _code_change(record.get("code"), code)
    if changed:
        return changed
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
                     spec.outputs, code_fingerprint(tuple(spec.code), spec.code_root))


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
    code = code_fingerprint(tuple(spec.code), spec.code_root)
    reason = "forced" if force else why_stale(record, input_hashes, spec.params, spec.outputs, code)
    if reason is None:
        log.info("%s: up to date, skipped (code, inputs, parameters and outputs match %s)", spec.key,
                 manifest.path.name)
        log_settings(spec.key, spec.params, f"inputs {', '.join(f'{k}={p}' for k, p in spec.inputs.items())}")
        return StageOutcome(spec.key, ran=False, reason="up to date", summary=record.get("summary", {}))

    log.info("%s: running (%s)", spec.key, reason)
    log_settings(spec.key, spec.params, f"inputs {', '.join(f'{k}={p}' for k, p in spec.inputs.items())}; "
                                        f"outputs {', '.join(str(p) for p in spec.outputs)}")
    entry: dict[str, Any] = {
        "status": "running",
        "inputs": {name: {"path": str(path), "sha256": input_hashes[name]} for name, path in spec.inputs.items()},
        "params": _plain(spec.params),
        "outputs": [str(p) for p in spec.outputs],
        "versions": package_versions(),
        "code": code,
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
