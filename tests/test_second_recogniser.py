"""SFace, the independent second recogniser (models/second_recogniser.py), and the verdict that needs both.

Controls on real faces (tests/data/identities: Obama, Biden; tests/data/video: two talking heads): the same
person's photos match at SFace's own threshold, different people do not, a blurred face stops matching, a
re-encoded video re-identifies its own frames. Then the verdict's rules for two recognisers, and one
evaluate run that reports both.
"""
from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from deid.models import second_recogniser
from deid.models.face_identity import FaceIdentity
from deid.models.second_recogniser import SFace, five_points
from deid.core.errors import DeidError
from deid.reports.verdict import Bars, judge
from deid.stages.media import iter_frames, probe, read_image_rgb


@pytest.fixture(scope="module")
def sface() -> SFace:
    return SFace()


@pytest.fixture(scope="module")
def finder() -> FaceIdentity:
    return FaceIdentity(torch.device("cpu"))


@pytest.fixture(scope="module")
def people(data_dir, finder) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """person -> [(photo, dlib 68 landmarks)], every photo of tests/data/identities."""
    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for photo in sorted((data_dir / "identities").glob("*/*.jpg")):
        image = read_image_rgb(photo)
        landmarks = finder.reference(image)
        assert landmarks is not None, photo
        out.setdefault(photo.parent.name, []).append((image, landmarks))
    assert set(out) == {"obama", "biden"} and len(out["obama"]) == 3 and len(out["biden"]) == 2
    return out


def test_the_shipped_file_is_the_real_model():
    """Not a Git LFS pointer (a ~130-byte text file): the OpenCV Zoo's ONNX, loadable by OpenCV."""
    path = second_recogniser.model_path()
    assert path.stat().st_size == 38_696_353 and path.read_bytes()[:2] != b"ve"
    assert (path.parent / "LICENSE.sface").read_text().count("Apache License") >= 1


def test_a_pointer_file_is_one_clear_error(tmp_path, monkeypatch):
    pointer = tmp_path / "face_recognition_sface_2021dec.onnx"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0ba9\nsize 38696353\n")
    monkeypatch.setattr(second_recogniser, "WEIGHTS", pointer)
    model, reason = second_recogniser.load()
    assert model is None and str(pointer) in reason and "reinstall deid" in reason
    with pytest.raises(DeidError, match="OpenCV could not load the SFace model"):
        SFace(pointer)


def test_five_points_follow_the_face(people):
    """Eye centres, nose tip and mouth corners in alignCrop's order: the image-left eye and corner first."""
    _, landmarks = people["obama"][0]
    eye_a, eye_b, nose, mouth_a, mouth_b = five_points(landmarks)
    assert eye_a[0] < nose[0] < eye_b[0] and mouth_a[0] < nose[0] < mouth_b[0]
    assert max(eye_a[1], eye_b[1]) < nose[1] < min(mouth_a[1], mouth_b[1])


def test_same_person_within_the_threshold_different_people_beyond(sface, people):
    features = {name: [sface.embed(image, lm) for image, lm in photos] for name, photos in people.items()}
    same = [float(a @ b) for photos in features.values() for a, b in itertools.combinations(photos, 2)]
    different = [float(a @ b) for a in features["obama"] for b in features["biden"]]
    assert len(same) == 4 and len(different) == 6
    # Measured here: same person 0.66-0.82, different people 0.10-0.25 (the bar is OpenCV's 0.363).
    assert min(same) >= sface.threshold + 0.15, same
    assert max(different) < sface.threshold - 0.05, different
    assert sface.same(np.array(same)).all() and not sface.same(np.array(different)).any()


def test_a_blurred_face_no_longer_matches(sface, people):
    image, landmarks = people["obama"][0]
    face_width = float(np.ptp(landmarks[:, 0]))
    blurred = cv2.GaussianBlur(image, (0, 0), face_width / 6)  # stages/obfuscate.py's blur strength
    clean = sface.embed(image, landmarks)
    assert float(clean @ sface.embed(people["obama"][1][0], people["obama"][1][1])) >= sface.threshold
    assert float(clean @ sface.embed(blurred, landmarks)) < sface.threshold


def test_a_reencoded_video_reidentifies_its_own_frames(sface, finder, data_dir, tmp_path):
    """Each frame of a libx264 crf 28 copy still matches the same frame of the source, and the source's
    first frame; another person's clip matches neither."""
    from tests.media_helpers import cut_clip

    source = cut_clip(data_dir / "video" / "talking_1.mp4", tmp_path / "source.mp4", 0.2, audio=False)
    copy = tmp_path / "copy.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(source), "-c:v", "libx264", "-crf", "28",
                    str(copy)], check=True)
    other = cut_clip(data_dir / "video" / "talking_2.mp4", tmp_path / "other.mp4", 0.1, audio=False)

    def features(path: Path, count: int) -> np.ndarray:
        frames = [f for _, f in itertools.islice(iter_frames(probe(path)), count)]
        found = finder.largest_faces(frames)
        assert all(lm is not None for lm in found), path
        return sface.embed_many(list(zip(frames, found)))

    a, b, c = features(source, 3), features(copy, 3), features(other, 1)
    own = np.sum(a * b, axis=1)
    assert (own >= sface.threshold).all() and own.min() > 0.8, own
    assert (sface.similarity(b, a[0]) >= sface.threshold).all()
    assert float(c[0] @ a[0]) < sface.threshold


# ---------------------------------------------------------------- the verdict with two recognisers

HIDDEN = {"frames_sampled": 20, "frames_with_face": 20, "frames_reidentified": 0}
GEOMETRY, AU = {"geometry_pcc_mean": 0.9, "pose_mae": 1.0}, {"computed": True, "pcc_mean": 0.8}


def _second(reidentified: int = 0, donor: int = 16) -> dict:
    return {"available": True, "short": "SFace", "threshold": 0.363,
            "reidentification": {"frames_sampled": 20, "frames_with_face": 20, "frames_reidentified": reidentified,
                                 "reidentified_times": ["0:00.4"] * reidentified},
            "donor": {"frames": 20, "frames_matching_donor": donor}}


def test_the_donor_only_when_both_recognisers_agree():
    both = judge(HIDDEN, {"applied": False}, {"frames": 20, "frames_matching_donor": 15}, GEOMETRY, AU, Bars(),
                 second=_second(donor=16))
    assert both.level == "ok" and both.axes[1].passed is True
    assert "in 15/20 frames (75%; bar 50%) by dlib; SFace agrees: " in both.axes[1].finding
    fooled = judge(HIDDEN, {"applied": False}, {"frames": 20, "frames_matching_donor": 15}, GEOMETRY, AU, Bars(),
                   second=_second(donor=2))
    assert fooled.level == "warn" and fooled.axes[1].passed is False
    assert fooled.text.startswith("an obfuscation, not a convincing swap; not the donor: swapped face matches the "
                                  "donor (cosine similarity >= 0.363) in 2/20 frames (10%; bar 50%) by SFace; "
                                  "dlib disagrees: "), fooled.text


def test_hidden_only_when_neither_reidentifies():
    caught = judge(HIDDEN, {"applied": False}, {"frames": 20, "frames_matching_donor": 15}, GEOMETRY, AU, Bars(),
                   second=_second(reidentified=3))
    assert caught.level == "bad" and caught.axes[0].passed is False
    assert caught.text.startswith("re-identified in 3/20 frames with a face (cosine similarity to the original's "
                                  "photo >= 0.363) at 0:00.4"), caught.text
    assert "by SFace; dlib disagrees: identity hidden in 20/20 frames" in caught.text


def test_trained_against_dlib_the_verdict_rests_on_sface():
    """dlib's yes no longer counts; its numbers stay in the text, labelled; SFace's no decides."""
    dlib_fooled = {"frames": 20, "frames_matching_donor": 18}
    trained = judge(HIDDEN, {"applied": False}, dlib_fooled, GEOMETRY, AU, Bars(), second=_second(donor=1),
                    trained_against_first=True)
    assert trained.axes[1].passed is False
    assert "by SFace (independent); dlib (the training recogniser), not counted, disagrees: " in trained.text
    good = judge(HIDDEN, {"applied": False}, dlib_fooled, GEOMETRY, AU, Bars(), second=_second(donor=14),
                 trained_against_first=True)
    assert good.level == "ok" and good.axes[1].finding.startswith("swapped face matches the donor (cosine")
    alone = judge(HIDDEN, {"applied": False}, dlib_fooled, GEOMETRY, AU, Bars(),
                  second={"available": False, "short": "SFace", "reason": "model file missing"},
                  trained_against_first=True)
    assert [a.passed for a in alone.axes[:2]] == [None, None] and alone.level == "warn"
    assert "no independent recogniser to confirm it (SFace unavailable: model file missing)" in alone.text


def test_without_the_second_recogniser_the_verdict_says_it_rests_on_one():
    one = judge(HIDDEN, {"applied": False}, {"frames": 20, "frames_matching_donor": 15}, GEOMETRY, AU, Bars(),
                second={"available": False, "short": "SFace", "reason": "model file missing"})
    assert one.level == "ok"
    assert "rests on one recogniser only (SFace unavailable: model file missing)" in one.axes[1].finding
    assert "rests on one recogniser only" in one.axes[0].finding


# ---------------------------------------------------------------- evaluate reports both

def test_evaluate_reports_both_recognisers(data_dir, tmp_path):
    """The original clip as its own 'swap': both recognisers re-identify every frame; the summary, the
    identity table, report.html, `deid compare` and the verdict carry both; trained against dlib, the
    verdict says its findings rest on SFace."""
    from deid.reports.compare import compare
    from deid.stages.evaluate import evaluate
    from deid.stages.evaluate_config import EvaluateConfig
    from tests.media_helpers import cut_clip

    clip = cut_clip(data_dir / "video" / "talking_1.mp4", tmp_path / "clip.mp4", 0.4, audio=False)
    photo = tmp_path / "person.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(next(iter_frames(probe(clip)))[1], cv2.COLOR_RGB2BGR))
    donor = data_dir / "identities" / "obama" / "1.jpg"
    config = EvaluateConfig(frames=4, au="none", parrot="none")
    s = evaluate(clip, clip, photo, donor, tmp_path / "plain", config, progress=False)
    second = s.identity["second"]
    assert second["available"] and second["short"] == "SFace" and second["threshold"] == pytest.approx(0.363)
    assert second["reidentification"]["frames_reidentified"] == 4 and second["donor"]["frames_matching_donor"] == 0
    assert second["comparisons"]["SW-OR"]["min"] > 0.8 and second["comparisons"]["OR-SW"]["max"] < 0.363
    assert s.verdict.level == "bad" and "by dlib; SFace agrees: re-identified in 4/4 frames" in s.verdict.text
    assert "SFace agrees: swapped face matches the donor (cosine similarity >= 0.363) in 0/4" in s.verdict.text
    reports = tmp_path / "plain" / "reports"
    table = pd.read_csv(reports / "identity.csv")
    assert {"sface_OR-OR", "sface_SW-OR", "sface_SW-SW"} <= set(table.columns)
    assert np.allclose(table["sface_SW-OR"], table["sface_OR-OR"])
    html = (reports / "report.html").read_text()
    assert "Two recognisers" in html and "OpenCV Zoo face_recognition_sface_2021dec" in html
    saved = json.loads((reports / "summary.json").read_text())
    assert saved["identity"]["second"]["donor"]["share"] == 0.0 and saved["timings"]["second_recogniser_s"] > 0

    trained = evaluate(clip, clip, photo, donor, tmp_path / "trained", config, progress=False,
                       trained_against_recogniser=True)
    assert trained.identity["trained_against"] == "dlib" and any("rest on SFace" in n for n in trained.notes)
    assert "by SFace (independent); dlib (the training recogniser) agrees" in trained.verdict.text
    row = compare([tmp_path / "plain", tmp_path / "trained"], tmp_path / "cmp")
    assert list(row["re-id rate (SFace)"]) == ["100.0 %", "100.0 %"]
    assert list(row["donor match (SFace)"]) == ["0.0 %", "0.0 %"]
    assert row.loc[1, "re-id rate"] == "100.0 % (training recogniser)" and row.loc[0, "re-id rate"] == "100.0 %"
