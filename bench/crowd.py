"""A multi-person clip with small faces, built from real photos: the hard case for a privacy pass.

Faces are cut from the identity photos (Obama, Biden) and the expression stills, scaled so that each
face box is 15-40 px wide, placed over a real background and drifted a few pixels per frame, plus one
large face (the person a swap would target). The true box of every face in every frame is returned, so
a detector's recall can be counted exactly and a leak check has ground truth.
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

# (photo, face side in px of the output frame). Sizes span the 15-40 px range the protection pass must cover.
SMALL_FACES: tuple[tuple[str, int], ...] = (
    ("identities/obama/1.jpg", 16), ("identities/biden/1.jpg", 20), ("identities/obama/2.jpg", 24),
    ("images/0-f1-su-ph.jpg", 28), ("identities/biden/2.jpg", 32), ("images/45-m7-di-ph.jpg", 36),
    ("identities/obama/3.jpg", 40),
)
BIG_FACE = ("images/single_face.jpg", 90)


@dataclass(frozen=True)
class CrowdClip:
    path: Path
    boxes: list[list[list[float]]]  # per frame: [x, y, w, h] of every face, the big face first when present
    big_face: bool

    def save_truth(self, path: Path) -> None:
        path.write_text(json.dumps({"video": str(self.path), "boxes": self.boxes, "big_face": self.big_face}))


def _face_patch(image: np.ndarray, side: int) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Cut the largest face with a margin, scaled so its detector box is `side` px; returns patch and box in it."""
    import face_recognition

    locations = face_recognition.face_locations(image, number_of_times_to_upsample=1)
    if not locations:
        raise ValueError("no face in a crowd source photo")
    top, right, bottom, left = max(locations, key=lambda b: (b[1] - b[3]) * (b[2] - b[0]))
    w, h = right - left, bottom - top
    cx, cy = (left + right) / 2, (top + bottom) / 2
    half = 1.1 * max(w, h)  # head and some shoulders: the face keeps its context, as in a real crowd
    x0, y0 = int(max(0, cx - half)), int(max(0, cy - half * 1.1))
    x1, y1 = int(min(image.shape[1], cx + half)), int(min(image.shape[0], cy + half * 1.2))
    scale = side / max(w, h)
    crop = image[y0:y1, x0:x1]
    patch = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    box = ((left - x0) * scale, (top - y0) * scale, w * scale, h * scale)
    return patch, box


def _background(data_dir: Path, width: int, height: int) -> np.ndarray:
    bgr = cv2.imread(str(data_dir / "images" / "free-mountain-vector-01.jpg"))
    rgb = cv2.cvtColor(cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    return (rgb.astype(np.float32) * 0.8).astype(np.uint8)


def build_crowd_clip(data_dir: Path, out: Path, frames: int = 48, fps: int = 24, size: tuple[int, int] = (640, 360),
                     big_face: bool = True, faces: Sequence[tuple[str, int]] = SMALL_FACES) -> CrowdClip:
    """Write an H.264 clip of drifting faces; deterministic for the same arguments."""
    width, height = size
    background = _background(data_dir, width, height)
    sources = ([BIG_FACE] if big_face else []) + list(faces)
    patches = []
    for name, side in sources:
        image = cv2.cvtColor(cv2.imread(str(data_dir / name)), cv2.COLOR_BGR2RGB)
        patches.append(_face_patch(image, side))
    # Small faces along the top and right, spaced so none overlaps; the big face left of centre.
    slots = []
    if big_face:
        slots.append((0.02 * width, 0.12 * height))
    columns = len(faces)
    for k in range(columns):
        slots.append((0.45 * width + (k % 4) * 0.13 * width, (0.08 if k < 4 else 0.55) * height))
    rng = np.random.default_rng(7)
    phases = rng.uniform(0, 2 * np.pi, size=(len(sources), 2))
    boxes: list[list[list[float]]] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
           "-r", str(fps), "-i", "pipe:", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
           str(out)]
    encoder = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    for t in range(frames):
        frame = background.copy()
        frame_boxes = []
        for (patch, (bx, by, bw, bh)), (sx, sy), (px, py) in zip(patches, slots, phases):
            dx = 6 * np.sin(2 * np.pi * t / 40 + px)
            dy = 3 * np.sin(2 * np.pi * t / 55 + py)
            x0, y0 = int(round(sx + dx)), int(round(sy + dy))
            ph, pw = patch.shape[:2]
            x1, y1 = min(width, x0 + pw), min(height, y0 + ph)
            frame[y0:y1, x0:x1] = patch[: y1 - y0, : x1 - x0]
            frame_boxes.append([x0 + bx, y0 + by, bw, bh])
        encoder.stdin.write(frame.tobytes())
        boxes.append(frame_boxes)
    encoder.stdin.close()
    if encoder.wait() != 0:
        raise RuntimeError(f"ffmpeg could not write {out}")
    return CrowdClip(path=out, boxes=boxes, big_face=big_face)
