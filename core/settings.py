"""Helpers every layer's settings share: range checks that name the key, and a JSON-able view of a config."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from deid.core.errors import ConfigError


def check_range(key: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{key} must be in {low}..{high}, got {value}")


def as_plain(obj: Any) -> Any:
    """A JSON-able view of a config object, for the manifest and state files."""
    if dataclasses.is_dataclass(obj):
        return {f.name: as_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not f.metadata.get("internal")}
    if isinstance(obj, (list, tuple)):
        return [as_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
