"""Face search for privacy: detectors configured for recall, chosen by name from a registry.

A *search* finds every face it can in whole frames, small and turned ones included, so the protection
pass can hide them and the leak check can look for what it missed. It is not the extraction detector
(`models/detectors.py`), which is tuned for clean training material. Each plugin is one module in this
package that calls `register`; CLI choices and config validation read `names()`.
"""
from __future__ import annotations

import importlib
from typing import Callable, Protocol, Sequence

import numpy as np
import torch


class FaceSearch(Protocol):
    name: str

    def find(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """RGB uint8 frames of one size -> per frame an (n, 5) float32 array: x0, y0, x1, y1, score."""


Factory = Callable[[torch.device, int], FaceSearch]
_REGISTRY: dict[str, Factory] = {}
_PLUGINS = ("models.search.centerface", "models.search.mtcnn")


def register(name: str) -> Callable[[Factory], Factory]:
    """Decorator: `@register("name")` on a factory `(device, min_face_px) -> FaceSearch`."""
    def add(factory: Factory) -> Factory:
        _REGISTRY[name] = factory
        return factory
    return add


def _load() -> None:
    for module in _PLUGINS:
        importlib.import_module(module)


def names() -> tuple[str, ...]:
    _load()
    return tuple(_REGISTRY)


def make_search(name: str, device: torch.device, min_face: int) -> FaceSearch:
    _load()
    if name not in _REGISTRY:
        raise ValueError(f"unknown face search {name!r}; choose from {', '.join(_REGISTRY)}")
    return _REGISTRY[name](device, min_face)
