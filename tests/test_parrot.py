"""The parrot attack against deid's own obfuscations: blur and pixelate are recognised and re-identified,
the default solid mask is not."""
from __future__ import annotations


import cv2
import numpy as np
import pytest

from deid.stages.baseline import baseline
from deid.reports.parrot import estimate_degradation
from deid.stages.evaluate import evaluate
from deid.stages.evaluate_config import EvaluateConfig
from deid.stages.media import iter_frames, probe
from deid.stages.obfuscate import obfuscate
from deid.stages.protect_config import ProtectConfig
from tests.test_evaluate import _landmarks_of_image, _write_video


@pytest.fixture(scope="module")
def talking(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("parrot")
    info = probe(data_dir / "video" / "talking_1.mp4")
    frames = [cv2.resize(f, (350, 350), interpolation=cv2.INTER_AREA) for i, f in iter_frames(info) if i < 24]
    _write_video(root / "talking.mp4", frames, info.fps)
    cv2.imwrite(str(root / "ref.jpg"), cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR))
    return {"root": root, "video": root / "talking.mp4", "ref": root / "ref.jpg", "frames": frames}


def test_auto_detection_finds_every_strength_deid_can_produce(talking):
    """obfuscate() sets its strength from the face box: every block size and sigma, and odd ones between."""
    frame = talking["frames"][0]
    lm = _landmarks_of_image(talking["ref"])
    full = np.full(frame.shape[:2], 255, np.uint8)
    for method in ("pixelate", "blur"):
        for face_size in (40, 63, 90, 117, 150, 201, 260):
            degraded = obfuscate(frame, full, method, face_size)
            estimate = estimate_degradation([(frame, degraded, lm)])
            assert estimate["method"] == method, (method, face_size, estimate)
    assert estimate_degradation([(frame, obfuscate(frame, full, "mask", 150), lm)])["method"] is None


@pytest.mark.parametrize("method", ["pixelate", "blur"])
def test_parrot_reidentifies_deids_own_weak_methods(talking, data_dir, tmp_path, method):
    from deid.stages.extract import extract
    from deid.pipeline.config import ExtractConfig

    faces = tmp_path / "ex"
    extract(talking["video"], faces, ExtractConfig(), device="cpu", progress=False)
    out = tmp_path / f"{method}.mp4"
    baseline(talking["video"], faces, out, ProtectConfig(method=method), device="cpu", allow_leaks=True,
             progress=False)
    s = evaluate(talking["video"], out, talking["ref"], data_dir / "identities" / "obama" / "1.jpg", tmp_path / "ev",
                 EvaluateConfig(frames=5, au="none"), progress=False)
    parrot = s.parrot
    assert parrot["applied"] and parrot["method"] == method, parrot
    assert parrot["frames_reidentified"] > 0, parrot


def test_parrot_does_not_reidentify_the_default_mask(talking, data_dir, tmp_path):
    from deid.stages.extract import extract
    from deid.pipeline.config import ExtractConfig

    faces = tmp_path / "ex"
    extract(talking["video"], faces, ExtractConfig(), device="cpu", progress=False)
    out = tmp_path / "mask.mp4"
    summary = baseline(talking["video"], faces, out, ProtectConfig(), device="cpu", progress=False)
    assert summary["published"]
    for forced in ("auto", "blur", "pixelate"):
        s = evaluate(talking["video"], out, talking["ref"], data_dir / "identities" / "obama" / "1.jpg",
                     tmp_path / f"ev_{forced}", EvaluateConfig(frames=5, au="none", parrot=forced), progress=False)
        assert s.identity["reidentification"]["frames_reidentified"] == 0
        assert s.parrot.get("frames_reidentified", 0) == 0, (forced, s.parrot)


@pytest.mark.parametrize("method", [pytest.param("pixelate", marks=pytest.mark.slow), "blur"])  # pixelate: ~40 s
def test_parrot_on_a_multi_face_clip(crowd, data_dir, tmp_path, method):
    from deid.stages.extract import extract
    from deid.pipeline.config import ExtractConfig

    faces = tmp_path / "ex"
    extract(crowd.path, faces, ExtractConfig(), device="cpu", progress=False)
    out = tmp_path / f"{method}.mp4"
    baseline(crowd.path, faces, out, ProtectConfig(method=method), device="cpu", allow_leaks=True, progress=False)
    s = evaluate(crowd.path, out, data_dir / "images" / "single_face.jpg", data_dir / "identities" / "obama" / "1.jpg",
                 tmp_path / "ev", EvaluateConfig(frames=4, au="none"), progress=False)
    parrot = s.parrot
    assert parrot["applied"] and parrot["method"] == method, parrot
    assert parrot["frames_reidentified"] > 0, parrot


def test_a_flat_swapped_face_is_not_a_degradation_and_does_not_crash(talking):
    """A mismatched pair whose 'swapped' face region is one colour (ZeroDivisionError before)."""
    frame = talking["frames"][0]
    lm = _landmarks_of_image(talking["ref"])
    # The original face region's own mean colour: a strong blur of the original comes close to it, so the
    # flat-fill comparison is reached (where the division by a zero flat error used to crash).
    (x0, y0), (x1, y1) = lm.min(0).astype(int), lm.max(0).astype(int)
    grey = np.empty_like(frame)
    grey[:] = frame[y0:y1, x0:x1].reshape(-1, 3).mean(0).round().astype(np.uint8)
    estimate = estimate_degradation([(frame, grey, lm)])
    assert estimate["method"] is None and "flat colour" in estimate["reason"]
