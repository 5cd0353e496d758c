"""Per-face measurements for cleaning and sorting: sharpness, head pose, landmark sanity, a thumbnail.

All of them work on the aligned crop and the landmarks in crop coordinates, so they are comparable
across faces of any size in the frame.
"""
from __future__ import annotations

import cv2
import numpy as np

from deid.models.alignment import CENTERING, MEAN_FACE, face_matrix, transform_points

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


def head_pose(landmarks: np.ndarray, size: int | tuple[int, int]) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of the generic head fitted to six landmarks; NaN where no fit exists.

    `size`: the image the landmarks are in, a square crop's side or (width, height) of a frame. The camera
    is fixed by the image alone (focal length = its longer side, principal point at its centre), never by
    the face, so a mouth opening cannot change the camera. The fit is SQPnP, a global solver (the
    iterative one started from scratch on every frame and could settle in a different local minimum for
    two nearly identical frames: jumps of 20 degrees on a re-encode), refined by Levenberg-Marquardt.
    0/0/0 is a frontal face; the sign of yaw says which way the head is turned.
    """
    image_points = np.asarray(landmarks, np.float64)[_HEAD_LANDMARKS]
    if not np.isfinite(image_points).all():
        return float("nan"), float("nan"), float("nan")
    width, height = (size, size) if np.isscalar(size) else size
    focal = float(max(width, height))
    camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], np.float64)
    try:
        ok, rvec, tvec = cv2.solvePnP(_HEAD_MODEL, image_points, camera, np.zeros(4), flags=cv2.SOLVEPNP_SQPNP)
        if ok:
            rvec, tvec = cv2.solvePnPRefineLM(_HEAD_MODEL, image_points, camera, np.zeros(4), rvec, tvec)
    except cv2.error:  # degenerate points (all on a line): no pose, not a crash
        ok = False
    if not ok or float(tvec[2, 0]) <= 0:  # a head behind the camera is no fit
        return float("nan"), float("nan"), float("nan")
    return euler_angles(cv2.Rodrigues(rvec)[0])


def euler_angles(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of R = Rz(roll) Ry(yaw) Rx(pitch), with yaw in [-90, 90].

    Choosing that branch explicitly is what keeps an upright face's roll near 0: a general decomposition
    (cv2.RQDecomp3x3) may return the equivalent (180 - yaw, pitch + 180, roll + 180), and a roll that
    jumps between -180 and +180 between two frames of the same face.
    """
    r = np.asarray(rotation, np.float64)
    yaw = np.degrees(np.arcsin(np.clip(-r[2, 0], -1.0, 1.0)))
    pitch = np.degrees(np.arctan2(r[2, 1], r[2, 2]))
    roll = np.degrees(np.arctan2(r[1, 0], r[0, 0]))
    return float(yaw), float(pitch), float(roll)


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
