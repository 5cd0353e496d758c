"""The `convert:` section of pipeline.yaml: how the swapped face is blended back, and what hides a frame
the swap cannot cover."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from deid.core.errors import ConfigError
from deid.core.settings import check_range

SmoothingName = Literal["one-euro", "none"]


@dataclass(frozen=True)
class ConvertConfig:
    fallback: str = "black"  # a registered obfuscation (stages/obfuscation/), or none
    color: str = "avg"       # a registered colour correction (stages/colour/)
    mask: str = "extended"   # a registered mask (stages/masks/)
    mask_erosion: float = 0.03
    mask_blur: float = 0.025
    smoothing: SmoothingName = "one-euro"
    smooth_min_cutoff: float = 1.0
    smooth_beta: float = 0.05
    max_gap: int = 5
    crf: int = 18
    batch_size: int = 16
    save_frames: bool = False

    def __post_init__(self) -> None:
        from deid.stages.colour import COLOURS
        from deid.stages.masks import MASKS
        from deid.stages.obfuscation import OBFUSCATIONS

        if self.fallback != "none":
            OBFUSCATIONS.get(self.fallback, "convert.fallback")
        COLOURS.get(self.color, "convert.color")
        MASKS.get(self.mask, "convert.mask")
        check_range("convert.crf", self.crf, 0, 51)
        check_range("convert.batch_size", self.batch_size, 1, 4096)
        check_range("convert.max_gap", self.max_gap, 0, 10000)
        if not -0.2 <= self.mask_erosion <= 0.2:
            raise ConfigError(f"convert.mask_erosion must be in -0.2..0.2 (share of the face size), got {self.mask_erosion}")
        if not 0.0 <= self.mask_blur <= 0.2:
            raise ConfigError(f"convert.mask_blur must be in 0..0.2 (share of the face size), got {self.mask_blur}")
        if self.smooth_min_cutoff <= 0 or self.smooth_beta < 0:
            raise ConfigError("convert.smooth_min_cutoff must be > 0 and convert.smooth_beta >= 0")
