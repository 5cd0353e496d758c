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
  no face       nothing to do
Only `fallback: none` leaves faces untouched, and then the summary warns about every one.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from models.alignment import hull_mask, transform_points
from models.device import resolve_device
from models.swap import SwapModel, build_model
from pipeline.atomic import write_image, write_json, write_text
from pipeline.config import ConvertConfig
from pipeline.errors import DeidError
from pipeline.runner import hash_input
from stages import checkpoint
from stages.alignments import Alignments, load_alignments
from stages.blend import paste, soften_mask
from stages.media import MediaInfo, iter_frames, probe
from stages.obfuscate import box_hull, face_region_mask, obfuscate
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


def load_trained(model_dir: Path, device: torch.device) -> Trained:
    saved = checkpoint.load(Path(model_dir), device)
    if saved is None:
        raise DeidError(f"{model_dir}: no trained model (no state.json); run `deid train` first")
    frozen = saved.state.get("frozen", {})
    try:
        arch = {k: frozen[k] for k in ("input_size", "output_size", "width", "latent") if k in frozen}
        model = build_model(frozen["model"], **arch)
        model.load_state_dict(saved.model)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise DeidError(f"{model_dir}: model.pt does not match its state.json ({str(exc).splitlines()[0]}); "
                        "retrain or restore the folder from best/") from None
    model.to(device).eval()
    return Trained(model=model, centering=frozen.get("centering", "face"), coverage=float(frozen["coverage"]),
                   device=device)


def convert(video: Path, faces_dir: Path, model_dir: Path, out_path: Path, config: ConvertConfig,
            device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Run the stage; returns the summary recorded in the manifest."""
    info = probe(video)
    if info.kind != "video":
        raise DeidError(f"{video}: convert needs a video file; image folders have no frame rate or audio to keep")
    alignments = load_alignments(faces_dir)
    all_faces = _source_alignments(alignments)
    _check_matches(info, alignments, faces_dir)
    trained = load_trained(model_dir, resolve_device(device))
    if config.mask == "learned" and not trained.model.learns_mask:
        raise DeidError(f"{model_dir}: model {trained.model.name} has no learned mask; use --mask extended")
    plans = plan_frames(alignments, all_faces, info, config)

    out_path = Path(out_path)
    rows: list[list[Any]] = []
    start = time.perf_counter()
    bar = tqdm(total=info.frames, unit="frame", desc=f"convert {info.path.name}", disable=not progress,
               dynamic_ncols=True)
    with VideoWriter(out_path, info, crf=config.crf) as writer:
        batch: list[tuple[int, np.ndarray]] = []
        for index, frame in iter_frames(info):
            batch.append((index, frame))
            if len(batch) == config.batch_size:
                _process(batch, plans, trained, config, writer, rows, out_path)
                bar.update(len(batch))
                batch = []
        if batch:
            _process(batch, plans, trained, config, writer, rows, out_path)
            bar.update(len(batch))
        bar.close()
        if writer.frames != len(plans):
            raise DeidError(f"{video}: decoded {writer.frames} frames but the alignments list {len(plans)}; "
                            "re-extract this video")
    seconds = time.perf_counter() - start
    _write_frames_csv(out_path.with_name(out_path.stem + ".frames.csv"), rows)
    return _summary(rows, config, seconds, out_path)


def _source_alignments(alignments: Alignments) -> Alignments:
    """All detected faces of the video: a clean folder's source extract, or the folder itself."""
    source = alignments.data.get("cleaner", {}).get("source")
    if source and Path(source, "alignments.json").is_file():
        return load_alignments(Path(source))
    return alignments


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


@torch.inference_mode()
def _process(batch: list[tuple[int, np.ndarray]], plans: list[_FramePlan], trained: Trained, config: ConvertConfig,
             writer: VideoWriter, rows: list[list[Any]], out_path: Path) -> None:
    swaps = [(k, index) for k, (index, _) in enumerate(batch) if index < len(plans) and plans[index].target is not None]
    outputs = _swap_faces([(batch[k][1], plans[index].target) for k, index in swaps], trained) if swaps else []
    swapped = dict(zip([k for k, _ in swaps], outputs))
    for k, (index, frame) in enumerate(batch):
        plan = plans[index] if index < len(plans) else _FramePlan(status="protected", reason="frame not in alignments")
        out = frame.copy()
        if k in swapped:
            face, learned = swapped[k]
            out_matrix = frame_to_model(plan.target, trained.output_size, trained.centering, trained.coverage)
            mask = _mask(plan.target, out_matrix, trained.output_size, learned, config)
            paste(out, face, mask, out_matrix, config.color)
        protected = 0
        if config.fallback != "none":
            for hull, size in zip(plan.protect, plan.protect_sizes):
                region = face_region_mask(out.shape[:2], np.concatenate([hull, box_hull(_hull_box(hull))]), grow=0.15)
                out = obfuscate(out, region, config.fallback, size)
                protected += 1
        writer.write(out)
        if config.save_frames:
            write_image(out_path.parent / f"{out_path.stem}_frames" / f"{index:06d}.png", cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
        unprotected = len(plan.protect) - protected
        rows.append([index, plan.status, int(k in swapped), protected, unprotected, plan.reason])


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


def _write_frames_csv(path: Path, rows: list[list[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["frame", "status", "swapped", "protected", "unprotected", "reason"])
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def _summary(rows: list[list[Any]], config: ConvertConfig, seconds: float, out_path: Path) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[1]] = counts.get(row[1], 0) + 1
    unprotected = sum(row[4] for row in rows)
    summary = {"frames": len(rows), "status": counts, "faces_protected": sum(row[3] for row in rows),
               "faces_unprotected": unprotected, "seconds": round(seconds, 2),
               "frames_per_second": round(len(rows) / seconds, 2) if seconds else None, "output": str(out_path)}
    log.info("%s: %s", out_path.name, ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    if unprotected:
        log.warning("WARNING: %d face(s) in %d frame(s) were left UNPROTECTED (fallback: none); see %s",
                    unprotected, sum(1 for r in rows if r[4]), out_path.with_name(out_path.stem + ".frames.csv"))
    return summary
