"""Convert's face masks: which pixels of the swapped face are pasted into the frame.

Each mask is one module here: a class registered with `@MASKS.register("name")` whose
`process(landmarks, size, learned)` gets the target's 68 landmarks in the model's output pixels, the
output's side in px and the model's own mask (float 0..1, size x size; None for a family that learns
none), and returns the hard mask: uint8 0/255, size x size (convert erodes and feathers it by
`convert.mask_erosion` / `convert.mask_blur`). The flag `needs_learned_mask` makes convert refuse a
model without a learned mask before it reads a frame. `convert.mask` / `deid convert --mask` choices are
the registered names.
"""
from __future__ import annotations

from typing import ClassVar, Protocol

import numpy as np

from deid.core.plugins import Registry


class FaceMask(Protocol):
    needs_learned_mask: ClassVar[bool]

    def process(self, landmarks: np.ndarray, size: int, learned: np.ndarray | None) -> np.ndarray:
        """The hard mask (uint8 0/255, size x size) of the face in the model's output space."""


MASKS: Registry[type[FaceMask]] = Registry(
    "mask", ["deid.stages.masks.extended", "deid.stages.masks.components", "deid.stages.masks.learned"])
