"""Convert's first step: per frame, before touching a pixel, what to swap and what to hide.

The target is the kept face of a clean folder or the largest face of an extract folder. Its landmarks
are interpolated over gaps of up to `max_gap` frames (the swap continues) and smoothed over time; a
longer gap is hidden at the interpolated position. Every other face of the extraction (bystanders) is
hidden, and so is whatever the protection pass (stages/guard.py) finds that is not the target.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from deid.models.search import make_search
from deid.stages.alignments import Alignments
from deid.stages.convert_config import ConvertConfig
from deid.stages.guard import Region, box_inside, drop_matching, hold, scan
from deid.stages.media import MediaInfo
from deid.stages.protect_config import ProtectConfig
from deid.stages.smoothing import OneEuroFilter


@dataclass
class FramePlan:
    target: np.ndarray | None = None      # 68 landmarks of the face to swap (after smoothing)
    status: str = "no face"
    reason: str = ""
    protect: list[np.ndarray] = field(default_factory=list)  # hull points (frame px) to obfuscate
    protect_sizes: list[float] = field(default_factory=list)
    guard: list[Region] = field(default_factory=list)  # what the protection pass found that is not the target


class PlanFrames:
    """plan: the extraction's faces of every frame, then the protection pass's search of every frame."""

    def __init__(self, config: ConvertConfig, protect: ProtectConfig, device: torch.device, progress: bool) -> None:
        self._config = config
        self._protect = protect
        self._device = device
        self._progress = progress

    def process(self, alignments: Alignments, all_faces: Alignments, info: MediaInfo) -> list[FramePlan]:
        """One plan per frame of `alignments`; `all_faces` is the extraction holding the bystanders."""
        plans = plan_frames(alignments, all_faces, info, self._config)
        add_guard(plans, info, self._protect, self._device, self._progress)
        return plans


def plan_frames(alignments: Alignments, all_faces: Alignments, info: MediaInfo,
                config: ConvertConfig) -> list[FramePlan]:
    """Decide per frame what to swap and what to protect, from the extraction alone."""
    count = len(alignments.frames)
    is_clean = all_faces is not alignments
    targets: list[np.ndarray | None] = []
    target_boxes: list[list[float] | None] = []
    for i in range(count):
        faces = alignments.frames.get(str(i), [])
        # From a clean folder the kept face is the target; from an extract the largest face is.
        chosen = faces[0] if faces else None
        targets.append(None if chosen is None else np.asarray(chosen["landmarks"], np.float64))
        target_boxes.append(None if chosen is None else chosen["box"])
    plans = [FramePlan() for _ in range(count)]
    known = [i for i, t in enumerate(targets) if t is not None]
    for i, plan in enumerate(plans):
        if targets[i] is not None:
            plan.target, plan.status = targets[i], "swapped"
    for before, after in zip(known, known[1:]):
        gap = after - before - 1
        for i in range(before + 1, after):
            t = (i - before) / (after - before)
            landmarks = (1 - t) * targets[before] + t * targets[after]
            if gap <= config.max_gap:
                plans[i].target, plans[i].status = landmarks, "interpolated"
                plans[i].reason = f"target not detected; track interpolated over a {gap}-frame gap"
            else:
                plans[i].status, plans[i].reason = "protected", f"target not detected in a {gap}-frame gap of its track"
                plans[i].protect.append(landmarks)
                plans[i].protect_sizes.append(face_size(landmarks))
    _smooth(plans, info, config)
    for i, plan in enumerate(plans):
        for face in all_faces.frames.get(str(i), []):
            if target_boxes[i] is not None and _same_face(face["box"], target_boxes[i]):
                continue
            if not is_clean and target_boxes[i] is None and plan.target is not None and \
                    _overlaps_landmarks(face["box"], plan.target):
                continue  # an extract folder's own target face, in an interpolated frame
            plan.protect.append(np.asarray(face["landmarks"], np.float64))
            plan.protect_sizes.append(float(max(face["box"][2], face["box"][3])))
            if plan.status in ("no face", "swapped", "interpolated"):
                plan.reason = (plan.reason + "; " if plan.reason else "") + "bystander protected"
            if plan.status == "no face":
                plan.status = "protected"
    return plans


def add_guard(plans: list[FramePlan], info: MediaInfo, protect: ProtectConfig, device: torch.device,
              progress: bool) -> None:
    """Search every frame for faces the extraction missed; all but the swapped target are protected."""
    found = scan(info, make_search(protect.search, device, protect.min_face), protect.batch_size, progress,
                 info.path.name)

    def is_target(index: int, box: np.ndarray) -> bool:
        target = plans[index].target if index < len(plans) else None
        return target is not None and box_inside(box, bounds(target))

    regions = hold(drop_matching(found, is_target), protect.hold, protect.track_gap)
    for plan, here in zip(plans, regions):
        plan.guard = here
        if here and plan.status == "no face":
            plan.status, plan.reason = "protected", "face found by the protection pass"
        elif here:
            plan.reason = (plan.reason + "; " if plan.reason else "") + f"{len(here)} region(s) of the protection pass"


def bounds(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """x0, y0, x1, y1 of the landmarks."""
    x0, y0 = landmarks.min(0)
    x1, y1 = landmarks.max(0)
    return float(x0), float(y0), float(x1), float(y1)


def hull_box(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """x, y, w, h of the landmarks."""
    x0, y0 = landmarks.min(0)
    x1, y1 = landmarks.max(0)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def face_size(landmarks: np.ndarray) -> float:
    span = landmarks.max(0) - landmarks.min(0)
    return float(max(span))


def _smooth(plans: list[FramePlan], info: MediaInfo, config: ConvertConfig) -> None:
    if config.smoothing == "none":
        return
    smoother = OneEuroFilter(rate=info.fps or 25.0, min_cutoff=config.smooth_min_cutoff, beta=config.smooth_beta)
    for plan in plans:
        if plan.target is None:
            smoother.reset()  # a new track starts fresh, it must not be pulled towards the old position
            continue
        plan.target = smoother(plan.target)


def _same_face(box: list[float], other: list[float]) -> bool:
    return all(abs(a - b) < 1e-3 for a, b in zip(box, other))


def _overlaps_landmarks(box: list[float], landmarks: np.ndarray) -> bool:
    x, y, w, h = box
    cx, cy = landmarks.mean(0)
    return x <= cx <= x + w and y <= cy <= y + h
