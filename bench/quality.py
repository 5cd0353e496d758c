"""Swap quality per unit of compute: train a pair for a wall-clock budget and score it at regular points.

    python -m deid.bench.quality [--minutes 20 | --iterations N] [--points 5] [--a VIDEO --b VIDEO] [--model original]
                            [--width 0] [--identity-weight 0] [--init-from MODEL_DIR] [--seed 0]
                            [--clip-seconds 6] [--frames 0] [--train KEY=VALUE ...] [--device auto] [--work DIR]
                            [--out bench/results/quality.json]

At each point of the budget the model so far converts a fixed clip (the first `--clip-seconds` of A's
video, every distinct frame scored by default) and `deid evaluate` scores it against A's and B's
reference frames (the first frame of each video), with models the training never used where it can:
- identity: SW-OR (higher = A hidden), SW-SW (lower = looks like B), re-identified share, donor match by
  dlib (face_recognition) and by SFace, swapped frames without a face;
- expression: the calibrated landmark measure's judgement and its mouth_open r / null band / gain
  (reports/expression.py), 3DDFA_V2's expression error and pose error (`3dmm` metric), MediaPipe
  blendshape AU PCC (mean over AUs); the old geometry PCC for comparison with earlier curves;
- a frames picture per point (`<out stem>.point<k>.jpg`: original above, swap below, at A's mouth
  extremes).
Controls, scored once per run on the same clip: the clip re-encoded (libx264 crf 23) and frame 0 frozen
over the whole clip; the goal asks for a 3DMM expression error at most half the frozen face's. The
curve goes to the JSON and a PNG plot beside it. Default pair: the repository's talking_1.mp4 (A) and
talking_2.mp4 (B). Training time counts only the training; extraction, conversion and scoring are timed
apart.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from deid.bench.machine import machine_info  # noqa: E402
from deid.core.atomic import write_bytes, write_json  # noqa: E402
from deid.pipeline.config import ConvertConfig, ExtractConfig  # noqa: E402
from deid.stages.media import ffmpeg_path, iter_frames, probe  # noqa: E402

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


def score_point(model_dir: Path | None, clip: Path, clip_faces: Path, ref_a: Path, ref_b: Path, work: Path,
                device: str, frames: int, swapped: Path | None = None) -> dict:
    """Convert `clip` with the model (or score a ready `swapped` video: the controls) and evaluate it."""
    from deid.stages.convert import convert
    from deid.stages.protect_config import ProtectConfig

    work.mkdir(parents=True, exist_ok=True)
    out = swapped or work / "swapped.mp4"
    if swapped is None:
        # allow_leaks: a young model's swap may still be A; the point is to measure that, not to refuse it.
        convert(clip, clip_faces, model_dir, out, ConvertConfig(), device=device, progress=False,
                protect=ProtectConfig(min_face=40), allow_leaks=True)
        for stale in work.glob("swapped.leaky.mp4"):
            stale.replace(out)
    return _scores(_evaluate(clip, out, ref_a, ref_b, work / "evaluate", device, frames))


def _evaluate(clip: Path, swapped: Path, ref_a: Path, ref_b: Path, out: Path, device: str, frames: int):
    from deid.stages.evaluate import evaluate
    from deid.stages.evaluate_config import EvaluateConfig

    config = EvaluateConfig(frames=frames or 10**6, au="blendshapes", parrot="none")
    return evaluate(clip, swapped, ref_a, ref_b, out, config, progress=False, device=device)


def _scores(summary) -> dict:
    sw_or, sw_sw = summary.comparison("SW-OR"), summary.comparison("SW-SW")
    second = summary.identity.get("second") or {}
    expression = summary.expression or {}
    mouth = next((m for m in expression.get("measures", []) if m.get("measure") == "mouth_open"), {})
    dmm = summary.metrics.get("3dmm", {})
    return {"SW-OR_mean": sw_or.get("mean"), "SW-OR_min": sw_or.get("min"), "SW-SW_mean": sw_sw.get("mean"),
            "donor_match": summary.identity.get("donor", {}).get("share"),
            "donor_match_sface": (second.get("donor") or {}).get("share"),
            "reid_rate": summary.reidentification.get("reid_rate"),
            "reid_rate_sface": (second.get("reidentification") or {}).get("reid_rate"),
            "no_face_swapped": summary.identity.get("no_face_share_swapped"),
            "expression": expression.get("judgement"), "mouth_r": mouth.get("r"),
            "mouth_null_high": mouth.get("null_high"), "mouth_gain": mouth.get("gain"),
            "mouth_informative": mouth.get("informative"),
            "expr_error_3dmm": dmm.get("mean"), "pcc_3dmm": dmm.get("pcc_mean"),
            "pose_error_3dmm": dmm.get("pose_error_mean"),
            "au_pcc_blendshapes": summary.au.get("pcc_mean") if summary.au.get("computed") else None,
            "geometry_pcc": summary.geometry.get("geometry_pcc_mean"), "pose_mae": summary.geometry.get("pose_mae"),
            "verdict": summary.verdict.level, "frames": summary.frames_sampled}


def _controls(clip: Path, clip_faces: Path, ref_a: Path, ref_b: Path, work: Path, device: str, frames: int) -> dict:
    """The clip re-encoded (what a perfect swap could score) and frame 0 frozen (no expression at all)."""
    reencoded = work / "control_reencode.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", ffmpeg_path(clip), "-c:v", "libx264", "-crf",
                    "23", "-an", ffmpeg_path(reencoded)], check=True)
    frozen = work / "control_frozen.mp4"
    info = probe(clip)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", ffmpeg_path(clip), "-vf",
                    "select=eq(n\\,0),loop=loop=-1:size=1", "-frames:v", str(info.frames), "-r", str(info.fps),
                    "-c:v", "libx264", "-crf", "18", "-an", ffmpeg_path(frozen)], check=True)
    return {name: score_point(None, clip, clip_faces, ref_a, ref_b, work / f"control_{name}", device, frames, video)
            for name, video in (("reencode", reencoded), ("frozen", frozen))}


def frames_picture(clip: Path, swapped: Path, clip_faces: Path, out: Path, count: int = 4) -> None:
    """Original above swap, at A's widest-open and most-closed mouth and eyes (extract landmarks of the clip)."""
    import cv2
    import numpy as np

    from deid.stages.alignments import load_alignments
    from deid.stages.donor_coverage import extreme_faces

    refs = list(load_alignments(clip_faces).faces())
    picks = sorted({refs[i].frame for i in extreme_faces([r.landmarks for r in refs])})[:count]
    if not picks or not swapped.exists():
        return
    originals = dict((i, f) for i, f in iter_frames(probe(clip)) if i in picks)
    swaps = dict((i, f) for i, f in iter_frames(probe(swapped)) if i in picks)
    height = 256
    columns = []
    for i in picks:
        pair = [cv2.resize(im, (round(im.shape[1] * height / im.shape[0]), height), interpolation=cv2.INTER_AREA)
                for im in (originals[i], swaps[i])]
        columns.append(np.concatenate(pair, axis=0))
    image = np.concatenate(columns, axis=1)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])
    if ok:
        write_bytes(out, data.tobytes())


def train_settings(pairs: list[str]) -> dict:
    """`KEY=VALUE` strings -> train.* settings, typed and named by TrainConfig's own fields (the one place a
    setting is declared); an unknown key or a bad value is one error naming train.KEY."""
    import dataclasses
    import typing

    from deid.core.errors import ConfigError
    from deid.stages.train_config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in fields:
            raise ConfigError(f"--train {pair!r}: expected KEY=VALUE with KEY one of train.{', train.'.join(sorted(fields))}")
        kind = hints[key]
        try:
            if kind is bool:
                value = {"true": True, "false": False}[text.lower()]
            elif kind in (int, float):
                value = kind(text)
            else:
                value = text
        except (KeyError, ValueError):
            raise ConfigError(f"--train {pair!r}: train.{key} takes a {getattr(kind, '__name__', kind)}") from None
        settings[key] = value
    return settings


def prepare(a: Path, b: Path, work: Path, clip_seconds: float, frames: int, device: str) -> dict:
    """Extract both people, cut and extract the scored clip, and score the controls, once per work folder:
    every variant of an ablation trained in the same folder is scored on the same clip and controls."""
    from deid.stages.extract import extract

    work.mkdir(parents=True, exist_ok=True)
    faces = {}
    for side, video in (("a", a), ("b", b)):
        faces[side] = work / f"faces_{side}"
        if not (faces[side] / "alignments.json").exists():
            extract(video, faces[side], ExtractConfig(), device=device, progress=False)
    key = {"a": str(a), "b": str(b), "clip_seconds": clip_seconds, "frames": frames}
    cached = work / "prepared.json"
    clip, clip_faces = work / "clip.mp4", work / "faces_clip"
    ref_a, ref_b = work / "ref_a.jpg", work / "ref_b.jpg"
    if cached.exists() and json.loads(cached.read_text()).get("key") == key:
        controls = json.loads(cached.read_text())["controls"]
    else:
        _clip(a, clip_seconds, clip)
        shutil.rmtree(clip_faces, ignore_errors=True)
        extract(clip, clip_faces, ExtractConfig(), device=device, progress=False)
        _reference(a, ref_a), _reference(b, ref_b)
        start = time.perf_counter()
        controls = _controls(clip, clip_faces, ref_a, ref_b, work, device, frames)
        print(json.dumps({"controls": controls, "seconds": round(time.perf_counter() - start, 1)}), flush=True)
        write_json(cached, {"key": key, "controls": controls})
    return {"faces": faces, "clip": clip, "clip_faces": clip_faces, "ref_a": ref_a, "ref_b": ref_b,
            "controls": controls}


def run(a: Path, b: Path, minutes: float, points: int, model: str, width: int, device: str, work: Path,
        clip_seconds: float, frames: int, identity_weight: float = 0.0, init_from: Path | None = None,
        seed: int = 0, iterations: int = 0, train: dict | None = None, variant: str = "") -> dict:
    """The curve over `minutes` of training, or over `iterations` when given (a budget that a machine shared
    with other work cannot shrink, so curves from different days compare). `train` sets any other train.*
    key; `variant` names the sub-folder of `work` its model and points go to (an ablation's arms share
    `work`'s extraction, clip and controls)."""
    from deid.stages.train import train as train_pair
    from deid.stages.train_config import TrainConfig

    ready = prepare(a, b, work, clip_seconds, frames, device)
    clip, clip_faces, ref_a, ref_b = ready["clip"], ready["clip_faces"], ready["ref_a"], ready["ref_b"]
    out = work / variant if variant else work
    model_dir = out / "model"
    shutil.rmtree(model_dir, ignore_errors=True)  # the bench's own scratch: every curve starts from iteration 0
    curve, trained_s, iteration = [], 0.0, 0
    chunk = minutes / points
    for point in range(1, points + 1):
        target = round(iterations * point / points) if iterations else 10**9
        config = TrainConfig(**{"model": model, "width": width, "identity_weight": identity_weight,
                                "init_from": init_from, "seed": seed, **(train or {}),
                                "iterations": target, "minutes": 0 if iterations else chunk,
                                "save_every": 10**6, "preview_every": 0, "identity_every": 0})
        start = time.perf_counter()
        summary = train_pair(ready["faces"]["a"], ready["faces"]["b"], model_dir, config, device=device,
                             progress=False)
        trained_s += time.perf_counter() - start
        rate = _images_per_s(model_dir, iteration)
        iteration = int(summary["iteration"])
        start = time.perf_counter()
        scores = score_point(model_dir, clip, clip_faces, ref_a, ref_b, out / f"point{point}", device, frames)
        frames_picture(clip, out / f"point{point}" / "swapped.mp4", clip_faces, out / f"point{point}.jpg")
        curve.append({"point": point, "train_minutes": round(trained_s / 60, 2), "iteration": iteration,
                      "images_per_s": rate, **scores, "score_seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps(curve[-1]), flush=True)
    state = json.loads((model_dir / "state.json").read_text())
    return {"pair": {"a": str(a), "b": str(b)}, "model": model, "frozen": state["frozen"],
            "identity_weight": identity_weight, "init_from": state.get("init_from"), "seed": seed,
            "train": train or {}, "minutes": None if iterations else minutes, "iterations": iterations or None,
            "points": points, "clip_seconds": clip_seconds, "frames": frames or "all distinct",
            "controls": ready["controls"], "curve": curve}


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
    for key, label in (("mouth_r", "mouth_open r (landmark measure)"), ("pcc_3dmm", "3DMM expression PCC"),
                       ("au_pcc_blendshapes", "blendshape AU PCC")):
        ax2.plot(x, [p[key] if p[key] is not None else float("nan") for p in curve], "o-", label=label)
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
    parser.add_argument("--iterations", type=int, default=0,
                        help="budget in training iterations instead of minutes (0: use --minutes)")
    parser.add_argument("--model", default="original")
    parser.add_argument("--width", type=int, default=0, help="0: the family's default for the device")
    parser.add_argument("--identity-weight", type=float, default=0.0, help="train.identity_weight (default 0: off)")
    parser.add_argument("--init-from", type=Path, default=None, help="train.init_from: a trained model folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", action="append", default=[], metavar="KEY=VALUE",
                        help="any other train.* setting, e.g. --train region_loss=multiplier --train lr=1e-4")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--clip-seconds", type=float, default=6.0, help="seconds of A scored (default 6)")
    parser.add_argument("--frames", type=int, default=0, help="frames evaluated per point (default 0: every distinct one)")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "quality_work")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality.json")
    args = parser.parse_args(argv)
    from deid.core.errors import ConfigError

    try:
        settings = train_settings(args.train)
    except ConfigError as error:
        parser.error(str(error))
    result = run(args.a, args.b, args.minutes, args.points, args.model, args.width, args.device, args.work,
                 args.clip_seconds, args.frames, args.identity_weight, args.init_from, args.seed, args.iterations,
                 settings)
    result["machine"] = machine_info()
    write_json(args.out, result)
    write_bytes(args.out.with_suffix(".png"), plot(result))
    print(f"-> {args.out}, {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
