"""Writing a processed video through ffmpeg: H.264 from a raw RGB pipe, the source's audio copied.

The output keeps the source's frame count (one written frame per decoded frame), frame rate and
displayed size (frames arrive upright, ffmpeg having applied the source's rotation when decoding).
It appears under its final name only when ffmpeg has exited cleanly: a killed run leaves at most a
hidden `.part` file. No container metadata of the source is copied; audio is copied or dropped.
"""
from __future__ import annotations

import os
import subprocess
import threading
from collections import deque
from fractions import Fraction
from pathlib import Path

import ffmpeg
import numpy as np

from pipeline.errors import MediaError
from stages.media import MediaInfo, _last_line

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
            streams.append(ffmpeg.input(str(source.path)).audio)
            options["acodec"] = "copy" if audio_codec in _MP4_AUDIO else "aac"
        args = (ffmpeg.output(*streams, str(self._tmp), **options)
                .global_args("-nostdin", "-loglevel", "error").overwrite_output().compile())
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
            raise MediaError(f"{self.path}: ffmpeg stopped while encoding ({self._error()})") from None
        self.frames += 1

    def _error(self) -> str:
        self._reader.join(timeout=5)
        return _last_line(b"".join(self._stderr)) or f"exit status {self._process.returncode}"

    def close(self) -> None:
        self._process.stdin.close()
        code = self._process.wait()
        if code != 0:
            self._tmp.unlink(missing_ok=True)
            raise MediaError(f"{self.path}: ffmpeg could not encode the video ({self._error()})")
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _audio_codec(source: MediaInfo) -> str | None:
    if source.kind != "video" or not source.has_audio:
        return None
    try:
        streams = ffmpeg.probe(str(source.path), select_streams="a:0")["streams"]
    except ffmpeg.Error:
        return None
    return streams[0].get("codec_name", "unknown") if streams else None
