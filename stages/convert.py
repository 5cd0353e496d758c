"""Convert: swap the target's face in every frame, blend it in, protect every face it cannot swap.

Inputs: the video, its alignments at every frame (an extract folder, or a clean folder whose kept face
per frame is the target), and a trained model folder. Output: `<name>.mp4` with the source's frame
count, frame rate, displayed size and audio, and `frames.csv` next to it listing what happened to every
frame.

The stage is a chain of steps, each built once from the config, in this order:

  plan     every frame at once, before touching a pixel: the target's landmarks and every face to hide
           (stages/convert_plan.py)
  swap     the target's face through encoder -> decoder B, a batch of frames at a time
  mask     which of its pixels are kept (convert.mask: stages/masks/), eroded and feathered
  colour   its colours matched to the frame (convert.color: stages/colour/)
  paste    blended into the frame under the mask
  protect  the identity check of the pasted face, then the fallback over every face to hide
           (convert.fallback: stages/obfuscation/, or none)

(swap to protect: stages/convert_steps.py.) Per frame, privacy first ("fail closed"):
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

import logging
import time
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import cv2
import numpy as np
import torch

from deid.core.atomic import writable_folder
from deid.core.errors import DeidError
from deid.models.device import resolve_device
from deid.stages.alignments import load_alignments
from deid.stages.convert_config import ConvertConfig
from deid.stages.convert_inputs import check_matches, load_trained, source_alignments
from deid.stages.convert_log import FrameLog
from deid.stages.convert_plan import FramePlan, PlanFrames, bounds
from deid.stages.convert_steps import (
    CheckIdentity,
    Colour,
    FrameItem,
    FrameStep,
    Hide,
    LeaveInClear,
    Mask,
    Paste,
    Swap,
    hidden_regions,
)
from deid.stages.image_file import write_image
from deid.stages.leak_check import check_output
from deid.stages.masks import MASKS
from deid.stages.media import iter_frames, probe
from deid.stages.obfuscate import is_solid
from deid.stages.progress import progress_bar
from deid.stages.protect import warn_if_weak
from deid.stages.protect_config import ProtectConfig
from deid.stages.publish import (
    frames_csv_path,
    publish,
    raise_if_leaky,
    refuse_to_replace,
    unchecked_path,
)
from deid.stages.video_writer import VideoWriter

log = logging.getLogger("deid.convert")


def convert(video: Path, faces_dir: Path, model_dir: Path, out_path: Path, config: ConvertConfig,
            device: str = "auto", progress: bool = True, protect: ProtectConfig | None = None,
            allow_leaks: bool = False, allow_damaged: bool = False) -> dict[str, Any]:
    """Run the stage; returns the summary recorded in the manifest. Raises LeakError for a leaking output."""
    protect = protect or ProtectConfig()
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".mp4":
        raise DeidError(f"{out_path}: the output must be an .mp4 file")
    refuse_to_replace([Path(video)], out_path)
    writable_folder(out_path.parent)
    info = probe(video, allow_damaged)
    if info.kind != "video":
        raise DeidError(f"{video}: convert needs a video file; image folders have no frame rate or audio to keep")
    alignments = load_alignments(faces_dir)
    all_faces = source_alignments(alignments, Path(faces_dir))
    check_matches(info, alignments, faces_dir)
    dev = resolve_device(device)
    trained = load_trained(model_dir, dev)
    mask_kind = MASKS.get(config.mask, "convert.mask")
    if mask_kind.needs_learned_mask and not trained.model.learns_mask:
        raise DeidError(f"{model_dir}: model {trained.model.name} has no learned mask; use --mask extended")
    if config.fallback == "none":
        log.warning("WARNING: fallback none: faces that cannot be swapped stay in clear; the leak check will report them")
    else:
        warn_if_weak(config.fallback, "convert --fallback")
    start = time.perf_counter()

    plans = PlanFrames(config, protect, dev, progress).process(alignments, all_faces, info)
    swap = Swap(trained)
    steps: tuple[FrameStep, ...] = (
        Mask(mask_kind(), config.mask_erosion, config.mask_blur, trained.output_size),
        Colour(config.color),
        Paste(),
        CheckIdentity(protect.match_threshold, escalate=config.fallback != "none"),
        LeaveInClear() if config.fallback == "none" else Hide(config.fallback, protect.grow),
    )

    written = unchecked_path(out_path)
    frame_log = FrameLog()
    with VideoWriter(written, info, crf=config.crf, audio=protect.audio == "keep") as writer, \
            progress_bar(info.frames, f"convert {info.path.name}", "frame", progress) as bar:
        for batch in _batches(iter_frames(info), config.batch_size):
            for item in _run_steps(batch, plans, swap, steps):
                writer.write(item.out)
                if config.save_frames:
                    write_image(out_path.parent / f"{out_path.stem}_frames" / f"{item.index:06d}.png",
                                cv2.cvtColor(item.out, cv2.COLOR_RGB2BGR))
                frame_log.add(item)
            bar.update(len(batch))
        if writer.frames != len(plans):
            raise DeidError(f"{video}: decoded {writer.frames} frames but the alignments list {len(plans)}; "
                            "re-extract this video")

    solid = _solid_fill(plans, protect.grow) if is_solid(config.fallback) else None
    report = check_output(written, info, protect, dev, progress, swapped_at=frame_log.swapped_at, solid=solid,
                          swap_distances=frame_log.distances, original_faces=[_known_faces(p) for p in plans],
                          frames=len(plans))
    where = publish(written, out_path, report, allow_leaks)
    seconds = time.perf_counter() - start
    frame_log.write_csv(frames_csv_path(out_path), report)
    summary = frame_log.summary(seconds, where, report, frames_csv_path(out_path))
    if info.damage:
        summary["damaged_input"] = info.damage
    raise_if_leaky(report, out_path, allow_leaks)
    return summary


def _batches(frames: Iterable[tuple[int, np.ndarray]], size: int) -> Iterator[list[tuple[int, np.ndarray]]]:
    frames = iter(frames)
    while batch := list(islice(frames, size)):
        yield batch


@torch.inference_mode()
def _run_steps(batch: list[tuple[int, np.ndarray]], plans: list[FramePlan], swap: Swap,
               steps: tuple[FrameStep, ...]) -> list[FrameItem]:
    """One batch through the swap, then each frame through the per-frame steps in order."""
    done = []
    for item in swap.process([FrameItem.start(index, frame, plans) for index, frame in batch]):
        for step in steps:
            item = step.process(item)
        done.append(item)
    return done


def _solid_fill(plans: list[FramePlan], grow: float) -> Callable[[int, tuple[int, int]], np.ndarray]:
    """Where each frame was filled solid: the leak check may count a detection inside it as empty."""
    def union(index: int, shape: tuple[int, int]) -> np.ndarray:
        mask = np.zeros(shape, np.uint8)
        for region, _ in hidden_regions(shape, plans[index], grow):
            mask |= region
        return mask
    return union


def _known_faces(plan: FramePlan) -> np.ndarray:
    """x0, y0, x1, y1 of the faces known in the original frame: the target and what the search found."""
    boxes = [bounds(plan.target)] if plan.target is not None else []
    boxes += [tuple(r.box[:4]) for r in plan.guard if r.why == "detected"]
    return np.asarray(boxes, np.float64).reshape(-1, 4)
