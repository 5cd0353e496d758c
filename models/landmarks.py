"""68-point landmarks and the 128-d identity embedding, both dlib models shipped by face_recognition_models.

These are the models that `face_recognition.face_landmarks` and `face_recognition.face_encodings` wrap;
we call dlib directly so the landmarks found once feed both the alignment and the embedding (the
wrapper would re-detect them) and so the models live on an instance, not in module globals.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import dlib
import numpy as np

from deid.core.errors import DeidError


def _model_paths() -> tuple[Path, Path]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # face_recognition_models imports pkg_resources, which warns on import
        try:
            import face_recognition_models
        except ImportError as exc:  # pragma: no cover - an install problem, reported plainly
            raise DeidError(
                f"face_recognition_models is not importable ({exc}); run `pip install face-recognition-models 'setuptools<81'`"
            ) from None
    return (Path(face_recognition_models.pose_predictor_model_location()),
            Path(face_recognition_models.face_recognition_model_location()))


@dataclass(frozen=True)
class Rect:
    """A box in pixels: x, y, width, height."""

    x: float
    y: float
    w: float
    h: float

    def to_dlib(self) -> dlib.rectangle:
        return dlib.rectangle(int(round(self.x)), int(round(self.y)),
                              int(round(self.x + self.w)), int(round(self.y + self.h)))


class LandmarkModel:
    """dlib's 68-point shape predictor (iBUG 300-W layout), run on a detected box."""

    def __init__(self) -> None:
        predictor_path, _ = _model_paths()
        self._predictor = dlib.shape_predictor(str(predictor_path))

    def predict(self, image_rgb: np.ndarray, box: Rect) -> np.ndarray:
        """(68, 2) float32 landmarks in image pixels."""
        shape = self._predictor(image_rgb, box.to_dlib())
        return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


class IdentityModel:
    """The 128-d face_recognition embedding (0.6 = same person) of dlib's ResNet.

    By default computed by our PyTorch port of that network (models/dlib_resnet.py: the same descriptor to
    ~2e-6, batched, on the GPU when `device` is CUDA); `backend="dlib"` uses dlib's own, the reference the
    port is tested against.
    """

    def __init__(self, device: str = "cpu", backend: str = "torch") -> None:
        predictor_path, encoder_path = _model_paths()
        self._predictor = dlib.shape_predictor(str(predictor_path))
        self.backend = backend
        if backend == "dlib":
            self._encoder = dlib.face_recognition_model_v1(str(encoder_path))
        elif backend == "torch":
            from deid.models.dlib_resnet import load_dlib_face_net

            self._net = load_dlib_face_net(encoder_path, device)
        else:
            raise ValueError(f"unknown identity backend {backend!r}")

    def embed(self, image_rgb: np.ndarray, landmarks: np.ndarray, jitters: int = 1) -> np.ndarray:
        """Embedding of the face whose 68 landmarks are given (in image pixels)."""
        return self.embed_many([(image_rgb, landmarks)], jitters)[0]

    def embed_many(self, faces: Sequence[tuple[np.ndarray, np.ndarray]], jitters: int = 1) -> np.ndarray:
        """(n, 128) embeddings of (image, 68 landmarks) pairs, in one batch through the network."""
        if not faces:
            return np.zeros((0, 128), np.float32)
        # dlib takes whole-pixel landmarks; rounding here keeps both backends on the same points.
        points = [np.round(np.asarray(lm, np.float64)) for _, lm in faces]
        if self.backend == "dlib" or jitters != 1:
            return np.stack([self._dlib(np.ascontiguousarray(image), lm, jitters)
                             for (image, _), lm in zip(faces, points)])
        import torch

        from deid.models.dlib_resnet import face_chips, full_fp32

        device = next(self._net.parameters()).device
        chips = torch.cat([face_chips(np.ascontiguousarray(image), [lm], device) for (image, _), lm in zip(faces, points)])
        with torch.no_grad(), full_fp32():
            return self._net(chips).cpu().numpy().astype(np.float32)

    def _dlib(self, image_rgb: np.ndarray, lm: np.ndarray, jitters: int) -> np.ndarray:
        if not hasattr(self, "_encoder"):
            self._encoder = dlib.face_recognition_model_v1(str(_model_paths()[1]))
        x0, y0 = lm.min(0)
        x1, y1 = lm.max(0)
        parts = [dlib.point(int(x), int(y)) for x, y in lm]
        shape = dlib.full_object_detection(dlib.rectangle(int(x0), int(y0), int(x1), int(y1)), parts)
        return np.array(self._encoder.compute_face_descriptor(image_rgb, shape, jitters), np.float32)

    def embed_boxes(self, image_rgb: np.ndarray, boxes: Sequence[Rect], jitters: int = 1) -> list[np.ndarray]:
        image_rgb = np.ascontiguousarray(image_rgb)
        shapes = [self._predictor(image_rgb, b.to_dlib()) for b in boxes]
        points = [np.array([(p.x, p.y) for p in shape.parts()], np.float64) for shape in shapes]
        return list(self.embed_many([(image_rgb, lm) for lm in points], jitters))
