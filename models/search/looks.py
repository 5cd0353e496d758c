"""The extra looks a recall search takes at hard frames, shared by the search plugins.

A detector trained on WIDER FACE sees faces of roughly 10-400 px. A frame is searched at the scale where
the smallest face asked for becomes detectable (the *fine* pass), which makes a close-up at 1080p or 4K
(a 500-1300 px face, ~600-1500 px after that upscale) far larger than anything the network learned: it
fires on fragments or not at all. So a *coarse* pass also runs on the frame scaled to a short side of
~360 px, where a frame-filling face is ~300 px. Dark and low-contrast frames (night, IR, a dim stage) get
a *second look* at a contrast-normalised copy (CLAHE on luma after a light denoise), because the network's
features need edges that a face at luma 20-40 under sensor noise does not have. Every look's boxes are
merged: overlapping boxes by NMS, and a box lying inside a larger kept one is dropped (the larger one,
grown, hides it).
"""
from __future__ import annotations

from typing import Callable, Sequence

import cv2
import numpy as np

COARSE_SHORT_SIDE = 360.0  # px: a face filling the frame's height is then ~300 px, inside every net's range
DARK_MEAN = 70.0  # mean luma (0..255) below which a frame counts as dark
LOW_CONTRAST_STD = 30.0  # luma standard deviation below which a frame counts as flat
_MERGE_IOU = 0.4
_INSIDE = 0.85  # share of a box's area inside a larger kept box that makes it redundant

Detect = Callable[[Sequence[np.ndarray], float], list[np.ndarray]]  # (frames, scale) -> per frame (n, 5)
# Pixels the network sees per call, after scaling: the detector's activations grow with them, so this bounds
# memory whatever the resolution (a batch of 8 4K frames at the 1.17x fine scale was 91 MP: over 16 GB).
PIXEL_BUDGET = 4_000_000
TILE_OVERLAP_NET_PX = 160  # tiles of the fine pass overlap by more than the largest face it must find whole
                           # (bigger faces are the coarse pass's, which sees the frame at ~360 px)


def bounded(detect: Detect, budget: int = PIXEL_BUDGET) -> Detect:
    """`detect` run on chunks of frames within `budget` scaled pixels per call, and a frame larger than
    that on overlapping tiles (boxes shifted back and merged): same faces, memory bounded."""
    def run(frames: Sequence[np.ndarray], scale: float) -> list[np.ndarray]:
        if not frames:
            return []
        h, w = frames[0].shape[:2]
        per_frame = h * w * scale * scale
        if per_frame > budget:
            return [_tiled(detect, frame, scale, budget) for frame in frames]
        step = max(1, int(budget // per_frame))
        return [boxes for i in range(0, len(frames), step) for boxes in detect(frames[i:i + step], scale)]
    return run


def _tiled(detect: Detect, frame: np.ndarray, scale: float, budget: int) -> np.ndarray:
    h, w = frame.shape[:2]
    overlap = int(np.ceil(TILE_OVERLAP_NET_PX / scale))
    side = max(2 * overlap, int(np.sqrt(budget) / scale))  # a square tile of `budget` scaled pixels
    parts = []
    for y in _starts(h, side, overlap):
        for x in _starts(w, side, overlap):
            tile = np.ascontiguousarray(frame[y:y + side, x:x + side])
            boxes = detect([tile], scale)[0].copy()
            boxes[:, [0, 2]] += x
            boxes[:, [1, 3]] += y
            parts.append(boxes)
    return merge(parts)


def _starts(length: int, side: int, overlap: int) -> list[int]:
    if length <= side:
        return [0]
    count = int(np.ceil((length - overlap) / (side - overlap)))
    return [round(i * (length - side) / (count - 1)) for i in range(count)]


def coarse_scale(shape: tuple[int, ...], fine_scale: float) -> float | None:
    """The coarse pass's scale, or None when the fine pass already sees the frame about that small."""
    scale = COARSE_SHORT_SIDE / max(1, min(shape[:2]))
    return scale if scale < 0.7 * fine_scale else None


def is_hard_light(frame: np.ndarray) -> bool:
    """Dark or flat: judged on a small grey copy (the decision needs the histogram, not the detail)."""
    grey = cv2.cvtColor(cv2.resize(frame, (160, 90), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    return float(grey.mean()) < DARK_MEAN or float(grey.std()) < LOW_CONTRAST_STD


def normalise_light(frame: np.ndarray) -> np.ndarray:
    """RGB frame with its luma denoised and equalised locally (CLAHE); colour kept."""
    ycc = cv2.cvtColor(frame, cv2.COLOR_RGB2YCrCb)
    # Sensor noise at luma 20-40 is as strong as the face's edges; CLAHE alone would amplify it.
    luma = cv2.GaussianBlur(ycc[..., 0], (3, 3), 0)
    ycc[..., 0] = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8)).apply(luma)
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)


def search_looks(frames: Sequence[np.ndarray], detect: Detect, fine_scale: float, coarse_pass: bool = True,
                 second_look: bool = True) -> list[np.ndarray]:
    """Fine pass on every frame, coarse pass when the frame is large, second look at the hard-light frames.

    The two switches exist for bench/recall.py, which measures what each look adds."""
    if not frames:
        return []
    detect = bounded(detect)
    looks = [detect(frames, fine_scale)]
    coarse = coarse_scale(frames[0].shape, fine_scale) if coarse_pass else None
    if coarse is not None:
        looks.append(detect(frames, coarse))
    hard = [i for i, frame in enumerate(frames) if is_hard_light(frame)] if second_look else []
    if hard:
        lifted = [normalise_light(frames[i]) for i in hard]
        for scale in [fine_scale] + ([coarse] if coarse is not None else []):
            again = [np.zeros((0, 5), np.float32) for _ in frames]
            for i, boxes in zip(hard, detect(lifted, scale)):
                again[i] = boxes
            looks.append(again)
    return [merge([look[i] for look in looks]) for i in range(len(frames))]


def merge(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Union of (n, 5) box arrays of one frame, one box per face.

    Boxes overlapping the best-scored one (IoU > 0.4) are the same face seen by another look: it takes their
    enclosing extent (a fine pass's fragment of a close-up must not shrink the coarse pass's whole-face box).
    Then a box lying inside a larger one is dropped: the larger one, grown, hides it."""
    boxes = np.concatenate([np.asarray(p, np.float32).reshape(-1, 5) for p in parts])
    if len(boxes) < 2:
        return boxes
    todo = boxes[np.argsort(-boxes[:, 4], kind="stable")]
    out = []
    while len(todo):
        best, rest = todo[0], todo[1:]
        same = _iou(best, rest) > _MERGE_IOU
        group = np.concatenate([best[None], rest[same]])
        out.append([group[:, 0].min(), group[:, 1].min(), group[:, 2].max(), group[:, 3].max(), best[4]])
        todo = rest[~same]
    kept = np.asarray(out, np.float32)
    area = (kept[:, 2] - kept[:, 0]) * (kept[:, 3] - kept[:, 1])
    chosen: list[int] = []
    for i in np.argsort(-area, kind="stable"):  # largest first: a box can only be covered by one before it
        if chosen and np.any(_intersection(kept[i], kept[chosen]) >= _INSIDE * max(float(area[i]), 1e-6)):
            continue
        chosen.append(int(i))
    return kept[sorted(chosen)]


def _intersection(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    return ix * iy


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    inter = _intersection(box, others)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-6)
