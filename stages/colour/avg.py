"""avg: shift the face's mean colour to the frame's under the mask (cheap, keeps the face's own shading)."""
from __future__ import annotations

import numpy as np

from deid.stages.colour import COLOURS


@COLOURS.register("avg")
class AverageColour:
    def process(self, face: np.ndarray, frame_region: np.ndarray, inside: np.ndarray) -> np.ndarray:
        shift = frame_region[inside].astype(np.float32).mean(0) - face[inside].astype(np.float32).mean(0)
        return np.clip(face.astype(np.float32) + shift, 0, 255).astype(np.uint8)
