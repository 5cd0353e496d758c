"""`deid protect`: hide every face of a video, no donor and no training, and prove it with the leak check.

    one decode: search (every frame, recall-tuned detector, batched) -> hold (tracks, gaps, time window;
    a look-ahead of max(hold, track_gap + 1) frames) -> hide -> encode, then
    leak check (reads the output: another detector + face_recognition) -> repair -> ... -> publish, or keep
    aside as <name>.leaky.mp4

The original is decoded once when the check finds nothing: the frames wait in a look-ahead buffer only
until the detections after them are known (memory: that buffer and a search batch, not the video's
length), and the check reads the original again only for the frames where it found a face.

Repair, then verify: every face the leak check finds, confirmed or not, joins the search's detections
(so it is tracked and held in time like one), the video is hidden and written again from the original
frames, and the new output is checked again, for at most `repair_rounds` rounds. A false hit costs a
little more mask instead of a refused clip; a true miss is hidden instead of published. Only what the
last round still finds fails the command, unconfirmed detections included.

Also the engine of `deid baseline`, which adds the extraction's landmark hulls to what the search finds.
Output guarantees are convert's: same frame count, rate and displayed size; audio kept or dropped; no
container metadata; written under a hidden name and renamed only after the check.
"""
from __future__ import annotations

import csv
import io
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from deid.core.atomic import writable_folder, write_text
from deid.core.errors import DeidError
from deid.models.device import resolve_device
from deid.models.search import FaceSearch, make_search
from deid.stages.guard import Region, StreamingHold, hold
from deid.stages.leak_check import Leak, LeakReport, check_output
from deid.stages.media import MediaInfo, iter_frames, probe
from deid.stages.obfuscate import box_region, face_region_mask, is_solid, is_weak, obfuscate
from deid.stages.phase_clock import PhaseClock
from deid.stages.progress import progress_bar
from deid.stages.protect_config import ProtectConfig
from deid.stages.publish import (
    frames_csv_path,
    publish,
    raise_if_leaky,
    refuse_to_replace,
    unchecked_path,
)
from deid.stages.video_writer import VideoWriter

log = logging.getLogger("deid.protect")


@dataclass(frozen=True)
class Hull:
    """A face known from elsewhere (baseline: the extraction's 68 landmarks), hidden as its grown hull."""

    points: np.ndarray  # (n, 2) frame px
    size: float


def warn_if_weak(method: str, what: str) -> None:
    if is_weak(method):
        log.warning("WARNING: %s %s only low-passes faces: deid evaluate's parrot attack (a reference photo "
                    "degraded the same way) re-identifies %s faces; use mask for protection", what, method, method)


def protect_video(video: Path, out_path: Path, config: ProtectConfig, device: str = "auto", crf: int = 18,
                  allow_leaks: bool = False, progress: bool = True,
                  known: Sequence[Sequence[Hull]] | None = None, label: str = "protect",
                  allow_damaged: bool = False) -> dict[str, Any]:
    """Run the whole pass on one video; raises LeakError (after writing everything) when the check fails."""
    info = probe(video, allow_damaged)
    if info.kind != "video":
        raise DeidError(f"{video}: {label} needs a video file; image folders have no frame rate or audio to keep")
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".mp4":
        raise DeidError(f"{out_path}: the output must be an .mp4 file")
    refuse_to_replace([info.path], out_path)
    writable_folder(out_path.parent)
    warn_if_weak(config.method, f"{label} --method")
    dev = resolve_device(device)
    start = time.perf_counter()
    clock = PhaseClock()
    written = unchecked_path(out_path)
    checked = -(-info.frames // config.check_every)
    with progress_bar(info.frames + checked, f"protect {info.path.name}", "frame", progress) as bar:
        found, regions, rows = _search_hide_write(info, written, make_search(config.search, dev, config.min_face),
                                                  known, config, crf, clock, bar)
        repairs: list[list[Leak]] = []  # per repair round, the hits it hid
        while True:
            with clock.phase("check"):
                report = check_output(written, info, config, dev, False, solid=_solid_mask(regions, known, config),
                                      original_faces=found, frames=len(found), bar=bar)
            if not report.hits or len(repairs) >= config.repair_rounds:
                break
            repairs.append(report.hits)
            log.info("%s: repair round %d: hiding %d face(s) the leak check found in %d frame(s), then checking "
                     "again", info.path.name, len(repairs), len(report.hits), len({h.frame for h in report.hits}))
            bar.total += len(found) + checked
            with clock.phase("repair"):
                regions = hold(_with_repairs(found, repairs), config.hold, config.track_gap)
                rows = _write(info, written, regions, known, config, crf, bar)
    report.fail_closed()
    where = publish(written, out_path, report, allow_leaks)
    _write_frames_csv(frames_csv_path(out_path), rows, report, repairs)
    seconds = time.perf_counter() - start
    summary = {"input": str(info.path), "output": str(where), "published": where == out_path,
               "method": config.method, "search": config.search, "frames": info.frames,
               "frames_with_faces": sum(1 for r in rows if r[2]), "faces_detected": sum(r[2] for r in rows),
               "regions_hidden": sum(r[2] + r[3] + r[4] + r[5] for r in rows), "audio": config.audio,
               "repair": {"rounds": len(repairs), "found": [len(hits) for hits in repairs],
                          "repaired": sum(len(hits) for hits in repairs)},
               "leak_check": report.as_json(), "seconds": round(seconds, 2),
               "frames_per_second": round(len(found) / seconds, 2) if seconds else None,
               "seconds_by_phase": clock.as_json()}
    if info.damage:
        summary["damaged_input"] = info.damage
    log.info("%s: %s on %d faces found in %d/%d frames (+%d held or tracked regions); leak check %s: %d found and "
             "repaired in %d round(s), %d leaks", where.name, config.method, summary["faces_detected"],
             summary["frames_with_faces"], info.frames, summary["regions_hidden"] - summary["faces_detected"],
             report.checker, summary["repair"]["repaired"], len(repairs), len(report.leaks))
    raise_if_leaky(report, out_path, allow_leaks, summary)
    return summary


def _with_repairs(found: list[np.ndarray], repairs: list[list[Leak]]) -> list[np.ndarray]:
    """The search's boxes per frame plus every hit of the repair rounds so far (hidden and held like them)."""
    if not repairs:
        return found
    extra: dict[int, list[np.ndarray]] = {}
    for hits in repairs:
        for hit in hits:
            extra.setdefault(hit.frame, []).append(np.append(hit.box_xyxy, 1.0))
    return [np.vstack([boxes.reshape(-1, 5), *extra[i]]).astype(np.float32) if i in extra else boxes
            for i, boxes in enumerate(found)]


def _solid_mask(regions: list[list[Region]], known: Sequence[Sequence[Hull]] | None,
                config: ProtectConfig) -> Callable[[int, tuple[int, int]], np.ndarray] | None:
    """frame, shape -> the union of the solid fills drawn in it, for the check's under-the-mask rule."""
    if not is_solid(config.method):
        return None

    def solid(index: int, shape: tuple[int, int]) -> np.ndarray:
        hulls = known[index] if known is not None and index < len(known) else []
        return fill_mask(shape, regions[index] if index < len(regions) else [], hulls, config)
    return solid


def _search_hide_write(info: MediaInfo, written: Path, search: FaceSearch, known: Sequence[Sequence[Hull]] | None,
                       config: ProtectConfig, crf: int, clock: PhaseClock,
                       bar: Any) -> tuple[list[np.ndarray], list[list[Region]], list[list[Any]]]:
    """The pass, on one decode: each frame waits in a look-ahead buffer until its regions are final."""
    holder = StreamingHold(config.hold, config.track_gap)
    found: list[np.ndarray] = []
    regions: list[list[Region]] = []
    rows: list[list[Any]] = []
    waiting: deque[np.ndarray] = deque()
    batch: list[np.ndarray] = []
    with VideoWriter(written, info, crf=crf, audio=config.audio == "keep") as writer:
        def write_final(final: list[tuple[int, list[Region]]]) -> None:
            for index, here in final:
                regions.append(here)
                rows.append(_hide_and_write(index, waiting.popleft(), here, known, config, writer, clock))
                bar.update(1)

        def search_batch() -> None:
            with clock.phase("search"):
                boxes = search.find(batch)
            for frame, frame_boxes in zip(batch, boxes):
                found.append(frame_boxes)
                waiting.append(frame)
                write_final(holder.push(frame_boxes))
            batch.clear()

        for _, frame in clock.timed("decode", iter_frames(info)):
            batch.append(frame)
            if len(batch) == config.batch_size:
                search_batch()
        if batch:
            search_batch()
        write_final(holder.finish())
    return found, regions, rows


def _hide_and_write(index: int, frame: np.ndarray, here: list[Region], known: Sequence[Sequence[Hull]] | None,
                    config: ProtectConfig, writer: VideoWriter, clock: PhaseClock) -> list[Any]:
    """Hide one frame's regions and hulls, encode it; its frames.csv row."""
    hulls = known[index] if known is not None and index < len(known) else []
    with clock.phase("hide"):
        out = hide(frame, here, hulls, config)
    with clock.phase("encode"):
        writer.write(out)
    counts = {why: sum(1 for r in here if r.why == why) for why in ("detected", "tracked", "held")}
    status = "protected" if here or hulls else "no face"
    return [index, status, counts["detected"], counts["tracked"], counts["held"], len(hulls)]


def _write(info: MediaInfo, written: Path, regions: list[list[Region]], known: Sequence[Sequence[Hull]] | None,
           config: ProtectConfig, crf: int, bar: Any) -> list[list[Any]]:
    """A repair round: the original decoded again and hidden with the regions known now."""
    rows: list[list[Any]] = []
    clock = PhaseClock()
    with VideoWriter(written, info, crf=crf, audio=config.audio == "keep") as writer:
        for index, frame in iter_frames(info):
            rows.append(_hide_and_write(index, frame, regions[index] if index < len(regions) else [], known, config,
                                        writer, clock))
            bar.update(1)
        if writer.frames != len(regions):
            raise DeidError(f"{info.path}: decoded {writer.frames} frames on the second pass but {len(regions)} on the "
                            "first; the file changed while it was read")
    return rows


def fill_mask(shape: tuple[int, int], regions: Sequence[Region], hulls: Sequence[Hull],
              config: ProtectConfig) -> np.ndarray:
    """uint8 union of every region and hull `hide` covers in a frame."""
    union = np.zeros(shape, np.uint8)
    for region in regions:
        union |= box_region(shape, region.box, config.grow)
    for hull in hulls:
        union |= _hull_region(shape, hull)
    return union


def _hull_region(shape: tuple[int, int], hull: Hull) -> np.ndarray:
    x0, y0 = hull.points.min(0)
    x1, y1 = hull.points.max(0)
    top = np.array([[x0, y0 - 0.3 * (y1 - y0)], [x1, y0 - 0.3 * (y1 - y0)]])
    return face_region_mask(shape, np.concatenate([hull.points, top]), grow=0.15)


def hide(frame: np.ndarray, regions: Sequence[Region], hulls: Sequence[Hull], config: ProtectConfig,
         method: str | None = None) -> np.ndarray:
    """The frame with every region and hull obfuscated by `method` (default: config.method)."""
    method = method or config.method
    out = frame
    if is_solid(method) and (regions or hulls):
        # A solid fill does not depend on the face's size: one union mask, one pass over the frame.
        sizes = [float(max(r.box[2] - r.box[0], r.box[3] - r.box[1])) for r in regions] + [h.size for h in hulls]
        return np.ascontiguousarray(obfuscate(out, fill_mask(frame.shape[:2], regions, hulls, config), method,
                                              min(sizes)))
    # One obfuscation per face: a hull the extraction found and a region the search found on the same face
    # are merged, so the face is degraded once at one strength (twice would compound two blurs or two
    # pixel grids, a result no real tool produces and the parrot attack would not recognise).
    faces: list[tuple[np.ndarray, float, np.ndarray]] = []
    for region in regions:
        box = region.box
        faces.append((box_region(frame.shape[:2], box, config.grow), float(max(box[2] - box[0], box[3] - box[1])), box))
    for hull in hulls:
        centre = hull.points.mean(0)
        for mask, _, box in faces:
            if box[0] <= centre[0] <= box[2] and box[1] <= centre[1] <= box[3]:
                mask |= _hull_region(frame.shape[:2], hull)
                break
        else:
            x0, y0 = hull.points.min(0)
            x1, y1 = hull.points.max(0)
            faces.append((_hull_region(frame.shape[:2], hull), hull.size, np.array([x0, y0, x1, y1])))
    for mask, size, _ in faces:
        out = obfuscate(out, mask, method, size)
    return np.ascontiguousarray(out)


def _write_frames_csv(path: Path, rows: list[list[Any]], report: LeakReport, repairs: list[list[Leak]]) -> None:
    leaks, unconfirmed = report.by_frame(), report.unconfirmed_by_frame()
    repaired: dict[int, list[str]] = {}
    for round_, hits in enumerate(repairs, 1):
        for hit in hits:
            repaired.setdefault(hit.frame, []).append(f"round {round_}: {hit.describe()}")
    buffer = io.StringIO()
    table = csv.writer(buffer)
    table.writerow(["frame", "status", "detected", "tracked", "held", "known", "checked", "repaired", "leaks"])
    for row in rows:
        index = row[0]
        found = leaks.get(index, [])
        status = "LEAK" if found else row[1]
        table.writerow([index, status, *row[2:], int(index % report.every == 0), "; ".join(repaired.get(index, [])),
                        "; ".join([leak.describe() for leak in found]
                                  + [f"unconfirmed: {u.describe()}" for u in unconfirmed.get(index, [])])])
    write_text(path, buffer.getvalue())
