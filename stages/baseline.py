"""`deid baseline`: the naive de-identification methods from the literature, for side-by-side evaluation.

Every face the extract found in every frame is blurred, pixelated or masked (filled black), with the
same output guarantees as convert (frame count, rate, size, audio; atomic output; a frames.csv). The
evaluate stage's "parrot" attack shows why these are weaker than their naive scores suggest.
"""
from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from pipeline.atomic import write_text
from pipeline.errors import DeidError
from stages.alignments import load_alignments
from stages.convert import _check_matches, _hull_box
from stages.media import iter_frames, probe
from stages.obfuscate import box_hull, face_region_mask, obfuscate
from stages.video_writer import VideoWriter

log = logging.getLogger("deid.baseline")

BaselineMethod = Literal["blur", "pixelate", "mask"]


def baseline(video: Path, faces_dir: Path, out_path: Path, method: BaselineMethod, crf: int = 18,
             progress: bool = True) -> dict[str, Any]:
    info = probe(video)
    if info.kind != "video":
        raise DeidError(f"{video}: baseline needs a video file")
    alignments = load_alignments(faces_dir)
    _check_matches(info, alignments, faces_dir)
    out_path = Path(out_path)
    rows = []
    start = time.perf_counter()
    with VideoWriter(out_path, info, crf=crf) as writer:
        for index, frame in tqdm(iter_frames(info), total=info.frames, unit="frame", disable=not progress,
                                 desc=f"baseline {method}", dynamic_ncols=True):
            faces = alignments.frames.get(str(index), [])
            out = frame
            for face in faces:
                landmarks = np.asarray(face["landmarks"], np.float64)
                region = face_region_mask(frame.shape[:2], np.concatenate([landmarks, box_hull(_hull_box(landmarks))]),
                                          grow=0.15)
                out = obfuscate(out, region, method, float(max(face["box"][2], face["box"][3])))
            writer.write(np.ascontiguousarray(out))
            rows.append([index, "protected" if faces else "no face", len(faces), method])
    buffer = io.StringIO()
    table = csv.writer(buffer)
    table.writerow(["frame", "status", "faces", "method"])
    table.writerows(rows)
    write_text(out_path.with_name(out_path.stem + ".frames.csv"), buffer.getvalue())
    seconds = time.perf_counter() - start
    protected = sum(1 for r in rows if r[2])
    log.info("%s: %s applied to %d faces in %d/%d frames", out_path.name, method, sum(r[2] for r in rows),
             protected, len(rows))
    return {"frames": len(rows), "frames_with_faces": protected, "faces": sum(r[2] for r in rows),
            "method": method, "seconds": round(seconds, 2), "output": str(out_path)}
