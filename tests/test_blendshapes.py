"""The `blendshapes` AU source (reports/au_source/blendshapes.py) with MediaPipe's real models, and its calibration.

Controls built from a real expressive clip (WolfgangLanger_Pexels, the first 5 s, every 3rd frame: 40
distinct frames), as tests/test_expression_calibration.py builds them (its helpers):
  re-encode   libx264 crf 23: every expression kept;
  64 px paste the face shrunk to 64 px and back, blurred (sigma 2 px), pasted: what a weak swap keeps;
  frozen      frame 0 in every frame: no expression transferred.
Each pair goes through evaluate's own AuSource, so the numbers are what `deid evaluate --au blendshapes`
reports. A constant AU has no PCC (reports/au.py: None); the frozen face's undefined PCCs count as 0 here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import deid.models.mediapipe_face as mediapipe_face
from deid.models.face_identity import FaceIdentity
from deid.reports.au_source import AU_SOURCES, AuSource
from deid.reports.au_source.blendshapes import AU_TABLE, au_table, default_source
from deid.stages.evaluate_config import EvaluateConfig
from deid.stages.media import iter_frames, probe
from tests.test_evaluate import _write_video
from tests.test_expression_calibration import FRAMES, SOURCE, STEP, _landmarks, _paste_64, _read, _reencode

CONFIG = EvaluateConfig(au="blendshapes")
pytestmark = pytest.mark.skipif(mediapipe_face.unavailable() is not None,
                                reason=f"blendshapes cannot run here: {mediapipe_face.unavailable()}")


def _au(original: Path, swapped: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """evaluate's AU pass over every frame of two clips of equal length, in evaluate's batches of 8."""
    source = AuSource(CONFIG, "cpu")
    assert source.streaming, source.reason
    for label, path in (("original", original), ("swapped", swapped)):
        frames = list(enumerate(_read(path)))
        for start in range(0, len(frames), CONFIG.batch_size):
            source.add(label, frames[start:start + CONFIG.batch_size])
    return source.result()


@pytest.fixture(scope="module")
def controls(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("blendshape_controls")
    info = probe(data_dir / "video" / SOURCE)
    frames = [frame for index, frame in iter_frames(info) if index < STEP * FRAMES and index % STEP == 0]
    fps = info.fps / STEP
    _write_video(tmp / "original.mp4", frames, fps)
    original = _read(tmp / "original.mp4")
    lm = _landmarks(FaceIdentity(torch.device("cpu")), original)
    assert sum(x is not None for x in lm) == FRAMES
    _write_video(tmp / "paste64.mp4", [_paste_64(f, p) for f, p in zip(original, lm)], fps)
    _write_video(tmp / "frozen.mp4", [original[0]] * FRAMES, fps)
    swapped = {"reencode": _reencode(tmp / "original.mp4", tmp / "re.mp4"), "paste64": tmp / "paste64.mp4",
               "frozen": tmp / "frozen.mp4"}
    runs = {name: _au(tmp / "original.mp4", path) for name, path in swapped.items()}
    for name, (summary, _, _, table) in runs.items():  # the calibration, in the test log (pytest -s)
        print(name, "PCC mean", summary.get("pcc_mean"), "n", summary.get("pcc_n"),
              dict(zip(table["au"], np.round(table["pcc"].astype(float), 3))))
    return runs


def _pcc(run: tuple) -> float:
    """Mean PCC over every AU the original moves, an undefined PCC (a constant swapped AU) counting as 0."""
    summary, original, _, table = run
    moving = original.std() > 0.01
    pcc = table.set_index("au")["pcc"].astype(float).reindex(moving[moving].index)
    return float(pcc.fillna(0.0).mean())


def test_every_frame_of_the_clip_has_a_face_and_the_original_moves(controls):
    summary, original, swapped, _ = controls["reencode"]
    assert summary["computed"] and summary["source"] == "blendshapes", summary
    assert list(original.columns) == list(AU_TABLE) and len(original) == FRAMES
    assert original.notna().all().all() and swapped.notna().all().all()
    assert ((original >= 0) & (original <= 1)).all().all()
    # the clip smiles and talks: smile and lip/jaw AUs move well beyond noise
    assert original["AU12"].std() > 0.05 and original["AU12"].max() > 0.5, original["AU12"].describe()


def test_order_reencode_then_blurred_paste_then_frozen(controls):
    pcc = {name: _pcc(run) for name, run in controls.items()}
    assert pcc["reencode"] > pcc["paste64"] > pcc["frozen"], pcc
    assert pcc["reencode"] > 0.8, pcc   # the AU bar of the verdict is 0.5 (evaluate.expression_pcc)
    assert pcc["frozen"] < 0.3, pcc


def test_frozen_face_is_never_passed(controls):
    summary, _, swapped, _ = controls["frozen"]
    # identical frames give (nearly) identical blendshapes: nothing to correlate with the original's
    assert (swapped.std() < 0.01).all(), swapped.std()
    assert summary.get("pcc_mean") is None or summary["pcc_mean"] < CONFIG.expression_pcc, summary


def test_no_face_gives_nan_rows_not_zeros(data_dir):
    frames = [(i, f) for i, f in iter_frames(probe(data_dir / "video" / "no_face.mp4")) if i < 4]
    plugin = AU_SOURCES.get("blendshapes")(CONFIG, "cpu")
    plugin.add("original", frames)
    original, _ = plugin.tables()
    assert list(original.index) == [i for i, _ in frames] and original.isna().all().all()


def test_au_table_maps_and_averages_left_and_right():
    shapes = np.zeros((2, len(mediapipe_face.BLENDSHAPE_NAMES)))
    index = {name: i for i, name in enumerate(mediapipe_face.BLENDSHAPE_NAMES)}
    shapes[0, index["mouthSmileLeft"]], shapes[0, index["mouthSmileRight"]] = 0.8, 0.4
    shapes[0, index["jawOpen"]], shapes[0, index["mouthClose"]] = 0.5, 0.2
    shapes[1, index["jawOpen"]], shapes[1, index["mouthClose"]] = 0.1, 0.3  # lips closed: AU25 0, not negative
    table = au_table([7, 9], [shapes[0], None])
    assert table.loc[7, "AU12"] == pytest.approx(0.6) and table.loc[7, "AU25"] == pytest.approx(0.3)
    assert table.loc[7, "AU26"] == pytest.approx(0.5) and table.loc[9].isna().all()
    assert au_table([1], [shapes[1]]).loc[1, "AU25"] == 0.0


def test_missing_weights_say_which_file(monkeypatch, tmp_path):
    missing = tmp_path / "mediapipe_face_landmarks_detector.tflite"
    monkeypatch.setattr(mediapipe_face, "LANDMARK_MODEL", missing)
    reason = AU_SOURCES.get("blendshapes").unavailable(CONFIG)
    assert reason is not None and str(missing) in reason
    assert AU_SOURCES.get("blendshapes")(CONFIG, "cpu").reason == reason


def test_auto_prefers_pyfeat_only_where_it_can_run(monkeypatch):
    pyfeat = AU_SOURCES.get("pyfeat")
    monkeypatch.setattr(pyfeat, "unavailable", staticmethod(lambda config: "py-feat weights not found"))
    assert default_source(CONFIG) == "blendshapes"
    monkeypatch.setattr(pyfeat, "unavailable", staticmethod(lambda config: None))
    assert default_source(CONFIG) == "pyfeat"
