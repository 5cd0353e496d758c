"""The `extract:` section of pipeline.yaml: how faces are found, aligned and saved for training."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from deid.core.errors import ConfigError
from deid.core.settings import check_range
from deid.models.alignment import Centering

MaskName = Literal["components", "extended"]

@dataclass(frozen=True)
class ExtractConfig:
    detector: str = "mtcnn"  # a registered detector (models/detectors.py DETECTORS)
    size: int = 256
    centering: Centering = "head"
    every: int = 1
    detect_every: int = 1
    min_face_size: int = 40
    min_score: float = 0.9
    detect_scale: float = 1.0
    batch_size: int = 8
    masks: tuple[MaskName, ...] = ("components", "extended")
    identity: bool = False
    save_frames: bool = False

    def __post_init__(self) -> None:
        from deid.models.detectors import DETECTORS

        DETECTORS.get(self.detector, "extract.detector")
        check_range("extract.size", self.size, 32, 2048)
        check_range("extract.every", self.every, 1, 100000)
        check_range("extract.detect_every", self.detect_every, 1, 1000)
        check_range("extract.min_face_size", self.min_face_size, 12, 4096)
        check_range("extract.batch_size", self.batch_size, 1, 1024)
        if not 0.0 <= self.min_score <= 1.0:
            raise ConfigError(f"extract.min_score must be in 0..1, got {self.min_score}")
        if not 0.05 <= self.detect_scale <= 1.0:
            raise ConfigError(f"extract.detect_scale must be in 0.05..1.0, got {self.detect_scale}")
