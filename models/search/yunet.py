"""`yunet`: a second detector family for the search (models/yunet.py), alone or united with CenterFace.

YuNet runs at the scale where the smallest face asked for appears ~24 px: on our crowd clip (bench/crowd.py
built with 8-14 px faces, 640x360) it found 12 px faces in 58-79 % of frames at 1x, and 10-14 px ones in
every frame at 2x (8 px ones in 4 %). It is ~10x faster than CenterFace at the same size (26 ms against
296 ms per 640x360 frame on one CPU core at their search scales). The same coarse pass and second look as
CenterFace's (models/search/looks.py) are added.

`centerface+yunet` runs both searches and merges their boxes per frame: a face one family misses the other
may find (bench/recall.py measures the union per face size, lighting and pose). The leak check must stay a
third family (mtcnn), independent of both.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from deid.models.search import SEARCHES
from deid.models.search.centerface import CenterFaceSearch
from deid.models.search.looks import merge, search_looks
from deid.models.yunet import YuNet

THRESHOLD = 0.5  # no box on no_face.mp4 even at 0.3; 0.5 keeps the measured small-face recall at 2x
_RELIABLE_PX = 24.0
_MIN_SCALE = 0.25


class YuNetSearch:
    name = "yunet"
    coarse_pass = True  # switched off only by bench/recall.py to measure each look
    second_look = True

    def __init__(self, device: torch.device, min_face: int) -> None:
        del device  # OpenCV's DNN runs on the CPU; the file is small enough that this is cheap
        self._net = YuNet()
        self.scale = float(np.clip(_RELIABLE_PX / max(1, min_face), _MIN_SCALE, 2.0))

    def find(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        return search_looks(frames, self._detect, self.scale, self.coarse_pass, self.second_look)

    def _detect(self, frames: Sequence[np.ndarray], scale: float) -> list[np.ndarray]:
        return self._net.detect(frames, THRESHOLD, scale)


class UnionSearch:
    """Every box of each member search, merged per frame."""

    def __init__(self, name: str, members: Sequence[object]) -> None:
        self.name = name
        self.members = list(members)

    def find(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        found = [member.find(frames) for member in self.members]  # type: ignore[attr-defined]
        return [merge([boxes[i] for boxes in found]) for i in range(len(frames))]


@SEARCHES.register("yunet")
def _make(device: torch.device, min_face: int) -> YuNetSearch:
    return YuNetSearch(device, min_face)


@SEARCHES.register("centerface+yunet")
def _make_union(device: torch.device, min_face: int) -> UnionSearch:
    return UnionSearch("centerface+yunet", [CenterFaceSearch(device, min_face), YuNetSearch(device, min_face)])
