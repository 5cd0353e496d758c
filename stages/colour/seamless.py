"""seamless: Poisson blending (cv2.seamlessClone); the face is left as it is where OpenCV refuses (the mask
touches the region's border)."""
from __future__ import annotations

import cv2
import numpy as np

from deid.stages.colour import COLOURS


@COLOURS.register("seamless")
class SeamlessClone:
    def process(self, face: np.ndarray, frame_region: np.ndarray, inside: np.ndarray) -> np.ndarray:
        mask = inside.astype(np.uint8) * 255
        mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = 0
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            return face
        centre = (int((xs.min() + xs.max()) // 2), int((ys.min() + ys.max()) // 2))
        try:
            return cv2.seamlessClone(np.ascontiguousarray(face), np.ascontiguousarray(frame_region), mask, centre,
                                     cv2.NORMAL_CLONE)
        except cv2.error:
            return face
