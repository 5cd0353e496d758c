"""Face alignment: a similarity transform from 68 landmarks to a canonical face, crops and hull masks.

The canonical face is the mean position of landmarks 17..67 (brows, nose, eyes, mouth; the jaw line
is left out because it moves with expression and head turn) in a unit square, the table that dlib
ships in `dlib/image_transforms/interpolation.h` and that faceswap and DeepFaceLab use as well.
The fit is Umeyama's least-squares similarity (rotation, uniform scale, translation), so a face is
never sheared and the crop can be warped back exactly at convert time.

Crops are stored "head"-centred by default: the unit face square covers 37.5 % of the crop width and
the crop centre sits 0.2 face units above the face centre, so the whole head (forehead and hair) is
in the crop and later stages can cut any tighter coverage from it without re-extracting.
"""
from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

MEAN_FACE_X = np.array([
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689])
MEAN_FACE_Y = np.array([
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182])
MEAN_FACE = np.stack([MEAN_FACE_X, MEAN_FACE_Y], axis=1)  # (51, 2), landmarks 17..67

Centering = Literal["head", "face", "legacy"]
# (share of the crop width taken by the unit face square, vertical centre of the crop in face units)
CENTERING: dict[str, tuple[float, float]] = {"legacy": (0.625, 0.5), "face": (0.5, 0.45), "head": (0.375, 0.3)}

LEFT_EYE = slice(36, 42)   # the subject's right eye, image left
RIGHT_EYE = slice(42, 48)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (2x3) mapping points `src` onto `dst` (Umeyama 1991)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    n = src.shape[0]
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / n
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[-1] = -1  # a reflection would be a better fit; a face is never mirrored, so exclude it
    rotation = u @ np.diag(d) @ vt
    var_src = (src_c ** 2).sum() / n
    scale = (s * d).sum() / var_src if var_src > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def face_matrix(landmarks: np.ndarray) -> np.ndarray:
    """Frame pixels -> unit face space, fitted on landmarks 17..67."""
    return umeyama(np.asarray(landmarks)[17:68], MEAN_FACE)


def crop_matrix(landmarks: np.ndarray, size: int, centering: Centering = "head") -> np.ndarray:
    """Frame pixels -> pixels of a `size` x `size` crop with the given centering."""
    share, centre_y = CENTERING[centering]
    scale = size * share
    unit_to_crop = np.array([[scale, 0.0, size / 2 - scale * 0.5],
                             [0.0, scale, size / 2 - scale * centre_y]])
    return compose(unit_to_crop, face_matrix(landmarks))


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine `outer` after `inner`."""
    return (np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]]))[:2]


def invert(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(matrix, np.float64))


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    points = np.asarray(points, np.float64)
    return points @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]


def warp_face(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Cut the aligned crop; pixels outside the frame replicate the border so edges stay calm for training."""
    return resample(image, matrix, size)


def resample(image: np.ndarray, matrix: np.ndarray, size: int, border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """`image` warped by the similarity `matrix` into a `size` x `size` square, area-averaged when shrinking.

    The one resampler of every face crop: extract's aligned faces, train's windows and convert's model
    input all go through it, so the network sees at convert time the pixels it was trained on.
    `cv2.warpAffine(..., INTER_AREA)` silently runs bilinear, which aliases a shrink (a 300 px face cut to
    64 px kept ~1.6x the high-frequency energy of the training crops, on lip and eye edges): so the image
    is first shrunk by the matrix's scale with INTER_AREA, then the remaining rotation and shift are
    applied bilinearly at about 1:1.
    """
    matrix = np.asarray(matrix, np.float64)
    scale = _scale(matrix)
    if scale < 1.0:
        h, w = image.shape[:2]
        dsize = (max(1, round(w * scale)), max(1, round(h * scale)))
        # An explicit size: resize then maps with exactly these ratios (given fx alone, it maps with fx while
        # rounding the size, a shift of up to half a pixel across the crop).
        sx, sy = dsize[0] / w, dsize[1] / h
        image = cv2.resize(image, dsize, interpolation=cv2.INTER_AREA)
        # resize maps pixel centres: q = s * p + (s - 1) / 2, so p = (q - (s - 1) / 2) / s
        matrix = compose(matrix, np.array([[1 / sx, 0, -(sx - 1) / 2 / sx], [0, 1 / sy, -(sy - 1) / 2 / sy]]))
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR if scale < 1.0 else cv2.INTER_CUBIC,
                          borderMode=border)


def _scale(matrix: np.ndarray) -> float:
    return float(np.sqrt(abs(np.linalg.det(np.asarray(matrix)[:, :2]))))


def eye_centres(landmarks: np.ndarray) -> np.ndarray:
    """(2, 2): centres of the image-left and image-right eye."""
    landmarks = np.asarray(landmarks)
    return np.stack([landmarks[LEFT_EYE].mean(0), landmarks[RIGHT_EYE].mean(0)])


# --- masks ------------------------------------------------------------------------------------------------
# Hull parts after faceswap's "components" mask: overlapping convex pieces, so the union follows the
# concave jaw line that one convex hull would bridge.
_COMPONENTS = (
    list(range(0, 9)) + [17],
    list(range(8, 17)) + [26],
    [17, 18, 19, 8],
    [24, 25, 26, 8],
    list(range(19, 25)) + [8],
    list(range(17, 22)) + [27, 31, 32, 33, 34, 35, 8],
    list(range(22, 27)) + [27, 31, 32, 33, 34, 35, 8],
    list(range(27, 36)),
)


def extend_brows(landmarks: np.ndarray) -> np.ndarray:
    """Move the eyebrow points up by half their distance from the eyes.

    This is the "extended" mask: it covers the lower forehead, so the original's brows are replaced
    too and the swapped face does not show two pairs of eyebrows (the study's "double eyebrow").
    """
    lm = np.asarray(landmarks, np.float64).copy()
    mid_left = (lm[36] + lm[0]) / 2
    mid_right = (lm[16] + lm[45]) / 2
    quarter_left = (lm[36] + mid_left) / 2
    quarter_right = (lm[45] + mid_right) / 2
    below_left = np.stack([mid_left, quarter_left, lm[36], lm[37], lm[38]])
    below_right = np.stack([lm[43], lm[44], lm[45], quarter_right, mid_right])
    lm[17:22] += (lm[17:22] - below_left) / 2
    lm[22:27] += (lm[22:27] - below_right) / 2
    return lm


def hull_mask(landmarks: np.ndarray, size: int, kind: Literal["components", "extended"]) -> np.ndarray:
    """uint8 mask (0/255) of the face in crop coordinates; `landmarks` are already in crop pixels."""
    points = extend_brows(landmarks) if kind == "extended" else np.asarray(landmarks, np.float64)
    mask = np.zeros((size, size), np.uint8)
    for part in _COMPONENTS:
        hull = cv2.convexHull(np.round(points[part] * 16).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_8, shift=4)
    return mask
