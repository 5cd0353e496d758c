"""Reading a `deid batch` manifest: many target/donor pairs, each becoming one PipelineConfig.

YAML:
    config: pipeline.yaml          # optional base configuration (default: the built-in defaults)
    defaults: {train: {iterations: 20000}}   # optional, pipeline.yaml keys for every pair
    pairs:
      - name: actor01              # folder under RUNS_DIR
        target: clips/actor01/     # a video, a folder of images or a folder of clips
        donor: donors/male.mp4
        convert: clips/actor01/happy.mp4       # optional: the video to de-identify (default: target)
        target_references: [a.jpg] # optional photos
        donor_references: [b.jpg]
        overrides: {device: cuda}  # optional, pipeline.yaml keys for this pair

CSV: one row per pair with the columns name, target, donor and optionally convert, target_references,
donor_references (several photos separated by `;`); any other column is a dotted pipeline.yaml key
(`train.iterations`) overriding it for that row, its cell read as YAML (so `20` is a number) and an empty
cell leaving it alone.

Precedence, lowest first: the base config, `defaults`, the pair's overrides, `--set key=value`. Paths in
the manifest (and in --set values) are relative to the manifest's folder. A mistake in the manifest's
structure stops the batch with one line naming it; a pair whose own settings are wrong (a missing video,
a bad override) becomes a failed pair, so the others still run.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from deid.core.errors import ConfigError, DeidError
from deid.pipeline.config import PipelineConfig, as_plain, config_from_mapping, load_config

PAIR_KEYS = ("name", "target", "donor", "convert", "target_references", "donor_references", "overrides", "ravdess")
TOP_KEYS = ("config", "defaults", "pairs")
# Set per pair by the manifest; an override of them would silently redirect a pair's inputs or outputs.
RESERVED = ("pair", "runs_dir", "target", "donor", "convert_video", "target_references", "donor_references")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class PairJob:
    name: str
    config: PipelineConfig | None  # None when the pair's settings are invalid: `error` says why
    error: str | None = None
    info: Mapping[str, Any] = field(default_factory=dict)


def load_batch(manifest: Path, runs_dir: Path, sets: Sequence[str] = (), config: Path | None = None) -> list[PairJob]:
    """Every pair of `manifest` as a PipelineConfig writing into `runs_dir`/<name>/."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ConfigError(f"{manifest}: no such batch manifest; give a .yaml or .csv file of pairs")
    base_dir = manifest.resolve().parent
    if manifest.suffix.lower() == ".csv":
        document = {"pairs": _read_csv(manifest)}
    else:
        document = _read_yaml(manifest)
    base_path = config or (base_dir / document["config"] if document.get("config") else None)
    base = as_plain(load_config(base_path)) if base_path else {}
    defaults = _mapping(document.get("defaults") or {}, f"{manifest}: defaults")
    set_values = parse_sets(sets)
    for where, values in (("defaults", defaults), ("--set", set_values)):
        _check_reserved(values, f"{manifest}: {where}" if where == "defaults" else where)

    jobs, seen = [], set()
    for index, entry in enumerate(document["pairs"]):
        where = f"{manifest}: pairs[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where} must be a mapping with name, target and donor")
        unknown = [k for k in entry if k not in PAIR_KEYS]
        if unknown:
            raise ConfigError(f"{where}: unknown key '{unknown[0]}' (known keys: {', '.join(PAIR_KEYS)})")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{where}: name must be a plain folder name (letters, digits, . _ -), got {name!r}")
        if name in seen:
            raise ConfigError(f"{where}: name {name!r} is used twice; every pair needs its own folder")
        seen.add(name)
        jobs.append(_job(entry, name, base, defaults, set_values, Path(runs_dir), base_dir, f"{manifest}: pair {name}"))
    if not jobs:
        raise ConfigError(f"{manifest}: no pairs; add entries under 'pairs:' (YAML) or rows (CSV)")
    return jobs


def _job(entry: Mapping[str, Any], name: str, base: dict, defaults: dict, set_values: dict, runs_dir: Path,
         base_dir: Path, where: str) -> PairJob:
    info = dict(entry.get("ravdess") or {})
    try:
        overrides = _mapping(entry.get("overrides") or {}, f"{where}: overrides")
        _check_reserved(overrides, f"{where}: overrides")
        raw = _merge(base, defaults, overrides, set_values)
        raw.update(pair=name, runs_dir=str(Path(runs_dir).resolve()), target=entry.get("target"),
                   donor=entry.get("donor"), convert_video=entry.get("convert"),
                   target_references=list(entry.get("target_references") or []),
                   donor_references=list(entry.get("donor_references") or []))
        for key in ("target", "donor"):
            if not raw[key]:
                raise ConfigError(f"'{key}' is missing")
        config = config_from_mapping(raw, base_dir)
        _check_inputs_exist(config)
    except DeidError as exc:
        return PairJob(name, None, f"{where}: {exc}", info)
    return PairJob(name, config, None, info)


def _check_inputs_exist(config: PipelineConfig) -> None:
    for key in ("target", "donor", "convert_video"):
        path = getattr(config, key)
        if path is not None and not Path(path).exists():
            raise ConfigError(f"{key} {path} does not exist; fix the path in the manifest")
    for key in ("target_references", "donor_references"):
        for path in getattr(config, key):
            if not Path(path).is_file():
                raise ConfigError(f"{key}: {path} does not exist; fix the path in the manifest")


def parse_sets(sets: Sequence[str]) -> dict[str, Any]:
    """`train.iterations=20` -> {"train": {"iterations": 20}}; values are read as YAML."""
    result: dict[str, Any] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, for example --set train.iterations=20")
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML; quote it") from None
        _put(result, key.strip(), parsed)
    return result


def _put(target: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{dotted}: '{part}' is a value, not a section")
    target[leaf] = value


def _merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                merged[key] = _merge(merged[key], value)
            else:
                merged[key] = value
    return merged


def _check_reserved(values: Mapping[str, Any], where: str) -> None:
    reserved = [k for k in values if k in RESERVED]
    if reserved:
        raise ConfigError(f"{where}: '{reserved[0]}' is set by each pair of the manifest, not as an override")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping of pipeline.yaml keys, got {type(value).__name__}")
    return dict(value)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the manifest") from None
    if not isinstance(document, dict) or "pairs" not in document:
        raise ConfigError(f"{path}: a batch manifest needs a top-level 'pairs:' list (or use a .csv)")
    unknown = [k for k in document if k not in TOP_KEYS]
    if unknown:
        raise ConfigError(f"{path}: unknown key '{unknown[0]}' (known keys: {', '.join(TOP_KEYS)})")
    if not isinstance(document["pairs"], list):
        raise ConfigError(f"{path}: 'pairs' must be a list of pairs")
    return document


def _read_csv(path: Path) -> list[dict[str, Any]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
            columns = list(rows[0].keys()) if rows else []
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: not a readable CSV ({exc}); save it as UTF-8 CSV") from None
    missing = [c for c in ("name", "target", "donor") if c not in columns]
    if rows and missing:
        raise ConfigError(f"{path}: missing column '{missing[0]}' (needed: name, target, donor)")
    pairs = []
    for number, row in enumerate(rows, start=2):
        entry: dict[str, Any] = {}
        overrides: dict[str, Any] = {}
        for column, cell in row.items():
            if column is None:
                raise ConfigError(f"{path}: line {number} has more cells than the header has columns")
            cell = (cell or "").strip()
            if not cell:
                continue
            if column in ("name", "target", "donor", "convert"):
                entry[column] = cell
            elif column in ("target_references", "donor_references"):
                entry[column] = [p.strip() for p in cell.split(";") if p.strip()]
            else:
                try:
                    _put(overrides, column, yaml.safe_load(cell))
                except yaml.YAMLError:
                    raise ConfigError(f"{path}: line {number}, column {column}: not a valid value") from None
        entry["overrides"] = overrides
        pairs.append(entry)
    return pairs
