"""learned: the mask the model draws itself (dfaker, villain), cut at 0.5; it follows what the landmarks
miss (hair over the brow, a hand in front of the chin) as far as training taught it."""
from __future__ import annotations

import numpy as np

from deid.stages.masks import MASKS


@MASKS.register("learned")
class LearnedMask:
    needs_learned_mask = True

    def process(self, landmarks: np.ndarray, size: int, learned: np.ndarray | None) -> np.ndarray:
        assert learned is not None, "convert refuses a model without a learned mask before any frame"
        return (learned > 0.5).astype(np.uint8) * 255
