"""Concatenate short clips into one video: a person's training footage often comes as many clips.

Clips encoded alike are joined by ffmpeg's concat demuxer with stream copy (lossless, and seconds even
for hours of footage); anything else is re-encoded through the concat filter at the first clip's size
and frame rate. Only the first video stream is kept: the result is training footage, audio is unused.
"""
from __future__ import annotations

import logging
import subprocess
import tempfile
import threading
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import ffmpeg

from deid.core.atomic import atomic_path
from deid.core.errors import MediaError
from deid.stages.media import _last_line, _rotation, ffmpeg_path, require_ffmpeg
from deid.stages.progress import progress_bar

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")

log = logging.getLogger("deid.concat")


@dataclass(frozen=True)
class _Clip:
    path: Path
    stream_index: int
    codec: str
    profile: str
    extradata: str
    width: int  # coded size; the displayed size swaps them for a 90/270 degree rotation
    height: int
    rotation: int
    pix_fmt: str
    base_rate: str  # r_frame_rate: stable across clips of one encoder, unlike the average over a short clip
    rate: str  # avg_frame_rate (r_frame_rate when unknown): the rate a re-encode keeps
    frames: int  # from the container header; 0 when it has none (mkv, webm)
    seconds: float

    def copy_key(self) -> tuple:
        # The concat demuxer matches streams by index and the output keeps the first clip's codec
        # parameters (SPS/PPS), so everything here must agree for stream copy to decode correctly.
        return (self.stream_index, self.codec, self.profile, self.extradata, self.width, self.height,
                self.rotation, self.pix_fmt, self.base_rate)

    @property
    def display_size(self) -> tuple[int, int]:
        return (self.height, self.width) if self.rotation % 180 == 90 else (self.width, self.height)


def list_clips(folder: Path) -> list[Path]:
    """Video files directly inside `folder` (not recursive, hidden files ignored), sorted by name; [] if none."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir()
                   if p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".") and p.is_file()),
                  key=lambda p: p.name)


def concat_clips(clips: Sequence[Path], out: Path, progress: bool = True) -> dict:
    """Concatenate `clips` in order into `out` (video only, no audio: it is training footage)."""
    out = Path(out)
    if out.suffix.lower() not in VIDEO_SUFFIXES:
        raise MediaError(f"{out}: the output must be a video file ({', '.join(VIDEO_SUFFIXES)}); change its suffix")
    if not clips:
        raise MediaError(f"{out}: no clips to concatenate; give at least one video clip")
    require_ffmpeg()
    infos = [_probe_clip(Path(clip)) for clip in clips]
    method = "copy" if len({info.copy_key() for info in infos}) == 1 else "reencode"
    if method == "copy":
        total = sum(info.frames or round(info.seconds * float(Fraction(info.rate))) for info in infos)
    else:  # the fps filter resamples every clip to the first clip's rate
        total = round(sum(info.seconds for info in infos) * float(Fraction(infos[0].rate)))
    log.info("concatenating %d clips into %s (%s)", len(infos), out, method)
    with atomic_path(out) as tmp, tempfile.TemporaryDirectory(prefix="deid-concat-") as scratch:
        if method == "copy":
            list_file = Path(scratch) / "clips.txt"
            list_file.write_text(_concat_list(infos), encoding="utf-8")
            args = _copy_args(list_file, tmp)
        else:
            args = _reencode_args(infos, tmp)
        _run(args, out, total, progress)
        summary = _describe_output(tmp, out)
    return {"clips": len(infos), "method": method, **summary}


def _probe_clip(path: Path) -> _Clip:
    if not path.is_file():
        raise MediaError(f"{path}: no such clip; check the path or leave it out")
    try:
        info = ffmpeg.probe(ffmpeg_path(path), show_data_hash="sha256")
    except ffmpeg.Error as exc:
        reason = (_last_line(exc.stderr) or "ffprobe failed").replace(f"{ffmpeg_path(path)}: ", "")
        raise MediaError(f"{path}: not a readable video ({reason}); re-encode the clip or leave it out") from None
    video = next((s for s in info.get("streams", []) if s.get("codec_type") == "video"), None)
    if video is None or not video.get("width"):
        raise MediaError(f"{path}: no video stream; leave it out of the clips")
    base_rate = _valid_rate(video.get("r_frame_rate"))
    return _Clip(path=path, stream_index=int(video["index"]), codec=str(video.get("codec_name")),
                 profile=str(video.get("profile")), extradata=str(video.get("extradata_hash")),
                 width=int(video["width"]), height=int(video["height"]), rotation=_rotation(video),
                 pix_fmt=str(video.get("pix_fmt")), base_rate=base_rate or "25/1",
                 rate=_valid_rate(video.get("avg_frame_rate")) or base_rate or "25/1",
                 frames=int(video.get("nb_frames") or 0),
                 seconds=float(video.get("duration") or info.get("format", {}).get("duration") or 0.0))


def _valid_rate(text: object) -> str | None:
    try:
        rate = Fraction(str(text))
    except (ValueError, ZeroDivisionError):
        return None
    return f"{rate.numerator}/{rate.denominator}" if rate > 0 else None


def _concat_list(infos: Sequence[_Clip]) -> str:
    lines = ["ffconcat version 1.0"]
    for info in infos:
        quoted = ffmpeg_path(info.path.resolve()).replace("'", "'\\''")
        lines.append(f"file '{quoted}'")
        if info.seconds > 0:
            # The demuxer otherwise offsets the next clip by the whole file's duration; a longer audio
            # track would leave a gap in the video timestamps.
            lines.append(f"duration {info.seconds:.6f}")
    return "\n".join(lines) + "\n"


def _global_args() -> list[str]:
    return ["-nostdin", "-hide_banner", "-nostats", "-loglevel", "error", "-progress", "pipe:1", "-y"]


def _copy_args(list_file: Path, tmp: Path) -> list[str]:
    return (["ffmpeg", *_global_args(), "-f", "concat", "-safe", "0", "-i", ffmpeg_path(list_file),
             "-map", "0:v:0", "-c", "copy", "-an", ffmpeg_path(tmp)])


def _reencode_args(infos: Sequence[_Clip], tmp: Path) -> list[str]:
    width, height = (side - side % 2 for side in infos[0].display_size)  # yuv420p needs even sides
    rate = infos[0].rate
    parts = []
    for info in infos:
        # ffmpeg autorotates on input, so every clip arrives at its displayed orientation.
        video = ffmpeg.input(ffmpeg_path(info.path)).video
        video = (video.filter("scale", width, height, force_original_aspect_ratio="decrease")
                 .filter("pad", width, height, "(ow-iw)/2", "(oh-ih)/2")
                 .filter("setsar", 1)
                 .filter("fps", rate))
        parts.append(video)
    joined = ffmpeg.concat(*parts, v=1, a=0)
    stream = ffmpeg.output(joined, ffmpeg_path(tmp), vcodec="libx264", crf=18, preset="veryfast", pix_fmt="yuv420p", an=None)
    return ["ffmpeg", *_global_args(), *stream.get_args()]


def _run(args: list[str], out: Path, total: int, progress: bool) -> None:
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    stderr_tail: deque[str] = deque(maxlen=20)
    # Drain stderr on a thread: a chatty ffmpeg would otherwise fill the pipe and block while we read stdout.
    reader = threading.Thread(target=lambda: stderr_tail.extend(process.stderr), daemon=True)
    reader.start()
    try:
        with progress_bar(total or None, f"concat {out.name}", "frame", progress) as bar:
            for line in process.stdout:
                key, _, value = line.strip().partition("=")
                if key == "frame" and value.isdigit():
                    bar.update(max(0, int(value) - bar.n))
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=5)
    if process.returncode != 0:
        reason = _error_lines(stderr_tail) or f"exit status {process.returncode}"
        raise MediaError(f"{out}: ffmpeg could not concatenate the clips ({reason}); check or re-encode the clips")


def _error_lines(stderr_tail: Sequence[str]) -> str:
    # ffmpeg's last line is often a generic "Error initializing output stream"; the cause comes first.
    lines = [line.strip() for line in stderr_tail if line.strip()]
    if not lines:
        return ""
    return lines[-1] if len(lines) == 1 else f"{lines[0]} / {lines[-1]}"


def _describe_output(tmp: Path, out: Path) -> dict:
    try:
        info = ffmpeg.probe(ffmpeg_path(tmp), count_packets=None, select_streams="v:0")
    except ffmpeg.Error as exc:
        raise MediaError(f"{out}: ffmpeg wrote an unreadable video ({_last_line(exc.stderr)}); "
                         "check or re-encode the clips") from None
    streams = info.get("streams") or [{}]
    video = streams[0]
    frames = int(video.get("nb_read_packets") or 0)
    if frames == 0:
        raise MediaError(f"{out}: ffmpeg wrote no video frames; check or re-encode the clips")
    width, height = int(video["width"]), int(video["height"])
    if _rotation(video) % 180 == 90:
        width, height = height, width
    rate = _valid_rate(video.get("avg_frame_rate")) or _valid_rate(video.get("r_frame_rate"))
    seconds = float(video.get("duration") or info.get("format", {}).get("duration") or 0.0)
    return {"frames": frames, "seconds": round(seconds, 6), "width": width, "height": height,
            "fps": round(float(Fraction(rate)), 6) if rate else None}
