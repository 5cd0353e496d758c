"""`mtcnn`: our MTCNN port with recall settings (the leak check's default: a different family from CenterFace).

The pyramid starts at the smallest face asked for (MTCNN upsamples below its 12 px window). Measured
on our crowd clip of 10-14 px faces: the package's cascade thresholds (0.6, 0.7, 0.8) found 96 % of
them (the 10 px face in 71 % of frames), relaxed ones (0.5, 0.6, 0.7) 99 %, but the relaxed cascade
also fired (O-Net 0.79) on the ear and collar beside a solid mask, a false leak that would block
publishing. A checker's false alarm costs a user a re-run, so the package's thresholds are kept.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from deid.models.mtcnn import MTCNN
from deid.models.search import SEARCHES
from deid.models.search.looks import PIXEL_BUDGET

THRESHOLDS = (0.6, 0.7, 0.8)


class MtcnnSearch:
    name = "mtcnn"

    def __init__(self, device: torch.device, min_face: int) -> None:
        self._mtcnn = MTCNN(device=device, min_face_size=max(6, min_face), thresholds=THRESHOLDS)

    def find(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        if not frames:
            return []
        # P-Net's first pyramid level is the frame at 12 / min_face: chunks within the pixel budget bound
        # its memory (8 4K frames at once held ~2.6 GB in the first convolution alone).
        h, w = frames[0].shape[:2]
        per_frame = h * w * (12 / self._mtcnn.min_face_size) ** 2
        step = max(1, int(PIXEL_BUDGET // per_frame))
        return [boxes for i in range(0, len(frames), step) for boxes in self._find(frames[i:i + step])]

    def _find(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for detections in self._mtcnn.detect(frames):
            rows = [(x, y, x + w, y + h, d.score) for d in detections for x, y, w, h in [d.box]]
            out.append(np.asarray(rows, np.float32).reshape(-1, 5))
        return out


@SEARCHES.register("mtcnn")
def _make(device: torch.device, min_face: int) -> MtcnnSearch:
    return MtcnnSearch(device, min_face)
