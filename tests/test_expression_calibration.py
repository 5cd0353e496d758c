"""Calibration of the expression measure (reports/expression.py) and of the pose, on real faces.

Controls built from a real expressive clip (WolfgangLanger_Pexels, the first 5 s, every 3rd frame: 40
distinct frames) and landmarked by evaluate's own detector and dlib landmark model:
  re-encode   the clip through libx264 crf 23: everything kept;
  64 px paste the face cut out, shrunk to 64 px and back, blurred (sigma 2 px) and pasted: what a weak
              swap model keeps;
  frozen      frame 0 in every frame: no expression transferred at all;
  still       a real photo of the clip moved by sub-pixel shifts (distinct frames, no expression): "not judged".
The noise that calibrates the measure comes from evaluate's own re-encode copy (ReencodeCopy), not from
the re-encode control.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from deid.models.face_identity import FaceIdentity
from deid.reports.expression import MEASURES, expression_preservation, ratio_table, reencode_noise
from deid.reports.geometry import POSE, geometry_preservation, geometry_table
from deid.stages.evaluate import ReencodeCopy, distinct_frames
from deid.stages.media import iter_frames, probe
from tests.test_evaluate import _write_video

SOURCE = "WolfgangLanger_Pexels.mp4"
STEP, FRAMES = 3, 40  # 40 frames over 5 s: the talking and smiling of the clip, at a cost of ~1 min on 2 cores


def _read(path: Path) -> list[np.ndarray]:
    return [frame for _, frame in iter_frames(probe(path))]


def _landmarks(analyser: FaceIdentity, frames: list[np.ndarray]) -> list[np.ndarray | None]:
    return [lm for start in range(0, len(frames), 8) for lm in analyser.largest_faces(frames[start:start + 8])]


def _paste_64(frame: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """The face square shrunk to 64 px, grown back, blurred, pasted where it was."""
    (x0, y0), (x1, y1) = lm.min(0), lm.max(0)
    side = int(1.3 * max(x1 - x0, y1 - y0))
    cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
    top, left = max(0, cy - side // 2), max(0, cx - side // 2)
    crop = frame[top:top + side, left:left + side]
    h, w = crop.shape[:2]
    small = cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA)
    face = cv2.GaussianBlur(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), (0, 0), 2.0)
    out = frame.copy()
    out[top:top + h, left:left + w] = face
    return out


def _reencode(src: Path, dst: Path) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), "-c:v", "libx264", "-crf", "23",
                    "-pix_fmt", "yuv420p", str(dst)], check=True)
    return dst


def _run(analyser: FaceIdentity, original: Path, swapped: Path, tmp: Path) -> dict:
    """What evaluate computes for the expression axis, on every frame of two clips of equal length."""
    frames_o, frames_s = _read(original), _read(swapped)
    lm_o, lm_s = _landmarks(analyser, frames_o), _landmarks(analyser, frames_s)
    index = list(range(len(frames_o)))
    copy = ReencodeCopy(tmp / f"noise_{original.stem}.mp4", probe(original), np.array(index), 60)
    for i, (frame, lm) in enumerate(zip(frames_o, lm_o)):
        if lm is not None:
            copy.add(i, i, frame)
    reencoded = copy.landmarks(analyser, 8)
    size = [(f.shape[1], f.shape[0]) for f in frames_o]
    geo_o, geo_s = geometry_table(lm_o, index, size), geometry_table(lm_s, index, size)
    ratios_o = ratio_table(lm_o, index)
    noise = reencode_noise(ratios_o.loc[list(reencoded)], ratio_table(list(reencoded.values()), list(reencoded)))
    table, summary = expression_preservation(ratios_o, ratio_table(lm_s, index), geo_o[list(POSE)], noise)
    _, geometry = geometry_preservation(geo_o.dropna(how="all"), geo_s.dropna(how="all"))
    return {"table": table.set_index("measure"), "summary": summary, "geometry": geometry}


def sampled_original(data_dir: Path, tmp: Path) -> tuple[list[np.ndarray], float]:
    """Every STEP-th frame of SOURCE, FRAMES of them, written to tmp/original.mp4: (frames, its fps)."""
    info = probe(data_dir / "video" / SOURCE)
    frames = []
    for index, frame in iter_frames(info):
        if len(frames) == FRAMES:
            break
        if index % STEP == 0:
            frames.append(frame)
    fps = info.fps / STEP
    _write_video(tmp / "original.mp4", frames, fps)
    return frames, fps


@pytest.fixture(scope="module")
def controls(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("expression_controls")
    frames, fps = sampled_original(data_dir, tmp)
    analyser = FaceIdentity(torch.device("cpu"))
    original = _read(tmp / "original.mp4")
    lm = _landmarks(analyser, original)
    assert sum(x is not None for x in lm) == FRAMES
    _write_video(tmp / "paste64.mp4", [_paste_64(f, p) for f, p in zip(original, lm)], fps)
    _write_video(tmp / "frozen.mp4", [original[0]] * FRAMES, fps)
    # A still face: one real frame shifted by up to a pixel, zoomed by up to 0.4 %: every frame distinct.
    h, w = original[0].shape[:2]
    rng = np.random.default_rng(0)
    still = [cv2.warpAffine(original[0], cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, 1 + rng.uniform(0, 0.004))
                            + np.array([[0, 0, rng.uniform(-1, 1)], [0, 0, rng.uniform(-1, 1)]]), (w, h),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT) for _ in range(FRAMES)]
    _write_video(tmp / "still.mp4", still, fps)
    runs = {"reencode": _run(analyser, tmp / "original.mp4", _reencode(tmp / "original.mp4", tmp / "re.mp4"), tmp),
            "paste64": _run(analyser, tmp / "original.mp4", tmp / "paste64.mp4", tmp),
            "frozen": _run(analyser, tmp / "original.mp4", tmp / "frozen.mp4", tmp),
            "still": _run(analyser, tmp / "still.mp4", _reencode(tmp / "still.mp4", tmp / "still_re.mp4"), tmp)}
    for name, run in runs.items():  # the calibration, in the test log (pytest -s)
        print(name, run["summary"]["judgement"], run["summary"]["finding"], "pose MAE", run["geometry"]["pose_mae"])
    return runs


def test_reencode_passes_with_an_informative_measure(controls):
    s = controls["reencode"]["summary"]
    assert s["frames"] == FRAMES and s["informative"], s
    assert s["judgement"] == "passed", s["finding"]
    assert s["r_min"] > 0.8 and 0.7 < s["gain_min"] <= s["gain_max"] < 1.4, s


def test_order_reencode_then_blurred_paste_then_frozen(controls):
    r = {name: controls[name]["summary"]["r_mean"] for name in ("reencode", "paste64", "frozen")}
    assert r["reencode"] > r["paste64"] > r["frozen"], r
    # the same original: the same measures are informative in every control
    assert controls["paste64"]["summary"]["informative"] == controls["reencode"]["summary"]["informative"]


def test_frozen_face_fails_inside_its_null_band(controls):
    s, table = controls["frozen"]["summary"], controls["frozen"]["table"]
    assert s["judgement"] == "failed" and set(s["failing"]) == set(s["informative"])
    for name in s["informative"]:
        row = table.loc[name]
        # constant ratios, minus the original's pose part (orthogonal to the residual): r is 0 up to rounding
        assert row["r"] is None or row["null_low"] - 1e-9 <= row["r"] <= row["null_high"] + 1e-9, row


def test_still_face_is_not_judged(controls):
    s = controls["still"]["summary"]
    assert s["judgement"] == "not judged" and s["informative"] == [], s
    assert "barely changes" in s["reason"]
    assert set(controls["still"]["table"].index) == set(MEASURES)


def test_reencode_keeps_the_pose(controls):
    geometry = controls["reencode"]["geometry"]
    assert geometry["pose_mae"] < 1.5, geometry
    assert max(geometry[f"pose_mae_{axis}"] for axis in POSE) < 2.5, geometry


def test_repeated_frames_are_not_sampled(tmp_path, data_dir):
    """A constant-rate copy of a variable-rate source repeats frames: evaluate samples each once."""
    info = probe(data_dir / "video" / SOURCE)
    frames = [f for i, f in iter_frames(info) if i < 24][::2]  # 12 distinct frames (every other, so they differ)
    doubled = [f for i, f in enumerate(frames) for _ in range(2 if i % 3 == 0 else 1)]  # 4 repeated
    _write_video(tmp_path / "vfr.mp4", doubled, 12.0)
    kept = distinct_frames(probe(tmp_path / "vfr.mp4"), len(doubled))
    expected = [i for i in range(len(doubled)) if i == 0 or doubled[i] is not doubled[i - 1]]
    assert kept.tolist() == expected and len(kept) == len(frames)


def test_pose_angles_are_upright_and_continuous():
    """An upright face near frontal: roll near 0 (no flip to +-180) for small rotations of either sign."""
    from deid.models.face_quality import euler_angles

    for yaw, pitch, roll in ((10, -5, 3), (-30, 12, -8), (0, 0, 179), (0, 0, -179)):
        rotation = cv2.Rodrigues(np.zeros(3))[0]
        rx, ry, rz = (np.radians(a) for a in (pitch, yaw, roll))
        rotation = (np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
                    @ np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
                    @ np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]]))
        assert np.allclose(euler_angles(rotation), (yaw, pitch, roll), atol=1e-6)
