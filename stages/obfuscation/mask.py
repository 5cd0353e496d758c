"""mask: a solid fill. Nothing of the face survives; `black` is convert's historic name for it."""
from __future__ import annotations

import numpy as np

from deid.stages.obfuscation import OBFUSCATIONS


@OBFUSCATIONS.register("mask")
@OBFUSCATIONS.register("black")
class SolidMask:
    solid = True
    weak = False

    def process(self, frame: np.ndarray, face_size: float) -> np.ndarray:
        return np.zeros_like(frame)
