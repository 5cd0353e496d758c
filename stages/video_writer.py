"""Writing a processed video through ffmpeg: H.264 from a raw RGB pipe, the source's audio kept or dropped.

The output keeps the source's frame count (one written frame per decoded frame), frame rate,
displayed size (frames arrive upright, ffmpeg having applied the source's rotation when decoding) and
pixel aspect ratio (PAL CCTV's 12:11 is flagged on the stream, not resampled, so the display aspect is
the source's). Every audio stream is kept, in order: copied where MP4 can carry its codec, otherwise
(PCM from a .mov or .avi, MP2, FLAC) re-encoded to AAC, stream by stream.
It appears under its final name only when ffmpeg has exited cleanly, said nothing on stderr, and the
finished `.part` file probes as complete (every written frame, the expected duration, the expected
streams): ffmpeg can exit 0 on a full disk and leave a file without its index. A killed run leaves at
most a hidden `.part` file. No container metadata of the source is copied; audio is copied or dropped.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import subprocess
import threading
from collections import deque
from fractions import Fraction
from pathlib import Path

import ffmpeg
import numpy as np

from deid.core.errors import DeidError, MediaError, disk_error
from deid.stages.media import MediaInfo, _last_line, _sar, ffmpeg_path

log = logging.getLogger("deid.video")

# Audio codecs ffmpeg's MP4 muxer takes as they are. Anything else becomes AAC: PCM has no MP4 tag, MP2
# would be labelled MP3, FLAC needs `-strict experimental` in the ffmpeg versions we meet.
_MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac", "opus"}


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
        self._audio = audio_codecs(source) if audio else ()
        # Kept audio starts where the source's does; a video that starts later keeps its lag to stay in sync.
        delay = {"itsoffset": str(source.video_delay)} if self._audio and source.video_delay else {}
        video = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{self.width}x{self.height}",
                             framerate=str(Fraction(rate).limit_denominator(1001)), **delay)
        if source.sar != (1, 1):
            # Flag the source's pixel shape on the stream (H.264 VUI, MP4 pasp) instead of resampling.
            video = video.filter("setsar", f"{source.sar[0]}/{source.sar[1]}")
        streams = [video]
        # Container metadata (camera model, GPS, creation time, encoder names) can identify too: none is copied.
        options = {"vcodec": "libx264", "crf": crf, "preset": preset, "movflags": "+faststart",
                   "map_metadata": -1, "map_chapters": -1,
                   # 4:2:0 needs even sides; odd-sized sources keep their size with 4:4:4 instead.
                   "pix_fmt": "yuv420p" if self.width % 2 == 0 and self.height % 2 == 0 else "yuv444p"}
        if delay:
            options["fps_mode"] = "passthrough"  # else the muxer's constant rate fills the lag with copies
        if self._audio:
            original = ffmpeg.input(ffmpeg_path(source.path))
            streams += [original[f"a:{n}"] for n in range(len(self._audio))]
            options.update(audio_options(self._audio))
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

    def _failure(self, what: str) -> DeidError:
        """One line for a failed encode: the disk's fault when ffmpeg says so, else ffmpeg's last word."""
        self._remove_tmp()
        everything = b"".join(self._stderr).decode("utf-8", "replace")
        for text, code in (("No space left", errno.ENOSPC), ("Read-only file system", errno.EROFS),
                           ("Permission denied", errno.EACCES)):
            if text in everything:
                # The folder, not our hidden file's name: it is where space or permissions must change.
                return disk_error(OSError(code, text, str(self.path.parent))) or MediaError(self._reason())
        # The input names the clip the user must look at; the hidden .part file means nothing to them.
        return MediaError(f"{self.source.path}: {what} into {self.path} ({self._reason()})")

    def _reason(self) -> str:
        """ffmpeg's most telling line, with our hidden file's name replaced by the output's."""
        self._reader.join(timeout=5)
        lines = [line.strip() for line in b"".join(self._stderr).decode("utf-8", "replace").splitlines()
                 if line.strip() and not any(b in line for b in _BENIGN)]
        # The last line is often a generic "Error initializing output stream 0:0 --"; the first says why.
        telling = [line for line in lines if not line.startswith(("Error initializing output stream",
                                                                  "Could not write header", "Conversion failed"))]
        reason = (telling or lines or [f"exit status {self._process.returncode}"])[0]
        reason = re.sub(r"^\[[^\]]+ @ 0x[0-9a-f]+\] ", "", reason)
        return reason.replace(ffmpeg_path(self._tmp), str(self.path)).replace(str(self._tmp), str(self.path))

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
        kept = sum(1 for s in streams if s.get("codec_type") == "audio")
        if kept != len(self._audio):
            return f"{kept} of {len(self._audio)} audio streams"
        written = _sar(video[0], 0)
        if written != self.source.sar:
            return f"pixel aspect {written[0]}:{written[1]}, {self.source.sar[0]}:{self.source.sar[1]} expected"
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


def audio_codecs(source: MediaInfo) -> tuple[str, ...]:
    """The codec of each audio stream of `source` to keep, in stream order."""
    if source.kind != "video" or not source.has_audio:
        return ()
    if source.audio_codecs:
        return source.audio_codecs
    try:  # a MediaInfo made without them (older records): ask the file
        streams = ffmpeg.probe(ffmpeg_path(source.path), select_streams="a")["streams"]
    except ffmpeg.Error:
        return ()
    return tuple(str(s.get("codec_name") or "unknown") for s in streams)


def audio_options(codecs: tuple[str, ...]) -> dict[str, str]:
    """ffmpeg output options for the audio streams, one codec choice per stream (`c:a:N`)."""
    return {f"c:a:{n}": "copy" if codec in _MP4_AUDIO else "aac" for n, codec in enumerate(codecs)}
