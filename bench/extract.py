"""Extraction throughput: our extract stage vs the study's naive per-frame face_recognition loop.

    python -m deid.bench.extract [--video V] [--frames N] [--device auto] [--out bench/results/extract.json]

The naive loop is what the study's scripts did: for every frame, `face_recognition.face_locations`
(dlib HOG, upsample 1) and then `face_recognition.face_landmarks` on those boxes. It writes nothing,
so the comparison flatters it; our stage is timed end to end (decode, detect, landmarks, align,
write crops + masks + alignments.json), models loaded beforehand in both cases.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from deid.bench.machine import machine_info  # noqa: E402
from deid.core.atomic import write_json  # noqa: E402
from deid.pipeline.config import ExtractConfig  # noqa: E402
from deid.stages.extract import extract  # noqa: E402
from deid.stages.media import iter_frames, probe  # noqa: E402

DEFAULT_VIDEO = ROOT / "tests" / "data" / "video" / "WolfgangLanger_Pexels.mp4"


def time_naive(video: Path, frames: int) -> dict:
    import face_recognition

    face_recognition.face_locations(next(iter_frames(probe(video)))[1])  # load models outside the clock
    start = time.perf_counter()
    count = faces = 0
    for _, frame in iter_frames(probe(video)):
        if count == frames:
            break
        locations = face_recognition.face_locations(frame)
        faces += len(face_recognition.face_landmarks(frame, locations))
        count += 1
    seconds = time.perf_counter() - start
    return {"frames": count, "faces": faces, "seconds": round(seconds, 3), "frames_per_second": round(count / seconds, 2)}


def time_ours(video: Path, config: ExtractConfig, device: str, frames: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        source = video
        if frames < probe(video).frames:
            source = Path(tmp) / "clip"
            source.mkdir()
            import cv2

            for index, frame in iter_frames(probe(video)):
                if index == frames:
                    break
                cv2.imwrite(str(source / f"{index:06d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        extract(source, Path(tmp) / "warmup", ExtractConfig(every=10**5), device=device, progress=False)
        start = time.perf_counter()
        summary = extract(source, Path(tmp) / "out", config, device=device, progress=False)
        seconds = time.perf_counter() - start
    return {"frames": summary["frames"], "faces": summary["faces"], "seconds": round(seconds, 3),
            "frames_per_second": round(summary["frames"] / seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--frames", type=int, default=10**9, help="limit the number of frames")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "extract.json")
    args = parser.parse_args()

    results = {"video": str(args.video), "machine": machine_info()}
    results["ours_default"] = time_ours(args.video, ExtractConfig(), args.device, args.frames)
    print("ours (default settings):", results["ours_default"], flush=True)
    results["ours_detect_every_5"] = time_ours(args.video, ExtractConfig(detect_every=5), args.device, args.frames)
    print("ours (detect_every 5):", results["ours_detect_every_5"], flush=True)
    results["naive_face_recognition"] = time_naive(args.video, args.frames)
    print("naive face_recognition loop:", results["naive_face_recognition"], flush=True)
    naive = results["naive_face_recognition"]["frames_per_second"]
    results["speedup_default"] = round(results["ours_default"]["frames_per_second"] / naive, 2)
    results["speedup_detect_every_5"] = round(results["ours_detect_every_5"]["frames_per_second"] / naive, 2)
    write_json(args.out, results, indent=2)
    print(f"speed-up over the naive loop: {results['speedup_default']}x (default), "
          f"{results['speedup_detect_every_5']}x (detect_every 5) -> {args.out}")


if __name__ == "__main__":
    main()
