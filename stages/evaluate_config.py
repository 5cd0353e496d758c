"""The `evaluate:` section of pipeline.yaml: how a de-identification run (or any pair of videos) is scored.

Kept apart from pipeline/config.py so the evaluate stage and its tests import nothing from the
loader; validation follows the same rule: a wrong value is a ConfigError naming `evaluate.<key>`.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from deid.core.errors import ConfigError
from deid.models.face_distance import SAME_PERSON_DISTANCE

ParrotMode = Literal["auto", "blur", "pixelate", "none"]


@dataclass(frozen=True)
class EvaluateConfig:
    frames: int = 1000                      # frames sampled (same indices in both videos); all if fewer
    seed: int = 0                           # seed of the frame sample
    threshold: float = SAME_PERSON_DISTANCE  # face_recognition distance below which a face is "the same person"
    au: str = "auto"                        # a registered AU source (reports/au_source/); auto = pyfeat where its
                                            # weights are present, else blendshapes; table sources need
                                            # au_original/au_swapped
    au_original: Path | None = None         # AU table of the original (py-feat CSV or OpenFace CSV)
    au_swapped: Path | None = None          # AU table of the swapped video
    gallery: Path | None = None             # folder with one sub-folder of photos per person: rank-1/5 identification
    parrot: ParrotMode = "auto"             # parrot attack: auto-detect blur/pixelation, force one, or skip
    pyfeat_model_dir: Path | None = None    # py-feat weights in the Hugging Face hub cache layout (offline)
    min_face_size: int = 40                 # smallest face evaluated, px of the full-size frame
    detector: str = "mtcnn"                 # face detector of the identity pass
    detect_side: int = 360                  # detection runs on frames shrunk to this short side (landmarks: full size)
    batch_size: int = 8                     # frame pairs per batch (detection, py-feat); bounds memory
    max_reid_times: int = 20                # re-identified frame times listed in the verdict / summary
    donor_share: float = 0.5                # verdict: "became the donor" when SW-SW < threshold in this share of frames
    expression_pcc: float = 0.5             # verdict: "expression kept" needs AU PCC (else every informative
                                            # landmark measure's r, reports/expression.py) above this
    pose_mae: float = 5.0                   # verdict: ... and head-pose mean absolute error <= this, degrees
    metrics: tuple[str, ...] | None = None  # registered metrics (reports/metrics/) to run; None = all of them
    noise_frames: int = 60                  # sampled original frames re-encoded (libx264 crf 23) and landmarked
                                            # again: the re-encode noise calibrating the expression measure

    def __post_init__(self) -> None:
        _int("frames", self.frames, 1, 10**7)
        _int("seed", self.seed, 0, 2**32 - 1)
        _int("min_face_size", self.min_face_size, 12, 4096)
        _int("batch_size", self.batch_size, 1, 1024)
        _int("max_reid_times", self.max_reid_times, 0, 10**6)
        _int("detect_side", self.detect_side, 64, 8192)
        _int("noise_frames", self.noise_frames, 0, 10**6)
        from deid.models.detectors import DETECTORS

        DETECTORS.get(self.detector, "evaluate.detector")
        for key, low, high in (("donor_share", 0.0, 1.0), ("expression_pcc", -1.0, 1.0), ("pose_mae", 0.0, 180.0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= float(value) <= high:
                raise ConfigError(f"evaluate.{key} must be a number in {low:g}..{high:g}, got {value!r}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not 0.0 < float(self.threshold) < 2.0:
            raise ConfigError(f"evaluate.threshold must be a number in 0..2 (face_recognition distance), got {self.threshold!r}")
        _choice("parrot", self.parrot, typing.get_args(ParrotMode))
        if self.metrics is not None:
            if isinstance(self.metrics, str) or not isinstance(self.metrics, (list, tuple)):
                raise ConfigError(f"evaluate.metrics must be a list of metric names (or null for all), "
                                  f"got {self.metrics!r}")
            from deid.reports.metrics import METRICS

            for name in self.metrics:
                METRICS.get(name if isinstance(name, str) else repr(name), "evaluate.metrics")
            object.__setattr__(self, "metrics", tuple(self.metrics))  # frozen configs are hashed
        for key in ("au_original", "au_swapped", "gallery", "pyfeat_model_dir"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, (str, Path)):
                raise ConfigError(f"evaluate.{key} must be a path, got {value!r}")
            if isinstance(value, str):
                object.__setattr__(self, key, Path(value))
        from deid.reports.au_source import AU_SOURCES

        AU_SOURCES.get(self.au, "evaluate.au")
        if self.au == "auto":
            # Resolved here, so the manifest, the summary and `deid compare` name the source that really ran.
            from deid.reports.au_source.blendshapes import default_source

            object.__setattr__(self, "au", default_source(self))
        if AU_SOURCES.get(self.au, "evaluate.au").needs_tables:
            for key in ("au_original", "au_swapped"):
                if getattr(self, key) is None:
                    raise ConfigError(f"evaluate.{key} is required with evaluate.au: {self.au} (the AU table computed elsewhere)")


def _int(key: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"evaluate.{key} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"evaluate.{key} must be in {low}..{high}, got {value}")


def _choice(key: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"evaluate.{key} must be one of {', '.join(allowed)}, got {value!r}")
