"""Which training change helps the swap keep A's expression: the baseline, each change alone, all together.

    python -m deid.bench.ablation [--iterations 3317] [--pairs talking WolfgangLanger] [--arms NAME ...]
                             [--frames 0] [--device auto] [--work DIR] [--out bench/results/ablation.json]

Every arm trains the same pair from iteration 0 for the same number of iterations (a budget a shared
machine cannot shrink; 3317 is what 20 minutes of `original` on the 2-core CI machine gives) and is scored
by bench/quality.py on the same clip with the same controls (re-encode, frozen face), with models training
never used: SW-OR / SW-SW / donor match and re-identification by dlib and SFace, the calibrated landmark
measure, 3DDFA_V2 expression and pose error, MediaPipe blendshape AUs. Arms (train.* settings over the
defaults):
- baseline: the defaults;
- region: faceswap-style multipliers on L1 and the SSIM map (eyes x4, mouth x3, mouth dilated);
- lr: Adam lr 1e-4, beta1 0.9, 200-iteration warm-up;
- expression: the expression-consistency term at weight 0.1;
- together: all three.
Writes the JSON (every arm's scores, the controls, the machine) and a Markdown table beside it; each arm's
frames picture is `<work>/<pair>/<arm>/point1.jpg`. An arm already in the JSON with the same settings and
budget is kept, so a killed sweep resumes at the next arm.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from deid.bench.machine import machine_info  # noqa: E402
from deid.bench.quality import DATA, run  # noqa: E402
from deid.core.atomic import write_json, write_text  # noqa: E402

PAIRS = {"talking": (DATA / "talking_1.mp4", DATA / "talking_2.mp4"),
         "WolfgangLanger": (DATA / "WolfgangLanger_Pexels.mp4", DATA / "talking_2.mp4")}
REGION = {"region_loss": "multiplier"}
LR = {"lr": 1e-4, "beta1": 0.9, "warmup": 200}
EXPRESSION = {"expression_weight": 0.1}
ARMS = {"baseline": {}, "region": REGION, "lr": LR, "expression": EXPRESSION,
        "together": {**REGION, **LR, **EXPRESSION}}
COLUMNS = (("SW-OR_mean", "SW-OR"), ("SW-OR_min", "min"), ("SW-SW_mean", "SW-SW"), ("donor_match", "donor dlib"),
           ("donor_match_sface", "donor SFace"), ("reid_rate", "re-id dlib"), ("reid_rate_sface", "re-id SFace"),
           ("no_face_swapped", "no face"), ("expression", "landmark measure"), ("mouth_r", "mouth r"),
           ("mouth_null_high", "band top"), ("mouth_gain", "gain"), ("expr_error_3dmm", "3DMM err"),
           ("pcc_3dmm", "3DMM PCC"), ("pose_error_3dmm", "pose deg"), ("au_pcc_blendshapes", "AU PCC"))


def _cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def table(result: dict) -> str:
    """The sweep as Markdown: one row per pair and arm, the controls first."""
    lines = ["| pair | arm | " + " | ".join(label for _, label in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 2) + "|"]
    for pair, arms in result["pairs"].items():
        first = next(iter(arms.values()), None)
        rows = [(f"control: {name}", scores) for name, scores in (first or {}).get("controls", {}).items()]
        rows += [(arm, entry["curve"][-1]) for arm, entry in arms.items()]
        for arm, scores in rows:
            lines.append(f"| {pair} | {arm} | " + " | ".join(_cell(scores.get(key)) for key, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3317, help="training iterations per arm (default 3317)")
    parser.add_argument("--pairs", nargs="+", choices=sorted(PAIRS), default=list(PAIRS))
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--frames", type=int, default=0, help="frames scored per arm (default 0: every distinct one)")
    parser.add_argument("--clip-seconds", type=float, default=6.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "ablation_work")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ablation.json")
    args = parser.parse_args(argv)
    result = json.loads(args.out.read_text()) if args.out.exists() else {"pairs": {}}
    result["machine"] = machine_info()
    for pair in args.pairs:
        a, b = PAIRS[pair]
        arms = result["pairs"].setdefault(pair, {})
        for arm in args.arms:
            done = arms.get(arm)
            if done and done.get("train") == ARMS[arm] and done.get("iterations") == args.iterations \
                    and done.get("frames") == (args.frames or "all distinct"):
                continue
            start = time.perf_counter()
            entry = run(a, b, 0.0, 1, "original", 0, args.device, args.work / pair, args.clip_seconds, args.frames,
                        iterations=args.iterations, train=dict(ARMS[arm]), variant=arm)
            entry["wall_minutes"] = round((time.perf_counter() - start) / 60, 1)
            arms[arm] = json.loads(json.dumps(entry, default=str))
            write_json(args.out, result)
            write_text(args.out.with_suffix(".md"), table(result))
            print(f"{pair} / {arm}: done in {entry['wall_minutes']} min", flush=True)
    write_text(args.out.with_suffix(".md"), table(result))
    print(table(result))
    print(f"-> {args.out}, {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
