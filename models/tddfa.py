"""3DMM expression, shape and head pose of a face from 3DDFA_V2's MobileNet (cleardusk/3DDFA_V2, MIT).

The network (Guo et al., "Towards Fast, Accurate and Stable 3D Dense Face Alignment", ECCV 2020; the
width-0.5 MobileNet-V1, 120 px input) regresses 62 numbers per face crop: a 3x4 affine camera (12, row
major), 40 shape and 10 expression coefficients of the Basel Face Model. deid uses it only to *measure*
(the swap papers' expression and pose errors): no stage of deid trains on it, so a swap cannot have
learned to please it.

Facts carried over from 3DDFA_V2, implemented here from scratch:
- the crop: a square ROI around the 68 landmarks (side = the diagonal of their bounding square, so the
  whole head and some background fit) or around a detector box (1.58 x its mean side, moved down by
  0.14 x it); pixels outside the frame are black; resized to 120 x 120 (bilinear);
- the input: BGR, (pixel - 127.5) / 128, channels first;
- the output: de-normalised with the training set's per-parameter mean and standard deviation.

The weights are models/weights/tddfa_mb05_120.safetensors and the statistics ..._param_stats.json,
converted once at build time by models/weights/convert_3ddfa.py (licence: models/weights/LICENSE-3DDFA_V2).
Nothing is unpickled or downloaded here.

Pose: the camera's first two rows are the scaled rotation (orthographic projection, y up). They are made
scale-free and orthonormal (the nearest rotation, by SVD), and read as R = Rz(roll) Ry(yaw) Rx(pitch).
An upright face looking at the camera has R near the identity, so all three angles sit near 0, far from
the +-180 branch cut where a decomposition would flip.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from deid.core.errors import DeidError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_FILE = "tddfa_mb05_120.safetensors"
PARAM_STATS_FILE = "tddfa_mb05_120_param_stats.json"
MODEL_NAME = "3DDFA_V2 mb05 (MIT), never used in training"
SIZE = 120
POSE_AXES = ("yaw", "pitch", "roll")

# MobileNet-V1 at width 0.5: the stem's channels, then (output channels, stride) of the 13 separable blocks.
STEM = 16
BLOCKS = [(32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2),
          (256, 1), (256, 1), (256, 1), (256, 1), (256, 1), (512, 2), (512, 1)]
PARAMS = 62


def _separable(inputs: int, outputs: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 (stride), BN, ReLU, pointwise 1x1, BN, ReLU."""
    return nn.Sequential(
        nn.Conv2d(inputs, inputs, 3, stride, 1, groups=inputs, bias=False), nn.BatchNorm2d(inputs), nn.ReLU(),
        nn.Conv2d(inputs, outputs, 1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU())


class MobileNetV1(nn.Module):
    """The regressor: a stride-2 stem, 13 separable blocks (five stride 2 in all: 120 px -> 4 px), global
    average pooling, one linear layer to the 62 normalised parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, STEM, 3, 2, 1, bias=False), nn.BatchNorm2d(STEM), nn.ReLU())
        widths = [STEM] + [out for out, _ in BLOCKS]
        self.blocks = nn.Sequential(*(_separable(widths[i], out, stride) for i, (out, stride) in enumerate(BLOCKS)))
        self.head = nn.Linear(widths[-1], PARAMS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


@dataclass(frozen=True)
class FaceParams:
    """The 62 de-normalised parameters of one face and the ROI (x0, y0, x1, y1, frame pixels) they came from."""

    params: np.ndarray
    roi: tuple[float, float, float, float]

    @property
    def camera(self) -> np.ndarray:
        return self.params[:12].reshape(3, 4)

    @property
    def shape(self) -> np.ndarray:
        return self.params[12:52]

    @property
    def expression(self) -> np.ndarray:
        return self.params[52:62]

    @property
    def pose(self) -> np.ndarray:
        """(yaw, pitch, roll) in degrees."""
        return pose_angles(self.camera)


def roi_from_landmarks(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """The square around 68 points whose side is the diagonal of their bounding square."""
    (x0, y0), (x1, y1) = landmarks.min(0), landmarks.max(0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = float(max(x1 - x0, y1 - y0)) * np.sqrt(2.0)
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def roi_from_box(box: Sequence[float]) -> tuple[float, float, float, float]:
    """The square for a face detector's (x0, y0, x1, y1) box: larger, and lower (the box stops at the brows)."""
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    mean_side = ((x1 - x0) + (y1 - y0)) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + 0.14 * mean_side
    side = float(int(1.58 * mean_side))
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def roi_for(face: np.ndarray) -> tuple[float, float, float, float]:
    """A face is 68 landmarks (68x2) or a box (4 numbers, optionally more such as a score)."""
    face = np.asarray(face, dtype=np.float64)
    if face.ndim == 2 and face.shape[1] == 2 and len(face) >= 2:
        return roi_from_landmarks(face)
    if face.ndim == 1 and len(face) >= 4:
        return roi_from_box(face)
    raise ValueError(f"a face is 68x2 landmarks or an (x0, y0, x1, y1) box, got an array of shape {face.shape}")


def crop(frame: np.ndarray, roi: tuple[float, float, float, float]) -> np.ndarray:
    """The ROI (rounded to whole pixels, black outside the frame) resized to SIZE x SIZE."""
    x0, y0, x1, y1 = (int(round(v)) for v in roi)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"face ROI {roi} is too small to crop")
    out = np.zeros((y1 - y0, x1 - x0, 3), dtype=np.uint8)
    h, w = frame.shape[:2]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = frame[sy0:sy1, sx0:sx1]
    return cv2.resize(out, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)


def pose_angles(camera: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in degrees of an affine camera's rotation, its scale removed.

    Positive yaw: the face turned towards the image's right edge; positive pitch: looking down (the top of
    the head towards the camera); positive roll: the face turned counter-clockwise on screen. (Yaw and roll
    have the opposite sign of models.face_quality.head_pose's, whose axes point down and away.)
    """
    rows = np.asarray(camera, dtype=np.float64)[:2, :3]
    r1, r2 = rows[0] / np.linalg.norm(rows[0]), rows[1] / np.linalg.norm(rows[1])
    u, _, vt = np.linalg.svd(np.stack([r1, r2, np.cross(r1, r2)]))
    rotation = u @ vt  # the nearest rotation: the two rows need not be exactly orthogonal
    yaw = np.arcsin(np.clip(-rotation[2, 0], -1.0, 1.0))
    pitch = np.arctan2(rotation[2, 1], rotation[2, 2])
    roll = np.arctan2(rotation[1, 0], rotation[0, 0])
    return np.degrees([yaw, pitch, roll])


def wrap_degrees(delta: np.ndarray | float) -> np.ndarray:
    """An angle difference in [-180, 180): 179 and -179 are 2 degrees apart, not 358."""
    return (np.asarray(delta, dtype=np.float64) + 180.0) % 360.0 - 180.0


def _files(weights_dir: Path) -> tuple[Path, Path]:
    weights, stats = weights_dir / WEIGHTS_FILE, weights_dir / PARAM_STATS_FILE
    for path in (weights, stats):
        if not path.is_file():
            raise DeidError(f"{path}: the 3DDFA_V2 model file is missing; reinstall deid from a checkout that has "
                            f"it, or rebuild it with models/weights/convert_3ddfa.py from cleardusk/3DDFA_V2")
    return weights, stats


@functools.lru_cache(maxsize=4)
def _load(weights_dir: Path, device: str) -> tuple[MobileNetV1, np.ndarray, np.ndarray]:
    """The network on `device` in eval mode and the parameters' mean and std; loaded once per process."""
    weights, stats_path = _files(weights_dir)
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise DeidError(f"{weights}: reading it needs the safetensors package; pip install safetensors") from None
    net = MobileNetV1()
    try:
        net.load_state_dict(load_file(str(weights)), strict=True)
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
        mean, std = (np.asarray(stats[key], dtype=np.float64) for key in ("mean", "std"))
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:  # truncated, foreign, hand-edited
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DeidError(f"{weights.parent}: the 3DDFA_V2 files do not load ({first}); rebuild them with "
                        "models/weights/convert_3ddfa.py") from None
    if mean.shape != (PARAMS,) or std.shape != (PARAMS,):
        raise DeidError(f"{stats_path}: expected {PARAMS} means and standard deviations; rebuild it with "
                        "models/weights/convert_3ddfa.py")
    return net.to(device).eval(), mean, std


def unavailable(weights_dir: Path = WEIGHTS_DIR) -> str | None:
    """Why the model cannot be loaded here (one line, for `deid doctor`), or None when it can."""
    try:
        _load(Path(weights_dir), "cpu")
    except DeidError as exc:
        return str(exc)
    return None


class Tddfa:
    """3DDFA_V2's 62 parameters for faces in RGB frames, on the CPU unless another torch device is given."""

    def __init__(self, device: str | torch.device = "cpu", weights_dir: Path = WEIGHTS_DIR) -> None:
        self.device = torch.device(device)
        self.net, self.mean, self.std = _load(Path(weights_dir), str(self.device))

    def fit(self, frame: np.ndarray, faces: Sequence[np.ndarray]) -> list[FaceParams]:
        """Every face (68 landmarks or a box) of one RGB frame."""
        return self.fit_many([(frame, face) for face in faces])

    def fit_many(self, items: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[FaceParams]:
        """(RGB frame, face) pairs, run as one batch."""
        if not items:
            return []
        rois = [roi_for(face) for _, face in items]
        crops = np.stack([crop(frame, roi)[..., ::-1] for (frame, _), roi in zip(items, rois)])  # RGB -> BGR
        batch = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2))).to(self.device)
        with torch.inference_mode():
            raw = self.net((batch.float() - 127.5) / 128.0).double().cpu().numpy()
        params = raw * self.std + self.mean
        return [FaceParams(p, roi) for p, roi in zip(params, rois)]
