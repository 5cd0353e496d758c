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
from typing import Callable, Sequence

import numpy as np

from deid.models.search import FaceSearch
from deid.stages.media import MediaInfo, iter_frames
from deid.stages.progress import progress_bar

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
    holder = StreamingHold(hold_frames, track_gap)
    regions = [r for boxes in found for _, r in holder.push(boxes)]
    return regions + [r for _, r in holder.finish()]


class StreamingHold:
    """`hold` one frame at a time, for a pass that decodes the video once: push each frame's detections in
    order; a frame's regions come out as soon as no later detection can change them, which is `lag` frames
    later (a track whose last detection is before a frame either continues within track_gap + 1 frames or
    ends; a detection holds at most `hold` frames back). Memory: the live tracks and `lag` frames of boxes."""

    def __init__(self, hold_frames: int, track_gap: int) -> None:
        self.hold_frames, self.track_gap = hold_frames, track_gap
        self.lag = max(hold_frames, track_gap + 1)
        self._live: list[dict[int, np.ndarray]] = []
        self._ended: list[dict[int, np.ndarray]] = []  # ended tracks that may still hold frames not yet out
        self._count = 0   # frames pushed
        self._out = 0     # frames whose regions were given out

    def push(self, boxes: np.ndarray) -> list[tuple[int, list[Region]]]:
        """Add frame `n`'s (k, >=4) boxes; returns (frame, regions) of every frame that became final."""
        boxes = np.asarray(boxes, np.float32)
        self._link(self._count, boxes if boxes.size else np.zeros((0, 5), np.float32))
        self._count += 1
        return self._give(self._count - self.lag)

    def finish(self) -> list[tuple[int, list[Region]]]:
        """Every frame not given out yet (the video ended: no track continues)."""
        self._ended += self._live
        self._live = []
        return self._give(self._count)

    def _give(self, upto: int) -> list[tuple[int, list[Region]]]:
        out = []
        while self._out < upto:
            out.append((self._out, self._regions(self._out)))
            self._out += 1
        # An ended track is no longer needed once every frame it can touch was given out.
        self._ended = [t for t in self._ended if _last(t) + self.hold_frames >= self._out]
        return out

    def _regions(self, j: int) -> list[Region]:
        # Within a track detections are at most track_gap + 1 frames apart, so the detections around j are
        # found by looking that far each way: O(track_gap) per track, whatever the track's length.
        reach = self.track_gap + 1
        regions: list[Region] = []
        for track in self._ended + self._live:
            if j in track:
                regions.append(Region(track[j], "detected"))
                continue
            a = next((k for k in range(j - 1, j - reach - 1, -1) if k in track), None)
            b = next((k for k in range(j + 1, j + reach + 1) if k in track), None)
            if a is not None and b is not None:
                t = (j - a) / (b - a)
                regions.append(Region((1 - t) * track[a] + t * track[b], "tracked"))
            else:
                regions += [Region(track[k], "held") for k in range(j - self.hold_frames, j + self.hold_frames + 1)
                            if k in track]
        return regions

    def _link(self, i: int, boxes: np.ndarray) -> None:
        """Greedy frame-to-frame linking: a box joins the live track whose last box is nearest (within a face)."""
        still = []
        for track in self._live:
            (self._ended if i - _last(track) > self.track_gap + 1 else still).append(track)
        live = self._live = still
        taken: set[int] = set()
        for box in sorted(boxes[:, :4], key=lambda b: -(b[2] - b[0]) * (b[3] - b[1])) if len(boxes) else []:
            best, best_d = None, None
            for k, track in enumerate(live):
                if k in taken:
                    continue
                last = track[_last(track)]
                d = _centre_distance(box, last)
                if d <= 0.6 * max(last[2] - last[0], box[2] - box[0]) and (best_d is None or d < best_d):
                    best, best_d = k, d
            if best is None:
                live.append({i: box.astype(np.float64)})
                taken.add(len(live) - 1)
            else:
                live[best][i] = box.astype(np.float64)
                taken.add(best)


def _last(track: dict[int, np.ndarray]) -> int:
    return next(reversed(track))  # frames are added in order


def _centre_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2))


def box_inside(box: np.ndarray, outer: tuple[float, float, float, float], margin: float = 0.25) -> bool:
    """Is the centre of `box` (x0, y0, x1, y1) inside `outer` (x0, y0, x1, y1) grown by `margin`?"""
    x0, y0, x1, y1 = outer
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return x0 - mx <= cx <= x1 + mx and y0 - my <= cy <= y1 + my
