"""The swap autoencoders: a registry of model families chosen by name.

Every family is a `SwapModel` (models/swap/blocks.py): one shared `encoder`, `decoder_a` and
`decoder_b`; `forward(x, side)` returns (rgb, mask or None) in 0..1; class attributes (`input_size`,
`output_size`, `coverage`, `batch_size`, ...) are the family's defaults; `arch()` is the dict of
shape-defining keys (`ARCH_KEYS`) that a checkpoint freezes. Each family is one module here whose
class is registered with `@FAMILIES.register("name")`; `train.model` / `deid train --model` choices are
the registered names, and plugins named in $DEID_PLUGINS add their own (core/plugins.py).

    original  64 -> 64 px, faceswap's default (dense latent 1024, upscale decoders)
    dfaker    64 -> 128 px, residual decoder blocks, learned mask
    villain   256 -> 256 px, residual blocks, output skip connections, learned mask
"""
from __future__ import annotations

from typing import Any, Callable

from deid.core.plugins import Registry
from deid.models.swap.blocks import SwapModel

Family = type[SwapModel]


class FamilyRegistry(Registry[Family]):
    def register(self, name: str) -> Callable[[Family], Family]:
        """Decorator: `@FAMILIES.register("name")` on a SwapModel subclass; also sets the class's `name`.

        `name` is what arch() writes into state.json and what convert looks the family up by, so it must be
        the registered name: a subclass of a built-in family would otherwise record its parent's name.
        """
        add = super().register(name)

        def named(cls: Family) -> Family:
            cls.name = name
            return add(cls)
        return named


# Built-in order is the order of the CLI's choices; `original` first, as the default.
FAMILIES = FamilyRegistry("model family", ["deid.models.swap.original", "deid.models.swap.dfaker", "deid.models.swap.villain"])


def family(name: str, key: str | None = None) -> Family:
    """The class of family `name` (its defaults: input_size, batch_size, cpu_sizes, ...); a ConfigError naming
    `key` (e.g. train.model) and the registered names otherwise."""
    return FAMILIES.get(name, key)


def build_model(name: str, **arch: Any) -> SwapModel:
    """A freshly initialised model of family `name`; `arch` overrides its default sizes (None = default).

    Raises ValueError with a readable reason for an unknown family or an impossible size.
    """
    if name not in FAMILIES.names():
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(FAMILIES.names())}")
    cls = FAMILIES.get(name)
    return cls(**{key: value for key, value in arch.items() if value is not None and key != "model"})


__all__ = ["FAMILIES", "SwapModel", "build_model", "family"]
