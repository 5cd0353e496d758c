"""Convert throughput: frames/s of `deid convert` on a 720p clip, with the default model architecture.

    python -m deid.bench.convert [--frames 120] [--device auto] [--model original] [--out bench/results/convert.json]

The clip is WolfgangLanger_Pexels.mp4 upscaled to 1280x720 (a real face in every frame). The model has
the family's default architecture trained for one iteration: inference costs the same whatever the
weights. Extraction is done beforehand and not timed; the clock covers decode -> swap -> blend -> encode.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import ffmpeg  # noqa: E402

from deid.bench.machine import machine_info  # noqa: E402
from deid.core.atomic import write_json  # noqa: E402
from deid.pipeline.config import ConvertConfig, ExtractConfig  # noqa: E402
from deid.stages.convert import convert  # noqa: E402
from deid.stages.extract import extract  # noqa: E402
from deid.stages.train import train  # noqa: E402
from deid.stages.train_config import TrainConfig  # noqa: E402

SOURCE = ROOT / "tests" / "data" / "video" / "WolfgangLanger_Pexels.mp4"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--device", default="auto")
    from deid.models.swap import FAMILIES

    parser.add_argument("--model", default="original", choices=FAMILIES.names())
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "convert.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = tmp / "clip720.mp4"
        (ffmpeg.input(str(SOURCE)).filter("scale", 1280, 720).output(str(clip), vframes=args.frames, vcodec="libx264",
                                                                      crf=18, pix_fmt="yuv420p")
         .overwrite_output().run(quiet=True))
        extract(clip, tmp / "faces", ExtractConfig(), device=args.device, progress=False)
        train(tmp / "faces", tmp / "faces", tmp / "model", TrainConfig(model=args.model, iterations=1, batch_size=2,
                                                                       preview_every=0, identity_every=0),
              device=args.device, progress=False)
        results = {"clip": f"{SOURCE.name} upscaled to 1280x720, {args.frames} frames", "model": args.model,
                   "machine": machine_info()}
        for color in ("avg", "seamless"):
            start = time.perf_counter()
            summary = convert(clip, tmp / "faces", tmp / "model", tmp / f"out_{color}.mp4", ConvertConfig(color=color),
                              device=args.device, progress=False)
            seconds = time.perf_counter() - start
            results[f"color_{color}"] = {"frames": summary["frames"], "seconds": round(seconds, 2),
                                         "frames_per_second": round(summary["frames"] / seconds, 2),
                                         "device": args.device}
            print(f"convert 720p, {args.model}, color {color}: {results[f'color_{color}']}", flush=True)
    write_json(args.out, results, indent=2)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
