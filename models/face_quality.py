"""Per-face measurements for cleaning and sorting: sharpness, head pose, landmark sanity, a thumbnail.

All of them work on the aligned crop and the landmarks in crop coordinates, so they are comparable
across faces of any size in the frame.
"""
from __future__ import annotations

import cv2
import numpy as np

from models.alignment import CENTERING, MEAN_FACE, face_matrix, transform_points

# A generic head (after the model used in OpenCV's head-pose tutorials), in camera axes: x right,
# y down, z away from the camera; nose tip, chin, outer eye corners, mouth corners (dlib 30, 8, 36, 45, 48, 54).
_HEAD_MODEL = np.array([
    (0.0, 0.0, 0.0), (0.0, 330.0, 65.0), (-225.0, -170.0, 135.0),
    (225.0, -170.0, 135.0), (-150.0, 150.0, 125.0), (150.0, 150.0, 125.0)], np.float64)
_HEAD_LANDMARKS = [30, 8, 36, 45, 48, 54]


def face_region(crop: np.ndarray, centering: str) -> np.ndarray:
    """The part of a crop covered by the unit mean-face square (brows to lips), whatever the centering."""
    size = crop.shape[0]
    share, centre_y = CENTERING[centering]
    side = size * share
    x0 = int(round(size / 2 - side / 2))
    y0 = int(round(size / 2 - side * centre_y))
    return crop[max(0, y0):y0 + int(side), max(0, x0):x0 + int(side)]


def focus_measure(crop_bgr: np.ndarray, centering: str) -> float:
    """Variance of the Laplacian over the face region at a fixed 128 px, so crop size does not matter."""
    region = cv2.cvtColor(face_region(crop_bgr, centering), cv2.COLOR_BGR2GRAY)
    region = cv2.resize(region, (128, 128), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(region, cv2.CV_64F).var())


def head_pose(crop_landmarks: np.ndarray, size: int) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from solvePnP on six landmarks, a pinhole camera with f = crop size.

    0/0/0 is a frontal face; the sign of yaw says which way the head is turned.
    """
    image_points = np.asarray(crop_landmarks, np.float64)[_HEAD_LANDMARKS]
    camera = np.array([[size, 0, size / 2], [0, size, size / 2], [0, 0, 1]], np.float64)
    ok, rvec, _ = cv2.solvePnP(_HEAD_MODEL, image_points, camera, np.zeros(4), flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return float("nan"), float("nan"), float("nan")
    rotation, _ = cv2.Rodrigues(rvec)
    pitch, yaw, roll = cv2.RQDecomp3x3(rotation)[0]
    return float(_wrap(yaw)), float(_wrap(pitch)), float(_wrap(roll))


def _wrap(angle: float) -> float:
    return (angle + 180.0) % 360.0 - 180.0


def landmark_distance(landmarks: np.ndarray) -> float:
    """Mean distance of the aligned landmarks 17..67 from the mean face, in face-square units.

    faceswap's "distance" filter: a misfit (landmarks on a non-face, or scrambled on an occluded face)
    cannot be aligned well, whatever the pose.
    """
    aligned = transform_points(np.asarray(landmarks)[17:68], face_matrix(landmarks))
    return float(np.linalg.norm(aligned - MEAN_FACE, axis=1).mean())


def thumbnail(crop_bgr: np.ndarray, centering: str, size: int = 32) -> np.ndarray:
    """Small grey face region, float32, for near-duplicate and histogram comparisons."""
    grey = cv2.cvtColor(face_region(crop_bgr, centering), cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
