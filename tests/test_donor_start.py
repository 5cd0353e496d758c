"""Which pairs of a batch start from another pair's model (pipeline/donor_start.py): pure planning."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from deid.pipeline.config import PipelineConfig
from deid.pipeline.donor_start import plan_donor_starts, with_start


def _pair(name: str, donor: str, tmp_path: Path, **train) -> PipelineConfig:
    base = PipelineConfig()
    return dataclasses.replace(base, pair=name, runs_dir=tmp_path / "runs", target=tmp_path / f"{name}.mp4",
                               donor=tmp_path / donor, train=dataclasses.replace(base.train, **train))


def test_later_pairs_with_the_first_pairs_donor_start_from_its_model(tmp_path):
    pairs = [_pair("a", "m.mp4", tmp_path), _pair("b", "f.mp4", tmp_path), _pair("c", "m.mp4", tmp_path),
             _pair("d", "m.mp4", tmp_path, width=64),          # another architecture: its own group
             _pair("e", "m.mp4", tmp_path, share_donor_model=False),
             _pair("f", "m.mp4", tmp_path, init_from=tmp_path / "mine"),
             _pair("g", "m.mp4", tmp_path, width=64)]
    starts = plan_donor_starts(pairs)
    assert {name: s.source for name, s in starts.items()} == {"c": "a", "g": "d"}
    assert starts["c"].model_dir == tmp_path / "runs" / "a" / "model"
    started = with_start(pairs[2], starts["c"], source_ok=True)
    assert started.train.init_from == tmp_path / "runs" / "a" / "model"
    assert with_start(pairs[2], starts["c"], source_ok=False) == pairs[2]  # the source failed: from scratch
    assert with_start(pairs[0], None, source_ok=True) == pairs[0]
