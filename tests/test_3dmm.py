"""3DDFA_V2 (models/tddfa.py) and the `3dmm` metric plugin, with the real converted weights on real faces.

The model: pose of a frontal still near 0, a mirrored still's yaw of opposite sign, an in-plane rotation
read as roll without a flip, a smile and a frown further apart in expression than a face and its mirror
image, detector-box and landmark crops agreeing. The metric: calibrated on controls built from a real
expressive clip (WolfgangLanger_Pexels, the first 5 s, every 3rd frame: 40 distinct frames), landmarked
by evaluate's own detector and dlib model, exactly as tests/test_expression_calibration.py builds them:
  re-encode   the clip through libx264 crf 23: everything kept;
  64 px paste the face shrunk to 64 px and back, blurred (sigma 2 px), pasted: a weak swap;
  frozen      frame 0 in every frame: no expression transferred.
Measured here (2 cores): expression error 0.19 / 0.65 / 1.50, mean PCC 0.96 / 0.85 / 0.04, pose error
0.45 / 1.48 / 4.49 deg.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from deid.models.detectors import MtcnnDetector
from deid.models.face_identity import FaceIdentity
from deid.models.tddfa import (MODEL_NAME, PARAM_STATS_FILE, WEIGHTS_DIR, WEIGHTS_FILE, Tddfa, pose_angles,
                          unavailable, wrap_degrees)
from deid.pipeline.config import EvaluateConfig
from deid.core.errors import DeidError
from deid.reports.metrics import METRICS, MetricSet, Sample, make_metrics
from deid.stages.media import iter_frames, probe
from tests.test_evaluate import _write_video
from tests.test_expression_calibration import FRAMES, SOURCE, _landmarks, _paste_64, _read, _reencode, sampled_original

CONTROLS = ("reencode", "paste64", "frozen")


@pytest.fixture(scope="module")
def analyser() -> FaceIdentity:
    return FaceIdentity(torch.device("cpu"))


@pytest.fixture(scope="module")
def tddfa() -> Tddfa:
    return Tddfa()


def _still(data_dir: Path, name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(data_dir / "images" / name)), cv2.COLOR_BGR2RGB)


def _fit(tddfa: Tddfa, analyser: FaceIdentity, image: np.ndarray):
    landmarks = analyser.largest_faces([image])[0]
    assert landmarks is not None
    return tddfa.fit(image, [landmarks])[0]


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    y, p, r = np.radians([yaw, pitch, roll])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    return rz @ ry @ rx


@pytest.mark.parametrize("angles", [(10, -5, 3), (-30, 12, -8), (0, 0, 179), (0, 0, -179), (60, 20, 0)])
def test_pose_angles_are_scale_free_and_do_not_flip(angles):
    """The camera's rows carry 3DDFA_V2's scale (~1e-3) and a translation: the angles come back exactly,
    and a roll near 180 stays near 180 with its sign (the decomposition's branch cut is not at upright)."""
    camera = np.hstack([7.3e-4 * _rotation(*angles), [[60.0], [74.0], [-66.0]]])
    assert np.allclose(pose_angles(camera), angles, atol=1e-6)
    skewed = camera.copy()
    skewed[1, :3] += 1e-5 * camera[0, :3]  # rows a regressor leaves slightly non-orthogonal
    assert np.allclose(pose_angles(skewed), angles, atol=1.0)


def test_angle_differences_wrap():
    assert np.allclose(wrap_degrees([359.8, -359.8, 181.0, -181.0, 10.0]), [-0.2, 0.2, -179.0, 179.0, 10.0])
    assert wrap_degrees(179.0 - (-179.0)) == pytest.approx(-2.0)


def test_frontal_face_near_zero_and_mirror_flips_yaw(data_dir, tddfa, analyser):
    frontal = _fit(tddfa, analyser, _still(data_dir, "0-f1-su-ph.jpg"))
    assert np.abs(frontal.pose).max() < 5.0, frontal.pose
    turned = _still(data_dir, "45-m7-di-ph.jpg")  # a man looking towards the image's left
    (yaw, pitch, roll), (yaw_m, pitch_m, roll_m) = (_fit(tddfa, analyser, im).pose
                                                    for im in (turned, np.ascontiguousarray(turned[:, ::-1])))
    assert yaw < -20 and yaw_m > 20 and abs(yaw + yaw_m) < 5, (yaw, yaw_m)
    assert abs(pitch - pitch_m) < 5 and abs(roll + roll_m) < 5


@pytest.mark.parametrize("degrees", [-15, 15])
def test_in_plane_rotation_is_roll(data_dir, tddfa, analyser, degrees):
    """The frontal still turned counter-clockwise on screen by +-15 deg: roll follows, yaw and pitch stay."""
    image = _still(data_dir, "0-f1-su-ph.jpg")
    h, w = image.shape[:2]
    base = _fit(tddfa, analyser, image).pose
    turned = cv2.warpAffine(image, cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0), (w, h))
    pose = _fit(tddfa, analyser, turned).pose
    assert abs(wrap_degrees(pose[2] - base[2]) - degrees) < 3, (base, pose)
    assert np.abs(wrap_degrees(pose[:2] - base[:2])).max() < 5, (base, pose)


def test_expression_separates_a_smile_from_a_frown(data_dir, tddfa, analyser):
    """Stills of one dataset (happy, angry, surprised) are much further apart in the 10 expression
    coefficients than each still is from its own mirror image (same expression, other pixels); so are a
    neutral and a smiling frame of the same woman."""
    exps, mirror = {}, []
    for name in ("0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "0-f1-su-ph.jpg"):
        image = _still(data_dir, name)
        exps[name] = _fit(tddfa, analyser, image).expression
        mirrored = _fit(tddfa, analyser, np.ascontiguousarray(image[:, ::-1])).expression
        mirror.append(float(np.linalg.norm(exps[name] - mirrored)))
    names = list(exps)
    apart = [float(np.linalg.norm(exps[a] - exps[b])) for i, a in enumerate(names) for b in names[i + 1:]]
    assert min(apart) > 3 * max(mirror), (apart, mirror)
    # frame 0: eyes down, mouth closed; frame 300: a broad smile (the same woman, the same light)
    frames = {}
    for index, frame in iter_frames(probe(data_dir / "video" / SOURCE)):
        if index in (0, 300):
            frames[index] = frame
        if index >= 300:
            break
    same = [_fit(tddfa, analyser, frames[i]).expression for i in (0, 300)]
    assert float(np.linalg.norm(same[0] - same[1])) > 3 * max(mirror)


def test_detector_box_and_landmark_crops_agree(data_dir, tddfa, analyser):
    image = _still(data_dir, "15-f13-anc-ph.jpg")
    rect = MtcnnDetector(torch.device("cpu")).detect([image])[0][0].rect
    by_box, by_landmarks = tddfa.fit_many([(image, np.array([rect.x, rect.y, rect.x + rect.w, rect.y + rect.h])),
                                           (image, analyser.largest_faces([image])[0])])
    assert np.abs(wrap_degrees(by_box.pose - by_landmarks.pose)).max() < 5
    assert np.linalg.norm(by_box.expression - by_landmarks.expression) < 1.0


def test_missing_or_broken_weights_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(DeidError, match=r"tddfa_mb05_120.safetensors: the 3DDFA_V2 model file is missing.*"
                                        r"convert_3ddfa.py"):
        Tddfa(weights_dir=tmp_path)
    (tmp_path / WEIGHTS_FILE).write_bytes((WEIGHTS_DIR / WEIGHTS_FILE).read_bytes()[:5000])  # truncated
    (tmp_path / PARAM_STATS_FILE).write_bytes((WEIGHTS_DIR / PARAM_STATS_FILE).read_bytes())
    with pytest.raises(DeidError, match="do not load .*convert_3ddfa.py"):
        Tddfa(weights_dir=tmp_path)


def test_doctor_can_ask_whether_the_model_loads(tmp_path):
    assert unavailable() is None
    assert "model file is missing" in unavailable(tmp_path)


def test_weights_are_not_pickles():
    """What ships is safetensors and JSON: nothing at run time can execute code from a model file."""
    assert (WEIGHTS_DIR / WEIGHTS_FILE).read_bytes()[8:9] == b"{"  # a JSON header after its 8-byte length
    stats = json.loads((WEIGHTS_DIR / PARAM_STATS_FILE).read_text())
    assert stats["source"] == "cleardusk/3DDFA_V2" and len(stats["mean"]) == len(stats["std"]) == 62
    assert (WEIGHTS_DIR / "LICENSE-3DDFA_V2").read_text().count("MIT License") == 1


def test_metric_without_faces_is_not_computed(data_dir):
    frame = _still(data_dir, "free-mountain-vector-01.jpg")
    metrics = make_metrics(("3dmm",), EvaluateConfig())
    metrics.add(Sample(0, frame, frame, None, None))
    (description, result), = metrics.results().values()
    assert not result.summary["computed"] and math.isnan(result.per_frame[0])
    assert result.summary["model"] == MODEL_NAME and "expression" in description


@pytest.fixture(scope="module")
def controls(tmp_path_factory, data_dir, analyser):
    """The `3dmm` plugin's summary for each control, fed the way evaluate feeds it (one Sample per frame)."""
    tmp = tmp_path_factory.mktemp("3dmm_controls")
    frames, fps = sampled_original(data_dir, tmp)
    original = _read(tmp / "original.mp4")
    lm_o = _landmarks(analyser, original)
    assert sum(x is not None for x in lm_o) == FRAMES
    _write_video(tmp / "paste64.mp4", [_paste_64(f, p) for f, p in zip(original, lm_o)], fps)
    _write_video(tmp / "frozen.mp4", [original[0]] * FRAMES, fps)
    _reencode(tmp / "original.mp4", tmp / "reencode.mp4")
    out = {}
    for name in CONTROLS:
        swapped = _read(tmp / f"{name}.mp4")
        metrics = MetricSet([METRICS.get("3dmm")(EvaluateConfig())])
        metrics.metrics[0].name = "3dmm"
        for i, (fo, fs, lo, ls) in enumerate(zip(original, swapped, lm_o, _landmarks(analyser, swapped))):
            metrics.add(Sample(i, fo, fs, lo, ls))
        out[name] = metrics.results()["3dmm"][1]
        s = out[name].summary  # the calibration, in the test log (pytest -s)
        print(name, f"expression error {s['mean']:.3f}, PCC mean {s['pcc_mean']:.3f}, "
                    f"pose error {s['pose_error_mean']:.2f} deg")
    return out


def test_expression_error_orders_reencode_then_blurred_paste_then_frozen(controls):
    error = {name: controls[name].summary["mean"] for name in CONTROLS}
    assert error["reencode"] < error["paste64"] < error["frozen"], error
    assert error["frozen"] > 2 * error["paste64"] and error["paste64"] > 2 * error["reencode"], error


def test_coefficient_pcc_orders_the_same_way(controls):
    pcc = {name: controls[name].summary["pcc_mean"] for name in CONTROLS}
    assert pcc["reencode"] > pcc["paste64"] > pcc["frozen"], pcc
    assert pcc["reencode"] > 0.9 and pcc["frozen"] < 0.5, pcc
    per = controls["reencode"].summary["pcc"]
    assert len(per) == 10 and min(per.values()) > 0.8, per


def test_reencode_keeps_the_pose(controls):
    s = controls["reencode"].summary
    assert s["pose_error_mean"] < 1.5 and max(s[f"pose_error_{a}"] for a in ("yaw", "pitch", "roll")) < 1.5, s
    assert s["pose_error_mean"] < controls["frozen"].summary["pose_error_mean"]


def test_summary_is_json_and_per_frame_complete(controls):
    result = controls["paste64"]
    s = json.loads(json.dumps(result.summary))  # summary.json takes it as it is
    assert s["computed"] and s["n"] == FRAMES == len(result.per_frame) and s["model"] == MODEL_NAME
    assert s["min"] <= s["median"] <= s["max"] and np.isfinite(list(result.per_frame.values())).all()
