"""Obfuscation methods: how a face region is hidden (protect, baseline, convert's fallback).

Each method is one module here: a class registered with `@OBFUSCATIONS.register("name")` with
`process(frame, face_size) -> replacement` (RGB uint8, the frame's size: what the region becomes; the
caller blends it in under the region's feathered mask) and two flags: `solid` (nothing of the face
survives: the leak check may treat the filled region as empty) and `weak` (a low-pass that deid
evaluate's parrot attack defeats: a warning is logged). Strength is relative to the face, not the frame.
"""
from __future__ import annotations

from typing import ClassVar, Protocol

import numpy as np

from deid.core.plugins import Registry


class Obfuscation(Protocol):
    solid: ClassVar[bool]
    weak: ClassVar[bool]

    def process(self, frame: np.ndarray, face_size: float) -> np.ndarray:
        """What the face region becomes (the whole frame's size; only the masked part is used)."""


OBFUSCATIONS: Registry[type[Obfuscation]] = Registry(
    "obfuscation", ["deid.stages.obfuscation.mask", "deid.stages.obfuscation.blur", "deid.stages.obfuscation.pixelate"])
