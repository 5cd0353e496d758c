"""Pairs of a batch that share a donor start from the first such pair's model (`train.share_donor_model`).

faceswap and DeepFaceLab users reuse a trained model by hand ("load weights", pretrained models). In a
batch (`deid batch`, `deid ravdess`) the common case is one donor for many people to hide: the first
pair with that donor trains from scratch, every later one (manifest order) starts from its encoder and
decoder B (`train.init_from`, stages/train.py: decoder B only when the donors are the same person by
face_recognition). A later pair waits for the first one's training; if that fails, it trains from scratch.

A pair joins only when it sets no `train.init_from` of its own, keeps `train.share_donor_model` on, and
trains the same architecture as the first pair (otherwise the weights would not fit).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

from deid.pipeline.config import PipelineConfig
from deid.pipeline.workflow import layout

log = logging.getLogger("deid.batch")

_ARCHITECTURE = ("model", "input_size", "output_size", "width", "latent", "centering", "coverage")


@dataclasses.dataclass(frozen=True)
class DonorStart:
    pair: str      # the pair that starts from another's model
    source: str    # the pair whose model it starts from
    model_dir: Path


def plan_donor_starts(configs: Sequence[PipelineConfig]) -> dict[str, DonorStart]:
    """Pair name -> where it starts from, for every pair that shares its donor with an earlier pair."""
    first: dict[tuple, PipelineConfig] = {}
    starts = {}
    for config in configs:
        train = config.train
        if not train.share_donor_model or train.init_from is not None:
            continue
        key = (str(Path(config.donor).resolve()), config.device,
               *(getattr(train, k) for k in _ARCHITECTURE))
        if key not in first:
            first[key] = config
            continue
        source = first[key]
        starts[config.pair] = DonorStart(config.pair, source.pair, layout(source).model_dir)
    for start in starts.values():
        log.info("pair %s starts from pair %s's model (same donor; train.share_donor_model)", start.pair,
                 start.source)
    return starts


def is_trained(model_dir: Path) -> bool:
    """Whether a pair's training left a model to start from (a committed checkpoint)."""
    return (Path(model_dir) / "state.json").is_file() and (Path(model_dir) / "model.pt").is_file()


def with_start(config: PipelineConfig, start: DonorStart | None, source_ok: bool) -> PipelineConfig:
    """The pair's config with train.init_from set to its source's model, or unchanged when it has no source
    or the source's training failed (then it trains from scratch, and says so)."""
    if start is None:
        return config
    if not source_ok:
        log.warning("pair %s: pair %s's training failed, so it trains from scratch", config.pair, start.source)
        return config
    return dataclasses.replace(config, train=dataclasses.replace(config.train, init_from=start.model_dir))
