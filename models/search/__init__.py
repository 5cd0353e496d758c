"""Face search for privacy: detectors configured for recall, chosen by name from a registry.

A *search* finds every face it can in whole frames, small and turned ones included, so the protection
pass can hide them and the leak check can look for what it missed. It is not the extraction detector
(`models/detectors.py`), which is tuned for clean training material. Each plugin is one module in this
package that registers a factory with `SEARCHES.register`; CLI choices and config validation read `names()`.
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from deid.core.plugins import Registry


class FaceSearch(Protocol):
    name: str

    def find(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """RGB uint8 frames of one size -> per frame an (n, 5) float32 array: x0, y0, x1, y1, score."""


Factory = Callable[[torch.device, int], FaceSearch]
# A literal list: the runner's code fingerprint reads it, so editing a search plugin re-runs what it protected.
SEARCHES: Registry[Factory] = Registry("protect.search", ["deid.models.search.centerface", "deid.models.search.mtcnn",
                                                          "deid.models.search.yunet"])


def names() -> tuple[str, ...]:
    return SEARCHES.names()


def make_search(name: str, device: torch.device, min_face: int) -> FaceSearch:
    """The search called `name` (a ConfigError listing the choices otherwise), built for `device`."""
    return SEARCHES.get(name, "protect.search")(device, min_face)
