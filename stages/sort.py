"""`deid sort`: a sorted view of an extract or clean folder, for a person to inspect quickly.

Writes `<out>/index.csv` (rank, frame, face, value, path) and, where the filesystem allows, symlinks
`<out>/<rank>_<frame>_<face>.png` to the crops, so any image viewer shows them in order. Nothing in the
input is touched. Orders:
    face  chain of nearest identities (face_recognition), starting from the first face: other people
          and false positives end up together, usually at the end
    blur  sharpest first (variance of the Laplacian)
    yaw   most turned to one side first, through frontal, to the other side
    size  largest face in the frame first
    hist  chain of most similar grey-level histograms (lighting, occlusions)
"""
from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from deid.core.atomic import write_text
from deid.models.alignment import transform_points
from deid.models.face_quality import focus_measure, head_pose, thumbnail
from deid.models.landmarks import IdentityModel
from deid.stages.alignments import load_alignments
from deid.stages.progress import progress_bar

log = logging.getLogger("deid.sort")

SortKey = Literal["face", "blur", "yaw", "size", "hist"]


def sort_faces(extract_dir: Path, out_dir: Path, by: SortKey, progress: bool = True) -> Path:
    alignments = load_alignments(extract_dir)
    faces = list(alignments.faces())
    size, centering = alignments.extractor["size"], alignments.extractor["centering"]
    identity = IdentityModel() if by == "face" else None
    values = []
    with progress_bar(len(faces), f"sort by {by}", "face", progress) as bar:
        for ref in faces:
            bar.update(1)
            crop = cv2.imread(str(ref.image), cv2.IMREAD_COLOR)
            if by == "size":
                values.append(float(min(ref.record["box"][2:])))
            elif by == "yaw":
                values.append(head_pose(transform_points(ref.landmarks, ref.matrix), size)[0])
            elif by == "blur":
                values.append(focus_measure(crop, centering))
            elif by == "hist":
                hist = cv2.calcHist([thumbnail(crop, centering, 64)], [0], None, [32], [0, 256]).ravel()
                values.append(hist / max(hist.sum(), 1.0))
            else:
                stored = ref.record.get("identity")
                values.append(np.asarray(stored) if stored is not None else identity.embed(
                    cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), transform_points(ref.landmarks, ref.matrix)))
    if by in ("face", "hist"):
        order, scores = _nearest_chain(np.stack(values)) if values else ([], [])
    else:
        descending = by in ("size", "blur")
        order = sorted(range(len(values)), key=lambda i: -values[i] if descending else values[i])
        scores = [values[i] for i in order]
    return _write_view(out_dir, [faces[i] for i in order], scores)


def _nearest_chain(vectors: np.ndarray) -> tuple[list[int], list[float]]:
    """Greedy chain: start at face 0, always step to the nearest unvisited face."""
    remaining = set(range(1, len(vectors)))
    order, steps = [0], [0.0]
    while remaining:
        candidates = np.fromiter(remaining, int)
        distances = np.linalg.norm(vectors[candidates] - vectors[order[-1]], axis=1)
        pick = int(candidates[np.argmin(distances)])
        order.append(pick)
        steps.append(float(distances.min()))
        remaining.remove(pick)
    return order, steps


def _write_view(out_dir: Path, faces: list, values: list[float]) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        if old.is_symlink():
            old.unlink()  # a previous view; only our own links are removed
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["rank", "frame", "face", "value", "path"])
    linked = True
    for rank, (ref, value) in enumerate(zip(faces, values)):
        writer.writerow([rank, ref.frame, ref.index, f"{value:.4g}", str(ref.image)])
        if linked:
            try:
                os.symlink(ref.image.resolve(), out_dir / f"{rank:05d}_{ref.frame:06d}_{ref.index}.png")
            except OSError as exc:
                log.warning("cannot create symlinks in %s (%s); index.csv alone lists the order", out_dir, exc)
                linked = False
    index = out_dir / "index.csv"
    write_text(index, rows.getvalue())
    return index
