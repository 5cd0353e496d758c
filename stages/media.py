"""Reading the input of any stage: a video file (decoded by ffmpeg as a raw RGB pipe) or a folder of images.

Frame keys everywhere are 0-based indices of the decoded stream. Decoding uses `fps_mode passthrough`
so ffmpeg neither drops nor duplicates frames (variable-frame-rate sources keep one index per coded
frame) and ffmpeg's default autorotation, so frames come out upright and `width`/`height` are the
displayed size; the container's rotation is recorded so writers can restore it.

A damaged input is refused, not half-processed: `probe` compares the time span of the packets that can
actually be read with the duration the container declares (a file cut short keeps its header, so ffmpeg
would otherwise decode the first part and stop without complaint), and decoding watches ffmpeg's
demuxer/decoder errors and the decoded frame count. `allow_damaged=True` processes what decodes, and the
finding stays on `MediaInfo.damage` for the stage's summary. Timestamps need not start at 0: a remux,
a camera's clock or a video track that starts after the audio shifts every stream, so spans are measured
from the stream's own start and Matroska's declared end is compared with where the packets really end.

Interlaced video (CCTV, broadcast) is deinterlaced while decoding: woven fields leave combs on anything
that moves, which detectors do not read as a face. `yadif` in send_frame mode gives one progressive frame
per coded frame, so frame indices and counts stay those of the probe. Non-square pixels (PAL CCTV's
12:11) are recorded as `MediaInfo.sar` so writers keep the display aspect without resampling.
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Literal

import cv2
import ffmpeg
import numpy as np

from deid.core.errors import MediaError

log = logging.getLogger("deid.media")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# ffprobe's field orders of interlaced video: the first letter is the field coded first, the second the one
# displayed first (t = top, b = bottom).
INTERLACED = ("tt", "bb", "tb", "bt")


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
    field_order: str | None = None  # one of INTERLACED when the video is interlaced (decoding deinterlaces it)
    sar: tuple[int, int] = (1, 1)  # sample (pixel) aspect ratio of the decoded, upright frames
    audio_codecs: tuple[str, ...] = ()  # codec of each audio stream, in stream order
    video_delay: float = 0.0  # seconds from the file's first timestamp to the video's (audio that leads it)

    @property
    def interlaced(self) -> bool:
        return self.field_order in INTERLACED

    def as_json(self) -> dict:
        data = {"path": str(self.path), "kind": self.kind, "fps": self.fps, "frames": self.frames,
                "width": self.width, "height": self.height, "rotation": self.rotation, "has_audio": self.has_audio}
        if self.kind == "images":
            data["files"] = list(self.files)
        if self.damage:
            data["damage"] = self.damage
        # Only when they differ from the common case, so records of ordinary videos stay as they were.
        if self.interlaced:
            data["field_order"] = self.field_order
        if self.sar != (1, 1):
            data["sar"] = f"{self.sar[0]}:{self.sar[1]}"
        if self.video_delay:
            data["video_delay"] = self.video_delay
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
    damage = _missing_span(video, info.get("packets", []), info.get("format", {}), fps)
    if damage and not allow_damaged:
        raise MediaError(f"{path}: damaged or truncated video ({damage}); re-copy or re-export it, or pass "
                         "--allow-damaged to process only what decodes")
    if damage:
        log.warning("%s: damaged (%s); processing only what decodes (--allow-damaged)", path, damage)
    audio = tuple(str(s.get("codec_name") or "unknown") for s in info.get("streams", []) if s.get("codec_type") == "audio")
    return MediaInfo(path=path, kind="video", frames=frames, width=width, height=height, fps=fps, rotation=rotation,
                     has_audio=bool(audio), damage=damage, allow_damaged=allow_damaged,
                     field_order=_field_order(path, video), sar=_sar(video, rotation), audio_codecs=audio,
                     video_delay=_delay(video, info.get("format", {})))


def _missing_span(video: dict, packets: list[dict], container: dict, fps: float | None) -> str | None:
    """What the readable packets lack against the declared duration, or None when the video is complete.

    Time spans rather than frame counts: variable-frame-rate sources and AVI's skipped frames make
    declared and readable counts differ on intact files, while a cut file always ends early in time.
    `packets` are every stream's; the video's are picked by the stream's index.
    """
    own = _packet_times([p for p in packets if p.get("stream_index") == video.get("index")])
    if not own:
        return "no readable video packets"
    end = max(t + d for t, d in own)
    slack = 3 * (1.0 / fps if fps else 0.04)
    declared = _float(video.get("duration"))
    count = _float(video.get("nb_frames"))
    if count and fps and (declared is None or count / fps > declared):
        declared = count / fps
    if declared is not None:
        # A stream's own duration is a span from its own first packet, wherever that lies (2 s into the
        # file after `-output_ts_offset 2`, after the audio's start in a remux, or before 0 for the
        # pre-roll an edit list hides, which the declared frame count includes).
        return _shortfall(declared, end - min(t for t, _ in own), len(own), slack)
    # Matroska/WebM declare no stream duration. ffmpeg's muxer tags each stream with its end time on the
    # file's clock; failing that, only the container's end is known, which any stream may reach (audio
    # running on after the video), so it is compared with where the packets of every stream end.
    tagged = _clock(next((v for k, v in (video.get("tags") or {}).items() if k.upper() == "DURATION"), None))
    if tagged is not None:
        return _shortfall(tagged, end, len(own), slack, until="up to ")
    every = _packet_times(packets)
    declared = _float(container.get("duration"))
    if declared is None:
        return None
    return _shortfall(declared, max(t + d for t, d in every), len(own), slack + 0.25, until="up to ", of="the file")


def _delay(video: dict, container: dict) -> float:
    """How long after the file's first timestamp the video starts (0 when it starts first or with the rest)."""
    try:
        delay = float(video["start_time"]) - float(container["start_time"])
    except (KeyError, TypeError, ValueError):
        return 0.0
    return round(delay, 6) if delay > 0.0005 else 0.0


def _shortfall(declared: float, readable: float, frames: int, slack: float, until: str = "",
               of: str = "video") -> str | None:
    """The damage message when `readable` seconds fall short of `declared` by more than `slack`."""
    if readable >= declared - slack:
        return None
    return (f"the container declares {until}{declared:.2f} s of {of}, only {until}{readable:.2f} s ({frames} "
            "frames) can be read")


def _packet_times(packets: list[dict]) -> list[tuple[float, float]]:
    """(pts, duration) in seconds of the packets that carry a timestamp."""
    times = []
    for packet in packets:
        try:
            pts = float(packet["pts_time"])
        except (KeyError, TypeError, ValueError):  # "N/A": no timestamp
            continue
        times.append((pts, _float(packet.get("duration_time")) or 0.0))
    return times


def _clock(value: object) -> float | None:
    """Seconds of a Matroska `HH:MM:SS.nnnnnnnnn` tag, or None."""
    match = re.fullmatch(r"(\d+):(\d{1,2}):(\d{1,2}(?:\.\d*)?)", str(value or "").strip())
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    return _float(int(hours) * 3600 + int(minutes) * 60 + float(seconds))


def _field_order(path: Path, video: dict) -> str | None:
    """The stream's field order when it is interlaced, else None.

    H.264 and MPEG-2 declare it in the stream; MPEG-4 Part 2 (the usual CCTV .avi), HEVC and others say
    "unknown", and only their decoded frames carry the flag, so a few frames are decoded to read it.
    """
    order = str(video.get("field_order") or "unknown")
    if order in INTERLACED:
        return order
    if order == "progressive":
        return None
    try:
        frames = ffmpeg.probe(ffmpeg_path(path), select_streams="v:0", read_intervals="%+#5", show_frames=None,
                              show_entries="frame=interlaced_frame,top_field_first").get("frames", [])
    except ffmpeg.Error:
        return None  # decoding will say what is wrong, with its own message
    woven = [f for f in frames if str(f.get("interlaced_frame")) == "1"]
    if not woven:
        return None
    return "tt" if str(woven[0].get("top_field_first")) == "1" else "bb"


def _sar(video: dict, rotation: int) -> tuple[int, int]:
    """Sample aspect ratio of the upright frames; 1:1 when undeclared."""
    num, _, den = str(video.get("sample_aspect_ratio") or "").partition(":")
    try:
        ratio = Fraction(int(num), int(den))
    except (ValueError, ZeroDivisionError):
        return (1, 1)
    if ratio <= 0:
        return (1, 1)
    if rotation % 180 == 90:
        ratio = 1 / ratio  # ffmpeg's autorotation transposes the pixels, and with them their aspect
    return (ratio.numerator, ratio.denominator)


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
    stream = ffmpeg.input(ffmpeg_path(info.path)).video
    if info.interlaced:
        # send_frame: one frame out per frame in (send_field would double the count and every index).
        # deint=all: some encoders leave frames unflagged in a stream that is interlaced throughout.
        parity = "tff" if info.field_order in ("tt", "bt") else "bff"  # the field displayed first
        stream = stream.filter("yadif", mode="send_frame", parity=parity, deint="all")
    args = (stream.output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
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
