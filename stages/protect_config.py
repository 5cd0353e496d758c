"""The `protect:` section of pipeline.yaml: the protection pass and the leak check shared by convert,
baseline and `deid protect`.

The protection pass searches every frame with a detector configured for recall and hides every face it
finds that is not the swapped target, holding each hidden region over detection gaps. The leak check then
reads the written video with a different detector and face_recognition embeddings; an output with a
leak is not published under its final name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from deid.core.errors import ConfigError
from deid.models.face_distance import SAME_PERSON_DISTANCE

Audio = Literal["keep", "drop"]


@dataclass(frozen=True)
class ProtectConfig:
    method: str = "mask"            # obfuscation of every found face (protect, baseline): mask | blur | pixelate
    search: str = "centerface"      # recall detector of the protection pass (models/search/; a+b = both)
    checker: str = "mtcnn"          # leak check detector: must differ from `search`
    min_face: int = 12              # smallest face searched for, px of the frame
    hold: int = 5                   # a hidden region stays hidden this many frames before and after each detection
    track_gap: int = 25             # a face's box is interpolated across detection gaps up to this many frames
    grow: float = 0.3               # hidden region = detector box grown by this share (and raised over the hair)
    check_every: int = 1            # leak check reads every N-th output frame (1 = all)
    repair_rounds: int = 2          # hide what the check found (held in time) and check again, at most N times
    match_threshold: float = SAME_PERSON_DISTANCE  # face_recognition distance below which an output face still is the original person
    batch_size: int = 8             # frames per detector batch
    audio: Audio = "keep"           # keep or drop the audio track (a voice identifies too)

    def __post_init__(self) -> None:
        from deid.models.search import names
        from deid.stages.obfuscation import OBFUSCATIONS

        OBFUSCATIONS.get(self.method, "protect.method")
        for key in ("search", "checker"):
            if getattr(self, key) not in names():
                raise ConfigError(f"protect.{key} must be one of {', '.join(names())}; got {getattr(self, key)!r}")
        shared = set(self.search.split("+")) & set(self.checker.split("+"))  # a union search names its parts
        if shared:
            raise ConfigError(f"protect.checker must not share a detector with protect.search ({self.search} and "
                              f"{self.checker} both use {', '.join(sorted(shared))}): the leak check has to be "
                              "independent of the pass it checks")
        for key, low, high in (("min_face", 6, 4096), ("hold", 0, 1000), ("track_gap", 0, 100000),
                               ("check_every", 1, 100000), ("repair_rounds", 0, 10), ("batch_size", 1, 1024)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"protect.{key} must be an integer in {low}..{high}, got {value!r}")
        if not 0.0 <= self.grow <= 2.0:
            raise ConfigError(f"protect.grow must be in 0..2, got {self.grow}")
        if not 0.0 < self.match_threshold < 2.0:
            raise ConfigError(f"protect.match_threshold must be in 0..2, got {self.match_threshold}")
