"""Writing a processed video through ffmpeg: H.264 from a raw RGB pipe, the source's audio copied.

The output keeps the source's frame count (one written frame per decoded frame), frame rate and
displayed size (frames arrive upright, ffmpeg having applied the source's rotation when decoding).
It appears under its final name only when ffmpeg has exited cleanly, said nothing on stderr, and the
finished `.part` file probes as complete (every written frame, the expected duration, the expected
streams): ffmpeg can exit 0 on a full disk and leave a file without its index. A killed run leaves at
most a hidden `.part` file. No container metadata of the source is copied; audio is copied or dropped.
"""
from __future__ import annotations

import errno
import logging
import os
import subprocess
import threading
from collections import deque
from fractions import Fraction
from pathlib import Path

import ffmpeg
import numpy as np

from pipeline.errors import DeidError, MediaError, disk_error
from stages.media import MediaInfo, _last_line, ffmpeg_path

log = logging.getLogger("deid.video")

# Audio codecs an .mp4 container can carry as they are; anything else (e.g. PCM from a .mov) becomes AAC.
_MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}


class VideoWriter:
    """Context manager: `write(frame)` per frame; the file is finalised on a clean exit."""

    def __init__(self, path: Path, source: MediaInfo, crf: int = 18, preset: str = "medium",
                 fps: float | None = None, audio: bool = True) -> None:
        self.path = Path(path)
        self.source = source
        self.width, self.height = source.width, source.height
        self.frames = 0
        self._tmp = self.path.with_name(f".{self.path.stem}.part{self.path.suffix or '.mp4'}")
        rate = fps or source.fps or 25.0
        self._rate = float(Fraction(rate).limit_denominator(1001))
        video = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{self.width}x{self.height}",
                             framerate=str(Fraction(rate).limit_denominator(1001)))
        streams = [video]
        # Container metadata (camera model, GPS, creation time, encoder names) can identify too: none is copied.
        options = {"vcodec": "libx264", "crf": crf, "preset": preset, "movflags": "+faststart",
                   "map_metadata": -1, "map_chapters": -1,
                   # 4:2:0 needs even sides; odd-sized sources keep their size with 4:4:4 instead.
                   "pix_fmt": "yuv420p" if self.width % 2 == 0 and self.height % 2 == 0 else "yuv444p"}
        audio_codec = _audio_codec(source) if audio else None
        if audio_codec is not None:
            streams.append(ffmpeg.input(ffmpeg_path(source.path)).audio)
            options["acodec"] = "copy" if audio_codec in _MP4_AUDIO else "aac"
        self._audio = audio_codec is not None
        args = (ffmpeg.output(*streams, ffmpeg_path(self._tmp), **options)
                .global_args("-nostdin", "-loglevel", "error").overwrite_output().compile())
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Fail here, with the OS's reason, rather than as a broken pipe once ffmpeg gives up on the file.
            self._tmp.touch()
        except OSError as exc:
            # Name the folder the user chose, not our hidden temporary file.
            where = exc.filename if exc.filename != str(self._tmp) else str(self.path.parent)
            raise disk_error(OSError(exc.errno, exc.strerror, where)) or exc from None
        self._process = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self._stderr: deque[bytes] = deque(maxlen=20)
        self._reader = threading.Thread(target=lambda: self._stderr.extend(self._process.stderr), daemon=True)
        self._reader.start()

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame {self.frames}: expected {self.height}x{self.width}x3 uint8, got {frame.shape} {frame.dtype}")
        try:
            self._process.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            self._process.wait()
            raise self._failure("ffmpeg stopped while encoding") from None
        self.frames += 1

    def _error(self) -> str:
        self._reader.join(timeout=5)
        return _last_line(b"".join(self._stderr)) or f"exit status {self._process.returncode}"

    def _failure(self, what: str) -> DeidError:
        """One line for a failed encode: the disk's fault when ffmpeg says so, else ffmpeg's last word."""
        self._remove_tmp()
        message = self._error()
        everything = b"".join(self._stderr).decode("utf-8", "replace")
        for text, code in (("No space left", errno.ENOSPC), ("Read-only file system", errno.EROFS),
                           ("Permission denied", errno.EACCES)):
            if text in everything:
                # The folder, not our hidden file's name: it is where space or permissions must change.
                return disk_error(OSError(code, text, str(self.path.parent))) or MediaError(message)
        return MediaError(f"{self.path}: {what} ({message})")

    def close(self) -> None:
        try:
            self._process.stdin.close()
        except BrokenPipeError:
            pass  # ffmpeg already exited; its status and stderr below say why
        code = self._process.wait()
        self._reader.join(timeout=5)
        if code != 0 or _serious(self._stderr):
            raise self._failure("ffmpeg could not encode the video")
        problem = self._incomplete()
        if problem:
            self._remove_tmp()
            raise MediaError(f"{self.path}: the encoded file is incomplete ({problem}); nothing was written under "
                             "this name: check free space on its disk and run again")
        os.replace(self._tmp, self.path)

    def _incomplete(self) -> str | None:
        """What the finished .part file lacks against what was written into it, or None."""
        try:
            info = ffmpeg.probe(ffmpeg_path(self._tmp), count_packets=None)
        except ffmpeg.Error as exc:
            return _last_line(exc.stderr) or "ffprobe cannot read it"
        streams = info.get("streams", [])
        video = [s for s in streams if s.get("codec_type") == "video"]
        if len(video) != 1:
            return f"{len(video)} video streams"
        if self._audio and not any(s.get("codec_type") == "audio" for s in streams):
            return "the audio stream is missing"
        packets = int(video[0].get("nb_read_packets") or 0)
        if packets != self.frames:
            return f"{packets} of {self.frames} frames"
        duration = float(video[0].get("duration") or info.get("format", {}).get("duration") or 0)
        expected = self.frames / self._rate
        if self.frames and abs(duration - expected) > max(2.0 / self._rate, 0.05 * expected):
            return f"{duration:.2f} s long, {expected:.2f} s expected"
        return None

    def _remove_tmp(self) -> None:
        try:
            self._tmp.unlink(missing_ok=True)
        except OSError as exc:  # e.g. the filesystem went read-only: the real error is the caller's to report
            log.debug("could not remove %s: %s", self._tmp, exc)

    def abort(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._remove_tmp()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# Error-level lines ffmpeg prints and repairs itself: a copied audio stream's out-of-order timestamps.
_BENIGN = ("non monotonically increasing dts", "Last message repeated")


def _serious(stderr: deque[bytes]) -> bool:
    lines = b"".join(stderr).decode("utf-8", "replace").splitlines()
    return any(line.strip() and not any(b in line for b in _BENIGN) for line in lines)


def _audio_codec(source: MediaInfo) -> str | None:
    if source.kind != "video" or not source.has_audio:
        return None
    try:
        streams = ffmpeg.probe(ffmpeg_path(source.path), select_streams="a:0")["streams"]
    except ffmpeg.Error:
        return None
    return streams[0].get("codec_name", "unknown") if streams else None
