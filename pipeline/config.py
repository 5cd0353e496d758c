"""pipeline.yaml -> typed, validated objects.

Each section is a frozen dataclass; the field names are the YAML keys and the defaults are the
defaults documented in pipeline.yaml. Loading is strict: an unknown key or a value of the wrong type
is a `ConfigError` that names the exact key (`extract.size`) and the file, because a typo that is
silently ignored costs a user a night of GPU time. For the same reason a key given twice (YAML keeps
the last one without a word) and a float that is not finite (`.nan`, `.inf`) are errors too.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from deid.core.errors import ConfigError
from deid.core.settings import as_plain
from deid.stages.clean_config import CleanConfig
from deid.stages.convert_config import ConvertConfig
from deid.stages.evaluate_config import EvaluateConfig
from deid.stages.extract_config import ExtractConfig
from deid.stages.protect_config import ProtectConfig
from deid.stages.train_config import TrainConfig

Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class PipelineConfig:
    pair: str = "pair"
    runs_dir: Path = Path("runs")
    target: Path | None = None
    donor: Path | None = None
    convert_video: Path | None = None
    target_references: tuple[Path, ...] = ()
    donor_references: tuple[Path, ...] = ()
    device: Device = "auto"
    # Process what decodes of a truncated or damaged input instead of stopping (recorded in each summary).
    allow_damaged: bool = False
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    convert: ConvertConfig = field(default_factory=ConvertConfig)
    protect: ProtectConfig = field(default_factory=ProtectConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    # The file this config was read from, for messages about a key it lacks; not a YAML key, not in as_plain.
    source: Path | None = field(default=None, compare=False, repr=False, metadata={"internal": True})

    def __post_init__(self) -> None:
        if not self.pair or "/" in self.pair or self.pair.startswith("."):
            raise ConfigError(f"pair must be a plain folder name, got {self.pair!r}")

    def require(self, key: str, example: str) -> None:
        """Raise a one-line error naming the config file when `key`, which this command needs, is not set."""
        if getattr(self, key) is None:
            raise ConfigError(f"{self.source or 'pipeline config'}: '{key}' is not set; add {key}: {example}")


def load_config(path: Path) -> PipelineConfig:
    """Read a pipeline.yaml; relative paths in it are relative to the file's folder."""
    path = Path(path)
    try:
        raw = _strict_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (copy pipeline.yaml from the project root)") from None
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}: line {exc.line}: duplicate key '{exc.key}' (first at line {exc.first}); "
                          "keep one of them") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    try:
        config = build(PipelineConfig, raw, prefix="")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return dataclasses.replace(_resolve_paths(config, path.parent.resolve()), source=path)


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int, first: int) -> None:
        super().__init__(f"duplicate key {key!r} at line {line}")
        self.key, self.line, self.first = key, line, first


def _strict_yaml(text: str) -> Any:
    """yaml.safe_load, except that a key given twice in one mapping raises `_DuplicateKey`.

    The check runs on the composed node tree, where the enclosing keys and the line numbers are still known.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _refuse_duplicates(node, "")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _refuse_duplicates(node: yaml.Node, prefix: str) -> None:
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicates(item, f"{prefix.rstrip('.')}[{index}].")
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[tuple[str, str], int] = {}
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *defaults` is meant to be overridden by the keys next to it
        line = key_node.start_mark.line + 1
        identity = (key_node.tag, str(key_node.value))
        name = f"{prefix}{key_node.value}"
        if identity in seen:
            raise _DuplicateKey(name, line, seen[identity])
        seen[identity] = line
        _refuse_duplicates(value_node, f"{name}.")


def config_from_mapping(raw: Mapping[str, Any], base_dir: Path) -> PipelineConfig:
    return _resolve_paths(build(PipelineConfig, dict(raw), prefix=""), Path(base_dir).resolve())


def _resolve_paths(config: PipelineConfig, base: Path) -> PipelineConfig:
    def resolve(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else base / p)

    return dataclasses.replace(
        config, runs_dir=resolve(config.runs_dir), target=resolve(config.target), donor=resolve(config.donor),
        convert_video=resolve(config.convert_video),
        target_references=tuple(resolve(p) for p in config.target_references),
        donor_references=tuple(resolve(p) for p in config.donor_references),
        evaluate=dataclasses.replace(config.evaluate, au_original=resolve(config.evaluate.au_original),
                                     au_swapped=resolve(config.evaluate.au_swapped),
                                     gallery=resolve(config.evaluate.gallery),
                                     pyfeat_model_dir=resolve(config.evaluate.pyfeat_model_dir)),
        train=dataclasses.replace(config.train, init_from=resolve(config.train.init_from)),
    )


def build(cls: type, raw: Mapping[str, Any], prefix: str) -> Any:
    """Instantiate dataclass `cls` from a mapping, checking every key and type."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        raise ConfigError(
            f"unknown key '{prefix}{unknown[0]}' (known keys{' in ' + prefix.rstrip('.') if prefix else ''}: "
            f"{', '.join(fields)})"
        )
    kwargs = {name: _coerce(f"{prefix}{name}", hints[name], value) for name, value in raw.items()}
    return cls(**kwargs)


def _coerce(key: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value if value is not None else {}, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, inner[0], value)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", args[0], v) for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            number = math.inf
        if not math.isfinite(number):
            # NaN passes every range check (all its comparisons are false) and inf overflows later.
            raise ConfigError(f"{key} must be a finite number, got {number}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key} must be a path string, got {value!r}")
        return Path(value).expanduser()
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # a bug in this module, not user input

__all__ = ["CleanConfig", "ConvertConfig", "ExtractConfig", "PipelineConfig", "as_plain", "config_from_mapping",
           "load_config"]
