"""Training faces: read once, cut the training window out of the head-centred crops, keep them as uint8.

Extract stores every face "head"-centred (the whole head, models/alignment.py), so any tighter training
crop can be cut later. The model sees a square of `coverage` times the side of the `centering` crop
(faceswap's convention: centering "face" at coverage 0.875 by default). We store that square plus a
margin (MARGIN) around it, so rotation, zoom and shift in augmentation sample real pixels, not the
border.

Each face becomes six uint8 planes of side `window_size(...)`: R, G, B, the face mask (extended, or the
landmark hull when the mask file is missing), and two weight regions drawn from the landmarks: the eyes
(with the brows, or without them for train.region_loss multiplier: Window.brows) and the mouth (grown by
Window.mouth_grow of the inter-ocular distance). They are what the loss weights more (expressions live
there). All faces of one person are one (N, 6, S, S) uint8 tensor, on the training device when it fits
(FaceSet.load); when it does not, faces are read from disk per batch.
"""
from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from deid.core.errors import DeidError
from deid.models.alignment import (
    CENTERING,
    compose,
    face_matrix,
    hull_mask,
    invert,
    resample,
    transform_points,
)
from deid.stages.alignments import FaceRef, load_alignments

log = logging.getLogger("deid.train")

MARGIN = 1.25          # stored window side / training window side
PLANES = 6             # R, G, B, mask, eyes, mouth
GPU_SHARE = 0.3        # keep faces on the GPU if they take at most this share of its free memory
RAM_SHARE = 0.5        # ... in RAM if at most this share of the available memory
EYES = (list(range(17, 22)) + list(range(36, 42)), list(range(22, 27)) + list(range(42, 48)))
EYES_ONLY = (list(range(36, 42)), list(range(42, 48)))
MOUTH = list(range(48, 60))
REGION_GROW = 0.12     # eye and mouth hulls grow by this share of the inter-ocular distance (soft landmark error)


def coverage_matrix(size: int, centering: str, coverage: float) -> np.ndarray:
    """Unit face space -> pixels of the `size` x `size` training window (the model's input/output square).

    The window is `coverage` of the `centering` crop, centred where that crop is centred. Convert uses
    the same matrix (composed with `models.alignment.face_matrix(landmarks)`) to cut and paste faces.
    """
    share, centre_y = CENTERING[centering]
    scale = size * share / coverage
    return np.array([[scale, 0.0, size / 2 - scale * 0.5], [0.0, scale, size / 2 - scale * centre_y]])


def frame_to_model(landmarks: np.ndarray, size: int, centering: str, coverage: float) -> np.ndarray:
    """Frame pixels -> pixels of the model's `size` px face square, for a face with these 68 landmarks."""
    return compose(coverage_matrix(size, centering, coverage), face_matrix(landmarks))


def model_input(frame: np.ndarray, landmarks: np.ndarray, size: int, centering: str, coverage: float) -> np.ndarray:
    """The model's `size` px input square of the face with these landmarks, cut from a whole frame by the
    resampler every training crop goes through (convert's input, previews)."""
    return resample(frame, frame_to_model(landmarks, size, centering, coverage), size)


def window_size(input_size: int, output_size: int) -> int:
    """Side of the stored window: the larger model side, plus the augmentation margin, rounded to 8."""
    return int(math.ceil(max(input_size, output_size) * MARGIN / 8) * 8)


@dataclass(frozen=True)
class Window:
    """What to cut: the training square (`centering`, `coverage`) plus MARGIN, stored at `size` px; which
    regions the eye plane holds (`brows`) and how far the mouth plane reaches (`mouth_grow`, share of the
    inter-ocular distance)."""

    size: int
    centering: str
    coverage: float
    mask: str
    brows: bool = True
    mouth_grow: float = REGION_GROW

    def unit_matrix(self) -> np.ndarray:
        # Unit face -> stored window px: the training square is the centre 1/MARGIN of the window.
        return coverage_matrix(self.size, self.centering, self.coverage * MARGIN)


class FaceSet:
    """The faces of one person, as (N, 6, S, S) uint8 planes, in memory when they fit."""

    def __init__(self, label: str, folder: Path, refs: list[FaceRef], window: Window, data: torch.Tensor | None):
        self.label, self.folder, self.refs, self.window = label, folder, refs, window
        self.data = data  # None: read from disk per batch

    def __len__(self) -> int:
        return len(self.refs)

    def batch(self, index: torch.Tensor, device: torch.device) -> torch.Tensor:
        """uint8 (n, 6, S, S) on `device` for the face indices `index`."""
        if self.data is not None:
            return self.data[index.to(self.data.device)].to(device, non_blocking=True)
        planes = _read_many([self.refs[i] for i in index.tolist()], self.window)
        return torch.from_numpy(planes).to(device)

    @classmethod
    def load(cls, label: str, folder: Path, window: Window, device: torch.device) -> "FaceSet":
        """Read every face of an extract/clean output folder. `label` names the folder in errors (A_DIR)."""
        folder = Path(folder)
        alignments = load_alignments(folder)
        refs = list(alignments.faces())
        if not refs:
            frames = len(alignments.frames)
            raise DeidError(f"{label} {folder} has no faces (0 in {frames} frames); extract found none: check "
                            "the video or lower extract.min_face_size, or give another folder")
        crowded = sum(1 for faces in alignments.frames.values() if len(faces) > 1)
        if crowded:
            log.warning("%s: %d frames have more than one face; all are trained as the same person "
                        "(run `deid clean` to keep only one identity)", folder, crowded)
        crop_size = int(alignments.extractor.get("size", 256))
        # Crop px that the model's square spans at 1:1 (window.size / MARGIN is the model's larger side).
        needed = window.size / MARGIN * CENTERING[window.centering][0] / window.coverage \
            / CENTERING[alignments.extractor.get("centering", "head")][0]
        if crop_size < needed * 0.9:
            log.warning("%s: faces were extracted at %d px; the training window needs about %d px of crop for full "
                        "detail (re-extract with a larger extract.size for sharper results)", folder, crop_size,
                        int(needed))
        nbytes = len(refs) * PLANES * window.size ** 2
        target = _storage_device(nbytes, device)
        if target is None:
            log.warning("%s: %d faces need %.1f GiB, more than fits in memory; reading them from disk per batch",
                        folder, len(refs), nbytes / 2 ** 30)
            _read_many(refs[:1], window)  # fail now, not at iteration 1, if the files are unreadable
            return cls(label, folder, refs, window, None)
        data = torch.from_numpy(_read_many(refs, window))
        if target.type == "cuda":
            data = data.to(target)
        elif device.type == "cuda":
            data = data.pin_memory()  # faster, asynchronous copies of each batch to the GPU
        log.info("%s: %d faces loaded (%.0f MiB on %s)", folder, len(refs), nbytes / 2 ** 20, target)
        return cls(label, folder, refs, window, data)


def _storage_device(nbytes: int, device: torch.device) -> torch.device | None:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if nbytes <= GPU_SHARE * free:
            return device
    if nbytes <= RAM_SHARE * _available_ram():
        return torch.device("cpu")
    return None


def _available_ram() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass  # no /proc (not Linux): fall back to total physical memory below
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _read_many(refs: list[FaceRef], window: Window) -> np.ndarray:
    out = np.empty((len(refs), PLANES, window.size, window.size), np.uint8)

    def one(i: int) -> None:
        out[i] = read_face(refs[i], window)

    # cv2 releases the GIL while decoding and resizing, so threads do overlap here.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(one, range(len(refs))))
    return out


def read_face(ref: FaceRef, window: Window) -> np.ndarray:
    """(6, S, S) uint8: the training window of one face with its mask and eye/mouth regions (as `window` says)."""
    image = cv2.imread(str(ref.image), cv2.IMREAD_COLOR)
    if image is None:
        raise DeidError(f"{ref.image}: face image missing or unreadable; re-run the extract that wrote it")
    frame_to_window = compose(window.unit_matrix(), face_matrix(ref.landmarks))
    crop_to_window = compose(frame_to_window, invert(ref.matrix))
    rgb = resample(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), crop_to_window, window.size, cv2.BORDER_REPLICATE)
    points = transform_points(ref.landmarks, frame_to_window)
    mask_path = ref.masks.get(window.mask)
    mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) if mask_path is not None else None
    if mask is not None and mask.shape == image.shape[:2]:
        mask = resample(mask, crop_to_window, window.size, cv2.BORDER_CONSTANT)
    else:
        mask = hull_mask(points, window.size, window.mask)  # the same hull extract draws, at window resolution
    eyes = np.zeros((window.size, window.size), np.uint8)
    mouth = np.zeros_like(eyes)
    eye_distance = float(np.linalg.norm(points[36:42].mean(0) - points[42:48].mean(0)))
    for part in EYES if window.brows else EYES_ONLY:
        _fill_hull(eyes, points[part], eye_distance * REGION_GROW)
    _fill_hull(mouth, points[MOUTH], eye_distance * window.mouth_grow)
    return np.concatenate([rgb.transpose(2, 0, 1), mask[None], eyes[None], mouth[None]])


def _fill_hull(plane: np.ndarray, points: np.ndarray, grow: float) -> None:
    """Fill the convex hull of `points`, grown outwards from its centre by `grow` px."""
    centre = points.mean(0)
    offset = points - centre
    norm = np.linalg.norm(offset, axis=1, keepdims=True)
    grown = centre + offset * (1 + grow / np.maximum(norm, 1e-6))
    hull = cv2.convexHull(np.round(grown * 16).astype(np.int32))
    cv2.fillConvexPoly(plane, hull, 255, lineType=cv2.LINE_AA, shift=4)
