"""SFace, the evaluation's second face recogniser: one the swap model is never trained against.

deid's identity-aware training term (stages/identity_loss.py) pulls swaps toward the donor through dlib's
ResNet (models/landmarks.py IdentityModel), which evaluate also scores with. A network trained against a
recogniser can learn a pattern that fools exactly that recogniser (issue 22: a checkerboard smear that
dlib called the donor), so the verdict also asks a recogniser the training never saw, trained on other
data with another architecture and loss:

  SFace (Zhong et al., "SFace: Sigmoid-Constrained Hypersphere Loss for Robust Face Recognition", IEEE TIP
  2021): a MobileFaceNet giving a 128-d feature of a 112x112 face aligned on 5 points, run by OpenCV's
  `cv2.FaceRecognizerSF`. The file is the OpenCV Zoo's `face_recognition_sface_2021dec.onnx` (Apache-2.0,
  models/weights/LICENSE.sface), shipped in this package, never downloaded.

Its own metric and threshold decide "same person": cosine similarity of the two features, the same person
at or above 0.363. That number is OpenCV's: `_threshold_cosine = 0.363` in the OpenCV Zoo's
models/face_recognition_sface/sface.py, and `cosine_similarity_threshold = 0.363` in OpenCV's
samples/dnn/face_detect.py and its "DNN-based Face Detection And Recognition" tutorial (higher similarity
is more alike). Unlike dlib's distance, higher means "more the same person".

Alignment uses the 68 dlib landmarks evaluate already has: SFace's five points (the eye centres, the nose
tip, the mouth corners) are taken from them, and OpenCV's own `alignCrop` warps the face onto the
template SFace was trained with, so no second detector runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from deid.core.errors import DeidError

WEIGHTS = Path(__file__).resolve().parent / "weights" / "face_recognition_sface_2021dec.onnx"
NAME = "SFace (OpenCV Zoo face_recognition_sface_2021dec, MobileFaceNet, 128-d, 5-point alignment)"
SHORT = "SFace"
METRIC = "cosine similarity"
THRESHOLD = 0.363  # cosine similarity >= this: the same person (OpenCV's value, see the module docstring)
_SIZE = 38_696_353  # bytes of the OpenCV Zoo file; a Git LFS pointer or a cut copy is refused

# dlib's 68-point indices (iBUG 300-W): the eye rings, the nose tip, the outer mouth corners.
_RIGHT_EYE, _LEFT_EYE = slice(36, 42), slice(42, 48)  # the person's right eye is on the image's left
_NOSE_TIP, _MOUTH_RIGHT, _MOUTH_LEFT = 30, 48, 54


def model_path() -> Path:
    """The shipped ONNX file; a DeidError naming the fix when the install lost it."""
    if not WEIGHTS.is_file() or WEIGHTS.stat().st_size != _SIZE:
        raise DeidError(f"{WEIGHTS}: the SFace model file is missing or not the OpenCV Zoo's ({_SIZE} bytes); "
                        "reinstall deid (pip install -e .) from a checkout that has it")
    return WEIGHTS


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """(5, 2) SFace points from dlib's (68, 2) landmarks, in the order alignCrop expects: the eye on the
    image's left, the other eye, the nose tip, the mouth corner on the image's left, the other one."""
    lm = np.asarray(landmarks, np.float32).reshape(68, 2)
    return np.stack([lm[_RIGHT_EYE].mean(0), lm[_LEFT_EYE].mean(0), lm[_NOSE_TIP], lm[_MOUTH_RIGHT],
                     lm[_MOUTH_LEFT]]).astype(np.float32)


class SFace:
    """`embed(frame_rgb, landmarks68)` -> a unit-length 128-d feature; `similarity(a, b)` -> cosine."""

    name, short, metric, threshold = NAME, SHORT, METRIC, THRESHOLD

    def __init__(self, path: Path | None = None) -> None:
        path = model_path() if path is None else Path(path)
        try:
            self._model = cv2.FaceRecognizerSF.create(str(path), "")
        except cv2.error as exc:
            raise DeidError(f"{path}: OpenCV could not load the SFace model ({str(exc).strip().splitlines()[-1]}); "
                            "reinstall deid") from None

    def aligned(self, frame_rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The 112x112 BGR face SFace reads, warped by OpenCV's own alignment onto its training template."""
        # alignCrop reads the 5 points from columns 4..13 of a YuNet-style detection row (box, points, score).
        points = five_points(landmarks)
        # Only the head goes through the colour conversion and the warp: a 4K frame would cost more than
        # the network. One face-size of margin on every side holds all the template's 112x112 square reads.
        lm = np.asarray(landmarks, np.float32).reshape(68, 2)
        side = float(max(np.ptp(lm[:, 0]), np.ptp(lm[:, 1]), 1.0))
        h, w = frame_rgb.shape[:2]
        x0, y0 = (max(0, int(v - side)) for v in lm.min(0))
        x1, y1 = min(w, int(lm[:, 0].max() + side) + 1), min(h, int(lm[:, 1].max() + side) + 1)
        row = np.zeros((1, 15), np.float32)
        row[0, 4:14] = (points - np.float32([x0, y0])).reshape(-1)
        bgr = cv2.cvtColor(np.ascontiguousarray(frame_rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2BGR)
        return self._model.alignCrop(bgr, row)

    def embed(self, frame_rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        feature = self._model.feature(self.aligned(frame_rgb, landmarks)).reshape(-1).astype(np.float32)
        # Unit length: the cosine similarity is then a dot product, and NaN rows stay NaN in batch.
        return feature / max(float(np.linalg.norm(feature)), 1e-12)

    def embed_many(self, faces: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """(n, 128) features of (frame, landmarks) pairs."""
        out = np.empty((len(faces), 128), np.float32)
        for i, (frame, landmarks) in enumerate(faces):
            out[i] = self.embed(frame, landmarks)
        return out

    @staticmethod
    def similarity(features: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Cosine similarity of each row with the reference (NaN rows stay NaN)."""
        return cosine_similarity(features, reference)

    def same(self, similarity: np.ndarray) -> np.ndarray:
        """True where the similarity says "the same person"; NaN (no face) is never the same."""
        s = np.asarray(similarity, float)
        return np.isfinite(s) & (s >= self.threshold)


def cosine_similarity(features: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `features` (n, d) with `reference` (d,); NaN rows give NaN."""
    f = np.asarray(features, float).reshape(-1, np.asarray(reference).size)
    r = np.asarray(reference, float).reshape(-1)
    norms = np.linalg.norm(f, axis=1) * max(float(np.linalg.norm(r)), 1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (f @ r) / np.where(norms > 0, norms, np.nan)


def load() -> tuple[SFace | None, str | None]:
    """(the recogniser, None), or (None, why it is unavailable): evaluate then says the identity findings
    rest on one recogniser only, instead of failing the whole evaluation."""
    try:
        return SFace(), None
    except DeidError as exc:
        return None, str(exc)
    except AttributeError:  # an OpenCV build without the objdetect module's FaceRecognizerSF (< 4.5.4)
        return None, f"this OpenCV ({cv2.__version__}) has no cv2.FaceRecognizerSF; install opencv >= 4.5.4"
