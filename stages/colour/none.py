"""none: the model's colours as they are."""
from __future__ import annotations

import numpy as np

from deid.stages.colour import COLOURS


@COLOURS.register("none")
class NoCorrection:
    def process(self, face: np.ndarray, frame_region: np.ndarray, inside: np.ndarray) -> np.ndarray:
        return face
