"""transfer: Reinhard et al. 2001, mean and spread matched per LAB channel."""
from __future__ import annotations

import cv2
import numpy as np

from deid.stages.colour import COLOURS


@COLOURS.register("transfer")
class ColourTransfer:
    def process(self, face: np.ndarray, frame_region: np.ndarray, inside: np.ndarray) -> np.ndarray:
        src = cv2.cvtColor(face, cv2.COLOR_RGB2LAB).astype(np.float32)
        ref = cv2.cvtColor(frame_region, cv2.COLOR_RGB2LAB).astype(np.float32)
        s_mean, s_std = src[inside].mean(0), src[inside].std(0) + 1e-6
        r_mean, r_std = ref[inside].mean(0), ref[inside].std(0) + 1e-6
        out = (src - s_mean) * (r_std / s_std) + r_mean
        return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
