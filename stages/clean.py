"""Clean: keep only the right person's good faces, never delete anything, and say why each face went.

Input: an extract (or clean) output folder. Output folder:
    alignments.json   schema 1, every frame, only the kept faces; `faces_root` points back at the
                      input's crops, so nothing is copied and the input is never modified
    rejected.csv      frame, face, reason, value, threshold: one row per rejected face
    summary.json      counts per reason, and how the target identity was chosen

Filters, in order (each switchable in `clean:`): face size, landmark sanity, extreme pose, blur
(relative to this input's own median sharpness), identity (reference photos, or the dominant identity
of the input when none are given), one target per frame, near-duplicates, and a cap that keeps the
most varied faces.
"""
from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from deid.core.atomic import write_json, write_text
from deid.core.errors import DeidError
from deid.core.settings import as_plain
from deid.models.alignment import transform_points
from deid.models.face_quality import focus_measure, head_pose, landmark_distance, thumbnail
from deid.models.identity import (
    distance_to_references,
    dominant_cluster,
    reference_embeddings,
)
from deid.models.landmarks import IdentityModel
from deid.stages.alignments import Alignments, FaceRef, load_alignments
from deid.stages.clean_config import CleanConfig
from deid.stages.progress import progress_bar

log = logging.getLogger("deid.clean")

# Below this many faces a median is no measure of "this clip's normal sharpness".
MIN_FACES_FOR_RELATIVE_BLUR = 8


@dataclass
class _Face:
    ref: FaceRef
    size: float
    distance: float = float("nan")  # landmark distance from the mean face
    yaw: float = float("nan")
    pitch: float = float("nan")
    focus: float = float("nan")
    identity: float = float("nan")  # distance to the target identity
    embedding: np.ndarray | None = None
    thumb: np.ndarray | None = None
    rejected: tuple[str, float, float] | None = None  # reason, value, threshold

    def reject(self, reason: str, value: float, threshold: float) -> None:
        if self.rejected is None:
            self.rejected = (reason, float(value), float(threshold))


@dataclass
class _Outcome:
    faces: list[_Face]
    identity_source: str
    notes: list[str] = field(default_factory=list)


def clean(extract_dir: Path, out_dir: Path, config: CleanConfig, references: Sequence[Path] = (),
          progress: bool = True) -> dict[str, Any]:
    """Run the stage; returns the summary recorded in the manifest."""
    alignments = load_alignments(extract_dir)
    out_dir = Path(out_dir)
    if out_dir.resolve() == Path(extract_dir).resolve():
        raise DeidError(f"{out_dir}: clean must write to a folder other than its input; choose another -o")
    out_dir.mkdir(parents=True, exist_ok=True)
    identity_model = IdentityModel()
    # The reference photos are searched with the detector the extraction used (extract.detector).
    detector = alignments.extractor.get("detector", "mtcnn")
    reference_vectors = reference_embeddings(references, identity_model, detector) if references else None

    faces = _measure(alignments, identity_model, progress)
    outcome = _filter(faces, alignments, config, reference_vectors)
    summary = _summary(outcome, alignments)
    write_json(out_dir / "summary.json", summary)
    _write_outputs(alignments, out_dir, outcome, config, references)  # alignments.json last: it means "done"
    return summary


def _measure(alignments: Alignments, identity: IdentityModel, progress: bool) -> list[_Face]:
    size = alignments.extractor["size"]
    centering = alignments.extractor["centering"]
    faces = []
    refs = list(alignments.faces())
    with progress_bar(len(refs), f"clean {alignments.folder.name}", "face", progress) as bar:
        for ref in refs:
            bar.update(1)
            box = ref.record["box"]
            face = _Face(ref=ref, size=float(min(box[2], box[3])))
            crop = cv2.imread(str(ref.image), cv2.IMREAD_COLOR)
            if crop is None:
                face.reject("unreadable", float("nan"), float("nan"))
                faces.append(face)
                continue
            crop_landmarks = transform_points(ref.landmarks, ref.matrix)
            face.distance = landmark_distance(ref.landmarks)
            face.yaw, face.pitch, _ = head_pose(crop_landmarks, size)
            face.focus = focus_measure(crop, centering)
            face.thumb = thumbnail(crop, centering)
            stored = ref.record.get("identity")
            face.embedding = (np.asarray(stored, np.float32) if stored is not None
                              else identity.embed(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), crop_landmarks))
            faces.append(face)
    return faces


def _filter(faces: list[_Face], alignments: Alignments, config: CleanConfig,
            references: np.ndarray | None) -> _Outcome:
    for face in faces:
        if config.min_size and face.size < config.min_size:
            face.reject("min_size", face.size, config.min_size)
        if config.max_landmark_distance and face.distance > config.max_landmark_distance:
            face.reject("landmarks", face.distance, config.max_landmark_distance)
        if config.max_yaw and abs(face.yaw) > config.max_yaw:
            face.reject("yaw", face.yaw, config.max_yaw)
        if config.max_pitch and abs(face.pitch) > config.max_pitch:
            face.reject("pitch", face.pitch, config.max_pitch)
    notes = []
    if config.blur:
        notes += _blur_filter([f for f in faces if f.rejected is None], config.blur_ratio)
    source = _identity_filter([f for f in faces if f.rejected is None], config, references)
    _one_target_per_frame([f for f in faces if f.rejected is None])
    if config.dedupe:
        _dedupe([f for f in faces if f.rejected is None], config.dedupe_threshold)
    if config.max_faces:
        _cap_most_varied([f for f in faces if f.rejected is None], config.max_faces)
    return _Outcome(faces=faces, identity_source=source, notes=notes)


def _blur_filter(faces: list[_Face], ratio: float) -> list[str]:
    if len(faces) < MIN_FACES_FOR_RELATIVE_BLUR:
        note = (f"blur filter skipped: {len(faces)} faces, fewer than {MIN_FACES_FOR_RELATIVE_BLUR} "
                "to judge this input's normal sharpness")
        log.info(note)
        return [note]
    threshold = ratio * float(np.median([f.focus for f in faces]))
    for face in faces:
        if face.focus < threshold:
            face.reject("blur", face.focus, threshold)
    return []


def _identity_filter(faces: list[_Face], config: CleanConfig, references: np.ndarray | None) -> str:
    if not faces:
        return "none (no face left to identify)"
    embeddings = np.stack([f.embedding for f in faces])
    if references is not None:
        distances = distance_to_references(embeddings, references, config.reference_mode)
        source = f"{len(references)} reference photo(s), distance to the {config.reference_mode} reference"
    else:
        members = dominant_cluster(embeddings, config.threshold,
                                   tie_break=np.array([f.size * f.ref.record.get("score", 1.0) for f in faces]))
        centre = embeddings[members].mean(0)
        distances = np.linalg.norm(embeddings - centre, axis=1)
        source = f"dominant identity of the input ({int(members.sum())}/{len(faces)} faces; no reference photos)"
        log.info("no reference photos: keeping the %s", source.split(" (")[0] + f" ({int(members.sum())} faces)")
        for face, member in zip(faces, members):
            face.identity = float(np.linalg.norm(face.embedding - centre))
            if not member:
                face.reject("identity", face.identity, config.threshold)
        return source
    for face, distance in zip(faces, distances):
        face.identity = float(distance)
        if distance >= config.threshold:
            face.reject("identity", distance, config.threshold)
    return source


def _one_target_per_frame(faces: list[_Face]) -> None:
    by_frame: dict[int, list[_Face]] = {}
    for face in faces:
        by_frame.setdefault(face.ref.frame, []).append(face)
    for group in by_frame.values():
        if len(group) > 1:
            best = min(group, key=lambda f: (f.identity, -f.size))
            for face in group:
                if face is not best:
                    face.reject("not_target", face.identity, best.identity)


def _dedupe(faces: list[_Face], threshold: float) -> None:
    """Drop a face that differs from the last kept one by less than `threshold` grey levels on average."""
    last: np.ndarray | None = None
    for face in faces:
        if last is not None:
            difference = float(np.abs(face.thumb - last).mean())
            if difference < threshold:
                face.reject("duplicate", difference, threshold)
                continue
        last = face.thumb


def _cap_most_varied(faces: list[_Face], cap: int) -> None:
    """Keep `cap` faces by farthest-point sampling over pose and aligned landmark shape."""
    if len(faces) <= cap:
        return
    features = np.stack([_variety_features(f) for f in faces])
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    chosen = [0]
    nearest = np.linalg.norm(features - features[0], axis=1)
    while len(chosen) < cap:
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        nearest = np.minimum(nearest, np.linalg.norm(features - features[pick], axis=1))
    keep = set(chosen)
    for i, face in enumerate(faces):
        if i not in keep:
            face.reject("cap", float(nearest[i]), float(cap))


def _variety_features(face: _Face) -> np.ndarray:
    from deid.models.alignment import face_matrix

    lm = face.ref.landmarks
    shape = transform_points(lm[17:68], face_matrix(lm)).ravel()
    return np.concatenate([[face.yaw / 10.0, face.pitch / 10.0], shape])


def _write_outputs(alignments: Alignments, out_dir: Path, outcome: _Outcome, config: CleanConfig,
                   references: Sequence[Path]) -> None:
    kept: dict[str, list[dict]] = {key: [] for key in alignments.frames}
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["frame", "face", "reason", "value", "threshold"])
    for face in outcome.faces:
        if face.rejected is None:
            kept[str(face.ref.frame)].append({**face.ref.record, "source_index": face.ref.index})
        else:
            reason, value, threshold = face.rejected
            writer.writerow([face.ref.frame, face.ref.index, reason, _fmt(value), _fmt(threshold)])
    data = {
        "schema": alignments.data["schema"],
        "video": alignments.video,
        "extractor": alignments.extractor,
        "faces_root": os.path.relpath(alignments.faces_root, out_dir.resolve()),
        "cleaner": {**as_plain(config), "references": [str(p) for p in references],
                    "source": str(alignments.folder.resolve()), "identity": outcome.identity_source},
        "frames": kept,
    }
    write_text(out_dir / "rejected.csv", rows.getvalue())
    write_json(out_dir / "alignments.json", data)


def _fmt(value: float) -> str:
    return "" if value != value else f"{value:.4g}"  # NaN -> empty cell


def _summary(outcome: _Outcome, alignments: Alignments) -> dict[str, Any]:
    reasons: dict[str, int] = {}
    for face in outcome.faces:
        if face.rejected is not None:
            reasons[face.rejected[0]] = reasons.get(face.rejected[0], 0) + 1
    kept = sum(1 for f in outcome.faces if f.rejected is None)
    summary = {"faces": len(outcome.faces), "kept": kept, "rejected": len(outcome.faces) - kept,
               "reasons": reasons, "identity": outcome.identity_source, "notes": outcome.notes,
               "frames": len(alignments.frames)}
    log.info("%s: kept %d/%d faces; rejected %s", alignments.folder.name, kept, len(outcome.faces),
             ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "none")
    return summary
