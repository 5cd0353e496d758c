"""components: overlapping convex hulls of the landmarks as they are (jaw, brows, nose; after faceswap's
"components" mask), the brows not raised: a tighter face than `extended`."""
from __future__ import annotations

import numpy as np

from deid.models.alignment import hull_mask
from deid.stages.masks import MASKS


@MASKS.register("components")
class ComponentsHull:
    needs_learned_mask = False

    def process(self, landmarks: np.ndarray, size: int, learned: np.ndarray | None) -> np.ndarray:
        return hull_mask(landmarks, size, "components")
