"""Evaluate: does a swapped video hide the original person, become the donor, and keep the expression?

Works on any pair of videos (or image folders) with the same frames, made by this project or any other
tool. The stage reads top to bottom:

  sample   the same N frame indices (fixed seed) of both videos, among the original's distinct frames (a
           frame identical or nearly identical to the one before, as a variable-frame-rate source repeats,
           is never sampled: it would count one expression twice);
  analyse  stream both videos side by side, in batches: the largest face per frame (detection on a
           reduced copy, on the GPU when there is one; 68 landmarks and the 128-d face_recognition
           embedding at full size, and the same face through SFace, the second recogniser that no
           training uses: models/second_recogniser.py), AU intensities by py-feat batch by batch, a few frames kept for the
           parrot attack and for the report's pictures; memory is bounded by the batch, not the sample;
           a few sampled original frames also go through a libx264 crf 23 re-encode and are landmarked
           again: the re-encode noise that calibrates the expression measure;
  score    the study's four identity comparisons, re-identification and donor match by both recognisers,
           the parrot attack, the gallery,
           expression geometry and pose, the calibrated expression measure (reports/expression.py), AU
           preservation, and the three-axis verdict (reports/verdict.py);
  write    `<out_dir>/reports/`: identity.csv, geometry.csv, geometry_preservation.csv, expression.csv, au_*.csv,
           plots/*.png, report.html (self-contained, verdict first) and summary.json, all atomic.
"""
from __future__ import annotations

import dataclasses
import heapq
import logging
import tempfile
import time
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import pandas as pd

from deid.core.atomic import write_bytes, write_json, write_text
from deid.core.errors import DeidError, MediaError
from deid.core.version import deid_version, git_commit
from deid.models import second_recogniser
from deid.models.device import resolve_device
from deid.models.face_identity import FaceIdentity
from deid.reports import au as au_mod
from deid.reports import plots
from deid.reports.au_source import AuSource
from deid.reports.evaluate_html import render_html
from deid.reports.expression import (
    ExpressionBars,
    expression_preservation,
    ratio_table,
    reencode_noise,
)
from deid.reports.gallery import gallery_identification
from deid.reports.geometry import POSE, geometry_preservation, geometry_table
from deid.reports.identity import (
    add_similarities,
    comparison_stats,
    donor_match,
    identity_frame_table,
    reidentification,
    second_recogniser_summary,
)
from deid.reports.metrics import MetricSet, Sample, make_metrics
from deid.reports.parrot import ParrotEvidence, is_flat, parrot_attack, parrot_explanation
from deid.reports.summary import EvaluationSummary
from deid.reports.verdict import FIRST, Bars, judge
from deid.stages.evaluate_config import EvaluateConfig
from deid.stages.media import MediaInfo, iter_frames, probe, read_image_rgb
from deid.stages.progress import progress_bar
from deid.stages.video_writer import VideoWriter

log = logging.getLogger("deid.evaluate")

STRIP_FRAMES = 5  # frames in the report's picture: the closest to the original person first
THUMB_SIDE = 160
NOISE_CRF = 23  # the re-encode whose landmark noise calibrates the expression measure (a common delivery quality)
REPEAT_LEVEL = 2  # grey levels: a frame whose 64x64 thumbnail differs from the previous one by no more is a repeat
# The phrase pipeline/workflow.py's recogniser_caveats uses: a caller that passes it says the model was
# trained against dlib, for callers that do not yet pass `trained_against_recogniser`.
TRAINED_CAVEAT = "trained against the recogniser"


def sample_frames(total: int, count: int, seed: int) -> np.ndarray:
    """Sorted frame indices: all of them when there are no more than `count`, else a seeded sample."""
    if total <= count:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))


def distinct_frames(info: MediaInfo, total: int) -> np.ndarray:
    """Indices below `total` of the frames that are not a repeat of the frame before.

    A repeat is a frame whose 64x64 grey thumbnail differs from the previous one's by at most REPEAT_LEVEL
    grey levels anywhere: what a variable-frame-rate source converted to a constant rate is full of. On the
    repository's clips a real change (a mouth moving) is at least 3 levels, mostly 5 and more; the
    averaged thumbnail keeps the encoder's noise on an unchanged frame at 1 level.
    """
    keep, previous = [], None
    for index, frame in iter_frames(info):
        if index >= total:
            break
        thumb = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), (64, 64), interpolation=cv2.INTER_AREA)
        thumb = thumb.astype(np.int16)
        if previous is None or previous.shape != thumb.shape or np.abs(thumb - previous).max() > REPEAT_LEVEL:
            keep.append(index)
        previous = thumb
    return np.asarray(keep, dtype=np.int64)


def evaluate(original: Path, swapped: Path, ref_original: Path, ref_donor: Path, out_dir: Path,
             config: EvaluateConfig, progress: bool = True, name: str | None = None,
             allow_damaged: bool = False, device: str = "auto", caveats: Sequence[str] = (),
             trained_against_recogniser: bool | None = None) -> EvaluationSummary:
    """Score a swapped video against its original; write `<out_dir>/reports/`; return the summary.

    `caveats`: what the caller knows that weakens these numbers (a model trained against the recogniser),
    reported first among the notes. `trained_against_recogniser`: the swap model was trained with the
    identity term (against dlib's ResNet), so the verdict's identity findings rest on SFace; None: inferred
    from a caveat that says so."""
    started = time.perf_counter()
    original, swapped, out_dir = Path(original), Path(swapped), Path(out_dir)
    info_o, info_s = probe(original, allow_damaged), probe(swapped, allow_damaged)
    total = min(info_o.frames, info_s.frames)
    if total <= 0:
        raise MediaError(f"{original if info_o.frames <= 0 else swapped}: no frames to evaluate")
    notes = list(caveats)
    if info_o.frames != info_s.frames:
        notes.append(f"the videos differ in length ({info_o.frames} vs {info_s.frames} frames): "
                     f"only the first {total} frames are compared, by index")
    distinct = distinct_frames(info_o, total)
    repeats = total - len(distinct)
    if repeats:
        notes.append(f"the original repeats {repeats} of its {total} frames (identical or nearly to the frame before, "
                     f"as a variable-frame-rate source does): only its {len(distinct)} distinct frames are sampled")
    indices = distinct[sample_frames(len(distinct), config.frames, config.seed)]
    if len(indices) < config.frames:
        notes.append(f"{config.frames} frames requested, the videos have {len(distinct)} distinct frames: all of "
                     "them are used")
    fps = info_s.fps or info_o.fps

    dev = resolve_device(device)
    analyser = FaceIdentity(dev, config.min_face_size, config.detect_side, config.detector)
    refs = {key: _reference(analyser, Path(path)) for key, path in (("original", ref_original), ("donor", ref_donor))}
    if trained_against_recogniser is None:
        trained_against_recogniser = any(TRAINED_CAVEAT in c for c in caveats)
    sface, sface_missing = second_recogniser.load()
    if sface is None:
        notes.append(f"the second recogniser ({second_recogniser.SHORT}) is unavailable ({sface_missing}): the "
                     f"identity findings rest on {FIRST} alone")
    elif trained_against_recogniser:
        notes.append(f"the swap model was trained against {FIRST}: the verdict's identity findings rest on "
                     f"{second_recogniser.SHORT}, which training never uses; {FIRST}'s numbers are shown as the "
                     "training recogniser's")
    second_refs = {} if sface is None else {key: sface.embed(image, lm) for key, (image, lm, _) in refs.items()}
    au = AuSource(config, str(dev))
    if config.au == "pyfeat" and not au.streaming:
        # The CLI said so at the start of evaluate/run/batch (one line); the report and summary say it again.
        log.debug("AU will not be computed: %s", au.reason)

    metrics = make_metrics(config.metrics, config)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="deid-reencode-") as scratch:
        copy = ReencodeCopy(Path(scratch) / "reencoded.mp4", info_o, indices, config.noise_frames)
        try:
            faces = _analyse(info_o, info_s, indices, analyser, refs, au, metrics, config, progress, copy, sface)
        finally:
            copy.abort()  # an interrupted run leaves no encoder behind; a finished one has closed it
    identity_seconds = time.perf_counter() - t
    for decoded, label in ((faces.decoded_original, "original"), (faces.decoded_swapped, "swapped")):
        if decoded < len(indices):
            notes.append(f"{label}: only {decoded} of {len(indices)} sampled frames could be decoded "
                         f"(the file is shorter than its header says); the rest count as frames without a face")

    # ---- score
    times = [(int(f) / fps) if fps else None for f in indices]
    table = identity_frame_table(indices, times, faces.embeddings_o, faces.embeddings_s,
                                 refs["original"][2], refs["donor"][2])
    reid = reidentification(table, config.threshold, max_times=config.max_reid_times)
    identity = {"comparisons": comparison_stats(table), "reidentification": reid,
                "donor": donor_match(table, config.threshold),
                "no_face_share_original": float((~table["face_original"]).mean()),
                "no_face_share_swapped": float((~table["face_swapped"]).mean()),
                "trained_against": FIRST if trained_against_recogniser else None}
    if sface is not None:
        table = add_similarities(table, faces.second_o, faces.second_s, second_refs["original"], second_refs["donor"])
        identity["second"] = second_recogniser_summary(table, sface, config.max_reid_times)
    else:
        identity["second"] = {"available": False, "recogniser": second_recogniser.NAME,
                              "short": second_recogniser.SHORT, "reason": sface_missing}
    parrot = parrot_attack(config.parrot, faces.evidence, faces.embeddings_s, refs["original"][:2], analyser.embed)
    if parrot.get("applied"):
        table["parrot_SW-OR"] = parrot.pop("_distances")
        table["parrot_face_borrowed"] = parrot.pop("_borrowed")
        parrot.update({k: v for k, v in reidentification(table, config.threshold, "parrot_SW-OR",
                                                          config.max_reid_times).items()
                       if k in ("frames_with_face", "frames_reidentified", "reid_rate", "reid_rate_detected",
                                "reidentified_times")})
        parrot["SW-OR"] = comparison_stats(table.rename(columns={"SW-OR": "_", "parrot_SW-OR": "SW-OR"}))["SW-OR"]
        parrot["explanation"] = parrot_explanation(parrot, reid)
    gallery = None
    if config.gallery is not None:
        gallery = gallery_identification(config.gallery, lambda p: _embed_photo(analyser, p), refs["original"][2],
                                         faces.embeddings_o, faces.embeddings_s, config.threshold)
    geo_o = geometry_table(faces.landmarks_o, list(indices), faces.sizes_o)
    geo_s = geometry_table(faces.landmarks_s, list(indices), faces.sizes_s)
    geo_table, geometry = geometry_preservation(geo_o.dropna(how="all"), geo_s.dropna(how="all"))
    expr_table, expression = _expression(faces, indices, geo_o, config)
    t = time.perf_counter()
    au_summary, au_o, au_s, au_table = au.result()
    measured = metrics.results()
    bars = Bars(config.threshold, config.donor_share, config.expression_pcc, config.pose_mae)
    verdict = judge(reid, parrot, identity["donor"], geometry, au_summary, bars, expression, identity["second"],
                    bool(trained_against_recogniser))

    summary = EvaluationSummary(
        name=name or swapped.stem, original=str(original), swapped=str(swapped), ref_original=str(ref_original),
        ref_donor=str(ref_donor), frames_total=int(total), frames_sampled=int(len(indices)), seed=config.seed,
        fps=fps, threshold=config.threshold, verdict=verdict, identity=identity, parrot=parrot, geometry=geometry,
        au=au_summary, gallery=gallery, notes=notes, expression=expression, frames_repeated=int(repeats),
        metrics={name: {"description": description, **result.summary}
                 for name, (description, result) in measured.items()},
        damaged_input={str(i.path): i.damage for i in (info_o, info_s) if i.damage},
        timings={"identity_s": round(identity_seconds, 3), "second_recogniser_s": round(faces.second_seconds, 3),
                 "au_s": round(time.perf_counter() - t, 3),
                 "frames_per_s": round(len(indices) / max(1e-9, identity_seconds), 3)},
        device=str(dev), version=deid_version(), commit=git_commit())

    # ---- write
    reports = out_dir / "reports"
    images = _images(table, geo_o, geo_s, geo_table, au_o, au_s, au_table, au_summary, faces, refs, config.threshold)
    _write_tables(reports, table, geo_o, geo_s, geo_table, au_o, au_s, au_table)
    write_text(reports / "expression.csv", expr_table.to_csv(index=False, float_format="%.6g"))
    write_text(reports / "metrics.csv", pd.DataFrame({name: pd.Series(result.per_frame, dtype=float)
                                                      for name, (_, result) in measured.items()}, index=list(indices))
               .rename_axis("frame").to_csv(float_format="%.6g"))
    for image_name, png in images.items():
        write_bytes(reports / "plots" / image_name, png)
    write_text(reports / "report.html", render_html(summary, table, geo_table, au_table, images, expr_table))
    summary.timings["total_s"] = round(time.perf_counter() - started, 3)
    write_json(reports / "summary.json", summary.as_json())
    log.info("evaluate %s: %s", summary.name, verdict.level.upper())
    for axis in verdict.axes:  # one line each: a log line stays short enough to read
        log.info("  %s: %s", axis.name, axis.finding)
    return summary


def _reference(analyser: FaceIdentity, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(photo, landmarks, embedding) of a reference photo, or a one-line error."""
    if not path.is_file():
        raise DeidError(f"{path}: reference photo not found; check the path")
    image = read_image_rgb(path)
    landmarks = analyser.reference(image)
    if landmarks is None:
        raise DeidError(f"{path}: no face found in this reference photo; give one where the face is clearly visible")
    return image, landmarks, analyser.embed(image, landmarks)


def _embed_photo(analyser: FaceIdentity, path: Path) -> np.ndarray | None:
    try:
        image = read_image_rgb(path)
    except MediaError:
        return None
    landmarks = analyser.reference(image)
    return None if landmarks is None else analyser.embed(image, landmarks)


# ---------------------------------------------------------------- analyse

@dataclass
class _Analysis:
    """What both videos gave at the sampled frames (position i = the i-th sampled index)."""

    landmarks_o: list[np.ndarray | None]
    landmarks_s: list[np.ndarray | None]
    embeddings_o: np.ndarray
    embeddings_s: np.ndarray
    evidence: ParrotEvidence = field(default_factory=ParrotEvidence)
    strip: list[tuple[float, int, np.ndarray, np.ndarray]] = field(default_factory=list)  # heap: (-SW-OR, pos, o, s)
    decoded_original: int = 0
    decoded_swapped: int = 0
    sizes_o: list[tuple[int, int] | None] = field(default_factory=list)  # (width, height): the pose's camera
    sizes_s: list[tuple[int, int] | None] = field(default_factory=list)
    reencoded: dict[int, np.ndarray | None] = field(default_factory=dict)  # frame index -> landmarks of the re-encode
    second_o: np.ndarray | None = None  # (n, 128) SFace features at the same landmarks; NaN rows: no face
    second_s: np.ndarray | None = None
    second_seconds: float = 0.0


def _analyse(info_o: MediaInfo, info_s: MediaInfo, indices: np.ndarray, analyser: FaceIdentity, refs: dict,
             au: AuSource, metrics: MetricSet, config: EvaluateConfig, progress: bool,
             copy: "ReencodeCopy", second: second_recogniser.SFace | None = None) -> _Analysis:
    n = len(indices)
    faces = _Analysis([None] * n, [None] * n, np.full((n, 128), np.nan, np.float32),
                      np.full((n, 128), np.nan, np.float32), sizes_o=[None] * n, sizes_s=[None] * n,
                      second_o=np.full((n, 128), np.nan, np.float32), second_s=np.full((n, 128), np.nan, np.float32))
    ref_original = refs["original"][2]
    with progress_bar(n, "evaluate", "frame", progress) as bar:
        for batch in _paired_batches(info_o, info_s, indices, config.batch_size):
            present_o = [(p, i, fo) for p, i, fo, _ in batch if fo is not None]
            present_s = [(p, i, fs) for p, i, _, fs in batch if fs is not None]
            faces.decoded_original += len(present_o)
            faces.decoded_swapped += len(present_s)
            found = []  # (embeddings array, SFace array, position, frame, landmarks): embedded below in one batch
            for present, landmarks, embeddings, features in (
                    (present_o, faces.landmarks_o, faces.embeddings_o, faces.second_o),
                    (present_s, faces.landmarks_s, faces.embeddings_s, faces.second_s)):
                for (pos, _, frame), lm in zip(present, analyser.largest_faces([f for _, _, f in present])):
                    if lm is not None:
                        landmarks[pos] = lm
                        found.append((embeddings, features, pos, frame, lm))
            pairs = [(f, lm) for _, _, _, f, lm in found]
            for (embeddings, _, pos, _, _), vector in zip(found, analyser.embed_many(pairs)):
                embeddings[pos] = vector
            if second is not None and found:
                # The same landmarks, so both recognisers see exactly the same faces in the same frames.
                t = time.perf_counter()
                for (_, features, pos, _, _), vector in zip(found, second.embed_many(pairs)):
                    features[pos] = vector
                faces.second_seconds += time.perf_counter() - t
            for pos, index, fo, fs in batch:
                faces.sizes_o[pos] = None if fo is None else (fo.shape[1], fo.shape[0])
                faces.sizes_s[pos] = None if fs is None else (fs.shape[1], fs.shape[0])
                if fo is not None and faces.landmarks_o[pos] is not None:
                    copy.add(pos, index, fo)
                _keep(faces, pos, fo, fs, config, analyser, ref_original)
                if fo is not None and fs is not None:
                    metrics.add(Sample(index, fo, fs, faces.landmarks_o[pos], faces.landmarks_s[pos]))
            au.add("original", [(i, f) for _, i, f in present_o])
            au.add("swapped", [(i, f) for _, i, f in present_s])
            bar.update(len(batch))
    faces.reencoded = copy.landmarks(analyser, config.batch_size)
    return faces


class ReencodeCopy:
    """Up to `count` sampled original frames with a face, spread over the sample, streamed into a libx264
    crf NOISE_CRF video as they pass, then landmarked again: how much a re-encode alone moves each
    expression measure. Landmarking a real re-encode (not the jitter between neighbouring frames) keeps
    expression out of the noise estimate, and it works whatever the spacing of the sampled frames."""

    def __init__(self, path: Path, info: MediaInfo, indices: np.ndarray, count: int) -> None:
        self.path, self.info = path, info
        n = len(indices)
        self.wanted = set(np.linspace(0, n - 1, min(n, count)).round().astype(int).tolist()) if n and count else set()
        self.frames: list[int] = []
        self._writer: VideoWriter | None = None
        self._closed = False

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

    def add(self, pos: int, index: int, frame: np.ndarray) -> None:
        if pos not in self.wanted or self._closed:
            return
        h, w = frame.shape[:2]
        if self._writer is None:
            # An image folder has no size of its own: the first frame's is the copy's.
            self._writer = VideoWriter(self.path, dataclasses.replace(self.info, width=w, height=h), crf=NOISE_CRF,
                                       audio=False)
        if (h, w) != (self._writer.height, self._writer.width):
            return  # a differently sized image of a folder: not worth a second copy
        self._writer.write(frame)
        self.frames.append(int(index))

    def landmarks(self, analyser: FaceIdentity, batch_size: int) -> dict[int, np.ndarray | None]:
        """Frame index -> landmarks found in the re-encoded copy of that frame (None: no face there)."""
        if self._writer is None:
            return {}
        self._writer.close()
        self._writer, self._closed = None, True
        found: list[np.ndarray | None] = []
        batch: list[np.ndarray] = []
        for _, frame in iter_frames(probe(self.path)):
            batch.append(frame)
            if len(batch) == batch_size:
                found += analyser.largest_faces(batch)
                batch = []
        found += analyser.largest_faces(batch)
        return dict(zip(self.frames, found))


def _paired_batches(info_o: MediaInfo, info_s: MediaInfo, indices: np.ndarray, size: int
                    ) -> Iterator[list[tuple[int, int, np.ndarray | None, np.ndarray | None]]]:
    """(sample position, frame index, original frame, swapped frame) in batches; None where a video ended."""
    wanted = {int(f): pos for pos, f in enumerate(indices)}
    last = int(indices[-1]) if len(indices) else -1
    batch = []
    for index, (a, b) in enumerate(zip_longest(iter_frames(info_o), iter_frames(info_s))):
        if index > last:
            break
        pos = wanted.get(index)
        if pos is None:
            continue
        batch.append((pos, index, None if a is None else a[1], None if b is None else b[1]))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _expression(faces: _Analysis, indices: np.ndarray, geo_o: pd.DataFrame, config: EvaluateConfig
                ) -> tuple[pd.DataFrame, dict]:
    """The calibrated expression measure: ratios of both videos, the original's pose, the re-encode noise."""
    ratios_o = ratio_table(faces.landmarks_o, list(indices))
    ratios_s = ratio_table(faces.landmarks_s, list(indices))
    copy = ratio_table(list(faces.reencoded.values()), list(faces.reencoded))
    noise = reencode_noise(ratios_o.loc[list(faces.reencoded)], copy)
    bars = ExpressionBars(min_r=config.expression_pcc)
    return expression_preservation(ratios_o, ratios_s, geo_o[list(POSE)], noise, bars)


def _keep(faces: _Analysis, pos: int, frame_o: np.ndarray | None, frame_s: np.ndarray | None,
          config: EvaluateConfig, analyser: FaceIdentity, ref_original: np.ndarray) -> None:
    """The few frames the parrot attack and the report's picture need, chosen while the videos stream past."""
    lm_o = faces.landmarks_o[pos]
    if lm_o is None or frame_o is None or frame_s is None:
        return
    if config.parrot != "none":
        if faces.evidence.wants_pair():
            faces.evidence.pairs.append((frame_o, frame_s, lm_o))
        if faces.landmarks_s[pos] is None and not is_flat(frame_s, lm_o):
            # A flat region (a solid mask) holds nothing of the face: embedding it would give the
            # recogniser's "featureless" vector, which sits close to any other featureless image, a
            # heavily degraded reference included: a false re-identification, not an attack.
            faces.evidence.borrowed[pos] = analyser.embed(frame_s, lm_o)
    distance = float(np.linalg.norm(faces.embeddings_s[pos] - ref_original))
    closeness = -distance if np.isfinite(distance) else -10.0  # swapped frames without a face come last
    item = (closeness, pos, _thumb(frame_o, lm_o), _thumb(frame_s, lm_o))
    if len(faces.strip) < STRIP_FRAMES:
        heapq.heappush(faces.strip, item)
    elif item[:2] > faces.strip[0][:2]:
        heapq.heapreplace(faces.strip, item)


def _thumb(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The head around the original's landmarks, THUMB_SIDE px high."""
    (x0, y0), (x1, y1) = landmarks.min(0), landmarks.max(0)
    cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, 1.6 * max(x1 - x0, y1 - y0)
    h, w = frame.shape[:2]
    left, top = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    crop = frame[top:int(min(h, cy + side / 2)), left:int(min(w, cx + side / 2))]
    if crop.size == 0:
        crop = frame
    scale = THUMB_SIDE / crop.shape[0]
    return cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), THUMB_SIDE), interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------- write

def _images(table: pd.DataFrame, geo_o: pd.DataFrame, geo_s: pd.DataFrame, geo_table: pd.DataFrame,
            au_o: pd.DataFrame, au_s: pd.DataFrame, au_table: pd.DataFrame, au_summary: dict, faces: _Analysis,
            refs: dict, threshold: float) -> dict[str, bytes]:
    images = {"identity_boxplot.png": plots.identity_boxplot(table, threshold),
              "identity_over_time.png": plots.identity_over_time(table, threshold),
              "geometry_bars.png": plots.au_bars(geo_table[geo_table["pcc"].notna() | geo_table["rmse"].notna()],
                                                 "measure")}
    if faces.strip:
        worst_first = sorted(faces.strip, reverse=True)
        pairs = [(f"swapped, SW-OR {-c:.2f}" if c > -10 else "swapped, no face", o, s) for c, _, o, s in worst_first]
        references = [(f"{key}'s photo", _thumb(image, lm)) for key, (image, lm, _) in refs.items()]
        images["frames.png"] = plots.frame_strip(pairs, references)
    paired = geo_o.index[geo_o.notna().any(axis=1) & geo_s.notna().any(axis=1)]
    if len(paired):
        images["geometry_timeseries.png"] = plots.au_timeseries(geo_o.loc[paired], geo_s.loc[paired])
    if au_summary.get("computed"):
        images["au_bars.png"] = plots.au_bars(au_table)
        a, b, _ = au_mod.align_tables(au_o, au_s)
        images["au_timeseries.png"] = plots.au_timeseries(a, b)
    return images


def _write_tables(reports: Path, table: pd.DataFrame, geo_o: pd.DataFrame, geo_s: pd.DataFrame,
                  geo_table: pd.DataFrame, au_o: pd.DataFrame, au_s: pd.DataFrame, au_table: pd.DataFrame) -> None:
    write_text(reports / "identity.csv", table.to_csv(index=False, float_format="%.6g"))
    geo = geo_o.add_suffix("_original").join(geo_s.add_suffix("_swapped"))
    write_text(reports / "geometry.csv", geo.to_csv(float_format="%.6g"))
    write_text(reports / "geometry_preservation.csv", geo_table.to_csv(index=False, float_format="%.6g"))
    write_text(reports / "au_original.csv", au_o.to_csv(float_format="%.6g"))
    write_text(reports / "au_swapped.csv", au_s.to_csv(float_format="%.6g"))
    write_text(reports / "au_preservation.csv", au_table.to_csv(index=False, float_format="%.6g"))
