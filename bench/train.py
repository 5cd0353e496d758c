"""Training throughput and peak memory per model family, at each family's default size and batch size.

    python -m deid.bench.train [--a A_DIR --b B_DIR] [--device auto] [--families original,dfaker,villain]
                          [--iterations 5] [--warmup 2] [--extract-every 1] [--out bench/results/train.json]

Each family runs the real `deid train` stage (data in memory, batched augmentation on the device, the
Adam step, the NaN check) in its own subprocess, so the peak memory of one family does not hide in
another's. images/s counts A and B images per second of training step (loss.csv's images_per_s), the
median over the timed iterations after `--warmup`; saves, previews and identity checks are excluded.
Peak memory: the process's peak resident set (CPU) and torch's peak allocated GPU memory (CUDA).
Without --a/--b, talking_1.mp4 and talking_2.mp4 from tests/data are extracted into a temporary folder
(every `--extract-every`-th frame; each side needs at least a batch of faces). Exits 1 if a family failed,
after writing the JSON with that family's error.
"""
from __future__ import annotations

import argparse
import csv
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from deid.bench.machine import machine_info  # noqa: E402
from deid.core.atomic import write_json  # noqa: E402

DATA = ROOT / "tests" / "data" / "video"


def run_one(family: str, a_dir: Path, b_dir: Path, device: str, iterations: int, warmup: int) -> dict:
    """Train `family` for warmup + iterations steps in this process; print and return its numbers."""
    import torch

    from deid.models.swap import build_model
    from deid.stages.checkpoint import ARCH_KEYS
    from deid.stages.train import train
    from deid.stages.train_config import TrainConfig

    total = warmup + iterations
    config = TrainConfig(model=family, iterations=total, save_every=10 ** 6, preview_every=0, identity_every=0)
    with tempfile.TemporaryDirectory() as model_dir:
        start = time.perf_counter()
        summary = train(a_dir, b_dir, Path(model_dir), config, device=device, progress=False)
        seconds = time.perf_counter() - start
        rows = list(csv.DictReader((Path(model_dir) / "loss.csv").read_text().splitlines()))
    # What train built: on a CPU with width/latent at 0 that is the family's CPU size (stages/train.py).
    frozen = summary["frozen"]
    with torch.device("meta"):  # count parameters without allocating them (that would inflate the peak)
        parameters = sum(p.numel() for p in build_model(family, **{k: frozen[k] for k in ARCH_KEYS}).parameters())
    rates = [float(r["images_per_s"]) for r in rows[warmup:]]
    result = {
        "family": family,
        "device": summary["device"],
        "input_size": frozen["input_size"],
        "output_size": frozen["output_size"],
        "width": frozen["width"],
        "latent": frozen["latent"],
        "batch_size": summary["batch_size"],
        "parameters_millions": round(parameters / 1e6, 1),
        "timed_iterations": len(rates),
        "images_per_second": round(statistics.median(rates), 2),
        "seconds_per_iteration": round(2 * summary["batch_size"] / statistics.median(rates), 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "wall_seconds_incl_loading_and_saving": round(seconds, 1),
    }
    if summary["device"].startswith("cuda"):
        result["peak_gpu_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    return result


def extract_inputs(workdir: Path, device: str = "auto", every: int = 1) -> tuple[Path, Path]:
    from deid.pipeline.config import ExtractConfig
    from deid.stages.extract import extract

    dirs = []
    for name in ("talking_1.mp4", "talking_2.mp4"):
        out = workdir / Path(name).stem
        extract(DATA / name, out, ExtractConfig(every=every), device=device, progress=False)
        dirs.append(out)
    return dirs[0], dirs[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, help="extract output of person A (default: talking_1.mp4 extracted)")
    parser.add_argument("--b", type=Path, help="extract output of person B (default: talking_2.mp4 extracted)")
    parser.add_argument("--device", default="auto")
    from deid.models.swap import FAMILIES

    parser.add_argument("--families", default=",".join(FAMILIES.names()),
                        help="comma list of registered model families (default: all of them)")
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations per family")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--extract-every", type=int, default=1,
                        help="without --a/--b: extract every N-th frame of the two videos (default 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one family, print JSON
    args = parser.parse_args()

    if args.one:
        print(json.dumps(run_one(args.one, args.a, args.b, args.device, args.iterations, args.warmup)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        a_dir, b_dir = ((args.a, args.b) if args.a and args.b
                        else extract_inputs(Path(tmp), args.device, args.extract_every))
        results = {"machine": machine_info(), "a": str(a_dir), "b": str(b_dir), "families": []}
        for family in args.families.split(","):
            command = [sys.executable, __file__, "--one", family, "--a", str(a_dir), "--b", str(b_dir),
                       "--device", args.device, "--iterations", str(args.iterations), "--warmup", str(args.warmup)]
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
                last = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
                results["families"].append({"family": family, "error": last[0], "returncode": done.returncode})
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results["families"].append(result)
            print(f"{family:>9} {result['device']}: {result['images_per_second']:8.2f} images/s, "
                  f"{result['seconds_per_iteration']:7.3f} s/iteration at batch {result['batch_size']}, "
                  f"peak RSS {result['peak_rss_mib']:.0f} MiB"
                  + (f", peak GPU {result['peak_gpu_allocated_mib']:.0f} MiB"
                     if "peak_gpu_allocated_mib" in result else ""),
                  flush=True)
    write_json(args.out, results, indent=2)
    print(f"-> {args.out}")
    failed = [f"{r['family']}: {r['error']}" for r in results["families"] if "error" in r]
    if failed:
        print(f"train bench: {len(failed)} of {len(results['families'])} families failed; " + "; ".join(failed),
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
