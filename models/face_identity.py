"""Who is in a frame: the largest face's 68 landmarks and its 128-d face_recognition embedding.

The one identity function of deid: evaluate scores with it, and the training monitor (identity.csv)
measures its swaps with it, so the numbers a user watches during training are the report's numbers.

Detection runs batched on a copy of the frames shrunk to `detect_side` px on their short side (720p ->
360 px: detection cost falls with the square of the scale, and a face big enough to be recognised is
still found), on the GPU when there is one; landmarks and the embedding are fitted on the full-size
frame, so the identity numbers do not depend on the detection size.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

from deid.models.detectors import FaceBox, FaceDetector, make_detector
from deid.models.landmarks import IdentityModel, LandmarkModel, Rect

MTCNN_MIN_FACE = 12  # the smallest face MTCNN's first stage can see, px


class FaceIdentity:
    def __init__(self, device: torch.device, min_face_size: int = 40, detect_side: int = 360,
                 detector: str = "mtcnn") -> None:
        self.device = device
        self.min_face_size = min_face_size
        self.detect_side = detect_side
        self.detector_name = detector
        self.landmarks = LandmarkModel()
        self.identity = IdentityModel(str(device))
        self._detectors: dict[int, FaceDetector] = {}

    def _detector(self, min_face: int) -> FaceDetector:
        if min_face not in self._detectors:
            self._detectors[min_face] = make_detector(self.detector_name, self.device, min_face)
        return self._detectors[min_face]

    def largest_faces(self, frames: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        """Landmarks (68, 2) of the largest face in each frame, None where there is none."""
        if not frames:
            return []
        height, width = frames[0].shape[:2]
        same_size = all(f.shape[:2] == (height, width) for f in frames)
        if not same_size:
            return [self.largest_faces([f])[0] for f in frames]
        scale = min(1.0, self.detect_side / max(1, min(height, width)))
        min_face = max(MTCNN_MIN_FACE, int(round(self.min_face_size * scale)))
        detector = self._detector(min_face)
        small = frames if scale == 1.0 else [cv2.resize(f, (max(1, round(width * scale)), max(1, round(height * scale))),
                                                        interpolation=cv2.INTER_AREA) for f in frames]
        found = detector.detect(list(small))
        out: list[np.ndarray | None] = []
        for frame, faces in zip(frames, found):
            faces = [f for f in faces if max(f.rect.w, f.rect.h) / scale >= self.min_face_size]
            if not faces:
                out.append(None)
                continue
            largest = max(faces, key=lambda f: f.rect.w * f.rect.h)
            out.append(self.landmarks.predict(frame, _scaled(detector.landmark_rect(largest), 1.0 / scale)))
        return out

    def embed(self, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return self.identity.embed(frame, landmarks)

    def embed_many(self, faces: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """(n, 128) embeddings of (frame, landmarks) pairs in one batch."""
        return self.identity.embed_many(faces)

    def embed_largest(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """(n, 128) embeddings of each frame's largest face; NaN rows where no face is found."""
        out = np.full((len(frames), 128), np.nan, np.float32)
        found = [(i, frame, lm) for i, (frame, lm) in enumerate(zip(frames, self.largest_faces(frames))) if lm is not None]
        if found:
            out[[i for i, _, _ in found]] = self.embed_many([(frame, lm) for _, frame, lm in found])
        return out

    def reference(self, image: np.ndarray) -> np.ndarray | None:
        """Landmarks of the largest face of a reference photo, searched at full size down to 20 px."""
        faces: list[FaceBox] = self._detector(20).detect([image])[0]
        if not faces:
            return None
        largest = max(faces, key=lambda f: f.rect.w * f.rect.h)
        return self.landmarks.predict(image, self._detector(20).landmark_rect(largest))


def _scaled(rect: Rect, factor: float) -> Rect:
    return Rect(rect.x * factor, rect.y * factor, rect.w * factor, rect.h * factor)

