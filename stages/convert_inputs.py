"""What convert reads, checked before any frame is: the trained model, and alignments that belong to the
video, cover every frame, and list every face of it (the bystanders too)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from deid.core.errors import DeidError
from deid.core.hashing import hash_input
from deid.models.swap import SwapModel
from deid.stages import checkpoint
from deid.stages.alignments import Alignments, load_alignments
from deid.stages.media import MediaInfo


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


def load_trained(model_dir: Path, device: torch.device) -> Trained:
    model, state = checkpoint.load_model(Path(model_dir), device)
    frozen = state["frozen"]
    return Trained(model=model, centering=frozen.get("centering", "face"), coverage=float(frozen["coverage"]),
                   device=device)


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


def check_matches(info: MediaInfo, alignments: Alignments, faces_dir: Path) -> None:
    """Stop unless the alignments were made from this video, at every frame, and finished."""
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
