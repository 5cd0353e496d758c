"""extended: the landmark hull with the brows raised up the forehead, so the original's brows are replaced
too and the swap does not show two pairs of eyebrows (the study's "double eyebrow")."""
from __future__ import annotations

import numpy as np

from deid.models.alignment import hull_mask
from deid.stages.masks import MASKS


@MASKS.register("extended")
class ExtendedHull:
    needs_learned_mask = False

    def process(self, landmarks: np.ndarray, size: int, learned: np.ndarray | None) -> np.ndarray:
        return hull_mask(landmarks, size, "extended")
