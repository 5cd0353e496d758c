"""Evaluate throughput at the study's protocol size: the identity pass on 100 and 1000 frames of a 720p clip.

    python -m deid.bench.evaluate [--video V] [--frames 100,1000] [--device auto] [--out bench/results/evaluate.json]

Without --video the clip is built once (bench/results/clip720.mp4, not committed): the repository's
WolfgangLanger_Pexels.mp4 scaled to 1280x720 and looped to 1440 frames. The clip is evaluated against
itself (every sampled frame has a face in both videos), AU off and the parrot attack off, so the number
is the identity pass: decode both videos, detect (batched, reduced size), 68 landmarks and the 128-d
embedding of each face at full size. `frames_per_s` counts sampled frame indices per second (each is
two video frames: original and swapped); `video_frames_per_s` counts video frames. The AU pass's CSV
route is timed too; py-feat's availability is recorded (it needs weights that are not fetched here).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from deid.bench.machine import machine_info  # noqa: E402
from deid.core.atomic import write_json  # noqa: E402
from deid.reports import au  # noqa: E402
from deid.stages.evaluate import evaluate  # noqa: E402
from deid.stages.evaluate_config import EvaluateConfig  # noqa: E402
from deid.stages.media import ffmpeg_path, iter_frames, probe  # noqa: E402

DATA = ROOT / "tests" / "data"
SOURCE = DATA / "video" / "WolfgangLanger_Pexels.mp4"
CLIP = ROOT / "bench" / "results" / "clip720.mp4"


def clip_720p(out: Path = CLIP, frames: int = 1440) -> Path:
    """The bench clip: the source at 1280x720, looped, `frames` frames; built once."""
    if out.exists() and probe(out).frames >= frames:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(".clip720.part.mp4")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", "3", "-i", ffmpeg_path(SOURCE),
                    "-vf", "scale=1280:720", "-frames:v", str(frames), "-an", "-c:v", "libx264", "-preset", "veryfast",
                    "-crf", "20", ffmpeg_path(tmp)], check=True)
    tmp.replace(out)
    return out


def bench_identity(video: Path, frames: int, device: str) -> dict:
    info = probe(video)
    with tempfile.TemporaryDirectory() as tmp:
        import cv2

        ref = Path(tmp) / "ref.jpg"
        cv2.imwrite(str(ref), cv2.cvtColor(next(iter_frames(info))[1], cv2.COLOR_RGB2BGR))
        start = time.perf_counter()
        summary = evaluate(video, video, ref, DATA / "identities" / "obama" / "1.jpg", Path(tmp) / "out",
                           EvaluateConfig(frames=frames, au="none", parrot="none"), progress=False, device=device)
        total = time.perf_counter() - start
    seconds = summary.timings["identity_s"]
    return {"frames_sampled": summary.frames_sampled, "identity_s": round(seconds, 3),
            "frames_per_s": round(summary.frames_sampled / seconds, 3),
            "video_frames_per_s": round(2 * summary.frames_sampled / seconds, 3),
            "evaluate_total_s": round(total, 3), "device": summary.device,
            "faces_found": int(summary.comparison("SW-OR").get("n") or 0)}


def bench_au_csv(repeats: int = 20) -> dict:
    runs = {"openface": (DATA / "openface" / "OpenFace_Test.csv",) * 2,
            "pyfeat-csv": (DATA / "pyfeat" / "001.csv", DATA / "pyfeat" / "002.csv")}
    out = {}
    for fmt, (a_path, b_path) in runs.items():
        start = time.perf_counter()
        for _ in range(repeats):
            a, b = au.read_au_table(a_path, fmt), au.read_au_table(b_path, fmt)
            _, summary = au.compare_tables(a, b)
        elapsed = (time.perf_counter() - start) / repeats
        frames = summary["alignment"]["frames_original"] + summary["alignment"]["frames_swapped"]
        out[fmt] = {"frames": frames, "seconds": round(elapsed, 4), "frames_per_s": round(frames / elapsed, 1)}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=None, help="default: the 720p bench clip, built once")
    parser.add_argument("--frames", default="100,1000", help="sample sizes, comma-separated (default 100,1000)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "evaluate.json")
    args = parser.parse_args(argv)

    from deid.reports.pyfeat_au import load_detector

    video = args.video or clip_720p()
    info = probe(video)
    runs = {str(n): bench_identity(video, int(n), args.device) for n in args.frames.split(",")}
    detector, reason = load_detector(None)
    result = {
        "video": {"path": str(video), "width": info.width, "height": info.height, "frames": info.frames},
        "machine": machine_info(),
        "identity_pass": runs,
        "au_pass": {"pyfeat": {"available": detector is not None, "reason": reason}, "csv_route": bench_au_csv()},
    }
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("video", "identity_pass")}, indent=1))


if __name__ == "__main__":
    main()
