"""Held-out recall of the protection searches on hard variants of public photos none of deid's tests use.

    python bench/recall.py [--media DIR] [--data tests/data] [--out bench/results/recall.json] [--no-4k]

Media (nothing is downloaded; these are read from the packages or from --media DIR):
- `skimage.data.astronaut()` (scikit-image): Eileen Collins, NASA portrait, public domain; frontal.
- `grace_hopper.jpg` (matplotlib `mpl-data/sample_data`): Grace Hopper, US Navy photo, public domain; frontal.
- In --media DIR, when present: `t1.jpg` (six people round a card table, faces turned three-quarter and looking
  down) and `Tom_Hanks_54745.png` (one aligned frontal face), from the public repository deepinsight/insightface,
  commit 7fadd420c2351d0ffa8cac403421c1a3ed733365, path `python-package/insightface/data/images/`; the
  repository's code is MIT, the photos are its sample data (third-party photos: use them locally, do not
  redistribute). Bring them with `git show COMMIT:PATH > DIR/NAME`.

Ground truth: on each clean original, the faces at least two of four detectors of three families agree on
(IoU >= 0.3): face_recognition HOG (upsample 1), MTCNN, CenterFace and YuNet at 1x, fine pass only. Each face
gets the pose label of its photo (frontal, or turned for t1.jpg), and each variant gets a lighting label.

Variants of every photo: normal; dark (luma -0.3 x 255, Gaussian noise sigma 25, as ffmpeg
`eq=brightness=-0.3,noise=alls=25`); IR-like (grey, contrast 1.3, -0.3, noise 25); mirrored; shrunk so its
faces are ~20 px and ~40 px tall; and per face a close-up: the face cut out and upscaled into a 1920x1080
frame at 700 px tall (and a 3840x2160 frame at 1400 px unless --no-4k).

A face counts as found when a box of the search covers the centre of its true box; `cover` is the mean share
of the true box that the best box covers (a fragment of a close-up scores low). False positives: boxes per
frame on every 4th frame of tests/data/video/no_face.mp4 and of a darkened, noisy copy made with ffmpeg.
Writes bench/results/recall.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]

SIZE_BUCKETS = ((0, 24, "<24"), (24, 64, "24-64"), (64, 200, "64-200"), (200, 500, "200-500"), (500, 1e9, ">=500"))
# (name, search, coarse pass, second look): each look alone, then all of them, then the union and the checker.
SEARCHES = (("centerface fine", "centerface", False, False), ("centerface", "centerface", True, True),
            ("yunet fine", "yunet", False, False), ("yunet", "yunet", True, True),
            ("centerface+yunet", "centerface+yunet", True, True), ("mtcnn", "mtcnn", True, True))


@dataclass
class Sample:
    name: str
    image: np.ndarray  # RGB
    boxes: np.ndarray  # (n, 4) true boxes
    pose: list[str]
    light: str


def load_photos(media: Path | None) -> list[tuple[str, np.ndarray, str]]:
    """(name, RGB image, pose) of every photo found."""
    import matplotlib
    from skimage import data

    photos = [("astronaut", data.astronaut(), "frontal")]
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    photos.append(("grace_hopper", cv2.cvtColor(cv2.imread(str(hopper)), cv2.COLOR_BGR2RGB), "frontal"))
    for name, pose in (("t1.jpg", "turned"), ("Tom_Hanks_54745.png", "frontal")):
        path = media / name if media else None
        if path is not None and path.is_file():
            photos.append((path.stem, cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), pose))
    return photos


def truth(image: np.ndarray) -> np.ndarray:
    """Faces at least two of four detectors agree on (module docstring)."""
    import face_recognition
    import torch

    from deid.models.centerface import CenterFace
    from deid.models.mtcnn import MTCNN
    from deid.models.yunet import YuNet

    hog = [[l, t, r, b] for t, r, b, l in face_recognition.face_locations(image, 1)]
    mt = [[x, y, x + w, y + h] for d in MTCNN(device=torch.device("cpu")).detect([image])[0] for x, y, w, h in [d.box]]
    cf = CenterFace().detect([image], 0.2)[0][0][:, :4].tolist()
    yn = YuNet().detect([image], 0.5)[0][:, :4].tolist()
    votes = [np.asarray(v, np.float32).reshape(-1, 4) for v in (hog, mt, cf, yn)]
    agreed: list[np.ndarray] = []
    for k, boxes in enumerate(votes):
        for box in boxes:
            count = 1 + sum(bool(len(o)) and iou(box, o).max() >= 0.3 for j, o in enumerate(votes) if j != k)
            if count >= 2 and not any(iou(box, a[None]).max() >= 0.3 for a in agreed):
                agreed.append(box)
    return np.asarray(agreed, np.float32).reshape(-1, 4)


def iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = ix * iy
    union = (box[2] - box[0]) * (box[3] - box[1]) + (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(union - inter, 1e-6)


def relight(image: np.ndarray, light: str, rng: np.random.Generator) -> np.ndarray:
    if light == "normal":
        return image
    out = image.astype(np.float32)
    if light == "ir":
        out = np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, 2).astype(np.float32)
        out = (out - 128) * 1.3 + 128
    out = out - 0.3 * 255 + rng.normal(0, 25, out.shape[:2])[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def variants(name: str, image: np.ndarray, boxes: np.ndarray, pose: str, four_k: bool) -> list[Sample]:
    rng = np.random.default_rng(20)
    poses = [pose] * len(boxes)
    out = [Sample(f"{name}/{light}", relight(image, light, rng), boxes, poses, light)
           for light in ("normal", "dark", "ir")]
    w = image.shape[1]
    mirrored = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
    out.append(Sample(f"{name}/mirrored", np.ascontiguousarray(image[:, ::-1]), mirrored, poses, "normal"))
    median = float(np.median(boxes[:, 3] - boxes[:, 1]))
    for px in (20, 40):
        k = px / median
        small = cv2.resize(image, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        out.append(Sample(f"{name}/{px}px", small, boxes * k, poses, "normal"))
    for i, box in enumerate(boxes):
        for size, (fw, fh) in ((700, (1920, 1080)), (1400, (3840, 2160)))[: 2 if four_k else 1]:
            out.append(close_up(f"{name}/face{i}/{fh}p", image, box, size, (fw, fh), pose))
    return out


def close_up(name: str, image: np.ndarray, box: np.ndarray, size: int, frame: tuple[int, int], pose: str) -> Sample:
    """The face upscaled to `size` px tall, centred in a frame of `frame` (w, h) filled with its surroundings."""
    k = size / float(box[3] - box[1])
    big = cv2.resize(image, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC)
    cx, cy = (box[0] + box[2]) / 2 * k, (box[1] + box[3]) / 2 * k
    fw, fh = frame
    x0, y0 = int(round(cx - fw / 2)), int(round(cy - fh / 2))
    canvas = np.zeros((fh, fw, 3), np.uint8)
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(big.shape[1], x0 + fw), min(big.shape[0], y0 + fh)
    canvas[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = big[sy0:sy1, sx0:sx1]
    true = np.array([[box[0] * k - x0, box[1] * k - y0, box[2] * k - x0, box[3] * k - y0]], np.float32)
    return Sample(name, canvas, true, [pose], "normal")


def make(name: str, search: str, coarse: bool, second: bool):
    import torch

    from deid.models.search import make_search

    made = make_search(search, torch.device("cpu"), 12)
    for member in getattr(made, "members", [made]):
        if hasattr(member, "coarse_pass"):
            member.coarse_pass, member.second_look = coarse, second
    return made


def score(samples: list[Sample], search) -> tuple[dict, float]:
    """Per (axis, label): [found, total, cover sum]; and seconds per frame."""
    table: dict = defaultdict(lambda: [0, 0, 0.0])
    start = time.perf_counter()
    for sample in samples:
        found = search.find([sample.image])[0]
        for box, pose in zip(sample.boxes, sample.pose):
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            hit = any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in found)
            area = float((box[2] - box[0]) * (box[3] - box[1]))
            cover = max([_inter(box, b) / area for b in found], default=0.0)
            height = float(box[3] - box[1])
            size = next(label for low, high, label in SIZE_BUCKETS if low <= height < high)
            for key in (("size", size), ("light", sample.light), ("pose", pose), ("all", "all")):
                cell = table[key]
                cell[0] += int(hit)
                cell[1] += 1
                cell[2] += float(cover)
    return table, (time.perf_counter() - start) / max(1, len(samples))


def _inter(a: np.ndarray, b: np.ndarray) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def false_positives(data: Path, search, tmp: Path) -> dict[str, float]:
    from deid.stages.media import ffmpeg_path, iter_frames, probe

    clean = data / "video" / "no_face.mp4"
    dark = tmp / "no_face_dark.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", ffmpeg_path(clean), "-vf",
                    "eq=brightness=-0.3,noise=alls=25:allf=t", "-an", "-c:v", "libx264", "-crf", "18",
                    ffmpeg_path(dark)], check=True)
    out = {}
    for label, path in (("no_face", clean), ("no_face dark", dark)):
        frames = [frame for i, frame in iter_frames(probe(path)) if i % 4 == 0]
        boxes = [b for i in range(0, len(frames), 4) for b in search.find(frames[i:i + 4])]
        out[label] = round(sum(len(b) for b in boxes) / len(frames), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media", type=Path, help="folder with t1.jpg and Tom_Hanks_54745.png (see docstring)")
    parser.add_argument("--data", type=Path, default=ROOT / "tests" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "recall.json")
    parser.add_argument("--no-4k", action="store_true", help="skip the 3840x2160 close-ups (slow on a CPU)")
    parser.add_argument("--only", help="comma-separated names of the searches to run (default: all)")
    args = parser.parse_args(argv)
    samples: list[Sample] = []
    sources = {}
    for name, image, pose in load_photos(args.media):
        boxes = truth(image)
        sources[name] = {"shape": list(image.shape), "faces": boxes.round(1).tolist(), "pose": pose}
        samples += variants(name, image, boxes, pose, not args.no_4k)
    chosen = [s for s in SEARCHES if not args.only or s[0] in args.only.split(",")]
    results = {"sources": sources, "samples": len(samples), "searches": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, search, coarse, second in chosen:
            made = make(name, search, coarse, second)
            table, seconds = score(samples, made)
            results["searches"][name] = {
                "recall": {f"{axis}:{label}": {"found": c[0], "faces": c[1], "recall": round(c[0] / c[1], 3),
                                               "cover": round(c[2] / c[1], 3)} for (axis, label), c in table.items()},
                "seconds_per_image": round(seconds, 3), "false_positives_per_frame": false_positives(
                    args.data, made, Path(tmp))}
            print(f"done {name}", file=sys.stderr, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print_table(results)
    return 0


def print_table(results: dict) -> None:
    keys = sorted({k for s in results["searches"].values() for k in s["recall"]},
                  key=lambda k: (["all", "size", "light", "pose"].index(k.split(":")[0]), k))
    names = list(results["searches"])
    print("recall (cover) " + " | ".join(f"{n:>17s}" for n in names))
    for key in keys:
        cells = []
        for n in names:
            r = results["searches"][n]["recall"].get(key)
            cells.append(f"{r['found']:>3d}/{r['faces']:<3d} {r['recall']:.2f} ({r['cover']:.2f})" if r else " " * 17)
        print(f"{key:14s} " + " | ".join(f"{c:>17s}" for c in cells))
    for label in ("no_face", "no_face dark"):
        print(f"FP/frame {label:5s} " + " | ".join(f"{results['searches'][n]['false_positives_per_frame'][label]:>17.3f}"
                                                   for n in names))
    print("s per image    " + " | ".join(f"{results['searches'][n]['seconds_per_image']:>17.2f}" for n in names))


if __name__ == "__main__":
    raise SystemExit(main())
