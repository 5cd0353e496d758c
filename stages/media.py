"""Reading the input of any stage: a video file (decoded by ffmpeg as a raw RGB pipe) or a folder of images.

Frame keys everywhere are 0-based indices of the decoded stream. Decoding uses `fps_mode passthrough`
so ffmpeg neither drops nor duplicates frames (variable-frame-rate sources keep one index per coded
frame) and ffmpeg's default autorotation, so frames come out upright and `width`/`height` are the
displayed size; the container's rotation is recorded so writers can restore it.

A damaged input is refused, not half-processed: `probe` compares the time span of the packets that can
actually be read with the duration the container declares (a file cut short keeps its header, so ffmpeg
would otherwise decode the first part and stop without complaint), and decoding watches ffmpeg's
demuxer/decoder errors and the decoded frame count. `allow_damaged=True` processes what decodes, and the
finding stays on `MediaInfo.damage` for the stage's summary.
"""
from __future__ import annotations

import logging
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

log = logging.getLogger("deid.media")

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
    damage: str | None = None  # what is missing or broken, when the input was accepted with allow_damaged
    allow_damaged: bool = False

    def as_json(self) -> dict:
        data = {"path": str(self.path), "kind": self.kind, "fps": self.fps, "frames": self.frames,
                "width": self.width, "height": self.height, "rotation": self.rotation, "has_audio": self.has_audio}
        if self.kind == "images":
            data["files"] = list(self.files)
        if self.damage:
            data["damage"] = self.damage
        return data


def ffmpeg_path(path: Path | str) -> str:
    """`path` as ffmpeg and ffprobe must see it: a file, whatever its name.

    A name starting with `-` is read as an option and one containing `:` as a protocol (`12:30 talk.mp4`
    means protocol `12`); the `file:` prefix with an absolute path leaves no room for either.
    """
    return "file:" + str(Path(path).absolute())


def require_ffmpeg() -> None:
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise MediaError(f"{tool} not found on PATH; install it (Debian/Ubuntu: apt-get install ffmpeg)")


def probe(path: Path, allow_damaged: bool = False) -> MediaInfo:
    """Describe a video file or an image folder, or raise a one-line MediaError saying what is wrong.

    A video whose readable packets end well before its declared duration is damaged: a MediaError,
    unless `allow_damaged` (then `damage` says what is missing and only what decodes is processed).
    """
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: no such file or folder; check the path")
    if path.is_dir():
        return _probe_folder(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _probe_images(path, [path])
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes); re-copy or re-export the video")
    return _probe_video(path, allow_damaged)


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


def _probe_video(path: Path, allow_damaged: bool) -> MediaInfo:
    require_ffmpeg()
    try:
        # Every video packet's time: the readable span, compared below with the declared duration.
        info = ffmpeg.probe(ffmpeg_path(path), count_packets=None, show_entries="packet=stream_index,pts_time,duration_time")
    except ffmpeg.Error as exc:
        reason = (_last_line(exc.stderr) or "ffprobe failed").replace(ffmpeg_path(path) + ": ", "")
        raise MediaError(f"{path}: not a readable video ({reason}); check the file or re-encode it") from None
    video = next((s for s in info.get("streams", []) if s.get("codec_type") == "video"), None)
    if video is None:
        raise MediaError(f"{path}: no video stream; give a video file or a folder of images")
    rotation = _rotation(video)
    width, height = int(video["width"]), int(video["height"])
    if rotation % 180 == 90:
        width, height = height, width
    frames = int(video.get("nb_read_packets") or video.get("nb_frames") or 0)
    fps = _fps(video)
    packets = [p for p in info.get("packets", []) if p.get("stream_index") == video.get("index")]
    damage = _missing_span(video, packets, info.get("format", {}), fps)
    if damage and not allow_damaged:
        raise MediaError(f"{path}: damaged or truncated video ({damage}); re-copy or re-export it, or pass "
                         "--allow-damaged to process only what decodes")
    if damage:
        log.warning("%s: damaged (%s); processing only what decodes (--allow-damaged)", path, damage)
    return MediaInfo(path=path, kind="video", frames=frames, width=width, height=height, fps=fps, rotation=rotation,
                     has_audio=any(s.get("codec_type") == "audio" for s in info.get("streams", [])),
                     damage=damage, allow_damaged=allow_damaged)


def _missing_span(video: dict, packets: list[dict], container: dict, fps: float | None) -> str | None:
    """What the readable packets lack against the container's declared duration, or None when complete.

    Time spans rather than frame counts: variable-frame-rate sources and AVI's skipped frames make
    declared and readable counts differ on intact files, while a cut file always ends early in time.
    """
    times = [(float(p["pts_time"]), _float(p.get("duration_time")) or 0.0) for p in packets
             if p.get("pts_time") not in (None, "N/A")]
    if not times:
        return "no readable video packets"
    start = min(t for t, _ in times)
    readable = max(t + d for t, d in times) - start
    frame = 1.0 / fps if fps else 0.04
    declared, slack = _float(video.get("duration")), 3 * frame
    count = _float(video.get("nb_frames"))
    if count and fps and (declared is None or count / fps > declared):
        declared = count / fps
    if declared is None:
        # Matroska/WebM: only the container's duration, which an audio track may make a little longer.
        declared, slack = _float(container.get("duration")), 3 * frame + 0.25
    if declared is None or readable >= declared - slack:
        return None
    return (f"the container declares {declared:.2f} s of video, only {readable:.2f} s ({len(times)} frames) "
            "can be read")


def _float(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number > 0 and number == number and number != float("inf") else None


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
    args = (ffmpeg.input(ffmpeg_path(info.path))
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
    _check_decoded(info, index, decode_errors(b"".join(stderr_tail)))


# Lines of ffmpeg's own output side (the raw pipe muxer), not of the input: an out-of-order timestamp
# warning there says nothing about the file.
_OUTPUT_SIDE = ("[rawvideo @", "to muxer")


def decode_errors(stderr: bytes) -> list[str]:
    """ffmpeg's error-level lines about the input (demuxer, decoder) in a decode's stderr."""
    lines = stderr.decode("utf-8", "replace").splitlines()
    return [line.strip() for line in lines if line.strip() and not any(m in line for m in _OUTPUT_SIDE)]


def _check_decoded(info: MediaInfo, decoded: int, errors: list[str]) -> None:
    """Raise when the whole stream was read but frames are missing or ffmpeg reported damage."""
    # Edit lists and non-displayed packets make a few packets decode to nothing on intact files.
    missing = info.frames - decoded
    problem = None
    if errors:
        problem = f"ffmpeg reports: {errors[-1]}"
    elif missing > max(3, info.frames // 50):
        problem = f"{decoded} of {info.frames} frames decode"
    if problem is None:
        return
    if not info.allow_damaged:
        raise MediaError(f"{info.path}: damaged video ({problem}); re-copy or re-export it, or pass --allow-damaged "
                         "to process only what decodes")
    log.warning("%s: damaged (%s); kept what decodes (--allow-damaged)", info.path, problem)


def read_image_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise MediaError(f"{path}: not a readable image; check the file")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
