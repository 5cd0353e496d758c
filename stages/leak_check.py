"""The leak check: read a written video back and look for any face that should not be there.

Independent of the pass it checks: a different detector (`protect.checker`, by default our MTCNN port,
while the protection pass uses CenterFace) searches every `check_every`-th output frame, and
face_recognition's 128-d embedding compares what it finds with the same place in the original frame.

A face found is confirmed before it counts: the checker's own score is >= 0.95 (real faces of 16-90 px
in our clips score >= 0.995), or the protection pass's detector, run again on the region zoomed so the
face is ~64 px, finds it too. A detection that neither confirms (the demo's helmet collar scored 0.82 in
MTCNN and CenterFace saw nothing there at any zoom) is listed as `unconfirmed` in frames.csv and the
summary, and does not block publishing.

A detection whose box lies mostly (>= 60 %) under a solid mask the pass itself drew is a detection of
the mask's silhouette (head shape, hair), with no face pixels left: it is counted as `masked`, not as a
leak. Blurred and pixelated regions get no such allowance: a face still detectable there is a leak.

A leak is
  face found       a face in the output that is not the swapped target. Its distance, for information (a
                   face that is there at all is a leak), is to the nearest face the protection pass found in
                   the ORIGINAL frame (`original_faces`): comparing the output with the original at the same
                   place would compare unchanged pixels with themselves and read ~0.1 on a collar as on a face
  swap matches     the swapped target's face is still within `match_threshold` of the original person
                   at that place: the swap did not hide them

For convert, the swapped face's distance is the one convert measured on the same frame just before
writing it (`swap_distances`), so each frame's recogniser runs once (dlib's ResNet costs ~90 ms a face
on 2 CPU cores); the check's own detector still searches the whole written frame.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np
import torch

from deid.core.errors import DeidError
from deid.models.detectors import MTCNN_TO_DLIB_SCALE, MTCNN_TO_DLIB_SHIFT
from deid.models.landmarks import IdentityModel, Rect
from deid.models.search import make_search
from deid.stages.guard import box_inside
from deid.stages.media import MediaInfo, iter_frames, probe
from deid.stages.progress import progress_bar
from deid.stages.protect_config import ProtectConfig

log = logging.getLogger("deid.leaks")


@dataclass(frozen=True)
class Leak:
    frame: int
    box: tuple[float, float, float, float]  # x, y, w, h in output px
    kind: str                               # "face found" | "swap matches"
    distance: float | None                  # embedding distance to the original at the same place

    def describe(self) -> str:
        x, y, w, h = (round(v) for v in self.box)
        if self.kind == "swap matches":
            where = "distance to the original face at that place"
        else:
            where = "distance to the nearest face found in the original frame"
        d = "n/a: no face found there" if self.distance is None else f"{self.distance:.3f}"
        return f"{self.kind} at {x},{y} {w}x{h} ({where} {d})"

    @property
    def box_xyxy(self) -> np.ndarray:
        x, y, w, h = self.box
        return np.array([x, y, x + w, y + h], np.float64)


@dataclass
class LeakReport:
    checker: str
    every: int
    threshold: float
    frames_checked: int = 0
    masked: int = 0
    leaks: list[Leak] = field(default_factory=list)
    unconfirmed: list[Leak] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.leaks

    @property
    def hits(self) -> list[Leak]:
        """Every face the checker found outside the swapped target, confirmed or not."""
        return [k for k in self.leaks + self.unconfirmed if k.kind == "face found"]

    def fail_closed(self) -> None:
        """After the last repair round an unconfirmed detection is a leak too: nothing seen is published."""
        self.leaks += [Leak(k.frame, k.box, "face found (unconfirmed)", k.distance) for k in self.unconfirmed]
        self.leaks.sort(key=lambda k: k.frame)
        self.unconfirmed = []

    def by_frame(self) -> dict[int, list[Leak]]:
        return _by_frame(self.leaks)

    def unconfirmed_by_frame(self) -> dict[int, list[Leak]]:
        return _by_frame(self.unconfirmed)

    def as_json(self, limit: int = 50) -> dict[str, Any]:
        return {"checker": self.checker, "every": self.every, "threshold": self.threshold,
                "frames_checked": self.frames_checked, "leaks": len(self.leaks),
                "detections_under_solid_mask": self.masked, "unconfirmed_detections": len(self.unconfirmed),
                "first_unconfirmed": [{"frame": k.frame, "box": [round(v, 1) for v in k.box]}
                                      for k in self.unconfirmed[:limit]],
                "frames_with_leaks": len(self.by_frame()),
                "first_leaks": [{"frame": k.frame, "box": [round(v, 1) for v in k.box], "kind": k.kind,
                                 "distance": None if k.distance is None else round(k.distance, 4)}
                                for k in self.leaks[:limit]]}


def _by_frame(leaks: list[Leak]) -> dict[int, list[Leak]]:
    out: dict[int, list[Leak]] = {}
    for leak in leaks:
        out.setdefault(leak.frame, []).append(leak)
    return out


def check_output(written: Path, original: MediaInfo, config: ProtectConfig, device: torch.device,
                 progress: bool, swapped_at: Mapping[int, tuple[float, float, float, float]] | None = None,
                 solid: Callable[[int, tuple[int, int]], np.ndarray | None] | None = None,
                 swap_distances: Mapping[int, float] | None = None,
                 original_faces: Sequence[np.ndarray] | None = None, frames: int | None = None,
                 bar: Any = None) -> LeakReport:
    """Check every `config.check_every`-th frame of `written` against `original`.

    swapped_at: frame -> (x0, y0, x1, y1) of the swapped target's face, where convert pasted a swap.
    solid: frame, (h, w) -> uint8 mask of the solid fills drawn in that frame (None: none).
    original_faces: per frame, (n, >=4) boxes x0, y0, x1, y1 of the faces the pass found in the original.
    frames: how many frames the pass decoded from the original (None: the check decodes it to count them).
    bar: a progress bar to advance per frame read (the caller's), else one of the check's own.

    The output is decoded once; the original only where a found face needs its distance measured (usually
    nowhere), and to count its frames when `frames` is not given.
    """
    swapped_at = swapped_at or {}
    swap_distances = swap_distances or {}
    # Frame counts are compared as decoded, both streams to their end: a container's own count is an
    # estimate for variable-frame-rate sources (no_face.mp4: 98 by the header, 95 decoded).
    out_info = probe(written)
    checker = make_search(config.checker, device, config.min_face)
    confirm = _LazySearch(config.search, device, config.min_face)
    identity = _LazyIdentity()
    report = LeakReport(checker=config.checker, every=config.check_every, threshold=config.match_threshold)
    found: list[_Found] = []
    batch: list[tuple[int, np.ndarray]] = []
    written_count = 0
    with progress_bar(original.frames, f"leak check {written.name}", "frame", progress and bar is None) as own:
        step = bar if bar is not None else own
        for index, out in iter_frames(out_info):
            written_count += 1
            if index % config.check_every:
                continue
            step.update(1)
            batch.append((index, out))
            if len(batch) == config.batch_size:
                found += _check_batch(batch, checker, confirm, identity, swapped_at, swap_distances, solid, report)
                batch = []
        if batch:
            found += _check_batch(batch, checker, confirm, identity, swapped_at, swap_distances, solid, report)
    decoded = _measure_against_original(found, original, original_faces, identity, frames is None)
    decoded = decoded if frames is None else frames
    if written_count != decoded:
        raise DeidError(f"{written}: {written_count} frames decoded from the output for {decoded} in {original.path}; "
                        "the output is incomplete: run the command again")
    for hit in found:
        leak = Leak(hit.frame, hit.box, hit.kind, hit.distance)
        if hit.kind == "swap matches":
            if hit.distance is not None and hit.distance < report.threshold:
                report.leaks.append(leak)
        else:
            (report.leaks if hit.confirmed else report.unconfirmed).append(leak)
    if report.leaks:
        log.warning("leak check: %d face(s) in %d of %d checked frames, first: frame %d, %s", len(report.leaks),
                    len(report.by_frame()), report.frames_checked, report.leaks[0].frame, report.leaks[0].describe())
    return report


@dataclass
class _Found:
    """A face the checker found in the output; its distance to the original is measured after the pass."""

    frame: int
    box: tuple[float, float, float, float]  # x, y, w, h
    kind: str                               # "face found" | "swap matches"
    confirmed: bool
    embedding: np.ndarray | None            # of the output face (None: too small to fit)
    distance: float | None = None


def _check_batch(batch: list[tuple[int, np.ndarray]], checker, confirm: "_LazySearch", identity: _LazyIdentity,
                 swapped_at: Mapping[int, tuple[float, float, float, float]], swap_distances: Mapping[int, float],
                 solid: Callable[[int, tuple[int, int]], np.ndarray | None] | None,
                 report: LeakReport) -> list[_Found]:
    found: list[_Found] = []
    for (index, out), boxes in zip(batch, checker.find([out for _, out in batch])):
        report.frames_checked += 1
        fills = solid(index, out.shape[:2]) if solid is not None and len(boxes) else None
        for box in boxes:
            if fills is not None and _covered(fills, box) >= SOLID_COVER:
                report.masked += 1
                continue
            xywh = (float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1]))
            if index in swapped_at and box_inside(box, swapped_at[index]):
                known = swap_distances.get(index)
                embedding = _embed(identity, out, box) if known is None else None
                found.append(_Found(index, xywh, "swap matches", True, embedding, known))
                continue
            found.append(_Found(index, xywh, "face found", _confirmed(box, out, confirm), _embed(identity, out, box)))
    return found


def _measure_against_original(found: list[_Found], original: MediaInfo, original_faces: Sequence[np.ndarray] | None,
                              identity: _LazyIdentity, count: bool) -> int:
    """Fill in each found face's distance from the original frames it needs; returns the frames decoded
    (all of them when `count`, else only up to the last frame needed)."""
    faces_of = _OriginalFaces(original_faces)
    needed: dict[int, list[_Found]] = {}
    for hit in found:
        if hit.embedding is not None and hit.distance is None:
            needed.setdefault(hit.frame, []).append(hit)
    if not needed and not count:
        return 0
    decoded = 0
    last = max(needed, default=-1)
    for index, src in iter_frames(original):
        decoded += 1
        for hit in needed.get(index, []):
            if hit.kind == "swap matches":
                reference = _embed(identity, src, _xyxy(hit.box))
                hit.distance = None if reference is None else float(np.linalg.norm(hit.embedding - reference))
            else:
                hit.distance = faces_of.nearest(identity, index, src, hit.embedding)
        if index >= last and not count:
            break
    return decoded


def _xyxy(box: tuple[float, float, float, float]) -> np.ndarray:
    x, y, w, h = box
    return np.array([x, y, x + w, y + h], np.float64)


SOLID_COVER = 0.6
CONFIRM_SCORE = 0.95
CONFIRM_FACE_PX = 64.0


class _LazySearch:
    """The protection pass's detector, built on the first detection that needs confirming."""

    def __init__(self, name: str, device: torch.device, min_face: int) -> None:
        self._args, self._search = (name, device, min_face), None

    def find(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        if self._search is None:
            self._search = make_search(*self._args)
        return self._search.find(frames)


def _confirmed(box: np.ndarray, frame: np.ndarray, confirm: _LazySearch) -> bool:
    """Does a second look agree that `box` is a face: a sure checker score, or the other detector zoomed in?"""
    if len(box) > 4 and float(box[4]) >= CONFIRM_SCORE:
        return True
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    w, h = max(1.0, x1 - x0), max(1.0, y1 - y0)
    H, W = frame.shape[:2]
    cx0, cy0 = int(max(0, x0 - w)), int(max(0, y0 - h))
    cx1, cy1 = int(min(W, x1 + w)), int(min(H, y1 + h))
    zoom = float(np.clip(CONFIRM_FACE_PX / max(w, h), 1.0, 4.0))
    crop = cv2.resize(np.ascontiguousarray(frame[cy0:cy1, cx0:cx1]), None, fx=zoom, fy=zoom,
                      interpolation=cv2.INTER_CUBIC)
    for other in confirm.find([crop])[0]:
        cx = cx0 + (other[0] + other[2]) / 2 / zoom
        cy = cy0 + (other[1] + other[3]) / 2 / zoom
        if x0 - 0.25 * w <= cx <= x1 + 0.25 * w and y0 - 0.25 * h <= cy <= y1 + 0.25 * h:
            return True
    return False


class _LazyIdentity:
    """dlib's recogniser, loaded on the first face found (a clean output never needs it: ~0.8 s saved)."""

    def __init__(self) -> None:
        self._model: IdentityModel | None = None

    def embed_boxes(self, image: np.ndarray, boxes: list[Rect]) -> list[np.ndarray]:
        if self._model is None:
            self._model = IdentityModel()
        return self._model.embed_boxes(image, boxes)


class _OriginalFaces:
    """Embeddings of the faces the pass found in each original frame, computed once per frame on demand."""

    def __init__(self, faces: Sequence[np.ndarray] | None) -> None:
        self._faces = faces
        self._embedded: dict[int, list[np.ndarray]] = {}

    def nearest(self, identity: _LazyIdentity, index: int, src: np.ndarray, found: np.ndarray) -> float | None:
        """Distance from an output face's embedding to the nearest face of original frame `index` (None: none
        known)."""
        if self._faces is None or index >= len(self._faces) or not len(self._faces[index]):
            return None
        if index not in self._embedded:
            self._embedded[index] = [e for e in (_embed(identity, src, b) for b in self._faces[index]) if e is not None]
        if not self._embedded[index]:
            return None
        return float(min(np.linalg.norm(found - e) for e in self._embedded[index]))


def _covered(fills: np.ndarray, box: np.ndarray) -> float:
    h, w = fills.shape
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    if x1 <= x0 or y1 <= y0:
        return 0.0
    return float((fills[y0:y1, x0:x1] > 0).mean())


def _embed(identity: _LazyIdentity, image: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """The 128-d embedding of the face in `box` (x0, y0, x1, y1) of `image`; None if too small to fit."""
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    w, h = x1 - x0, y1 - y0
    if min(w, h) < 4:
        return None
    # Both searches give MTCNN-like boxes; dlib's landmark predictor wants its own, squarer and lower box.
    side = MTCNN_TO_DLIB_SCALE * w
    cx, cy = x0 + w / 2, y0 + h / 2 + MTCNN_TO_DLIB_SHIFT * h
    rect = Rect(cx - side / 2, cy - side / 2, side, side)
    return identity.embed_boxes(image, [rect])[0].astype(np.float64)
