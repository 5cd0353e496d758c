"""Putting a swapped face back into the frame: mask erosion and feathering, un-warp, alpha blending.

Everything happens inside the bounding box of the warped mask, so the cost grows with the face, not
the frame, and pixels outside the mask are never touched.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


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


@dataclass
class Placement:
    """A swapped face warped back onto the frame region it covers, and later the mask it is pasted under."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the region, frame px
    to_face: np.ndarray             # region pixel -> face pixel (2x3)
    face: np.ndarray                # RGB uint8, the region's size
    alpha: np.ndarray | None = None  # float 0..1, the region's size

    def region(self, frame: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.box
        return frame[y0:y1, x0:x1]


def place(frame_shape: tuple[int, ...], face: np.ndarray, matrix: np.ndarray) -> Placement | None:
    """Warp `face` (RGB uint8, model output space) onto the frame region it covers; None when that is empty.

    `matrix` maps frame pixels to face pixels.
    """
    height, width = frame_shape[:2]
    inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
    corners = np.array([[0, 0], [face.shape[1], 0], [0, face.shape[0]], [face.shape[1], face.shape[0]]], np.float64)
    mapped = corners @ inverse[:, :2].T + inverse[:, 2]
    x0, y0 = np.floor(mapped.min(0)).astype(int)
    x1, y1 = np.ceil(mapped.max(0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return None
    shifted = np.asarray(matrix, np.float64).copy()
    shifted[:, 2] += shifted[:, :2] @ np.array([x0, y0], np.float64)  # ROI pixel -> face pixel
    warped = cv2.warpAffine(face, shifted, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)
    return Placement(box=(x0, y0, x1, y1), to_face=shifted, face=warped)


def place_mask(placement: Placement, mask: np.ndarray) -> np.ndarray:
    """`mask` (float 0..1, face space) warped onto the placement's region; zero where the face does not reach."""
    x0, y0, x1, y1 = placement.box
    return cv2.warpAffine(mask, placement.to_face, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def compose(frame: np.ndarray, placement: Placement) -> None:
    """Blend the placed face into `frame` in place under its alpha; pixels outside the region are untouched."""
    assert placement.alpha is not None, "the mask is placed before the face is composed"
    a = placement.alpha[..., None]
    x0, y0, x1, y1 = placement.box
    frame[y0:y1, x0:x1] = np.clip(placement.face * a + frame[y0:y1, x0:x1] * (1.0 - a), 0, 255).astype(np.uint8)
