"""YuNet (Wu, Peng, Yu 2023), a second face detector family for the protection search, run by OpenCV.

The network is `yunet_s_640_640.onnx` (232 KB) from the public repository ShiqiYu/libfacedetection.train
(`onnx/`, commit 0047ac24, Apache-2.0; the licence is models/weights/LICENSE.yunet), shipped in this
package as models/weights/, so no model is downloaded. It is anchor-free with heads at strides 8, 16 and
32; `cv2.FaceDetectorYN` (OpenCV >= 4.8) decodes it at any input size, padding to a multiple of 32, so
one file serves every scale. Unlike CenterFace it was trained with a different backbone, loss and data
pipeline, which is why its misses are not CenterFace's (bench/recall.py measures both).

OpenCV's DNN runs it on the CPU; the file is small enough (~70 ms for a 1000x667 image on one core) that a
coarse pass per frame costs little beside CenterFace's fine pass.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from deid.core.errors import DeidError

WEIGHTS = Path(__file__).resolve().parent / "weights" / "yunet_s_640_640.onnx"
_NMS_IOU = 0.3
_TOP_K = 5000


def model_path() -> Path:
    """The shipped ONNX file; a DeidError naming the fix when the install lost it."""
    if not WEIGHTS.is_file() or WEIGHTS.stat().st_size < 100_000:
        # A git checkout without the file (or a Git LFS pointer of a few hundred bytes) would load nothing.
        raise DeidError(f"{WEIGHTS}: the YuNet model file is missing or truncated; reinstall deid "
                        "(pip install -e .) from a checkout that has models/weights/yunet_s_640_640.onnx")
    return WEIGHTS


class YuNet:
    """`detect(images, threshold, scale)` -> per image an (n, 5) float32 array x0, y0, x1, y1, score."""

    def __init__(self, path: Path | None = None) -> None:
        try:
            self._net = cv2.FaceDetectorYN.create(str(path or model_path()), "", (320, 320), 0.5, _NMS_IOU, _TOP_K)
        except cv2.error as exc:
            raise DeidError(f"{path or WEIGHTS}: OpenCV cannot load the YuNet model ({exc.msg.strip()}); "
                            "install opencv-python-headless>=4.8") from None
        self._size: tuple[int, int] | None = None
        self._threshold: float | None = None

    def detect(self, images: Sequence[np.ndarray], threshold: float = 0.5, scale: float = 1.0) -> list[np.ndarray]:
        """RGB uint8 images of one size, resized by `scale` before the network; boxes in image px."""
        return [self._one(image, threshold, scale) for image in images]

    def _one(self, image: np.ndarray, threshold: float, scale: float) -> np.ndarray:
        h, w = image.shape[:2]
        net_w, net_h = max(32, round(w * scale)), max(32, round(h * scale))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        bgr = cv2.cvtColor(cv2.resize(image, (net_w, net_h), interpolation=interpolation) if (net_w, net_h) != (w, h)
                           else image, cv2.COLOR_RGB2BGR)
        if self._size != (net_w, net_h):
            self._net.setInputSize((net_w, net_h))
            self._size = (net_w, net_h)
        if self._threshold != threshold:
            self._net.setScoreThreshold(float(threshold))
            self._threshold = threshold
        _, faces = self._net.detect(bgr)
        if faces is None or len(faces) == 0:
            return np.zeros((0, 5), np.float32)
        x, y, bw, bh, score = faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 3], faces[:, 14]
        sx, sy = w / net_w, h / net_h
        boxes = np.stack([np.maximum(0, x) * sx, np.maximum(0, y) * sy, np.minimum(net_w, x + bw) * sx,
                          np.minimum(net_h, y + bh) * sy, score], 1)
        return boxes.astype(np.float32)
