"""blur: a Gaussian blur, sigma = face size / 6. Weak: the parrot attack re-identifies it."""
from __future__ import annotations

import cv2
import numpy as np

from deid.stages.obfuscation import OBFUSCATIONS


@OBFUSCATIONS.register("blur")
class Blur:
    solid = False
    weak = True

    def process(self, frame: np.ndarray, face_size: float) -> np.ndarray:
        return cv2.GaussianBlur(frame, (0, 0), max(3.0, face_size / 6.0))
