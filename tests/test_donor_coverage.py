"""Donor coverage (issue 22, item 5): train warns when B's footage never shows what A does.

Controls on real extractions: a person against their own footage is covered (no warning), an expressive
A (WolfgangLanger_Pexels: wide-open mouth, blinks, raised brows) against a calm talking head B is not,
and the finding reaches train's log, coverage.json, the summary and the evaluation report's notes.
"""
from __future__ import annotations

import json
import logging

import numpy as np

from deid.stages.alignments import load_alignments
from deid.stages.donor_coverage import MEASURES, coverage_caveats, donor_coverage, extreme_faces, frame_ratios


def landmarks(folder) -> list[np.ndarray]:
    return [ref.landmarks for ref in load_alignments(folder).faces()]


def test_a_person_covers_their_own_footage(extracted):
    faces = landmarks(extracted("video/WolfgangLanger_Pexels.mp4"))
    result = donor_coverage(faces, faces)
    assert result["covered"] and result["findings"] == []
    assert set(result["measures"]) == set(MEASURES)


def test_a_calm_donor_does_not_cover_an_expressive_target(extracted):
    expressive = landmarks(extracted("video/WolfgangLanger_Pexels.mp4"))
    calm = landmarks(extracted("video/talking_2.mp4"))
    result = donor_coverage(expressive, calm)
    assert not result["covered"]
    # The numbers are in the finding: who does what more, A's and B's ranges.
    assert any("than B ever does" in f and "A p5-p95" in f for f in result["findings"]), result["findings"]
    # And the other way round the expressive person covers more of the calm one than the reverse.
    reverse = donor_coverage(calm, expressive)
    assert len(reverse["findings"]) < len(result["findings"])


def test_previews_pick_the_mouth_and_eye_extremes(extracted):
    faces = landmarks(extracted("video/WolfgangLanger_Pexels.mp4"))
    picks = extreme_faces(faces)
    mouth = np.array([frame_ratios(lm)["mouth_open"] for lm in faces])
    eyes = np.array([frame_ratios(lm)["eye_open"] for lm in faces])
    assert picks[0] == int(np.nanargmax(mouth)) and int(np.nanargmin(eyes)) in picks
    assert 3 <= len(picks) <= 4 and len(set(picks)) == len(picks)


def test_train_records_the_finding(tiny_model, caplog):
    coverage = json.loads((tiny_model / "coverage.json").read_text())
    state = json.loads((tiny_model / "state.json").read_text())
    assert state["donor_coverage"]["covered"] == coverage["covered"]
    assert state["donor_coverage"]["findings"] == coverage["findings"]
    assert coverage_caveats(tiny_model) == tuple(
        f"donor coverage: B's footage does not cover A: {f}; expect the swap to freeze there" for f in coverage["findings"])


def test_a_finding_is_a_warning_in_trains_log(extracted, tmp_path, caplog):
    from deid.stages.donor_coverage import check_donor_coverage

    with caplog.at_level(logging.WARNING, logger="deid.train"):
        result = check_donor_coverage(landmarks(extracted("video/WolfgangLanger_Pexels.mp4")),
                                      landmarks(extracted("video/talking_2.mp4")), tmp_path)
    assert not result["covered"] and "donor coverage: B does not cover A" in caplog.text
    assert json.loads((tmp_path / "coverage.json").read_text())["findings"] == result["findings"]
