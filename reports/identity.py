"""Identity scores: the study's four comparisons, re-identification rate, and gallery identification.

Two recognisers score the same faces (the same landmarks, so the same frames have a face):
- dlib's face_recognition ResNet: Euclidean distance between 128-d embeddings, "same person" below the
  threshold (0.6). Its columns are the bare comparison names (OR-OR, OR-SW, SW-OR, SW-SW). deid's
  identity training term trains against this one.
- SFace (models/second_recogniser.py), which training never uses: cosine similarity, "same person" at or
  above 0.363 (higher = more alike). Its columns carry the prefix `sface_` (sface_SW-OR, ...).
A frame without a face has no score (NaN): it is counted in the no-face share and, for the verdict, as a
frame where the identity is not recognised.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from deid.core.errors import DeidError

COMPARISONS = ("OR-OR", "OR-SW", "SW-OR", "SW-SW")
SECOND_PREFIX = "sface_"  # identity.csv columns of the second recogniser's cosine similarities
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _distances(embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
    emb = np.asarray(embeddings, float).reshape(-1, 128)
    return np.linalg.norm(emb - np.asarray(reference, float).reshape(1, 128), axis=1)  # NaN rows stay NaN


def identity_frame_table(frames: Sequence[int], times: Sequence[float | None], original: np.ndarray,
                         swapped: np.ndarray, ref_original: np.ndarray, ref_donor: np.ndarray) -> pd.DataFrame:
    """Per sampled frame: the four distances (NaN where no face) and whether each video had a face."""
    table = pd.DataFrame({
        "frame": np.asarray(frames, int),
        "time_s": [np.nan if t is None else float(t) for t in times],
        "OR-OR": _distances(original, ref_original), "OR-SW": _distances(original, ref_donor),
        "SW-OR": _distances(swapped, ref_original), "SW-SW": _distances(swapped, ref_donor),
    })
    table["face_original"] = np.isfinite(table["OR-OR"])
    table["face_swapped"] = np.isfinite(table["SW-OR"])
    return table


def describe(values: np.ndarray) -> dict:
    """n, mean, sd (ddof=1), median, quartiles of the finite values; None where there are none."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"n": 0, "mean": None, "sd": None, "median": None, "q1": None, "q3": None, "min": None, "max": None}
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"n": int(len(v)), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "median": float(med), "q1": float(q1), "q3": float(q3), "min": float(v.min()), "max": float(v.max())}


def comparison_stats(table: pd.DataFrame, prefix: str = "") -> dict:
    """describe() of each comparison; `prefix` picks the second recogniser's columns."""
    return {name: describe(table[prefix + name].to_numpy()) for name in COMPARISONS}


def second_recogniser_summary(table: pd.DataFrame, recogniser: Any, max_times: int = 20,
                              prefix: str = SECOND_PREFIX) -> dict:
    """summary.json's identity.second: the second recogniser's comparisons, re-identification and donor
    match, with its name, metric and threshold. `recogniser`: models.second_recogniser.SFace (or anything
    with name, short, metric, threshold)."""
    threshold = float(recogniser.threshold)
    return {"available": True, "recogniser": recogniser.name, "short": recogniser.short, "metric": recogniser.metric,
            "threshold": threshold, "higher_is_same": True, "comparisons": comparison_stats(table, prefix),
            "reidentification": reidentification(table, threshold, prefix + "SW-OR", max_times, higher_is_same=True),
            "donor": donor_match(table, threshold, prefix + "SW-SW", higher_is_same=True)}


def _same(values: np.ndarray, threshold: float, higher_is_same: bool) -> np.ndarray:
    """Where a score says "the same person": a distance below, or a similarity at or above, the threshold."""
    v = np.asarray(values, float)
    with np.errstate(invalid="ignore"):
        return np.isfinite(v) & ((v >= threshold) if higher_is_same else (v < threshold))


def add_similarities(table: pd.DataFrame, original: np.ndarray, swapped: np.ndarray, ref_original: np.ndarray,
                     ref_donor: np.ndarray, prefix: str = SECOND_PREFIX) -> pd.DataFrame:
    """The four comparisons again as cosine similarities of a second recogniser's features, as `prefix`
    columns of the same per-frame table (NaN where no face)."""
    from deid.models.second_recogniser import cosine_similarity

    out = table.copy()
    for name, features, reference in (("OR-OR", original, ref_original), ("OR-SW", original, ref_donor),
                                      ("SW-OR", swapped, ref_original), ("SW-SW", swapped, ref_donor)):
        out[prefix + name] = cosine_similarity(features, reference)
    return out


def reidentification(table: pd.DataFrame, threshold: float, column: str = "SW-OR", max_times: int = 20,
                     higher_is_same: bool = False) -> dict:
    """How many swapped frames the recogniser still matches to the original person, and when.

    `higher_is_same`: the column is a similarity (SFace), not a distance (dlib)."""
    sampled = int(len(table))
    distances = table[column].to_numpy(float)
    face = np.isfinite(distances)
    hit = _same(distances, threshold, higher_is_same)
    hits = table[hit]
    times = [format_time(t) if np.isfinite(t) else f"frame {int(f)}" for f, t in zip(hits["frame"], hits["time_s"])]
    return {
        "threshold": float(threshold), "frames_sampled": sampled, "frames_with_face": int(face.sum()),
        "frames_reidentified": int(hit.sum()),
        "reid_rate": float(hit.sum() / sampled) if sampled else None,           # over all sampled frames
        "reid_rate_detected": float(hit.sum() / face.sum()) if face.sum() else None,  # over frames with a face
        "no_face_share": float((~face).sum() / sampled) if sampled else None,
        "reidentified_frames": [int(f) for f in hits["frame"]][:max_times],
        "reidentified_times": times[:max_times],
    }


def format_time(seconds: float) -> str:
    """0:12.3 style (m:ss.s), h:mm:ss.s past an hour."""
    tenths = int(round(float(seconds) * 10))
    minutes, rest = divmod(tenths, 600)
    hours, minutes = divmod(minutes, 60)
    sec = f"{rest // 10:02d}.{rest % 10}"
    return f"{hours}:{minutes:02d}:{sec}" if hours else f"{minutes}:{sec}"


def list_gallery(gallery: Path) -> dict[str, list[Path]]:
    """name -> photos, from a folder with one sub-folder per person."""
    gallery = Path(gallery)
    if not gallery.is_dir():
        raise DeidError(f"{gallery}: gallery folder not found; give a folder with one sub-folder of photos per person")
    people = {}
    for sub in sorted(p for p in gallery.iterdir() if p.is_dir() and not p.name.startswith(".")):
        photos = sorted(p for p in sub.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith("."))
        if photos:
            people[sub.name] = photos
    if not people:
        raise DeidError(f"{gallery}: no sub-folder with photos; the gallery needs one sub-folder of photos per person")
    return people


def gallery_embeddings(people: dict[str, list[Path]], embed: Callable[[Path], np.ndarray | None]) -> dict[str, np.ndarray]:
    """name -> (k, 128) embeddings; photos without a face are skipped, people without any are dropped."""
    out = {}
    for name, photos in people.items():
        emb = [e for e in (embed(p) for p in photos) if e is not None]
        if emb:
            out[name] = np.stack(emb)
    return out


def rank_identification(embeddings: np.ndarray, gallery: dict[str, np.ndarray], true_name: str,
                        ranks: Sequence[int] = (1, 5)) -> dict:
    """Share of faces whose true identity is among the k nearest gallery people (distance = closest photo)."""
    names = list(gallery)
    if true_name not in gallery:
        raise ValueError(f"{true_name!r} not in the gallery")
    emb = np.asarray(embeddings, float).reshape(-1, 128)
    emb = emb[np.isfinite(emb).all(1)]
    result = {"gallery_size": len(names), "true_identity": true_name, "faces": int(len(emb))}
    if len(emb) == 0:
        return {**result, **{f"rank{k}": None for k in ranks}, "top1_counts": {}}
    dist = np.stack([np.linalg.norm(emb[:, None, :] - gallery[n][None, :, :], axis=2).min(1) for n in names], axis=1)
    order = np.argsort(dist, axis=1, kind="stable")
    true_pos = np.argmax(order == names.index(true_name), axis=1)  # 0 = nearest
    for k in ranks:
        result[f"rank{k}"] = float(np.mean(true_pos < k))
    top1 = pd.Series([names[i] for i in order[:, 0]]).value_counts()
    result["top1_counts"] = {str(k): int(v) for k, v in top1.items()}
    return result


def match_gallery_name(gallery: dict[str, np.ndarray], reference: np.ndarray, threshold: float) -> str | None:
    """The gallery person closest to a reference embedding, if within the threshold."""
    best, best_d = None, float("inf")
    for name, emb in gallery.items():
        d = float(np.linalg.norm(emb - np.asarray(reference).reshape(1, 128), axis=1).min())
        if d < best_d:
            best, best_d = name, d
    return best if best_d < threshold else None


def donor_match(table: pd.DataFrame, threshold: float, column: str = "SW-SW", higher_is_same: bool = False) -> dict:
    """In the frames where the original shows a face, how often the swapped face matches the donor's photo.

    A swapped frame without a face counts as not matching: a swap that loses the face is not a swap."""
    with_face = table["face_original"].to_numpy(bool)
    matched = int(np.sum(_same(table[column].to_numpy(float)[with_face], threshold, higher_is_same)))
    frames = int(with_face.sum())
    return {"frames": frames, "frames_matching_donor": matched, "share": matched / frames if frames else None}
