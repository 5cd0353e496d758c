"""Evaluate throughput: the identity pass (decode + MTCNN + 68 landmarks + embedding, both videos) and the AU pass.

    python -m bench.evaluate [--video V] [--frames N] [--out bench/results/evaluate.json]

The identity pass is timed inside `deid evaluate` on a video against itself (so every frame has a
face), models loaded and references embedded beforehand are included in `total_s` but not in the
per-pass rate. The AU pass is py-feat when it can load (it cannot on machines without its weights:
the reason is recorded), and always the CSV route: reading the real OpenFace and py-feat tables,
aligning them and computing per-AU PCC/RMSE.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import machine_info  # noqa: E402
from pipeline.atomic import write_json  # noqa: E402
from reports import au  # noqa: E402
from reports.pyfeat_au import load_detector  # noqa: E402
from stages.evaluate import evaluate  # noqa: E402
from stages.evaluate_config import EvaluateConfig  # noqa: E402
from stages.media import probe  # noqa: E402

DATA = ROOT / "tests" / "data"
DEFAULT_VIDEO = DATA / "video" / "talking_1.mp4"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "evaluate.json")
    args = parser.parse_args()

    info = probe(args.video)
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "ref.jpg"
        import cv2
        from stages.media import iter_frames
        frame = next(iter_frames(info))[1]
        cv2.imwrite(str(ref), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        start = time.perf_counter()
        summary = evaluate(args.video, args.video, ref, DATA / "identities" / "obama" / "1.jpg", Path(tmp) / "out",
                           EvaluateConfig(frames=args.frames, au="none", parrot="none"), progress=False)
        total = time.perf_counter() - start
    timings = summary["timings"]
    pass_s = timings["identity_original_s"] + timings["identity_swapped_s"]
    detector, reason = load_detector(None)
    result = {
        "video": {"path": str(args.video), "width": info.width, "height": info.height, "frames": info.frames},
        "machine": machine_info(),
        "identity_pass": {"frames": 2 * summary["frames_sampled"], "seconds": round(pass_s, 3),
                          "frames_per_s": round(2 * summary["frames_sampled"] / pass_s, 3),
                          "evaluate_total_s": round(total, 3),
                          "note": "decode every frame up to the last sampled one; detect/landmarks/embed the sampled ones"},
        "au_pass": {"pyfeat": {"available": detector is not None, "reason": reason},
                    "csv_route": bench_au_csv()},
    }
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("identity_pass", "au_pass")}, indent=1))


if __name__ == "__main__":
    main()
