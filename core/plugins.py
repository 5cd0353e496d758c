"""Plugin registries: one per extension family, filled by a decorator, read by config, CLI and bench.

A plugin is one module that calls `REGISTRY.register("name")` on its implementation. Built-in plugins
are listed by module name next to their registry (an explicit import list, no directory scanning);
plugins of your own are modules named in the environment variable `DEID_PLUGINS` (comma-separated,
importable from `PYTHONPATH`), imported before any list of names is read, so `deid --help`, the CLI
`choices` and pipeline.yaml validation know them without editing any file of deid.
"""
from __future__ import annotations

import importlib
import os
from typing import Callable, Generic, Sequence, TypeVar

from deid.core.errors import ConfigError, DeidError

T = TypeVar("T")
PLUGINS_ENV = "DEID_PLUGINS"


class Registry(Generic[T]):
    def __init__(self, family: str, builtins: Sequence[str]) -> None:
        # `builtins` is a literal list of module names: the runner's code fingerprint reads it from the
        # source, so that editing a built-in plugin re-runs the stages that use it.
        self.family = family
        self._builtins = tuple(builtins)
        self._entries: dict[str, T] = {}
        self._loaded = False

    @property
    def builtin_modules(self) -> tuple[str, ...]:
        """The built-in plugin modules, by name, in their listed order (imported at the first lookup)."""
        return self._builtins

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name")` on the plugin's class or factory."""
        def add(entry: T) -> T:
            self._entries[name] = entry
            return entry
        return add

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._builtins:
            importlib.import_module(module)
        load_external_plugins()
        # Built-ins in their listed order, then plugins: a module imported directly before the first
        # lookup (models.swap.villain, say) registers early, and must not reorder choices and messages.
        rank = {module: i for i, module in enumerate(self._builtins)}
        self._entries = dict(sorted(self._entries.items(),
                                    key=lambda item: rank.get(getattr(item[1], "__module__", ""), len(rank))))

    def names(self) -> tuple[str, ...]:
        self._load()
        return tuple(self._entries)

    def get(self, name: str, key: str | None = None) -> T:
        """The entry called `name`; a ConfigError naming `key` (e.g. convert.color) and the choices otherwise."""
        self._load()
        if name not in self._entries:
            where = key or self.family
            raise ConfigError(f"{where} must be one of {', '.join(self._entries)}; got {name!r}")
        return self._entries[name]


def load_external_plugins() -> None:
    """Import the modules named in $DEID_PLUGINS (idempotent: Python imports each module once)."""
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise DeidError(f"{PLUGINS_ENV}: cannot import plugin module {module!r} ({exc}); check the name and "
                            "PYTHONPATH") from None
