"""The protection pass: find every face in every frame, then decide where to hide, frame by frame.

1. `scan` decodes the video once and runs a recall-tuned face search (models/search) on every frame,
   batched, on the GPU when there is one. Only boxes are kept, so memory does not grow with resolution.
2. `hold` turns detections into regions to hide, fail-closed in time: detections are linked into tracks,
   a track's box is interpolated across detection gaps up to `track_gap` frames, and every region is
   also held `hold` frames before and after each detection. One missed detection never shows a face.

Convert removes the swapped target's own detections before `hold` (`drop_matching`); everything else
found is hidden.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from models.search import FaceSearch
from stages.media import MediaInfo, iter_frames
from stages.progress import progress_bar

log = logging.getLogger("deid.guard")


@dataclass(frozen=True)
class Region:
    box: np.ndarray   # x0, y0, x1, y1 in frame px
    why: str          # detected | tracked (interpolated across a gap) | held (near a detection in time)


def scan(info: MediaInfo, search: FaceSearch, batch_size: int, progress: bool, label: str) -> list[np.ndarray]:
    """Per frame an (n, 5) array of face boxes (x0, y0, x1, y1, score)."""
    found: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    with progress_bar(info.frames, f"search {label}", "frame", progress) as bar:
        for _, frame in iter_frames(info):
            batch.append(frame)
            if len(batch) == batch_size:
                found.extend(search.find(batch))
                bar.update(len(batch))
                batch = []
        if batch:
            found.extend(search.find(batch))
            bar.update(len(batch))
    return found


def drop_matching(found: list[np.ndarray], keep_out: Callable[[int, np.ndarray], bool]) -> list[np.ndarray]:
    """Remove the boxes for which keep_out(frame, box) is true (convert: the target it swaps)."""
    return [boxes[[not keep_out(i, b) for b in boxes]] if len(boxes) else boxes for i, boxes in enumerate(found)]


def hold(found: Sequence[np.ndarray], hold_frames: int, track_gap: int) -> list[list[Region]]:
    """Regions to hide per frame: detections, tracks interpolated over gaps, and holds around detections."""
    count = len(found)
    regions: list[list[Region]] = [[] for _ in range(count)]
    for track in _link(found, track_gap):
        frames = sorted(track)
        for i in frames:
            regions[i].append(Region(track[i], "detected"))
        for a, b in zip(frames, frames[1:]):
            for i in range(a + 1, b):
                t = (i - a) / (b - a)
                regions[i].append(Region((1 - t) * track[a] + t * track[b], "tracked"))
        for i in frames:
            for j in range(max(0, i - hold_frames), min(count, i + hold_frames + 1)):
                if j not in track and not (frames[0] < j < frames[-1]):
                    regions[j].append(Region(track[i], "held"))
    return regions


def _link(found: Sequence[np.ndarray], track_gap: int) -> Iterable[dict[int, np.ndarray]]:
    """Greedy frame-to-frame linking: a box joins the live track whose last box is nearest (within a face)."""
    live: list[dict[int, np.ndarray]] = []
    done: list[dict[int, np.ndarray]] = []
    for i, boxes in enumerate(found):
        still = []
        for track in live:
            (done if i - max(track) > track_gap + 1 else still).append(track)
        live = still
        taken: set[int] = set()
        for box in sorted(boxes[:, :4], key=lambda b: -(b[2] - b[0]) * (b[3] - b[1])) if len(boxes) else []:
            best, best_d = None, None
            for k, track in enumerate(live):
                if k in taken:
                    continue
                last = track[max(track)]
                d = _centre_distance(box, last)
                if d <= 0.6 * max(last[2] - last[0], box[2] - box[0]) and (best_d is None or d < best_d):
                    best, best_d = k, d
            if best is None:
                live.append({i: box.astype(np.float64)})
                taken.add(len(live) - 1)
            else:
                live[best][i] = box.astype(np.float64)
                taken.add(best)
    return done + live


def _centre_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2))


def box_inside(box: np.ndarray, outer: tuple[float, float, float, float], margin: float = 0.25) -> bool:
    """Is the centre of `box` (x0, y0, x1, y1) inside `outer` (x0, y0, x1, y1) grown by `margin`?"""
    x0, y0, x1, y1 = outer
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return x0 - mx <= cx <= x1 + mx and y0 - my <= cy <= y1 + my
