"""Evaluate: how well a swapped video hides the original person, and how well it keeps the expression.

Works on any pair of videos (or image folders) with the same frames, made by this project or any other
tool. The same N frames (fixed seed) are read from both; in each the largest MTCNN face gets dlib's 68
landmarks and face_recognition's 128-d embedding. Outputs, all in `<out_dir>/reports/`, all atomic:

    identity.csv              per sampled frame: the four distances (OR-OR, OR-SW, SW-OR, SW-SW), faces found,
                              and the parrot-attack distance where one was run
    geometry.csv              per frame, original and swapped: yaw/pitch/roll and the expression distances
    geometry_preservation.csv per measure: PCC, RMSE (expression) and MAE (pose, degrees)
    au_original.csv, au_swapped.csv, au_preservation.csv   AU intensities and per-AU PCC/RMSE (header
                              only, with the reason in summary.json and report.html, when AU is not computed)
    summary.json, plots/*.png, report.html (self-contained: verdict line first)

Parrot attack: when the swapped video is a blur or pixelation of the original (detected by matching the
original's face region degraded at several strengths against the swapped one), the reference photo is
degraded the same way and the swapped frames are re-identified against it; where the detector finds no
face in a degraded frame, the face position is taken from the original frame (a blurred head is easy to
locate; position carries no identity).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from models.detectors import make_detector
from models.landmarks import IdentityModel, LandmarkModel
from pipeline.atomic import write_bytes, write_json, write_text
from pipeline.errors import DeidError, MediaError
from reports import au as au_mod
from reports import html as html_mod
from reports import plots
from reports.geometry import geometry_preservation, geometry_table
from reports.identity import (COMPARISONS, comparison_stats, gallery_embeddings, identity_frame_table,
                              list_gallery, match_gallery_name, rank_identification, reidentification)
from stages.evaluate_config import EvaluateConfig
from stages.media import iter_frames, probe, read_image_rgb

log = logging.getLogger("deid.evaluate")

PARROT_SAMPLE_FRAMES = 6
_BLUR_RATIOS = (0.03, 0.05, 0.08, 0.11, 0.14, 0.17, 0.21, 0.26, 0.33, 0.42)
_DEGRADED_RATIO = 0.3  # best degraded-original error below this share of the raw error = a degradation


def sample_frames(total: int, count: int, seed: int) -> np.ndarray:
    """Sorted frame indices: all of them when there are no more than `count`, else a seeded sample."""
    if total <= count:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))


@dataclass
class _Faces:
    """What one video gave at the sampled frames."""

    frames: list[int]
    landmarks: list[np.ndarray | None] = field(default_factory=list)
    embeddings: np.ndarray | None = None
    decoded: int = 0
    borrowed: dict[int, np.ndarray] = field(default_factory=dict)  # position -> embedding at the original's landmarks
    keep: dict[int, np.ndarray] = field(default_factory=dict)      # position -> frame kept for the parrot estimate


class _Models:
    def __init__(self, min_face_size: int) -> None:
        self.detector = make_detector("mtcnn", torch.device("cpu"), min_face_size)
        self.ref_detector = make_detector("mtcnn", torch.device("cpu"), 20)
        self.landmarks = LandmarkModel()
        self.identity = IdentityModel()

    def face(self, image: np.ndarray, detector=None) -> np.ndarray | None:
        det = detector or self.detector
        faces = det.detect([image])[0]
        if not faces:
            return None
        largest = max(faces, key=lambda f: f.rect.w * f.rect.h)
        return self.landmarks.predict(image, det.landmark_rect(largest))


def evaluate(original: Path, swapped: Path, ref_original: Path, ref_donor: Path, out_dir: Path,
             config: EvaluateConfig, progress: bool = True, name: str | None = None,
             allow_damaged: bool = False) -> dict:
    """Score a swapped video against its original; write `<out_dir>/reports/`; return the summary."""
    started = time.perf_counter()
    original, swapped, out_dir = Path(original), Path(swapped), Path(out_dir)
    info_o, info_s = probe(original, allow_damaged), probe(swapped, allow_damaged)
    total = min(info_o.frames, info_s.frames)
    if total <= 0:
        raise MediaError(f"{original if info_o.frames <= 0 else swapped}: no frames to evaluate")
    notes = []
    if info_o.frames != info_s.frames:
        notes.append(f"the videos differ in length ({info_o.frames} vs {info_s.frames} frames): "
                     f"only the first {total} frames are compared, by index")
    indices = sample_frames(total, config.frames, config.seed)
    if len(indices) < config.frames:
        notes.append(f"{config.frames} frames requested, the videos have {total}: all of them are used")
    fps = info_s.fps or info_o.fps

    models = _Models(config.min_face_size)
    refs = {}
    for key, path in (("original", Path(ref_original)), ("donor", Path(ref_donor))):
        image = read_image_rgb(path) if path.is_file() else None
        if image is None:
            raise DeidError(f"{path}: reference photo not found; check the path")
        lm = models.face(image, models.ref_detector)
        if lm is None:
            raise DeidError(f"{path}: no face found in this reference photo; give one where the face is clearly visible")
        refs[key] = (image, lm, models.identity.embed(image, lm))

    au_detector, au_reason = None, None
    if config.au == "pyfeat":
        from reports.pyfeat_au import load_detector
        au_detector, au_reason = load_detector(config.pyfeat_model_dir)
    au_frames: dict[str, list] = {"original": [], "swapped": []}

    timings = {}
    t = time.perf_counter()
    faces_o = _analyse(info_o, indices, models, progress, "original", keep=PARROT_SAMPLE_FRAMES,
                       au_sink=au_frames["original"] if au_detector is not None else None)
    timings["identity_original_s"] = time.perf_counter() - t
    t = time.perf_counter()
    faces_s = _analyse(info_s, indices, models, progress, "swapped", keep_at=set(faces_o.keep),
                       borrow=faces_o.landmarks if config.parrot != "none" else None,
                       au_sink=au_frames["swapped"] if au_detector is not None else None)
    timings["identity_swapped_s"] = time.perf_counter() - t
    for faces, info, label in ((faces_o, info_o, "original"), (faces_s, info_s, "swapped")):
        if faces.decoded < len(indices):
            notes.append(f"{label}: only {faces.decoded} of {len(indices)} sampled frames could be decoded "
                         f"(the file is shorter than its header says); the rest count as frames without a face")

    times = [(int(f) / fps) if fps else None for f in indices]
    table = identity_frame_table(indices, times, faces_o.embeddings, faces_s.embeddings,
                                 refs["original"][2], refs["donor"][2])
    reid = reidentification(table, config.threshold, max_times=config.max_reid_times)
    identity_summary = {"comparisons": comparison_stats(table), "reidentification": reid,
                        "no_face_share_original": float((~table["face_original"]).mean()),
                        "no_face_share_swapped": float((~table["face_swapped"]).mean())}

    parrot = _parrot(config, faces_o, faces_s, refs, models, table)
    if parrot.get("applied"):
        table["parrot_SW-OR"] = parrot.pop("_distances")
        table["parrot_face_borrowed"] = parrot.pop("_borrowed")
        parrot.update({k: v for k, v in reidentification(table, config.threshold, "parrot_SW-OR",
                                                          config.max_reid_times).items()
                       if k in ("frames_with_face", "frames_reidentified", "reid_rate", "reid_rate_detected",
                                "reidentified_times")})
        parrot["SW-OR"] = comparison_stats(table.rename(columns={"SW-OR": "_", "parrot_SW-OR": "SW-OR"}))["SW-OR"]
        parrot["explanation"] = _parrot_explanation(parrot, reid)

    gallery = _gallery(config, models, refs, faces_o, faces_s) if config.gallery is not None else None

    geo_o = geometry_table(faces_o.landmarks, list(indices))
    geo_s = geometry_table(faces_s.landmarks, list(indices))
    geo_table, geo_summary = geometry_preservation(geo_o.dropna(how="all"), geo_s.dropna(how="all"))

    t = time.perf_counter()
    au_summary, au_o, au_s, au_table = _au(config, au_detector, au_reason, au_frames)
    timings["au_s"] = time.perf_counter() - t

    summary = {
        "name": name or swapped.stem,
        "original": str(original), "swapped": str(swapped),
        "ref_original": str(ref_original), "ref_donor": str(ref_donor),
        "frames_total": int(total), "frames_sampled": int(len(indices)), "seed": config.seed, "fps": fps,
        "threshold": config.threshold,
        "identity": identity_summary, "parrot": parrot, "gallery": gallery,
        "geometry": geo_summary, "au": au_summary, "notes": notes,
        **({"damaged_input": {str(i.path): i.damage for i in (info_o, info_s) if i.damage}}
           if info_o.damage or info_s.damage else {}),
        "timings": {**{k: round(v, 3) for k, v in timings.items()},
                    "frames_per_s_identity": round(2 * len(indices) / max(1e-9, timings["identity_original_s"]
                                                                         + timings["identity_swapped_s"]), 3)},
    }
    summary["verdict"], summary["verdict_class"] = _verdict(reid, parrot)
    _write(out_dir / "reports", summary, table, geo_o, geo_s, geo_table, au_o, au_s, au_table, config)
    summary["timings"]["total_s"] = round(time.perf_counter() - started, 3)
    summary = _clean_json(summary)
    write_json(out_dir / "reports" / "summary.json", summary)
    return summary


def _analyse(info, indices: np.ndarray, models: _Models, progress: bool, label: str, keep: int = 0,
             keep_at: set[int] | None = None, borrow: list | None = None, au_sink: list | None = None) -> _Faces:
    wanted = {int(f): i for i, f in enumerate(indices)}
    faces = _Faces(frames=[int(f) for f in indices], landmarks=[None] * len(indices),
                   embeddings=np.full((len(indices), 128), np.nan, np.float32))
    last = int(indices[-1]) if len(indices) else -1
    bar = tqdm(total=len(indices), desc=f"evaluate {label}", unit="frame", disable=not progress)
    for index, frame in iter_frames(info):
        if index > last:
            break
        pos = wanted.get(index)
        if pos is None:
            continue
        faces.decoded += 1
        lm = models.face(frame)
        if lm is not None:
            faces.landmarks[pos] = lm
            faces.embeddings[pos] = models.identity.embed(frame, lm)
            if len(faces.keep) < keep:
                faces.keep[pos] = frame
        elif borrow is not None and borrow[pos] is not None and not _flat(frame, borrow[pos]):
            # A flat region (a solid mask) holds nothing of the face: embedding it would give the
            # recogniser's "featureless" vector, which sits close to any other featureless image, a
            # heavily degraded reference included: a false re-identification, not an attack.
            faces.borrowed[pos] = models.identity.embed(frame, borrow[pos])
        if keep_at and pos in keep_at:
            faces.keep[pos] = frame
        if au_sink is not None:
            au_sink.append((index, frame))
        bar.update(1)
    bar.close()
    return faces


# ---------------------------------------------------------------- parrot attack

FLAT_STD = 4.0  # grey-level standard deviation below which a face region carries no detail at all


def _flat(frame: np.ndarray, landmarks: np.ndarray) -> bool:
    """Is the centre of the face (the middle 60 % of its landmark box: eyes, nose, mouth) featureless?"""
    (x0, y0), (x1, y1) = landmarks.min(0), landmarks.max(0)
    mx, my = 0.2 * (x1 - x0), 0.2 * (y1 - y0)
    x0, y0, x1, y1 = int(x0 + mx), int(y0 + my), int(np.ceil(x1 - mx)), int(np.ceil(y1 - my))
    region = frame[max(0, y0):max(0, y1), max(0, x0):max(0, x1)]
    return region.size == 0 or float(cv2.cvtColor(np.ascontiguousarray(region), cv2.COLOR_RGB2GRAY).std()) < FLAT_STD

def _face_size(lm: np.ndarray) -> float:
    return float(max(np.ptp(lm[:, 0]), np.ptp(lm[:, 1]), 1.0))


_ESTIMATE_FRAMES = 12


def degrade(image: np.ndarray, method: str, strength: float, face_size: float) -> np.ndarray:
    """Blur (sigma) or pixelate (block) the whole image, strength relative to the face size."""
    if method == "blur":
        return cv2.GaussianBlur(image, (0, 0), max(0.5, strength * face_size))
    block = max(2, int(round(strength * face_size)))
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, w // block), max(1, h // block)), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def _degrade_region(image: np.ndarray, method: str, strength: float, face_size: float,
                    region: tuple[slice, slice]) -> np.ndarray:
    """degrade(image)[region], computing a blur only on the region plus a 3-sigma margin."""
    if method != "blur":
        return degrade(image, method, strength, face_size)[region]
    sigma = max(0.5, strength * face_size)
    margin = int(math.ceil(3 * sigma))
    ys, xs = region
    y0, x0 = max(0, ys.start - margin), max(0, xs.start - margin)
    y1, x1 = min(image.shape[0], ys.stop + margin), min(image.shape[1], xs.stop + margin)
    blurred = _fast_gaussian(image[y0:y1, x0:x1], sigma)
    return blurred[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]


def _fast_gaussian(image: np.ndarray, sigma: float, small_sigma: float = 4.0) -> np.ndarray:
    """A Gaussian blur whose cost does not grow with sigma: blur a downscaled copy and scale it back.

    Only for estimating which blur strength a tool used (a 200 px sigma costs ~0.75 s per frame done
    directly); the degraded reference itself is made with the exact blur.
    """
    if sigma <= 2 * small_sigma:
        return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    factor = sigma / small_sigma
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), small_sigma, borderType=cv2.BORDER_REFLECT_101)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def estimate_degradation(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                         methods: tuple[str, ...] = ("blur", "pixelate")) -> dict:
    """Is `swapped` the original, blurred or pixelated? pairs: (original, swapped, original landmarks).

    Each frame gets its own best strength: tools set the strength from each frame's face box (deid's own
    pixelation uses int(box side / 6) px blocks), so one ratio for the whole clip misses by a pixel of
    block in half the frames and a pixelation looked like "not a pixelation". Pixelation is searched at
    every whole block size, blur on a grid refined by golden-section search, so any strength in between
    is found. The method whose per-frame best errors sum lowest wins; its strength is their median.
    """
    if not pairs:
        return {"method": None, "reason": "no frame with a face in the original to compare"}
    # A tool degrades every frame alike: a dozen frames spread over the video settle the method and strength.
    pairs = pairs[:: max(1, len(pairs) // _ESTIMATE_FRAMES)][:_ESTIMATE_FRAMES]
    raw = flat = 0.0
    totals = {m: 0.0 for m in methods}
    strengths: dict[str, list[float]] = {m: [] for m in methods}
    for orig, swap, lm in pairs:
        x0, y0 = np.floor(lm.min(0)).astype(int)
        x1, y1 = np.ceil(lm.max(0)).astype(int)
        region = (slice(max(0, y0), max(0, y1)), slice(max(0, x0), max(0, x1)))
        target = swap[region].astype(np.float32)
        raw += float(np.mean((orig[region].astype(np.float32) - target) ** 2))
        flat += float(np.mean((target - target.reshape(-1, 3).mean(0)) ** 2))
        size = _face_size(lm)

        def error(method: str, ratio: float) -> float:
            degraded = _degrade_region(orig, method, ratio, size, region).astype(np.float32)
            return float(np.mean((degraded - target) ** 2))

        for method in methods:
            best_ratio, best = _best_strength(method, size, error)
            totals[method] += best
            strengths[method].append(best_ratio)
    n = len(pairs)
    raw, flat = raw / n, flat / n
    method = min(totals, key=totals.get)
    best = totals[method] / n
    ratio = round(float(np.median(strengths[method])), 4)
    result = {"raw_mse": round(raw, 3), "best_mse": round(best, 3), "best_method": method, "best_strength": ratio,
              "frames": n}
    if raw < 1.0:
        return {**result, "method": None, "reason": "the swapped face region is identical to the original"}
    if best > _DEGRADED_RATIO * raw:
        return {**result, "method": None,
                "reason": f"not a blur or pixelation of the original (best match keeps {best / raw:.0%} of the difference)"}
    if best > _DEGRADED_RATIO * flat:
        # The strongest candidates are nearly flat and "explain" any change a little: a degradation must
        # explain the swapped face far better than its own mean colour does.
        return {**result, "method": None,
                "reason": f"not a blur or pixelation of the original (best match no better than a flat fill: "
                          f"{best / flat:.0%} of its error)"}
    return {**result, "method": method, "strength": ratio}


def _best_strength(method: str, size: float, error) -> tuple[float, float]:
    """(ratio, error) of the strength that best explains one frame."""
    if method == "pixelate":
        blocks = range(2, max(3, int(0.6 * size)) + 1)
        return min(((b / size, error(method, b / size)) for b in blocks), key=lambda t: t[1])
    grid = [(r, error(method, r)) for r in _BLUR_RATIOS]
    k = min(range(len(grid)), key=lambda i: grid[i][1])
    lo = grid[max(0, k - 1)][0] if k > 0 else _BLUR_RATIOS[0] / 2
    hi = grid[min(len(grid) - 1, k + 1)][0] if k < len(grid) - 1 else _BLUR_RATIOS[-1] * 1.5
    golden = (np.sqrt(5) - 1) / 2
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = error(method, a), error(method, b)
    for _ in range(8):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = error(method, a)
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = error(method, b)
    return min([grid[k], (a, fa), (b, fb)], key=lambda t: t[1])


def _parrot(config: EvaluateConfig, faces_o: _Faces, faces_s: _Faces, refs: dict, models: _Models,
            table: pd.DataFrame) -> dict:
    if config.parrot == "none":
        return {"applied": False, "mode": "none", "reason": "disabled (evaluate.parrot: none)"}
    pairs = [(faces_o.keep[p], faces_s.keep[p], faces_o.landmarks[p]) for p in faces_o.keep if p in faces_s.keep]
    methods = ("blur", "pixelate") if config.parrot == "auto" else (config.parrot,)
    estimate = estimate_degradation(pairs, methods)
    if config.parrot == "auto" and estimate.get("method") is None:
        return {"applied": False, "mode": "auto", "estimate": estimate,
                "reason": f"no parrot attack: {estimate.get('reason')}"}
    method = estimate.get("method") or estimate.get("best_method") or config.parrot
    strength = estimate.get("strength") or estimate.get("best_strength")
    if strength is None:
        return {"applied": False, "mode": config.parrot, "estimate": estimate, "reason": estimate.get("reason")}
    image, lm, _ = refs["original"]
    degraded_ref = degrade(image, method, strength, _face_size(lm))
    ref_emb = models.identity.embed(degraded_ref, lm)  # the attacker knows where the face is in his own photo
    emb = faces_s.embeddings.copy()
    borrowed = np.zeros(len(emb), bool)
    for pos, e in faces_s.borrowed.items():
        emb[pos] = e
        borrowed[pos] = True
    distances = np.linalg.norm(emb.astype(float) - ref_emb.astype(float)[None, :], axis=1)
    return {"applied": True, "mode": config.parrot, "method": method, "strength": strength,
            "strength_meaning": "sigma / face size" if method == "blur" else "block / face size",
            "estimate": estimate, "frames_face_borrowed": int(borrowed.sum()),
            "_distances": distances, "_borrowed": borrowed}


def _parrot_explanation(parrot: dict, naive: dict) -> str:
    p, n = parrot.get("frames_reidentified", 0), naive.get("frames_reidentified", 0)
    if p > n:
        return (f"the parrot attack re-identifies {p} frames where the naive score finds {n}: the "
                f"{parrot['method']} hides the face from a recogniser fed clean photos, not from one fed "
                f"photos degraded the same way")
    mean = (parrot.get("SW-OR") or {}).get("mean")
    return (f"the parrot attack re-identifies {p} frames (naive: {n}): the {parrot['method']} at strength "
            f"{parrot['strength']:g} leaves too little of the face for face_recognition even against a degraded "
            f"reference (mean distance {mean if mean is None else round(mean, 3)}); a stronger recogniser "
            f"trained on degraded faces may still succeed")


# ---------------------------------------------------------------- gallery

def _gallery(config: EvaluateConfig, models: _Models, refs: dict, faces_o: _Faces, faces_s: _Faces) -> dict:
    people = list_gallery(config.gallery)

    def embed(path: Path):
        try:
            image = read_image_rgb(path)
        except MediaError:
            return None
        lm = models.face(image, models.ref_detector)
        return None if lm is None else models.identity.embed(image, lm)

    gallery = gallery_embeddings(people, embed)
    true_name = match_gallery_name(gallery, refs["original"][2], config.threshold)
    added = true_name is None
    if added:
        true_name = "(original reference)"
        gallery[true_name] = refs["original"][2][None, :]
    result = {"people": len(gallery), "true_identity_added_from_reference": added,
              "swapped": rank_identification(faces_s.embeddings, gallery, true_name),
              "original": rank_identification(faces_o.embeddings, gallery, true_name)}
    return result


# ---------------------------------------------------------------- AU

def _au(config: EvaluateConfig, detector, reason: str | None, frames: dict) -> tuple[dict, pd.DataFrame,
                                                                                       pd.DataFrame, pd.DataFrame]:
    empty = pd.DataFrame(index=pd.Index([], name="frame"))
    empty_table = pd.DataFrame(columns=["au", "pcc", "rmse", "frames", "pcc_defined", "mean_original", "mean_swapped"])
    if config.au == "none":
        return {"computed": False, "source": "none", "reason": "disabled (evaluate.au: none)"}, empty, empty, empty_table
    try:
        if config.au == "pyfeat":
            if detector is None:
                return {"computed": False, "source": "pyfeat", "reason": reason}, empty, empty, empty_table
            from reports.pyfeat_au import detect_aus
            original, swapped = detect_aus(detector, frames["original"]), detect_aus(detector, frames["swapped"])
        else:
            fmt = "openface" if config.au == "openface" else "pyfeat-csv"
            original = au_mod.read_au_table(config.au_original, fmt)
            swapped = au_mod.read_au_table(config.au_swapped, fmt)
        table, summary = au_mod.compare_tables(original, swapped)
    except DeidError as exc:
        if config.au == "pyfeat":
            return {"computed": False, "source": "pyfeat", "reason": str(exc)}, empty, empty, empty_table
        raise
    except Exception as exc:  # py-feat at run time: report, do not lose the identity results
        if config.au != "pyfeat":
            raise
        return ({"computed": False, "source": "pyfeat", "reason": f"py-feat failed ({type(exc).__name__}: {exc})"},
                empty, empty, empty_table)
    return {"computed": True, "source": config.au, **summary}, original, swapped, table


# ---------------------------------------------------------------- outputs

def _write(reports: Path, summary: dict, table: pd.DataFrame, geo_o: pd.DataFrame, geo_s: pd.DataFrame,
           geo_table: pd.DataFrame, au_o: pd.DataFrame, au_s: pd.DataFrame, au_table: pd.DataFrame,
           config: EvaluateConfig) -> None:
    write_text(reports / "identity.csv", table.to_csv(index=False, float_format="%.6g"))
    geo = geo_o.add_suffix("_original").join(geo_s.add_suffix("_swapped"))
    write_text(reports / "geometry.csv", geo.to_csv(float_format="%.6g"))
    write_text(reports / "geometry_preservation.csv", geo_table.to_csv(index=False, float_format="%.6g"))
    write_text(reports / "au_original.csv", au_o.to_csv(float_format="%.6g"))
    write_text(reports / "au_swapped.csv", au_s.to_csv(float_format="%.6g"))
    write_text(reports / "au_preservation.csv", au_table.to_csv(index=False, float_format="%.6g"))

    images = {"identity_boxplot.png": plots.identity_boxplot(table, config.threshold),
              "geometry_bars.png": plots.au_bars(geo_table[geo_table["pcc"].notna() | geo_table["rmse"].notna()],
                                                 "measure")}
    geo_paired = geo_o.index[geo_o.notna().any(axis=1) & geo_s.notna().any(axis=1)]
    if len(geo_paired):
        images["geometry_timeseries.png"] = plots.au_timeseries(geo_o.loc[geo_paired], geo_s.loc[geo_paired])
    if summary["au"].get("computed"):
        images["au_bars.png"] = plots.au_bars(au_table)
        a, b, _ = au_mod.align_tables(au_o, au_s)
        images["au_timeseries.png"] = plots.au_timeseries(a, b)
    for name, png in images.items():
        write_bytes(reports / "plots" / name, png)
    write_text(reports / "report.html", render_html(summary, table, geo_table, au_table, images))


def render_html(summary: dict, table: pd.DataFrame, geo_table: pd.DataFrame, au_table: pd.DataFrame,
                images: dict[str, bytes]) -> str:
    ident = summary["identity"]
    reid = ident["reidentification"]
    sections = []
    stats = [{"comparison": c, **ident["comparisons"][c]} for c in COMPARISONS]
    inner = (f"<p>{reid['frames_sampled']} frames sampled (seed {summary['seed']}) of {summary['frames_total']}; "
             f"re-identification rate {_pct(reid['reid_rate'])} of sampled frames "
             f"({_pct(reid['reid_rate_detected'])} of frames with a face); no face found in "
             f"{_pct(ident['no_face_share_swapped'])} of swapped and {_pct(ident['no_face_share_original'])} of "
             f"original frames. Distance &lt; {summary['threshold']:g} = same person.</p>"
             + html_mod.table_html(stats, ["comparison", "n", "mean", "sd", "median", "q1", "q3"])
             + "<p class=\"note\">OR-OR: original vs original's photo (should be low); OR-SW: original vs donor "
               "(high); SW-OR: swapped vs original's photo (high = identity hidden); SW-SW: swapped vs donor "
               "(low = looks like the donor).</p>"
             + html_mod.image_html(images["identity_boxplot.png"], "identity distances"))
    sections.append(("Identity", inner))
    parrot = summary.get("parrot") or {}
    if parrot.get("applied"):
        inner = (f"<p>The swapped video looks like a {html_mod.fmt(parrot['method'])} of the original "
                 f"(strength {parrot['strength']:g}, {html_mod.fmt(parrot['strength_meaning'])}). Reference degraded "
                 f"the same way: {parrot['frames_reidentified']} of {reid['frames_sampled']} frames re-identified "
                 f"({_pct(parrot['reid_rate'])}) against {reid['frames_reidentified']} by the naive score; "
                 f"SW-OR mean {html_mod.fmt(parrot['SW-OR']['mean'])} vs naive "
                 f"{html_mod.fmt(ident['comparisons']['SW-OR']['mean'])}.</p><p>{html_mod.fmt(parrot['explanation'])}</p>")
    else:
        inner = f"<p>Not run: {html_mod.fmt(parrot.get('reason'))}.</p>"
    sections.append(("Parrot attack (naive obfuscation)", inner))
    if summary.get("gallery"):
        g = summary["gallery"]
        rows = [{"video": k, **{kk: g[k].get(kk) for kk in ("faces", "rank1", "rank5")}} for k in ("swapped", "original")]
        sections.append((f"Identification among {g['people']} gallery people",
                         html_mod.table_html(rows, ["video", "faces", "rank1", "rank5"])
                         + f"<p>True identity: {html_mod.fmt(g['swapped']['true_identity'])}.</p>"))
    au = summary["au"]
    if au.get("computed"):
        undefined = ", ".join(au["pcc_undefined"]) or "none"
        inner = (f"<p>Source: {html_mod.fmt(au['source'])}; {au['alignment']['frames_paired']} frames paired. "
                 f"PCC {html_mod.fmt(au['pcc_mean'])} ± {html_mod.fmt(au['pcc_sd'])} over {au['pcc_n']} AUs "
                 f"(undefined for constant AUs: {html_mod.fmt(undefined)}); RMSE {html_mod.fmt(au['rmse_mean'])} ± "
                 f"{html_mod.fmt(au['rmse_sd'])}.</p>"
                 + html_mod.table_html(au_table.to_dict("records"), ["au", "pcc", "rmse", "frames"])
                 + html_mod.image_html(images["au_bars.png"], "AU PCC and RMSE")
                 + html_mod.image_html(images["au_timeseries.png"], "AU time series"))
    else:
        inner = f"<p>AU: not computed: {html_mod.fmt(au.get('reason'))}. The landmark geometry below carries the expression score.</p>"
    sections.append(("Expression: Action Units", inner))
    geo = summary["geometry"]
    inner = (f"<p>Head pose mean absolute error {html_mod.fmt(geo['pose_mae'], 2)}° (yaw "
             f"{html_mod.fmt(geo['pose_mae_yaw'], 2)}, pitch {html_mod.fmt(geo['pose_mae_pitch'], 2)}, roll "
             f"{html_mod.fmt(geo['pose_mae_roll'], 2)}); expression geometry PCC {html_mod.fmt(geo['geometry_pcc_mean'])} ± "
             f"{html_mod.fmt(geo['geometry_pcc_sd'])} over {geo['frames_paired']} frames with a face in both.</p>"
             + html_mod.table_html(geo_table.to_dict("records"), ["measure", "pcc", "rmse", "mae", "frames"])
             + html_mod.image_html(images["geometry_bars.png"], "geometry PCC and RMSE")
             + (html_mod.image_html(images["geometry_timeseries.png"], "geometry time series")
                if "geometry_timeseries.png" in images else ""))
    sections.append(("Expression and pose: landmark geometry", inner))
    notes = "".join(f"<li>{html_mod.fmt(n)}</li>" for n in summary.get("notes", []))
    sections.append(("Inputs", f"<p>Original: {html_mod.fmt(summary['original'])}<br>Swapped: "
                                f"{html_mod.fmt(summary['swapped'])}<br>References: {html_mod.fmt(summary['ref_original'])}, "
                                f"{html_mod.fmt(summary['ref_donor'])}</p>" + (f"<ul>{notes}</ul>" if notes else "")))
    return html_mod.render_report(f"De-identification report: {summary['name']}",
                                  (summary["verdict"], summary["verdict_class"]), sections)


def _verdict(reid: dict, parrot: dict) -> tuple[str, str]:
    """The naive verdict, plus the parrot attack's count where it finds more (a blur is not a disguise)."""
    text, cls = html_mod.verdict_line(reid)
    missing = reid.get("frames_sampled", 0) - reid.get("frames_with_face", 0)
    if missing:
        # A frame with no detectable face counts as hidden; say how many, so nobody mistakes a broken
        # swap (no face at all) for a good one.
        text += f"; no face found in {missing} of the {reid.get('frames_sampled', 0)} swapped frames (counted as hidden)"
    if parrot.get("applied") and parrot.get("frames_reidentified", 0) > reid.get("frames_reidentified", 0):
        done = {"blur": "blurred", "pixelate": "pixelated"}.get(parrot["method"], parrot["method"])
        text += (f"; but a parrot attack (reference {done} the same way) re-identifies "
                 f"{parrot['frames_reidentified']}/{reid['frames_sampled']} frames")
        cls = "bad"
    return text, cls


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _clean_json(obj: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, so summary.json is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_json(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj
