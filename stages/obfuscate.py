"""Obfuscation of a face region: the convert stage's fail-closed fallback and the naive baselines.

Strength is relative to the face, not the frame, so the same setting hides a small and a large face
alike. `mask` (solid fill) is the default everywhere: blur and pixelate low-pass the face, and a
recogniser fed a reference photo degraded the same way (the parrot attack in `deid evaluate`)
re-identifies them.
"""
from __future__ import annotations

import cv2
import numpy as np

from deid.stages.obfuscation import OBFUSCATIONS


def is_solid(method: str) -> bool:
    """Does `method` leave nothing of the face (a fill the leak check may treat as empty)?"""
    return method != "none" and bool(OBFUSCATIONS.get(method).solid)


def is_weak(method: str) -> bool:
    """Is `method` a low-pass that the parrot attack defeats?"""
    return method != "none" and bool(OBFUSCATIONS.get(method).weak)


def box_region(shape: tuple[int, int], box: np.ndarray, grow: float) -> np.ndarray:
    """uint8 mask of an ellipse around a detector box (x0, y0, x1, y1), grown and raised over the hair."""
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    w, h = x1 - x0, y1 - y0
    centre = (int(round((x0 + x1) / 2)), int(round((y0 + y1) / 2 - 0.1 * h)))
    axes = (max(1, int(round(w / 2 * (1 + grow)))), max(1, int(round(h / 2 * (1 + grow) * 1.15))))
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 255, -1)
    return mask


def face_region_mask(shape: tuple[int, int], hull: np.ndarray, grow: float = 0.25) -> np.ndarray:
    """uint8 mask of the convex hull of `hull` points (frame px), grown by `grow` x its size, feathered."""
    h, w = shape
    points = np.asarray(hull, np.float64)
    centre = points.mean(0)
    grown = centre + (points - centre) * (1.0 + grow)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(grown).astype(np.int32)), 255)
    return mask


def box_hull(box: tuple[float, float, float, float], grow_top: float = 0.3) -> np.ndarray:
    """Corners of a detector box, raised at the top to cover the forehead and hairline."""
    x, y, w, h = box
    return np.array([[x, y - grow_top * h], [x + w, y - grow_top * h], [x + w, y + h], [x, y + h]], np.float64)


def obfuscate(frame: np.ndarray, mask: np.ndarray, method: str, face_size: float) -> np.ndarray:
    """Return a copy of `frame` (RGB) with the masked region obfuscated by a registered method."""
    replaced = OBFUSCATIONS.get(method)().process(frame, face_size)
    alpha = (cv2.GaussianBlur(mask, (0, 0), max(1.0, face_size / 40.0)).astype(np.float32) / 255.0)[..., None]
    alpha = np.maximum(alpha, (mask > 0)[..., None].astype(np.float32))  # feather outwards, never inwards
    return (replaced * alpha + frame * (1.0 - alpha)).astype(np.uint8)
