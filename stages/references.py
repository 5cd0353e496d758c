"""Picking a reference photo of a person from their own footage, when none is configured.

The evaluate stage compares frames against a photo of each person. Without one in pipeline.yaml, the
pair's own clean faces supply it: the most frontal face among the sharper half, saved as a full frame
PNG so the report can show and name it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from deid.core.errors import DeidError
from deid.models.alignment import transform_points
from deid.models.face_quality import focus_measure, head_pose
from deid.stages.alignments import load_alignments
from deid.stages.image_file import write_image
from deid.stages.media import iter_frames, probe

log = logging.getLogger("deid.references")


def pick_reference(faces_dir: Path, source: Path, out_png: Path) -> Path:
    """Write the chosen frame of `source` to `out_png` and return it."""
    alignments = load_alignments(faces_dir)
    size, centering = alignments.extractor["size"], alignments.extractor["centering"]
    scored = []
    for ref in alignments.faces():
        crop = cv2.imread(str(ref.image), cv2.IMREAD_COLOR)
        if crop is None:
            continue
        yaw, pitch, _ = head_pose(transform_points(ref.landmarks, ref.matrix), size)
        scored.append((ref.frame, focus_measure(crop, centering), abs(yaw) + abs(pitch)))
    if not scored:
        raise DeidError(f"{faces_dir}: no kept face to take a reference photo from; set target_references / "
                        "donor_references in pipeline.yaml")
    sharp = np.median([s[1] for s in scored])
    frame_index = min((s for s in scored if s[1] >= sharp), key=lambda s: s[2])[0]
    for index, frame in iter_frames(probe(source)):
        if index == frame_index:
            write_image(Path(out_png), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            log.info("reference for %s: frame %d (sharp and most frontal) -> %s", source.name, frame_index, out_png)
            return Path(out_png)
    raise DeidError(f"{source}: frame {frame_index} not found while picking a reference; re-extract it")
