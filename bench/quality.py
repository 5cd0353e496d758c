"""Swap quality per unit of compute: train a pair for a wall-clock budget and score it at regular points.

    python -m bench.quality [--minutes 20] [--points 5] [--a VIDEO --b VIDEO] [--model original]
                            [--width 0] [--identity-weight 0] [--init-from MODEL_DIR] [--seed 0]
                            [--device auto] [--work DIR] [--out bench/results/quality.json]

At each point of the budget the model so far converts a fixed clip (the first `--clip-seconds` of A's
video) and `deid evaluate` scores it against A's and B's reference frames (the first frame of each
video): SW-OR (higher = A hidden), SW-SW (lower = looks like B), the share of frames re-identified as A,
expression geometry PCC and pose MAE, and the training rate (images/s from loss.csv). The curve goes to
the JSON and a PNG plot beside it. Default pair: the repository's talking_1.mp4 (A) and talking_2.mp4
(B), two people talking to camera. Training time counts only the training; extraction, conversion and
scoring are timed apart.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import machine_info  # noqa: E402
from pipeline.atomic import write_bytes, write_json  # noqa: E402
from pipeline.config import ConvertConfig, ExtractConfig  # noqa: E402
from stages.media import ffmpeg_path, iter_frames, probe  # noqa: E402

DATA = ROOT / "tests" / "data" / "video"


def _reference(video: Path, out: Path) -> Path:
    import cv2

    cv2.imwrite(str(out), cv2.cvtColor(next(iter_frames(probe(video)))[1], cv2.COLOR_RGB2BGR))
    return out


def _clip(video: Path, seconds: float, out: Path) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", ffmpeg_path(video), "-t", str(seconds),
                    "-c:v", "libx264", "-crf", "18", "-an", ffmpeg_path(out)], check=True)
    return out


def _images_per_s(model_dir: Path, since: int) -> float | None:
    with open(model_dir / "loss.csv", newline="") as handle:
        rates = [float(r["images_per_s"]) for r in csv.DictReader(handle) if int(r["iteration"]) > since]
    return round(sorted(rates)[len(rates) // 2], 2) if rates else None


def score_point(model_dir: Path, clip: Path, clip_faces: Path, ref_a: Path, ref_b: Path, work: Path,
                device: str, frames: int) -> dict:
    from stages.convert import convert
    from stages.evaluate import evaluate
    from stages.evaluate_config import EvaluateConfig
    from stages.protect_config import ProtectConfig

    out = work / "swapped.mp4"
    # allow_leaks: a young model's swap may still be A; the point is to measure that, not to refuse it.
    convert(clip, clip_faces, model_dir, out, ConvertConfig(), device=device, progress=False,
            protect=ProtectConfig(min_face=40), allow_leaks=True)
    for stale in work.glob("swapped.leaky.mp4"):
        stale.replace(out)
    summary = evaluate(clip, out, ref_a, ref_b, work / "evaluate", EvaluateConfig(frames=frames, au="none",
                                                                                  parrot="none"),
                       progress=False, device=device)
    sw_or, sw_sw = summary.comparison("SW-OR"), summary.comparison("SW-SW")
    return {"SW-OR_mean": sw_or.get("mean"), "SW-OR_min": sw_or.get("min"), "SW-SW_mean": sw_sw.get("mean"),
            "donor_match": summary.identity.get("donor", {}).get("share"),
            "reid_rate": summary.reidentification.get("reid_rate"),
            "no_face_swapped": summary.identity.get("no_face_share_swapped"),
            "geometry_pcc": summary.geometry.get("geometry_pcc_mean"), "pose_mae": summary.geometry.get("pose_mae"),
            "verdict": summary.verdict.level, "frames": summary.frames_sampled}


def run(a: Path, b: Path, minutes: float, points: int, model: str, width: int, device: str, work: Path,
        clip_seconds: float, frames: int, identity_weight: float = 0.0, init_from: Path | None = None,
        seed: int = 0) -> dict:
    from stages.extract import extract
    from stages.train import train
    from stages.train_config import TrainConfig

    work.mkdir(parents=True, exist_ok=True)
    faces = {}
    for side, video in (("a", a), ("b", b)):
        faces[side] = work / f"faces_{side}"
        if not (faces[side] / "alignments.json").exists():
            extract(video, faces[side], ExtractConfig(), device=device, progress=False)
    clip = _clip(a, clip_seconds, work / "clip.mp4")
    clip_faces = work / "faces_clip"
    extract(clip, clip_faces, ExtractConfig(), device=device, progress=False)
    ref_a, ref_b = _reference(a, work / "ref_a.jpg"), _reference(b, work / "ref_b.jpg")
    model_dir = work / "model"
    shutil.rmtree(model_dir, ignore_errors=True)  # the bench's own scratch: every curve starts from iteration 0
    curve, trained_s, iteration = [], 0.0, 0
    chunk = minutes / points
    for point in range(1, points + 1):
        config = TrainConfig(model=model, width=width, iterations=10**9, minutes=chunk, save_every=10**6,
                             preview_every=0, identity_every=0, identity_weight=identity_weight,
                             init_from=init_from, seed=seed)
        start = time.perf_counter()
        summary = train(faces["a"], faces["b"], model_dir, config, device=device, progress=False)
        trained_s += time.perf_counter() - start
        rate = _images_per_s(model_dir, iteration)
        iteration = int(summary["iteration"])
        start = time.perf_counter()
        scores = score_point(model_dir, clip, clip_faces, ref_a, ref_b, work / f"point{point}", device, frames)
        curve.append({"point": point, "train_minutes": round(trained_s / 60, 2), "iteration": iteration,
                      "images_per_s": rate, **scores, "score_seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps(curve[-1]), flush=True)
    state = json.loads((model_dir / "state.json").read_text())
    return {"pair": {"a": str(a), "b": str(b)}, "model": model, "frozen": state["frozen"],
            "identity_weight": identity_weight, "init_from": state.get("init_from"), "seed": seed,
            "minutes": minutes, "points": points, "clip_seconds": clip_seconds, "frames": frames, "curve": curve}


def plot(result: dict) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = result["curve"]
    x = [p["train_minutes"] for p in curve]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, label in (("SW-OR_mean", "SW-OR (high = A hidden)"), ("SW-SW_mean", "SW-SW (low = B)")):
        ax1.plot(x, [p[key] for p in curve], "o-", label=label)
    ax1.axhline(0.6, color="crimson", linestyle="--", linewidth=1, label="threshold 0.6")
    ax1.set_xlabel("training minutes")
    ax1.set_ylabel("face_recognition distance")
    ax1.legend(fontsize=7)
    ax2.plot(x, [p["geometry_pcc"] for p in curve], "o-", label="expression geometry PCC")
    ax2.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="verdict bar 0.5")
    ax2.set_xlabel("training minutes")
    ax2.legend(fontsize=7)
    frozen = result.get("frozen", {})
    extras = (f", width {frozen.get('width')}, identity weight {result.get('identity_weight', 0):g}"
              + (", init-from " + "+".join(result["init_from"]["parts"]) if result.get("init_from") else ""))
    fig.suptitle(f"{result['model']}{extras} on {result['machine']['cpu']} ({result['machine']['cores']} cores"
                 f"{', ' + result['machine']['gpu'] if result['machine'].get('gpu') else ''})", fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, default=DATA / "talking_1.mp4", help="video of A, the person to hide")
    parser.add_argument("--b", type=Path, default=DATA / "talking_2.mp4", help="video of B, the donor")
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget (default 20)")
    parser.add_argument("--points", type=int, default=5, help="evaluations over the budget (default 5)")
    parser.add_argument("--model", default="original")
    parser.add_argument("--width", type=int, default=0, help="0: the family's default for the device")
    parser.add_argument("--identity-weight", type=float, default=0.0, help="train.identity_weight (default 0: off)")
    parser.add_argument("--init-from", type=Path, default=None, help="train.init_from: a trained model folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--clip-seconds", type=float, default=2.0)
    parser.add_argument("--frames", type=int, default=20, help="frames evaluated per point")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "quality_work")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality.json")
    args = parser.parse_args(argv)
    result = run(args.a, args.b, args.minutes, args.points, args.model, args.width, args.device, args.work,
                 args.clip_seconds, args.frames, args.identity_weight, args.init_from, args.seed)
    result["machine"] = machine_info()
    write_json(args.out, result)
    write_bytes(args.out.with_suffix(".png"), plot(result))
    print(f"-> {args.out}, {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
