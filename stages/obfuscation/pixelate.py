"""pixelate: ~6 blocks across the face, so no eye, nose or mouth survives as a shape. Weak: the parrot
attack re-identifies it."""
from __future__ import annotations

import cv2
import numpy as np

from deid.stages.obfuscation import OBFUSCATIONS


@OBFUSCATIONS.register("pixelate")
class Pixelate:
    solid = False
    weak = True

    def process(self, frame: np.ndarray, face_size: float) -> np.ndarray:
        block = max(4, int(face_size / 6))
        small = cv2.resize(frame, (max(1, frame.shape[1] // block), max(1, frame.shape[0] // block)),
                           interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_NEAREST)
