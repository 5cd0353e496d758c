"""The swap autoencoders: a registry of model families chosen by name.

Every family is a `SwapModel` (models/swap/blocks.py): one shared `encoder`, `decoder_a` and
`decoder_b`; `forward(x, side)` returns (rgb, mask or None) in 0..1; class attributes `input_size`,
`output_size`, `coverage` and `batch_size` are the family's defaults; `arch()` is the dict of
shape-defining keys that a checkpoint freezes.

    original  64 -> 64 px, faceswap's default (dense latent 1024, upscale decoders)
    dfaker    64 -> 128 px, residual decoder blocks, learned mask
    villain   256 -> 256 px, residual blocks, output skip connections, learned mask
"""
from __future__ import annotations

from typing import Any

from models.swap.blocks import SwapModel
from models.swap.dfaker import DFaker
from models.swap.original import Original
from models.swap.villain import Villain

MODEL_FAMILIES: dict[str, type[SwapModel]] = {"original": Original, "dfaker": DFaker, "villain": Villain}


def build_model(name: str, **arch: Any) -> SwapModel:
    """A freshly initialised model of family `name`; `arch` overrides its default sizes (None = default).

    Raises ValueError with a readable reason for an unknown family or an impossible size.
    """
    if name not in MODEL_FAMILIES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_FAMILIES)}")
    cls = MODEL_FAMILIES[name]
    return cls(**{key: value for key, value in arch.items() if value is not None and key != "model"})


__all__ = ["MODEL_FAMILIES", "SwapModel", "build_model"]
