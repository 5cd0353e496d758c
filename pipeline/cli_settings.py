"""Command-line options derived from the settings' dataclass fields, and settings built back from them.

A setting is declared once, as a field of its pipeline.yaml section's dataclass (stages/*_config.py): the
option's type, default and (for a Literal) choices come from that field, so `deid extract --size` and
`extract.size` cannot drift apart; the CLI adds only the words of its help. Building a config from the
parsed options goes through the dataclass too, so the CLI's checks are pipeline.yaml's checks, and an error
names the option (`--min-score`) instead of the key.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

from deid.core.errors import ConfigError

C = TypeVar("C")


def add_setting(parser: argparse.ArgumentParser, config: type, name: str, help: str = "",
                choices: Sequence[str] | None = None, flag: str | None = None, metavar: str | None = None) -> None:
    """Add `--name` for the field `name` of dataclass `config`; `(default X)` is appended to `help`."""
    field = _field(config, name)
    hint = _plain(typing.get_type_hints(config)[name])
    flag = flag or "--" + name.replace("_", "-")
    if hint is bool:
        if field.default is not False:
            raise TypeError(f"{config.__name__}.{name}: a flag can only switch on a setting that is off by default")
        parser.add_argument(flag, action="store_true", dest=name, help=help or None)
        return
    kwargs: dict[str, Any] = {"dest": name, "default": field.default}
    if typing.get_origin(hint) is typing.Literal:
        kwargs["choices"] = typing.get_args(hint)
    elif hint in (int, float, Path):
        kwargs["type"] = hint
    elif hint is not str:
        raise TypeError(f"{config.__name__}.{name}: no command-line form for {hint!r}")
    if choices is not None:
        kwargs["choices"] = tuple(choices)
    if metavar:
        kwargs["metavar"] = metavar
    shown = "none" if field.default is None else field.default
    kwargs["help"] = f"{help} (default {shown})" if help else f"default {shown}"
    parser.add_argument(flag, **kwargs)


def settings_from_args(config: type[C], args: argparse.Namespace, command: str, section: str,
                       **extra: Any) -> C:
    """`config` built from every parsed option named like one of its fields (plus `extra`); a wrong value is
    one line naming the option: `deid extract: --min-score must be in 0..1, got 2.0`."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config)  # type: ignore[arg-type]
              if hasattr(args, f.name)}
    try:
        return config(**{**values, **extra})
    except ConfigError as exc:
        raise option_error(command, exc, section) from None


def option_error(command: str, exc: ConfigError, section: str) -> ConfigError:
    """A config error about `section.some_key`, reworded for the command line (`--some-key`)."""
    text = str(exc)
    for key in sorted({word for word in text.replace(",", " ").split() if word.startswith(section + ".")}, key=len,
                      reverse=True):
        text = text.replace(key, "--" + key[len(section) + 1:].replace("_", "-"))
    return ConfigError(f"deid {command}: {text}")


def _field(config: type, name: str) -> dataclasses.Field:
    for field in dataclasses.fields(config):
        if field.name == name:
            return field
    raise KeyError(f"{config.__name__} has no setting {name!r}")  # a bug in the CLI's declaration


def _plain(hint: Any) -> Any:
    """`X | None` -> X (None is then the default, "not set")."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint
