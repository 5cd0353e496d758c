"""MediaPipe's face mesh (478 landmarks) and its 52 blendshape coefficients, run offline without mediapipe.

Two models of MediaPipe's FaceLandmarker (face_landmarker_v2_with_blendshapes.task, Apache-2.0), shipped in
models/weights/ with LICENSE-mediapipe, never downloaded:
- `mediapipe_face_landmarks_detector.tflite`: a 256x256 RGB crop (values 0..1) -> 478 3-D landmarks in crop
  pixels and a face-presence logit. Run by LiteRT (`ai-edge-litert`, Google's TFLite runtime: a 22 MB wheel
  with no mediapipe, no opencv-contrib, no protobuf pin; the `mediapipe` wheel itself would bring
  opencv-contrib-python, which clashes with opencv-python-headless).
- `face_blendshapes.onnx`: the task's blendshape MLP-Mixer converted to ONNX (nlml/deconstruct-mediapipe):
  x, y of 146 of the 478 landmarks in image pixels (BLENDSHAPE_LANDMARKS; the model normalises position and
  scale away, the x:y aspect must be the image's) -> 52 coefficients in 0..1. Run by onnxruntime.

The crop follows MediaPipe's landmark graph (face_landmarks_detector_graph.cc): a square around the face
turned so the eye corners (landmarks 33, 263) are level, 1.5x the landmarks' bounding box on its long
side. A first crop comes from a face detector's box (and eye keypoints when it has them); the crop the
landmarks then give is used for a second, final pass, as MediaPipe's tracking does from frame to frame:
the detector's box only has to be near the face, and the final crop no longer depends on which detector.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

WEIGHTS = Path(__file__).resolve().parent / "weights"
LANDMARK_MODEL = WEIGHTS / "mediapipe_face_landmarks_detector.tflite"
BLENDSHAPE_MODEL = WEIGHTS / "face_blendshapes.onnx"
INPUT_SIDE = 256          # the landmark model's square input, px
ROI_SCALE = 1.5           # MediaPipe: the landmarks' bounding box grown 1.5x, long side, for the crop
MIN_PRESENCE = 0.5        # MediaPipe's default min face-presence confidence of the landmark model
EYE_CORNERS = (33, 263)   # outer eye corners: the crop's rotation (MediaPipe's rotation_vector keypoints)

# The 146 face-mesh landmarks the blendshape model takes, in its input order (MediaPipe's
# kLandmarksSubsetIdxs in face_blendshapes_graph.cc; the last 10 are the irises).
BLENDSHAPE_LANDMARKS = np.array([
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66, 67, 70, 78, 80,
    81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145, 146, 148, 149, 150, 152, 153,
    154, 155, 157, 158, 159, 160, 161, 162, 163, 168, 172, 173, 176, 178, 181, 185, 191, 195, 197, 234, 246, 249,
    251, 263, 267, 269, 270, 276, 282, 283, 284, 285, 288, 291, 293, 295, 296, 297, 300, 308, 310, 311, 312, 314,
    317, 318, 321, 323, 324, 332, 334, 336, 338, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380, 381, 382,
    384, 385, 386, 387, 388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454, 466, 468, 469, 470, 471, 472, 473,
    474, 475, 476, 477])

# The blendshape model's 52 outputs, in order (ARKit names; "_neutral" is MediaPipe's, to be ignored).
BLENDSHAPE_NAMES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker",
    "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight")


@dataclass(frozen=True)
class Roi:
    """A square crop of the frame: centre (px), side (px) and rotation (radians, image axes: y down)."""

    cx: float
    cy: float
    side: float
    angle: float

    def to_image(self) -> np.ndarray:
        """2x3 affine map from crop pixels (0..INPUT_SIDE) to frame pixels."""
        scale = self.side / INPUT_SIDE
        c, s = math.cos(self.angle) * scale, math.sin(self.angle) * scale
        half = INPUT_SIDE / 2
        return np.array([[c, -s, self.cx - c * half + s * half],
                         [s, c, self.cy - s * half - c * half]], np.float64)


def unavailable() -> str | None:
    """Why the face mesh and blendshapes cannot run here (one line), None when they can; imports nothing."""
    for path in (LANDMARK_MODEL, BLENDSHAPE_MODEL):
        if not path.is_file():
            return f"{path} is missing (it ships with deid: restore it from the repository)"
    if importlib.util.find_spec("ai_edge_litert") is None:
        return ("the TFLite runtime ai-edge-litert is not installed (install.sh installs it; by hand: "
                "pip install \"ai-edge-litert>=2.3,<3\")")
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install onnxruntime)"
    return None


def roi_from_box(x: float, y: float, w: float, h: float, eyes: np.ndarray | None = None) -> Roi:
    """A first crop from a detector's box: its centre, 1.5x its long side, turned by the eye line when the
    detector gives eye keypoints (eyes[0] = the subject's right eye, on the image's left)."""
    angle = 0.0 if eyes is None else _angle(eyes[0], eyes[1])
    return Roi(x + w / 2, y + h / 2, ROI_SCALE * max(w, h), angle)


def roi_from_landmarks(landmarks: np.ndarray) -> Roi:
    """MediaPipe's next crop from 478 landmarks (frame px): their axis-aligned box, turned by the outer eye
    corners, 1.5x on its long side."""
    xy = landmarks[:, :2]
    (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
    return Roi((x0 + x1) / 2, (y0 + y1) / 2, ROI_SCALE * max(x1 - x0, y1 - y0),
               _angle(xy[EYE_CORNERS[0]], xy[EYE_CORNERS[1]]))


def _angle(left: np.ndarray, right: np.ndarray) -> float:
    return math.atan2(float(right[1] - left[1]), float(right[0] - left[0]))


class FaceMesh:
    """MediaPipe's face landmark model and blendshape model on CPU (both are small: ~5 ms a face)."""

    def __init__(self, threads: int = 2) -> None:
        reason = unavailable()
        if reason is not None:
            raise RuntimeError(reason)
        import onnxruntime as ort
        from ai_edge_litert.interpreter import Interpreter

        self._mesh = Interpreter(model_path=str(LANDMARK_MODEL), num_threads=threads)
        self._mesh.allocate_tensors()
        self._input = self._mesh.get_input_details()[0]["index"]
        outputs = {tuple(d["shape"]): d["index"] for d in self._mesh.get_output_details()}
        self._points = outputs[(1, 1, 1, 478 * 3)]
        self._presence = outputs[(1, 1, 1, 1)]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self._shapes = ort.InferenceSession(str(BLENDSHAPE_MODEL), options, providers=["CPUExecutionProvider"])
        self._shapes_input = self._shapes.get_inputs()[0].name

    def landmarks(self, frame: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
        """(478, 3) landmarks in frame pixels (z in the same scale) and the face-presence probability."""
        to_image = roi.to_image()
        crop = cv2.warpAffine(frame, to_image, (INPUT_SIDE, INPUT_SIDE),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
        self._mesh.set_tensor(self._input, (crop.astype(np.float32) / 255.0)[None])
        self._mesh.invoke()
        points = self._mesh.get_tensor(self._points).reshape(478, 3).astype(np.float64)
        logit = float(self._mesh.get_tensor(self._presence).ravel()[0])
        out = np.empty_like(points)
        out[:, :2] = points[:, :2] @ to_image[:, :2].T + to_image[:, 2]
        out[:, 2] = points[:, 2] * roi.side / INPUT_SIDE
        return out, 1.0 / (1.0 + math.exp(-logit))

    def track(self, frame: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
        """Landmarks from a rough crop, then again from the crop those landmarks give (MediaPipe's own)."""
        first, _ = self.landmarks(frame, roi)
        return self.landmarks(frame, roi_from_landmarks(first))

    def blendshapes(self, landmarks: np.ndarray) -> np.ndarray:
        """(52,) coefficients (BLENDSHAPE_NAMES) of one face's 478 landmarks in frame pixels."""
        points = landmarks[BLENDSHAPE_LANDMARKS, :2].astype(np.float32)[None]
        return np.asarray(self._shapes.run(None, {self._shapes_input: points})[0], np.float64).reshape(-1)
