"""`deid baseline`: the naive de-identification methods from the literature, for side-by-side evaluation.

Every face is hidden with `mask` (solid fill, the default), `blur` or `pixelate`: the faces the extract
found (their landmark hulls) and everything the protection pass finds on top (stages/guard.py), held
over detection gaps, then the leak check reads the output back before it is published. It is
`deid protect` plus the extraction's hulls. Blur and pixelate are kept because the literature uses
them; evaluate's parrot attack shows why they are weaker than their naive scores suggest.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from deid.core.errors import DeidError
from deid.stages.alignments import load_alignments
from deid.stages.convert_inputs import check_matches
from deid.stages.media import probe
from deid.stages.protect import Hull, protect_video
from deid.stages.protect_config import ProtectConfig

log = logging.getLogger("deid.baseline")


def baseline(video: Path, faces_dir: Path, out_path: Path, config: ProtectConfig, crf: int = 18,
             device: str = "auto", allow_leaks: bool = False, progress: bool = True,
             allow_damaged: bool = False) -> dict[str, Any]:
    info = probe(video, allow_damaged)
    if info.kind != "video":
        raise DeidError(f"{video}: baseline needs a video file")
    alignments = load_alignments(faces_dir)
    check_matches(info, alignments, faces_dir)
    known = []
    for index in range(info.frames):
        hulls = []
        for face in alignments.frames.get(str(index), []):
            points = np.asarray(face["landmarks"], np.float64)
            hulls.append(Hull(points, float(max(face["box"][2], face["box"][3]))))
        known.append(hulls)
    summary = protect_video(video, out_path, config, device=device, crf=crf, allow_leaks=allow_leaks,
                            progress=progress, known=known, label="baseline", allow_damaged=allow_damaged)
    summary["faces_extracted"] = sum(len(h) for h in known)
    return summary
