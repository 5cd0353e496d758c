"""Face detectors, chosen by name: `mtcnn` (PyTorch port, batched, GPU when present) and `hog` (dlib, CPU).

Both return boxes in the pixels of the image they were given, largest face first. A detector also
knows how to turn its box into the box dlib's landmark predictor was trained on (dlib's own HOG
boxes): MTCNN boxes are taller and sit lower, and feeding them unchanged shifts the 68 landmarks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from deid.core.plugins import Registry
from deid.models.landmarks import Rect


@dataclass(frozen=True)
class FaceBox:
    rect: Rect
    score: float
    keypoints: np.ndarray | None = None  # (5, 2): eyes, nose, mouth corners, when the detector gives them
    tracked: bool = False  # found by following the previous frame's landmarks, not by the detector


class FaceDetector(Protocol):
    name: str

    def detect(self, images: Sequence[np.ndarray]) -> list[list[FaceBox]]:
        """RGB uint8 images -> faces per image, largest first."""

    def landmark_rect(self, face: FaceBox) -> Rect:
        """The box to give dlib's shape predictor for this detection."""


class HogDetector:
    """dlib's HOG + linear SVM frontal detector: no GPU needed, weak on turned and small faces."""

    name = "hog"

    def __init__(self, min_face_size: int = 40) -> None:
        import dlib

        self._detector = dlib.get_frontal_face_detector()
        self._min_face_size = min_face_size
        # The detector's window is 80 px; each upsampling halves the smallest face it can see.
        self._upsample = 0 if min_face_size >= 80 else (1 if min_face_size >= 40 else 2)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[FaceBox]]:
        results = []
        for image in images:
            rects, scores, _ = self._detector.run(np.ascontiguousarray(image), self._upsample, 0.0)
            faces = [FaceBox(Rect(r.left(), r.top(), r.width(), r.height()), float(s)) for r, s in zip(rects, scores)
                     if min(r.width(), r.height()) >= self._min_face_size]
            results.append(sorted(faces, key=lambda f: -f.rect.w * f.rect.h))
        return results

    def landmark_rect(self, face: FaceBox) -> Rect:
        return face.rect


class MtcnnDetector:
    """MTCNN (Zhang et al. 2016) in PyTorch with the weights the `mtcnn` package ships."""

    name = "mtcnn"

    def __init__(self, device: torch.device, min_face_size: int = 40) -> None:
        from deid.models.mtcnn import MTCNN

        self._mtcnn = MTCNN(device=device, min_face_size=min_face_size)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[FaceBox]]:
        return [[FaceBox(Rect(*d.box), float(d.score), np.asarray(d.keypoints, np.float32)) for d in dets]
                for dets in self._mtcnn.detect(images)]

    def landmark_rect(self, face: FaceBox) -> Rect:
        # Fitted on 14 real faces of tests/data (median over faces both detectors found): dlib's own
        # boxes are square, 1.10x the MTCNN width, centred 4.4 % of the MTCNN height lower.
        # tests/test_extract.py checks that landmarks fitted from either box agree.
        r = face.rect
        side = MTCNN_TO_DLIB_SCALE * r.w
        cx = r.x + r.w / 2
        cy = r.y + r.h / 2 + MTCNN_TO_DLIB_SHIFT * r.h
        return Rect(cx - side / 2, cy - side / 2, side, side)


MTCNN_TO_DLIB_SCALE = 1.10
MTCNN_TO_DLIB_SHIFT = 0.044


DetectorFactory = Callable[[torch.device, int], FaceDetector]
# Extraction detectors, by name: a plugin is a factory (device, min_face_px) -> FaceDetector registered
# with `@DETECTORS.register("name")` in a module of its own (or named in $DEID_PLUGINS).
DETECTORS: Registry[DetectorFactory] = Registry("detector", ["deid.models.detectors"])


@DETECTORS.register("mtcnn")
def _mtcnn(device: torch.device, min_face_size: int) -> FaceDetector:
    return MtcnnDetector(device, min_face_size)


@DETECTORS.register("hog")
def _hog(device: torch.device, min_face_size: int) -> FaceDetector:
    return HogDetector(min_face_size)


def make_detector(name: str, device: torch.device, min_face_size: int) -> FaceDetector:
    return DETECTORS.get(name, "extract.detector")(device, min_face_size)
