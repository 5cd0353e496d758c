"""The `clean:` section of pipeline.yaml: which extracted faces are kept for training."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from deid.core.errors import ConfigError
from deid.core.settings import check_range
from deid.models.face_distance import SAME_PERSON_DISTANCE

ReferenceMode = Literal["mean", "closest"]


@dataclass(frozen=True)
class CleanConfig:
    threshold: float = SAME_PERSON_DISTANCE
    reference_mode: ReferenceMode = "mean"
    min_size: int = 40
    blur: bool = True
    blur_ratio: float = 0.35
    max_landmark_distance: float = 0.1
    max_yaw: float = 50.0
    max_pitch: float = 40.0
    dedupe: bool = False
    dedupe_threshold: float = 3.0
    max_faces: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 2.0:
            raise ConfigError(f"clean.threshold must be in 0..2 (face_recognition distance), got {self.threshold}")
        check_range("clean.min_size", self.min_size, 0, 4096)
        check_range("clean.max_faces", self.max_faces, 0, 10**7)
        for key in ("blur_ratio", "max_landmark_distance", "max_yaw", "max_pitch", "dedupe_threshold"):
            if getattr(self, key) < 0:
                raise ConfigError(f"clean.{key} must be >= 0, got {getattr(self, key)}")
