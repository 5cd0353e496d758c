"""Built-in example clips for `deid demo`, so a fresh machine needs no test data.

Two real people, from public-domain portraits that dependencies already ship: the astronaut Eileen
Collins (`skimage.data.astronaut`) is the target, Grace Hopper (matplotlib's sample data) the donor.
Each still is animated with a smooth synthetic head motion (roll, shift, zoom and a perspective warp
that reads as yaw/pitch) so that detection, alignment and tracking get non-trivial input, while every
frame stays a clearly detectable face of the same identity.
"""
from __future__ import annotations

import json
import math
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import cv2
import ffmpeg
import numpy as np

from deid.core.atomic import atomic_path
from deid.core.errors import MediaError
from deid.stages.image_file import write_image

# Bump when the rendering changes so that clips cached by an older version are rebuilt.
_RENDER_VERSION = 2

# dlib's HOG box spans roughly brows to chin and cheek to cheek; at this share of the frame width the
# whole head plus some shoulders is visible and the face is large enough for every later stage.
_FACE_FRACTION = 0.36
# Where the face box centre sits vertically: a little above the middle, as in a typical head shot.
_FACE_HEIGHT_POSITION = 0.47

_ROLL_DEG = 8.0
_SHIFT_FRACTION = 0.05
_ZOOM_FRACTION = 0.06
# Keystone of the perspective warp over the whole frame; larger values start to look like a paper
# cut-out being tilted rather than a head turning.
_YAW_KEYSTONE = 0.07
_PITCH_KEYSTONE = 0.045

_AUDIO_HZ = 440
_AUDIO_RATE = 48000
_AUDIO_GAIN = 0.1  # the lavfi sine is already at 1/8 full scale; this keeps it a faint hum


@dataclass(frozen=True)
class DemoClip:
    path: Path
    person: str
    frames: int
    fps: float
    reference: Path


@dataclass(frozen=True)
class _Motion:
    roll_deg: np.ndarray
    shift_x: np.ndarray
    shift_y: np.ndarray
    zoom: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray


def build_demo_clips(
    out_dir: Path, seconds: float = 3.0, fps: int = 25, size: int = 384, seed: int = 0
) -> tuple[DemoClip, DemoClip]:
    """Write <out_dir>/astronaut.mp4 and <out_dir>/grace_hopper.mp4 (+ reference PNGs); idempotent: if the files exist with the expected frame count, reuse them."""
    if seconds <= 0 or fps <= 0:
        raise ValueError(f"seconds and fps must be positive, got seconds={seconds}, fps={fps}")
    if size < 64 or size % 2:
        # yuv420p needs even dimensions; below 64 px the face is too small for any detector.
        raise ValueError(f"size must be an even number >= 64, got {size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = max(1, round(seconds * fps))
    astronaut = _build_clip(out_dir, "astronaut", _load_astronaut, 0, frames, fps, size, seed)
    grace_hopper = _build_clip(out_dir, "grace_hopper", _load_grace_hopper, 1, frames, fps, size, seed)
    return astronaut, grace_hopper


def _build_clip(
    out_dir: Path,
    person: str,
    load: Callable[[], np.ndarray],
    person_index: int,
    frames: int,
    fps: int,
    size: int,
    seed: int,
) -> DemoClip:
    path = out_dir / f"{person}.mp4"
    reference = out_dir / f"{person}_reference.png"
    # The tag records everything that determines the pixels, so a clip left by a call with another
    # seed or size is rebuilt instead of silently reused.
    tag = json.dumps(
        {"deid_demo": _RENDER_VERSION, "person": person, "frames": frames, "fps": fps, "size": size, "seed": seed},
        sort_keys=True,
        separators=(",", ":"),
    )
    clip = DemoClip(path=path, person=person, frames=frames, fps=float(fps), reference=reference)
    video_ok = _is_reusable(path, tag, frames, size)
    # A rebuilt video always gets a fresh reference: one left by a call with another size would not match.
    if video_ok and _has_size(reference, size):
        return clip

    image = load()
    box = _face_box(image, person)
    base = _base_transform(box, image.shape, size)
    still = cv2.warpPerspective(image, base, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    write_image(reference, cv2.cvtColor(still, cv2.COLOR_RGB2BGR))
    if not video_ok:
        face_centre = _apply(base, _box_centre(box))
        motion = _motion(frames, fps, np.random.default_rng([seed, person_index]))
        rendered = (_render_frame(image, base, face_centre, motion, i, size) for i in range(frames))
        _encode(path, rendered, frames, fps, size, tag)
    return clip


def _load_astronaut() -> np.ndarray:
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut()[..., :3])


def _load_grace_hopper() -> np.ndarray:
    import matplotlib.cbook

    path = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise MediaError(f"{path}: cannot read matplotlib's sample portrait (reinstall matplotlib)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _face_box(image: np.ndarray, person: str) -> tuple[int, int, int, int]:
    """(top, right, bottom, left) of the one real face in the still."""
    # Imported here: face_recognition loads dlib's models at import, which only the demo needs.
    import face_recognition

    boxes = face_recognition.face_locations(image, model="hog")
    if not boxes:
        raise MediaError(f"no face found in the bundled {person} portrait (reinstall scikit-image/matplotlib)")
    if len(boxes) == 1:
        return boxes[0]
    # The astronaut's mission patch is also detected, weakly; the HOG detector behind face_locations
    # scores the real face far higher, so ask it for the scores of the same candidates.
    rects, scores, _ = face_recognition.api.face_detector.run(image, 1, 0)
    scored = {(r.top(), r.right(), r.bottom(), r.left()): s for r, s in zip(rects, scores)}
    return max(boxes, key=lambda box: _box_score(box, scored, image.shape))


def _box_score(box: tuple[int, int, int, int], scored: dict, shape: tuple[int, ...]) -> float:
    # face_locations clips boxes to the image, so match a candidate to its unclipped detection.
    h, w = shape[:2]
    for (top, right, bottom, left), score in scored.items():
        if (max(top, 0), min(right, w), min(bottom, h), max(left, 0)) == tuple(box):
            return float(score)
    return -math.inf


def _box_centre(box: tuple[int, int, int, int]) -> tuple[float, float]:
    top, right, bottom, left = box
    return (left + right) / 2.0, (top + bottom) / 2.0


def _base_transform(box: tuple[int, int, int, int], shape: tuple[int, ...], size: int) -> np.ndarray:
    """Homography from the still to the un-moved square frame: a crop scaled so the face is large."""
    top, right, bottom, left = box
    cx, cy = _box_centre(box)
    side = (right - left) / _FACE_FRACTION
    height, width = shape[:2]
    x0 = cx - side / 2.0
    y0 = cy - side * _FACE_HEIGHT_POSITION
    # Slide the crop back inside the picture where it fits: real pixels look better than reflections.
    if side <= width:
        x0 = min(max(x0, 0.0), width - side)
    if side <= height:
        y0 = min(max(y0, 0.0), height - side)
    scale = size / side
    return np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale], [0.0, 0.0, 1.0]])


def _smooth_signal(rng: np.random.Generator, t: np.ndarray, amplitude: float) -> np.ndarray:
    """A sum of three slow sinusoids whose peak over the clip is exactly `amplitude`.

    Frequencies of 0.15-0.7 Hz match the slow sway of someone talking to a camera. Scaling to the
    clip's own peak (rather than to the theoretical bound, which three waves rarely reach together)
    makes every clip, short or long, use the full documented range without ever exceeding it.
    """
    freqs = rng.uniform(0.15, 0.7, size=3)
    phases = rng.uniform(0.0, 2.0 * math.pi, size=3)
    weights = rng.uniform(0.5, 1.0, size=3)
    wave = (weights[:, None] * np.sin(2.0 * math.pi * freqs[:, None] * t[None, :] + phases[:, None])).sum(axis=0)
    peak = float(np.abs(wave).max())
    return amplitude * wave / peak if peak > 1e-9 else np.zeros_like(wave)


def _motion(frames: int, fps: int, rng: np.random.Generator) -> _Motion:
    t = np.arange(frames, dtype=np.float64) / fps
    return _Motion(
        roll_deg=_smooth_signal(rng, t, _ROLL_DEG),
        shift_x=_smooth_signal(rng, t, _SHIFT_FRACTION),
        shift_y=_smooth_signal(rng, t, _SHIFT_FRACTION),
        zoom=1.0 + _smooth_signal(rng, t, _ZOOM_FRACTION),
        yaw=_smooth_signal(rng, t, _YAW_KEYSTONE),
        pitch=_smooth_signal(rng, t, _PITCH_KEYSTONE),
    )


def _perspective(centre: tuple[float, float], half: float, yaw: float, pitch: float) -> np.ndarray:
    """Keystone a square around the face: the edge turning towards the camera grows, the other shrinks."""
    px, py = centre
    src, dst = [], []
    for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        src.append((px + sx * half, py + sy * half))
        dst.append((px + sx * half * (1.0 - sy * pitch), py + sy * half * (1.0 - sx * yaw)))
    return cv2.getPerspectiveTransform(np.float32(src), np.float32(dst)).astype(np.float64)


def _render_frame(
    image: np.ndarray, base: np.ndarray, face: tuple[float, float], motion: _Motion, index: int, size: int
) -> np.ndarray:
    # One composed homography, so each frame is resampled once from the full-resolution still.
    tilt = _perspective(face, size / 2.0, motion.yaw[index], motion.pitch[index])
    similarity = np.vstack(
        [cv2.getRotationMatrix2D(face, float(motion.roll_deg[index]), float(motion.zoom[index])), [0.0, 0.0, 1.0]]
    )
    similarity[0, 2] += motion.shift_x[index] * size
    similarity[1, 2] += motion.shift_y[index] * size
    matrix = similarity @ tilt @ base
    return cv2.warpPerspective(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _apply(matrix: np.ndarray, point: tuple[float, float]) -> tuple[float, float]:
    x, y, w = matrix @ np.array([point[0], point[1], 1.0])
    return float(x / w), float(y / w)


def _encode(path: Path, frames: Iterable[np.ndarray], count: int, fps: int, size: int, tag: str) -> None:
    duration = count / fps
    video = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{size}x{size}", framerate=fps)
    audio = ffmpeg.input(
        f"sine=frequency={_AUDIO_HZ}:sample_rate={_AUDIO_RATE}:duration={duration:.6f}", format="lavfi"
    ).filter("volume", _AUDIO_GAIN)
    with atomic_path(path) as tmp:
        args = (
            ffmpeg.output(
                video,
                audio,
                str(tmp),
                format="mp4",
                vcodec="libx264",
                pix_fmt="yuv420p",
                crf=18,
                r=fps,
                acodec="aac",
                audio_bitrate="96k",
                t=f"{duration:.6f}",
                movflags="+faststart",
                metadata=f"comment={tag}",
            )
            .global_args("-hide_banner", "-nostats", "-loglevel", "error")
            .overwrite_output()
            .compile()
        )
        # stderr goes to a file rather than a pipe: a pipe nobody reads while frames are being written
        # would deadlock once ffmpeg fills it.
        with tempfile.TemporaryFile() as log:
            process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
            try:
                for frame in frames:
                    process.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
            except BrokenPipeError:
                pass  # ffmpeg died; its exit status and stderr below say why
            finally:
                try:
                    process.stdin.close()
                except BrokenPipeError:
                    pass  # same: the exit status is checked next
                code = process.wait()
            if code != 0:
                log.seek(0)
                lines = [line for line in log.read().decode("utf-8", "replace").splitlines() if line.strip()]
                last = lines[-1].strip() if lines else "(no output)"
                raise RuntimeError(f"ffmpeg failed with exit status {code} writing {path.name}: {last}")


def _has_size(image_path: Path, size: int) -> bool:
    image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED) if image_path.exists() else None
    return image is not None and image.shape[:2] == (size, size)


def _is_reusable(path: Path, tag: str, frames: int, size: int) -> bool:
    if not path.exists():
        return False
    try:
        info = ffmpeg.probe(str(path))
    except ffmpeg.Error:
        return False
    streams = info.get("streams", [])
    video = [s for s in streams if s.get("codec_type") == "video"]
    has_audio = any(s.get("codec_type") == "audio" for s in streams)
    if len(video) != 1 or not has_audio:
        return False
    v = video[0]
    return (
        info.get("format", {}).get("tags", {}).get("comment") == tag
        and str(v.get("nb_frames")) == str(frames)
        and v.get("width") == size
        and v.get("height") == size
    )
