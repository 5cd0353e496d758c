"""Reading the input of any stage: a video file (decoded by ffmpeg as a raw RGB pipe) or a folder of images.

Frame keys everywhere are 0-based indices of the decoded stream. Decoding uses `fps_mode passthrough`
so ffmpeg neither drops nor duplicates frames (variable-frame-rate sources keep one index per coded
frame) and ffmpeg's default autorotation, so frames come out upright and `width`/`height` are the
displayed size; the container's rotation is recorded so writers can restore it.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import cv2
import ffmpeg
import numpy as np

from pipeline.errors import MediaError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    kind: Literal["video", "images"]
    frames: int
    width: int | None
    height: int | None
    fps: float | None = None
    rotation: int = 0
    has_audio: bool = False
    files: tuple[str, ...] = field(default_factory=tuple)

    def as_json(self) -> dict:
        data = {"path": str(self.path), "kind": self.kind, "fps": self.fps, "frames": self.frames,
                "width": self.width, "height": self.height, "rotation": self.rotation, "has_audio": self.has_audio}
        if self.kind == "images":
            data["files"] = list(self.files)
        return data


def require_ffmpeg() -> None:
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise MediaError(f"{tool} not found on PATH; install it (Debian/Ubuntu: apt-get install ffmpeg)")


def probe(path: Path) -> MediaInfo:
    """Describe a video file or an image folder, or raise a one-line MediaError saying what is wrong."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: no such file or folder; check the path")
    if path.is_dir():
        return _probe_folder(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _probe_images(path, [path])
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes); re-copy or re-export the video")
    return _probe_video(path)


def _probe_folder(path: Path) -> MediaInfo:
    files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")),
                   key=lambda p: _natural_key(p.name))
    if not files:
        raise MediaError(f"{path}: folder has no images ({', '.join(IMAGE_SUFFIXES)}); give a video or an image folder")
    return _probe_images(path, files)


def _probe_images(path: Path, files: list[Path]) -> MediaInfo:
    return MediaInfo(path=path, kind="images", frames=len(files), width=None, height=None,
                     files=tuple(str(f.relative_to(path)) if f != path else f.name for f in files))


def _natural_key(name: str) -> list:
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def _probe_video(path: Path) -> MediaInfo:
    require_ffmpeg()
    try:
        info = ffmpeg.probe(str(path), count_packets=None)
    except ffmpeg.Error as exc:
        reason = _last_line(exc.stderr) or "ffprobe failed"
        raise MediaError(f"{path}: not a readable video ({reason}); check the file or re-encode it") from None
    video = next((s for s in info.get("streams", []) if s.get("codec_type") == "video"), None)
    if video is None:
        raise MediaError(f"{path}: no video stream; give a video file or a folder of images")
    rotation = _rotation(video)
    width, height = int(video["width"]), int(video["height"])
    if rotation % 180 == 90:
        width, height = height, width
    frames = int(video.get("nb_read_packets") or video.get("nb_frames") or 0)
    return MediaInfo(path=path, kind="video", frames=frames, width=width, height=height,
                     fps=_fps(video), rotation=rotation,
                     has_audio=any(s.get("codec_type") == "audio" for s in info.get("streams", [])))


def _fps(stream: dict) -> float | None:
    for key in ("avg_frame_rate", "r_frame_rate"):
        num, _, den = str(stream.get(key, "0/0")).partition("/")
        try:
            if float(den or 1) > 0 and float(num) > 0:
                return round(float(num) / float(den or 1), 6)
        except ValueError:
            continue
    return None


def _rotation(stream: dict) -> int:
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            return int(round(float(side["rotation"]))) % 360
    try:
        return int(stream.get("tags", {}).get("rotate", 0)) % 360
    except ValueError:
        return 0


def _last_line(stderr: bytes | str | None) -> str:
    if not stderr:
        return ""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def iter_frames(info: MediaInfo, every: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame index, RGB uint8 HxWx3) for every `every`-th frame."""
    if info.kind == "images":
        yield from _iter_images(info, every)
    else:
        yield from _iter_video(info, every)


def _iter_images(info: MediaInfo, every: int) -> Iterator[tuple[int, np.ndarray]]:
    root = info.path if info.path.is_dir() else info.path.parent
    for index, name in enumerate(info.files):
        if index % every:
            continue
        bgr = cv2.imread(str(root / name), cv2.IMREAD_COLOR)
        if bgr is None:
            raise MediaError(f"{root / name}: not a readable image; remove it from the folder or re-save it")
        yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _iter_video(info: MediaInfo, every: int) -> Iterator[tuple[int, np.ndarray]]:
    assert info.width and info.height
    frame_bytes = info.width * info.height * 3
    args = (ffmpeg.input(str(info.path))
            .output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
            .global_args("-nostdin", "-loglevel", "error")
            .compile())
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stderr_tail: deque[bytes] = deque(maxlen=20)
    # Drain stderr on a thread: a chatty decoder would otherwise fill the pipe and deadlock us.
    reader = threading.Thread(target=lambda: stderr_tail.extend(process.stderr), daemon=True)
    reader.start()
    index = 0
    try:
        while True:
            buffer = bytearray(frame_bytes)  # fresh and writable: consumers may keep or modify the frame
            if process.stdout.readinto(buffer) < frame_bytes:
                break
            if index % every == 0:
                yield index, np.frombuffer(buffer, np.uint8).reshape(info.height, info.width, 3)
            index += 1
    finally:
        process.stdout.close()
        if process.poll() is None:
            process.kill()
        process.wait()
        reader.join(timeout=5)
    if process.returncode not in (0, -9) and index == 0:
        raise MediaError(f"{info.path}: ffmpeg could not decode it ({_last_line(b''.join(stderr_tail))}); re-encode the video")


def read_image_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise MediaError(f"{path}: not a readable image; check the file")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
