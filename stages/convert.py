"""Convert: swap the target's face in every frame, blend it in, protect every face it cannot swap.

Inputs: the video, its alignments at every frame (an extract folder, or a clean folder whose kept face
per frame is the target), and a trained model folder. Output: `<name>.mp4` with the source's frame
count, frame rate, displayed size and audio, and `frames.csv` next to it listing what happened to every
frame.

Per frame, privacy first ("fail closed"):
  swapped       the target's face went through encoder -> decoder B and was pasted back
  interpolated  the target was not detected, but the track resumes within `max_gap` frames: its
                landmarks are interpolated and the swap continues
  protected     a face that cannot be swapped gets the fallback obfuscation: a longer gap in the
                target's track (at its interpolated position), or any face that is not the target
                (a bystander)
  swap-reidentified  the swapped face is still within `protect.match_threshold` of the original
                person in that frame (a weak model): it gets the fallback on top of the swap
  no face       nothing to do

Beyond the extraction, every frame is searched by the protection pass (stages/guard.py: a detector
tuned for recall, regions held over detection gaps), and whatever it finds that is not the swapped
target gets the fallback too. The written video is then read back by the leak check
(stages/leak_check.py) and published under its final name only when it finds no face but the swap;
otherwise it is kept as `<name>.leaky.mp4` and the stage fails. Only `fallback: none` leaves faces
untouched, and then the leak check reports every one.
"""
from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from models.alignment import hull_mask, transform_points
from models.device import resolve_device
from models.landmarks import IdentityModel
from models.search import make_search
from models.swap import SwapModel
from pipeline.atomic import writable_folder, write_image, write_text
from pipeline.config import ConvertConfig
from pipeline.errors import DeidError
from pipeline.runner import hash_input
from stages import checkpoint
from stages.alignments import Alignments, load_alignments
from stages.blend import paste, soften_mask
from stages.guard import Region, box_inside, drop_matching, hold, scan
from stages.leak_check import LeakReport, check_output
from stages.media import MediaInfo, iter_frames, probe
from stages.obfuscate import box_hull, box_region, face_region_mask, is_solid, obfuscate
from stages.progress import progress_bar
from stages.protect_config import ProtectConfig
from stages.protect import warn_if_weak
from stages.publish import frames_csv_path, publish, raise_if_leaky, unchecked_path
from stages.smoothing import OneEuroFilter
from stages.train_data import frame_to_model
from stages.video_writer import VideoWriter

log = logging.getLogger("deid.convert")


@dataclass(frozen=True)
class Trained:
    """A trained swap model ready for inference, with the crop it was trained on."""

    model: SwapModel
    centering: str
    coverage: float
    device: torch.device

    @property
    def input_size(self) -> int:
        return self.model.input_size

    @property
    def output_size(self) -> int:
        return self.model.output_size


@dataclass
class _FramePlan:
    target: np.ndarray | None = None      # 68 landmarks of the face to swap (after smoothing)
    status: str = "no face"
    reason: str = ""
    protect: list[np.ndarray] = field(default_factory=list)  # hull points (frame px) to obfuscate
    protect_sizes: list[float] = field(default_factory=list)
    guard: list[Region] = field(default_factory=list)  # what the protection pass found that is not the target


def load_trained(model_dir: Path, device: torch.device) -> Trained:
    model, state = checkpoint.load_model(Path(model_dir), device)
    frozen = state["frozen"]
    return Trained(model=model, centering=frozen.get("centering", "face"), coverage=float(frozen["coverage"]),
                   device=device)


def convert(video: Path, faces_dir: Path, model_dir: Path, out_path: Path, config: ConvertConfig,
            device: str = "auto", progress: bool = True, protect: ProtectConfig | None = None,
            allow_leaks: bool = False, allow_damaged: bool = False) -> dict[str, Any]:
    """Run the stage; returns the summary recorded in the manifest. Raises LeakError for a leaking output."""
    protect = protect or ProtectConfig()
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".mp4":
        raise DeidError(f"{out_path}: the output must be an .mp4 file")
    writable_folder(out_path.parent)
    info = probe(video, allow_damaged)
    if info.kind != "video":
        raise DeidError(f"{video}: convert needs a video file; image folders have no frame rate or audio to keep")
    alignments = load_alignments(faces_dir)
    all_faces = source_alignments(alignments, Path(faces_dir))
    _check_matches(info, alignments, faces_dir)
    dev = resolve_device(device)
    trained = load_trained(model_dir, dev)
    if config.mask == "learned" and not trained.model.learns_mask:
        raise DeidError(f"{model_dir}: model {trained.model.name} has no learned mask; use --mask extended")
    if config.fallback == "none":
        log.warning("WARNING: fallback none: faces that cannot be swapped stay in clear; the leak check will report them")
    else:
        warn_if_weak(config.fallback, "convert --fallback")
    start = time.perf_counter()
    plans = plan_frames(alignments, all_faces, info, config)
    _add_guard(plans, info, protect, dev, progress)

    written = unchecked_path(out_path)
    rows: list[list[Any]] = []
    identity = IdentityModel()
    swapped_at: dict[int, tuple[float, float, float, float]] = {}
    distances: dict[int, float] = {}
    originals = _OriginalIdentity(identity)
    with VideoWriter(written, info, crf=config.crf, audio=protect.audio == "keep") as writer, \
            progress_bar(info.frames, f"convert {info.path.name}", "frame", progress) as bar:
        batch: list[tuple[int, np.ndarray]] = []
        for index, frame in iter_frames(info):
            batch.append((index, frame))
            if len(batch) == config.batch_size:
                _process(batch, plans, trained, config, protect, identity, writer, rows, out_path, swapped_at, distances,
                         originals)
                bar.update(len(batch))
                batch = []
        if batch:
            _process(batch, plans, trained, config, protect, identity, writer, rows, out_path, swapped_at, distances,
                         originals)
            bar.update(len(batch))
        if writer.frames != len(plans):
            raise DeidError(f"{video}: decoded {writer.frames} frames but the alignments list {len(plans)}; "
                            "re-extract this video")
    solid = None
    if is_solid(config.fallback):
        def solid(index: int, shape: tuple[int, int]) -> np.ndarray:
            return _fill_mask(shape, plans[index], protect)
    report = check_output(written, info, protect, dev, progress, swapped_at=swapped_at, solid=solid,
                          swap_distances=distances)
    where = publish(written, out_path, report, allow_leaks)
    seconds = time.perf_counter() - start
    _write_frames_csv(frames_csv_path(out_path), rows, report)
    summary = _summary(rows, config, seconds, where, report, frames_csv_path(out_path))
    if info.damage:
        summary["damaged_input"] = info.damage
    raise_if_leaky(report, out_path, allow_leaks)
    return summary


def source_alignments(alignments: Alignments, faces_dir: Path) -> Alignments:
    """All detected faces of the video: a clean folder's source extract (found through its relative
    `faces_root`), or the folder itself when it is an extract. Never silently less: a clean folder
    whose extract cannot be found stops the stage, because the bystanders are listed only there."""
    cleaner = alignments.data.get("cleaner")
    if not cleaner:
        return alignments
    source = alignments.faces_root
    if (source / "alignments.json").is_file():
        return load_alignments(source)
    raise DeidError(f"{faces_dir}: this clean folder's extraction ({source}, from faces_root) is missing, so "
                    "the other faces of the video are unknown; move the extract folder back beside it or re-run "
                    "`deid clean` on the extract")


def _add_guard(plans: list[_FramePlan], info: MediaInfo, protect: ProtectConfig, device: torch.device,
               progress: bool) -> None:
    """Search every frame for faces the extraction missed; all but the swapped target are protected."""
    found = scan(info, make_search(protect.search, device, protect.min_face), protect.batch_size, progress,
                 info.path.name)

    def is_target(index: int, box: np.ndarray) -> bool:
        target = plans[index].target if index < len(plans) else None
        return target is not None and box_inside(box, _bounds(target))

    regions = hold(drop_matching(found, is_target), protect.hold, protect.track_gap)
    for plan, here in zip(plans, regions):
        plan.guard = here
        if here and plan.status == "no face":
            plan.status, plan.reason = "protected", "face found by the protection pass"
        elif here:
            plan.reason = (plan.reason + "; " if plan.reason else "") + f"{len(here)} region(s) of the protection pass"


def _bounds(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    x0, y0 = landmarks.min(0)
    x1, y1 = landmarks.max(0)
    return float(x0), float(y0), float(x1), float(y1)


def _fill_mask(shape: tuple[int, int], plan: _FramePlan, protect: ProtectConfig) -> np.ndarray:
    union = np.zeros(shape, np.uint8)
    for region in plan.guard:
        union |= box_region(shape, region.box, protect.grow)
    for hull in plan.protect:
        union |= face_region_mask(shape, np.concatenate([hull, box_hull(_hull_box(hull))]), grow=0.15)
    return union


def _check_matches(info: MediaInfo, alignments: Alignments, faces_dir: Path) -> None:
    recorded = alignments.video
    if recorded.get("sha256") != hash_input(info.path):
        raise DeidError(f"{faces_dir}: alignments were made from another video than {info.path} (content hash "
                        "differs); extract this video first")
    if alignments.extractor.get("every", 1) != 1:
        raise DeidError(f"{faces_dir}: extracted with every={alignments.extractor['every']}; convert needs every "
                        "frame: re-extract with --every 1")
    if len(alignments.frames) != recorded.get("frames"):
        raise DeidError(f"{faces_dir}: alignments list {len(alignments.frames)} of {recorded.get('frames')} frames; "
                        "re-run the extract to finish it")


def plan_frames(alignments: Alignments, all_faces: Alignments, info: MediaInfo,
                config: ConvertConfig) -> list[_FramePlan]:
    """Decide per frame what to swap and what to protect, before touching a pixel."""
    count = len(alignments.frames)
    is_clean = all_faces is not alignments
    targets: list[np.ndarray | None] = []
    target_boxes: list[list[float] | None] = []
    for i in range(count):
        faces = alignments.frames.get(str(i), [])
        # From a clean folder the kept face is the target; from an extract the largest face is.
        chosen = faces[0] if faces else None
        targets.append(None if chosen is None else np.asarray(chosen["landmarks"], np.float64))
        target_boxes.append(None if chosen is None else chosen["box"])
    plans = [_FramePlan() for _ in range(count)]
    known = [i for i, t in enumerate(targets) if t is not None]
    for i, plan in enumerate(plans):
        if targets[i] is not None:
            plan.target, plan.status = targets[i], "swapped"
    for before, after in zip(known, known[1:]):
        gap = after - before - 1
        for i in range(before + 1, after):
            t = (i - before) / (after - before)
            landmarks = (1 - t) * targets[before] + t * targets[after]
            if gap <= config.max_gap:
                plans[i].target, plans[i].status = landmarks, "interpolated"
                plans[i].reason = f"target not detected; track interpolated over a {gap}-frame gap"
            else:
                plans[i].status, plans[i].reason = "protected", f"target not detected in a {gap}-frame gap of its track"
                plans[i].protect.append(landmarks)
                plans[i].protect_sizes.append(_face_size(landmarks))
    _smooth(plans, info, config)
    for i, plan in enumerate(plans):
        for face in all_faces.frames.get(str(i), []):
            if target_boxes[i] is not None and _same_face(face["box"], target_boxes[i]):
                continue
            if not is_clean and target_boxes[i] is None and plan.target is not None and \
                    _overlaps_landmarks(face["box"], plan.target):
                continue  # an extract folder's own target face, in an interpolated frame
            plan.protect.append(np.asarray(face["landmarks"], np.float64))
            plan.protect_sizes.append(float(max(face["box"][2], face["box"][3])))
            if plan.status in ("no face", "swapped", "interpolated"):
                plan.reason = (plan.reason + "; " if plan.reason else "") + "bystander protected"
            if plan.status == "no face":
                plan.status = "protected"
    return plans


def _smooth(plans: list[_FramePlan], info: MediaInfo, config: ConvertConfig) -> None:
    if config.smoothing == "none":
        return
    smoother = OneEuroFilter(rate=info.fps or 25.0, min_cutoff=config.smooth_min_cutoff, beta=config.smooth_beta)
    for plan in plans:
        if plan.target is None:
            smoother.reset()  # a new track starts fresh, it must not be pulled towards the old position
            continue
        plan.target = smoother(plan.target)


def _face_size(landmarks: np.ndarray) -> float:
    span = landmarks.max(0) - landmarks.min(0)
    return float(max(span))


def _same_face(box: list[float], other: list[float]) -> bool:
    return all(abs(a - b) < 1e-3 for a, b in zip(box, other))


def _overlaps_landmarks(box: list[float], landmarks: np.ndarray) -> bool:
    x, y, w, h = box
    cx, cy = landmarks.mean(0)
    return x <= cx <= x + w and y <= cy <= y + h


class _OriginalIdentity:
    """The original target's embedding, measured once every REFRESH frames while it stays in place.

    The person under the swap does not change from one frame to the next, and dlib's ResNet costs ~90 ms
    a face on 2 CPU cores; the swapped face itself is measured in every frame. A target that jumps (the
    largest face of an extract folder switching to another person) is measured again at once.
    """

    REFRESH = 5

    def __init__(self, identity: IdentityModel) -> None:
        self._identity = identity
        self._last: tuple[int, np.ndarray, np.ndarray] | None = None  # frame, landmark centre, embedding

    def embedding(self, index: int, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        centre, size = landmarks.mean(0), _face_size(landmarks)
        if self._last is not None:
            at, where, embedding = self._last
            if 0 <= index - at < self.REFRESH and np.linalg.norm(centre - where) < 0.25 * size:
                return embedding
        embedding = self._identity.embed(frame, landmarks).astype(np.float64)
        self._last = (index, centre, embedding)
        return embedding


@torch.inference_mode()
def _process(batch: list[tuple[int, np.ndarray]], plans: list[_FramePlan], trained: Trained, config: ConvertConfig,
             protect: ProtectConfig, identity: IdentityModel, writer: VideoWriter, rows: list[list[Any]],
             out_path: Path, swapped_at: dict[int, tuple[float, float, float, float]],
             distances: dict[int, float], originals: "_OriginalIdentity") -> None:
    swaps = [(k, index) for k, (index, _) in enumerate(batch) if index < len(plans) and plans[index].target is not None]
    outputs = _swap_faces([(batch[k][1], plans[index].target) for k, index in swaps], trained) if swaps else []
    swapped = dict(zip([k for k, _ in swaps], outputs))
    for k, (index, frame) in enumerate(batch):
        plan = plans[index] if index < len(plans) else _FramePlan(status="protected", reason="frame not in alignments")
        out = frame.copy()
        status, reason, distance = plan.status, plan.reason, None
        if k in swapped:
            face, learned = swapped[k]
            out_matrix = frame_to_model(plan.target, trained.output_size, trained.centering, trained.coverage)
            mask = _mask(plan.target, out_matrix, trained.output_size, learned, config)
            paste(out, face, mask, out_matrix, config.color)
            # A weak model can paste back a face that is still the original person: check it here, on the
            # frame itself, so a bad swap degrades into protection, never into exposure.
            distance = float(np.linalg.norm(identity.embed(out, plan.target).astype(np.float64)
                                            - originals.embedding(index, frame, plan.target)))
            if distance < protect.match_threshold and config.fallback != "none":
                status = "swap-reidentified"
                reason = (reason + "; " if reason else "") + f"swapped face {distance:.3f} from the original"
                plan.protect.append(plan.target)
                plan.protect_sizes.append(_face_size(plan.target))
            else:
                swapped_at[index] = _bounds(plan.target)
                distances[index] = distance
        protected = 0
        if config.fallback != "none":
            for hull, size in zip(plan.protect, plan.protect_sizes):
                region = face_region_mask(out.shape[:2], np.concatenate([hull, box_hull(_hull_box(hull))]), grow=0.15)
                out = obfuscate(out, region, config.fallback, size)
                protected += 1
            for region in plan.guard:
                size = float(max(region.box[2] - region.box[0], region.box[3] - region.box[1]))
                out = obfuscate(out, box_region(out.shape[:2], region.box, protect.grow), config.fallback, size)
                protected += 1
        writer.write(out)
        if config.save_frames:
            write_image(out_path.parent / f"{out_path.stem}_frames" / f"{index:06d}.png", cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
        unprotected = len(plan.protect) + len(plan.guard) - protected
        rows.append([index, status, int(k in swapped), protected, unprotected, reason,
                     "" if distance is None else round(distance, 4)])


def _hull_box(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    x0, y0 = landmarks.min(0)
    x1, y1 = landmarks.max(0)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def _swap_faces(items: list[tuple[np.ndarray, np.ndarray]], trained: Trained) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Cut each target face at the model's crop, run encoder -> decoder B, return RGB uint8 + learned mask."""
    size = trained.input_size
    crops = [cv2.warpAffine(frame, frame_to_model(lm, size, trained.centering, trained.coverage), (size, size),
                            flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE) for frame, lm in items]
    x = torch.from_numpy(np.stack(crops)).to(trained.device).permute(0, 3, 1, 2).float().div_(255)
    rgb, mask = trained.model(x, "b")
    faces = (rgb.float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    masks = mask.float().clamp(0, 1)[:, 0].cpu().numpy() if mask is not None else [None] * len(faces)
    return list(zip(faces, masks))


def _mask(landmarks: np.ndarray, out_matrix: np.ndarray, size: int, learned: np.ndarray | None,
          config: ConvertConfig) -> np.ndarray:
    if config.mask == "learned" and learned is not None:
        hard = (learned > 0.5).astype(np.uint8) * 255
    else:
        hard = hull_mask(transform_points(landmarks, out_matrix), size, config.mask)
    return soften_mask(hard, config.mask_erosion, config.mask_blur)


def _write_frames_csv(path: Path, rows: list[list[Any]], report: LeakReport) -> None:
    leaks, unconfirmed = report.by_frame(), report.unconfirmed_by_frame()
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["frame", "status", "swapped", "protected", "unprotected", "reason", "swap_distance",
                     "checked", "leaks"])
    for row in rows:
        found = leaks.get(row[0], [])
        writer.writerow([row[0], "LEAK" if found else row[1], *row[2:], int(row[0] % report.every == 0),
                         "; ".join([leak.describe() for leak in found]
                                   + [f"unconfirmed: {u.describe()}" for u in unconfirmed.get(row[0], [])])])
    write_text(path, buffer.getvalue())


def _summary(rows: list[list[Any]], config: ConvertConfig, seconds: float, out_path: Path,
             report: LeakReport, frames_csv: Path) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[1]] = counts.get(row[1], 0) + 1
    unprotected = sum(row[4] for row in rows)
    summary = {"frames": len(rows), "status": counts, "faces_protected": sum(row[3] for row in rows),
               "faces_unprotected": unprotected, "leak_check": report.as_json(), "seconds": round(seconds, 2),
               "frames_per_second": round(len(rows) / seconds, 2) if seconds else None, "output": str(out_path)}
    log.info("%s: %s; leak check (%s, %d frames): %d leaks", out_path.name,
             ", ".join(f"{v} {k}" for k, v in sorted(counts.items())), report.checker, report.frames_checked,
             len(report.leaks))
    if unprotected:
        log.warning("WARNING: %d face(s) in %d frame(s) were left UNPROTECTED (fallback: none); see %s",
                    unprotected, sum(1 for r in rows if r[4]), frames_csv)
    return summary
