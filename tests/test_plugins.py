"""Plugins: a colour correction, a mask, a detector, an obfuscation method, a swap model family, an AU
source and an evaluation metric, each in one throwaway file outside the repository, run through `deid convert` / `deid extract` /
`deid protect` / `deid train` / `deid evaluate` from the command line.

Nothing of deid is edited: the files are found through $DEID_PLUGINS (module names) and PYTHONPATH, as
docs/plugins.md says.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from deid.stages.media import iter_frames, probe
from tests.media_helpers import cut_clip

ROOT = Path(__file__).resolve().parents[1]

COLOUR = '''
import numpy as np
from deid.stages.colour import COLOURS

@COLOURS.register("test-grey")
class Grey:
    """Throwaway: the swapped face in flat mid-grey, so the test can see it was used."""
    def process(self, face, frame_region, inside):
        return np.full_like(face, 128)
'''

DETECTOR = '''
import os
from deid.models.detectors import DETECTORS, MtcnnDetector

@DETECTORS.register("test-counting")
def counting(device, min_face_size):
    """Throwaway: MTCNN that leaves a mark for each batch it sees."""
    inner = MtcnnDetector(device, min_face_size)

    class Counting:
        name = "test-counting"
        def detect(self, images):
            with open(os.environ["TEST_DETECTOR_LOG"], "a") as log:
                log.write(f"{len(images)}\\n")
            return inner.detect(images)
        def landmark_rect(self, face):
            return inner.landmark_rect(face)
    return Counting()
'''

OBFUSCATION = '''
import numpy as np
from deid.stages.obfuscation import OBFUSCATIONS

@OBFUSCATIONS.register("test-white")
class White:
    """Throwaway: a solid white fill."""
    solid = True
    weak = False
    def process(self, frame, face_size):
        return np.full_like(frame, 255)
'''

MASK = '''
import os
import numpy as np
from deid.stages.masks import MASKS

@MASKS.register("test-square")
class Square:
    """Throwaway: the whole square the model draws, and a line per call so the test can count them."""
    needs_learned_mask = False
    def process(self, landmarks, size, learned):
        with open(os.environ["TEST_MASK_LOG"], "a") as log:
            log.write(f"{size} {len(landmarks)} {learned is None}\\n")
        return np.full((size, size), 255, np.uint8)
'''

FAMILY = '''
from deid.models.swap import FAMILIES
from deid.models.swap.original import Original

@FAMILIES.register("test-small")
class Small(Original):
    """Throwaway: `original` with defaults of its own, 32 px in and out."""
    input_size = 32
    output_size = 32
    batch_size = 2

    def __init__(self, input_size=32, output_size=32, width=16, latent=32):
        super().__init__(input_size, output_size, width, latent)
'''

AU_SOURCE = '''
import pandas as pd
from deid.reports.au_source import AU_SOURCES, AuPlugin

@AU_SOURCES.register("test-brightness")
class Brightness(AuPlugin):
    """Throwaway: "AU" columns from each frame's mean R, G, B, so the test can see the frames streamed through."""
    def __init__(self, config, device):
        super().__init__(config, device)
        self.streaming = True
        self.rows = {"original": {}, "swapped": {}}

    def add(self, label, frames):
        for index, frame in frames:
            self.rows[label][index] = frame.reshape(-1, 3).mean(0) / 255

    def tables(self):
        return tuple(pd.DataFrame.from_dict(self.rows[side], orient="index", columns=["AU01", "AU02", "AU04"])
                     .rename_axis("frame") for side in ("original", "swapped"))
'''

METRIC = '''
from deid.reports.metrics import METRICS, Metric, MetricResult

@METRICS.register("test-red")
class Red(Metric):
    """Throwaway: the swapped frame's mean red level, so the test can see the frames streamed through."""
    description = "mean red of the swapped frame"
    def __init__(self, config):
        super().__init__(config)
        self.values = {}
    def add(self, sample):
        self.values[sample.index] = float(sample.swapped[..., 0].mean())
    def result(self):
        return MetricResult({"computed": True, "n": len(self.values), "mean": sum(self.values.values()) / len(self.values)},
                            self.values)
'''

PLUGINS = {"my_colour": COLOUR, "my_metric": METRIC, "my_detector": DETECTOR, "my_obfuscation": OBFUSCATION, "my_mask": MASK,
           "my_family": FAMILY, "my_au": AU_SOURCE}


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("plugins")
    for name, text in PLUGINS.items():
        (folder / f"{name}.py").write_text(text)
    return {**os.environ, "DEID_PLUGINS": ",".join(PLUGINS),
            "PYTHONPATH": str(folder)}


@pytest.fixture(scope="module")
def clip(tmp_path_factory, data_dir) -> Path:
    return cut_clip(data_dir / "video" / "talking_1.mp4", tmp_path_factory.mktemp("clip") / "clip.mp4", 0.6)


@pytest.fixture(scope="module")
def clip_faces(tmp_path_factory, clip) -> Path:
    from deid.pipeline.config import ExtractConfig
    from deid.stages.extract import extract

    faces = tmp_path_factory.mktemp("faces")
    extract(clip, faces, ExtractConfig(), device="cpu", progress=False)
    return faces


def _deid(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deid.pipeline.cli", "-q", *args], env=env, capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def test_plugin_names_reach_the_cli_choices(plugin_env):
    help_text = _deid(plugin_env, "convert", "--help").stdout
    assert "test-grey" in help_text and "test-white" in help_text and "test-square" in help_text
    assert "test-counting" in _deid(plugin_env, "extract", "--help").stdout
    assert "test-small" in _deid(plugin_env, "train", "--help").stdout
    assert "test-brightness" in _deid(plugin_env, "evaluate", "--help").stdout
    assert "test-red" in _deid(plugin_env, "evaluate", "--help").stdout
    # Without the variable the names are unknown: one line naming the choices.
    plain = {k: v for k, v in plugin_env.items() if k != "DEID_PLUGINS"}
    result = _deid(plain, "protect", "x.mp4", "-o", "out", "--method", "test-white")
    assert result.returncode == 2 and "invalid choice: 'test-white'" in result.stderr
    result = _deid(plain, "train", "a", "b", "-o", "m", "--model", "test-small")
    assert result.returncode == 2 and "invalid choice: 'test-small'" in result.stderr


def test_a_detector_plugin_runs_through_extract(plugin_env, clip, tmp_path):
    log = tmp_path / "calls.txt"
    env = {**plugin_env, "TEST_DETECTOR_LOG": str(log)}
    out = tmp_path / "faces"
    result = _deid(env, "extract", str(clip), "-o", str(out), "--detector", "test-counting", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    alignments = json.loads((out / "alignments.json").read_text())
    assert alignments["extractor"]["detector"] == "test-counting"
    assert sum(len(faces) for faces in alignments["frames"].values()) >= probe(clip).frames - 1
    assert sum(int(n) for n in log.read_text().split()) == probe(clip).frames


def test_an_obfuscation_plugin_runs_through_protect(plugin_env, clip, tmp_path):
    out = tmp_path / "protected"
    result = _deid(plugin_env, "protect", str(clip), "-o", str(out), "--method", "test-white", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    frame = next(iter_frames(probe(out / "clip.mp4")))[1]
    original = next(iter_frames(probe(clip)))[1]
    assert (frame.min(axis=2) > 245).mean() > (original.min(axis=2) > 245).mean() + 0.02  # a white face region


def test_a_colour_plugin_runs_through_convert(plugin_env, clip, clip_faces, tiny_model, tmp_path):
    out = tmp_path / "grey.mp4"
    result = _deid(plugin_env, "convert", str(clip), "--faces", str(clip_faces), "--model", str(tiny_model),
                   "-o", str(out), "--color", "test-grey", "--fallback", "test-white", "--min-face", "40",
                   "--device", "cpu", "--allow-leaks")
    assert result.returncode == 0, result.stderr
    frames = [f for _, f in iter_frames(probe(out))]
    grey = [np.mean(np.all(np.abs(f.astype(int) - 128) <= 3, axis=2)) for f in frames]
    assert np.mean(grey) > 0.02, grey  # the swapped face arrives as flat grey


def test_a_mask_plugin_runs_through_convert(plugin_env, clip, clip_faces, tiny_model, tmp_path):
    from deid.stages.checkpoint import load_model

    log = tmp_path / "calls.txt"
    out = tmp_path / "square.mp4"
    result = _deid({**plugin_env, "TEST_MASK_LOG": str(log)}, "convert", str(clip), "--faces", str(clip_faces),
                   "--model", str(tiny_model), "-o", str(out), "--mask", "test-square", "--color", "test-grey",
                   "--fallback", "test-white", "--min-face", "40", "--device", "cpu", "--allow-leaks")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((tmp_path / "square.frames.csv").open()))
    # Once per swapped frame, with the model's output side, the 68 landmarks and no learned mask (`original`).
    calls = log.read_text().splitlines()
    assert len(calls) == sum(int(row["swapped"]) for row in rows) > 0
    assert set(calls) == {f"{load_model(tiny_model)[0].output_size} 68 True"}
    # The face arrives as a flat grey square (turned with the head): it fills > 0.9 of its smallest enclosing
    # rectangle, where the default `extended` hull fills ~0.8.
    fills = []
    for (_, frame), row in zip(iter_frames(probe(out)), rows):
        grey = np.all(np.abs(frame.astype(int) - 128) <= 3, axis=2).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(grey)
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])) if count > 1 else 0
        area = stats[largest, cv2.CC_STAT_AREA] if largest else 0
        if row["swapped"] == "1" and area > 0.02 * grey.size:  # the background has a few grey pixels of its own
            (_, (w, h), _) = cv2.minAreaRect(cv2.findNonZero((labels == largest).astype(np.uint8)))
            fills.append(area / (w * h))
    assert fills and min(fills) > 0.9, fills


def test_a_model_family_plugin_trains_and_is_recorded(plugin_env, clip_faces, tmp_path):
    model_dir = tmp_path / "model"
    result = _deid(plugin_env, "train", str(clip_faces), str(clip_faces), "-o", str(model_dir), "--model", "test-small",
                   "--width", "8", "--latent", "16", "--iterations", "2", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    state = json.loads((model_dir / "state.json").read_text())
    assert state["iteration"] == 2
    # The family's own defaults (32 px, batch 2) and the sizes given on the command line are what was trained.
    assert {key: state["frozen"][key] for key in ("model", "input_size", "output_size", "width", "latent")} == \
        {"model": "test-small", "input_size": 32, "output_size": 32, "width": 8, "latent": 16}
    assert state["runs"][-1]["batch_size"] == 2

    # Without the plugin the folder is not taken for a damaged one: the message names the family and the fix.
    from deid.core.errors import DeidError
    from deid.stages.checkpoint import load_model

    with pytest.raises(DeidError, match="'test-small', which is not registered here.*DEID_PLUGINS"):
        load_model(model_dir)


def _evaluate_clip_against_itself(env: dict[str, str], clip: Path, data_dir: Path, out: Path, frames: int,
                                  *options: str) -> dict:
    """`deid evaluate` of the clip against itself (its first frame as A's photo); the summary.json."""
    ref = out.with_name("ref.jpg")
    cv2.imwrite(str(ref), cv2.cvtColor(next(iter_frames(probe(clip)))[1], cv2.COLOR_RGB2BGR))
    result = _deid(env, "evaluate", "--original", str(clip), "--swapped", str(clip), "--ref-original", str(ref),
                   "--ref-donor", str(data_dir / "identities" / "obama" / "1.jpg"), "-o", str(out), "--frames",
                   str(frames), "--parrot", "none", "--device", "cpu", *options)
    assert result.returncode == 0, result.stderr
    return json.loads((out / "reports" / "summary.json").read_text())


def test_an_au_source_plugin_runs_through_evaluate(plugin_env, clip, data_dir, tmp_path):
    au = _evaluate_clip_against_itself(plugin_env, clip, data_dir, tmp_path / "ev", 4, "--au", "test-brightness")["au"]
    assert au["computed"] and au["source"] == "test-brightness"
    assert au["alignment"]["aus"] == ["AU01", "AU02", "AU04"] and au["alignment"]["frames_paired"] == 4
    assert au["rmse_mean"] == 0.0  # the same video twice: the same numbers


def test_a_metric_plugin_runs_through_evaluate_and_reaches_compare(plugin_env, clip, data_dir, tmp_path):
    out = tmp_path / "ev"
    metrics = _evaluate_clip_against_itself(plugin_env, clip, data_dir, out, 3, "--au", "none",
                                            "--metric", "test-red")["metrics"]
    assert list(metrics) == ["test-red"] and metrics["test-red"]["n"] == 3
    assert 0 < metrics["test-red"]["mean"] < 255 and metrics["test-red"]["description"] == "mean red of the swapped frame"
    assert "test-red" in (out / "reports" / "metrics.csv").read_text().splitlines()[0]
    assert _deid(plugin_env, "compare", str(out), "-o", str(tmp_path / "cmp")).returncode == 0
    assert "test-red" in (tmp_path / "cmp" / "compare.csv").read_text().splitlines()[0]
