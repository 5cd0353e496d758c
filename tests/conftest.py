"""Shared fixtures: the real test media in tests/data and extractions reused across tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The real test media travel with the repository (tests/data/SOURCES.md: sources and licences).
SHARED_DATA = ROOT / "tests" / "data"

# Torch and OpenCV would otherwise each start a thread per core on top of each other.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_collection_modifyitems(config, items) -> None:
    """Mark `media` every test that reads the real test media (through `data_dir`, directly or by a fixture
    built on it): `-m "not media"` is the fast unit tier."""
    for item in items:
        if "data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.media)


def _tiny():
    from deid.stages.train_config import TrainConfig

    return TrainConfig(model="original", width=32, latent=128, iterations=30, batch_size=8, save_every=1000,
                       preview_every=0, identity_every=0, mixed_precision=False)


TINY = _tiny()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test media not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def extracted(tmp_path_factory, data_dir):
    """Extract a shared video once per session (default settings) and hand back its output folder."""
    from deid.pipeline.config import ExtractConfig
    from deid.stages.extract import extract

    cache: dict[str, Path] = {}

    def get(name: str, **overrides) -> Path:
        key = name + repr(sorted(overrides.items()))
        if key not in cache:
            out = tmp_path_factory.mktemp("extract")
            extract(data_dir / name, out, ExtractConfig(**overrides), device="cpu", progress=False)
            cache[key] = out
        return cache[key]

    return get


@pytest.fixture(scope="session")
def crowd(tmp_path_factory, data_dir):
    """bench/crowd.py's clip: one large face and seven of 16-40 px from the shared photos, 48 frames."""
    from deid.bench.crowd import build_crowd_clip

    return build_crowd_clip(data_dir, tmp_path_factory.mktemp("crowd") / "crowd.mp4")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, extracted) -> Path:
    """A deliberately small `original` (width 32, latent 128, 30 iterations) trained talking_1 -> talking_2.

    A plumbing model: the tests that use it check what convert does around the swap, not the swap quality."""
    from deid.stages.train import train

    model_dir = tmp_path_factory.mktemp("model")
    train(extracted("video/talking_1.mp4"), extracted("video/talking_2.mp4"), model_dir, TINY, device="cpu",
          progress=False)
    return model_dir
