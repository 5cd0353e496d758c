"""Small ffmpeg helpers the media tests share: cutting real clips and counting their frames."""
from __future__ import annotations

import subprocess
from pathlib import Path


def cut_clip(src: Path, out: Path, seconds: float, start: float = 0.0, fps: float | None = None,
             audio: bool = True) -> Path:
    """A re-encoded segment of `src` (so it starts on a keyframe), H.264 yuv420p, with AAC audio or none."""
    rate = ["-r", str(fps)] if fps else []
    sound = ["-c:a", "aac"] if audio else ["-an"]
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", str(start), "-i", str(src), "-t", str(seconds),
                    *rate, "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", *sound, str(out)],
                   check=True)
    return out


def count_frames(path: Path) -> int:
    """Decoded frame count of the first video stream (ffprobe -count_frames)."""
    result = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                             "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
                            check=True, capture_output=True, text=True)
    return int(result.stdout.strip())
