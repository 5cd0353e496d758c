"""Putting a swapped face back into the frame: un-warp, mask erosion and feathering, colour correction.

Everything happens inside the bounding box of the warped mask, so the cost grows with the face, not
the frame, and pixels outside the mask are never touched.
"""
from __future__ import annotations

import cv2
import numpy as np

from stages.colour import COLOURS


def soften_mask(mask: np.ndarray, erosion: float, blur: float) -> np.ndarray:
    """Erode by `erosion` x mask size (negative grows) and feather by `blur` x size; float32 0..1."""
    size = mask.shape[0]
    mask = (mask > 0.5).astype(np.uint8) * 255 if mask.dtype != np.uint8 else mask
    radius = int(round(abs(erosion) * size))
    if radius:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cv2.erode(mask, kernel) if erosion > 0 else cv2.dilate(mask, kernel)
    sigma = blur * size
    if sigma > 0:
        # Blur after eroding inwards by ~2 sigma so the feather fades inside the hull, not outside it.
        mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    return mask.astype(np.float32) / 255.0


def paste(frame: np.ndarray, face: np.ndarray, mask: np.ndarray, matrix: np.ndarray,
          color: str = "avg") -> np.ndarray:
    """Blend `face` (RGB uint8, model output space) into `frame` in place and return it.

    `matrix` maps frame pixels to face pixels; `mask` is float 0..1 in face space; `color` is a
    registered colour correction (stages/colour/).
    """
    height, width = frame.shape[:2]
    inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
    corners = np.array([[0, 0], [face.shape[1], 0], [0, face.shape[0]], [face.shape[1], face.shape[0]]], np.float64)
    mapped = corners @ inverse[:, :2].T + inverse[:, 2]
    x0, y0 = np.floor(mapped.min(0)).astype(int)
    x1, y1 = np.ceil(mapped.max(0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return frame
    shifted = np.asarray(matrix, np.float64).copy()
    shifted[:, 2] += shifted[:, :2] @ np.array([x0, y0], np.float64)  # ROI pixel -> face pixel
    roi_size = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(face, shifted, roi_size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask, shifted, roi_size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    roi = frame[y0:y1, x0:x1]
    inside = alpha > 0.5
    if not inside.any():
        return frame
    warped = COLOURS.get(color, "convert.color")().process(warped, roi, inside)
    a = alpha[..., None]
    frame[y0:y1, x0:x1] = np.clip(warped * a + roi * (1.0 - a), 0, 255).astype(np.uint8)
    return frame
