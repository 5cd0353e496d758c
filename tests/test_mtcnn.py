"""The PyTorch MTCNN port against the `mtcnn` package's own TensorFlow runner.

tests/fixtures/mtcnn_reference.json holds the package's detections on real images (regenerate with
tests/fixtures/make_mtcnn_reference.py in a scratch TensorFlow env). The port must find the same
faces with the same boxes, landmarks and scores; anything looser would let a layout or arithmetic
slip in the port pass unnoticed.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from deid.models.mtcnn import MTCNN, Detection, default_weights_dir

DATA = Path(__file__).resolve().parent / "data"
FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "mtcnn_reference.json").read_text())
REFERENCE = FIXTURE["images"]
KEYPOINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
STILLS = ["images/0-f1-su-ph.jpg", "images/0-f15-hao-ph.jpg", "images/15-f13-anc-ph.jpg", "images/45-m7-di-ph.jpg"]

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared test media not found at {DATA}")


def _load(rel: str) -> np.ndarray:
    image = cv2.imread(str(DATA / rel))
    assert image is not None, f"cannot read {DATA / rel}"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two x, y, w, h boxes."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


@pytest.fixture(scope="module")
def detector() -> MTCNN:
    try:
        default_weights_dir()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    return MTCNN(device="cpu")


def _ties_fall_as_in_fixture() -> bool:
    """Whether numpy's argsort orders equal values here as where the fixture was made.

    The package (and so the port) breaks ties between saturated 1.0 scores with numpy's unstable, SIMD
    argsort; on another CPU family or numpy build the chosen proposal, and the box, can move a few px.
    """
    canary = FIXTURE["argsort_canary"]
    return np.argsort(np.array(canary["values"])).tolist() == canary["order"]


@pytest.mark.parametrize("rel", sorted(REFERENCE))
def test_matches_package_runner(detector: MTCNN, rel: str) -> None:
    if not _ties_fall_as_in_fixture():
        pytest.skip(f"numpy {np.__version__} breaks score ties differently on this CPU than the fixture's "
                    f"numpy {FIXTURE['argsort_canary']['numpy']}; regenerate it with make_mtcnn_reference.py")
    expected = REFERENCE[rel]
    found = detector.detect([_load(rel)])[0]
    assert len(found) == len(expected)
    used: set[int] = set()
    for face in expected:
        # Unrounded values: the package's JSON rounds to whole pixels, which would eat the tolerance.
        box = np.array(face["box_float"])
        ious = [_iou(box, np.array(d.box)) for d in found]
        best = int(np.argmax(ious))
        assert best not in used, f"{rel}: two reference faces matched the same detection"
        used.add(best)
        assert ious[best] >= 0.95, f"{rel}: box {found[best].box} vs {box.tolist()}"
        keypoints = np.array([face["keypoints_float"][name] for name in KEYPOINTS])
        assert np.abs(found[best].keypoints - keypoints).max() <= 2.0, rel
        assert found[best].score == pytest.approx(face["confidence"], abs=0.01)


def test_detection_format(detector: MTCNN) -> None:
    faces = detector.detect([_load("images/multi_face.jpg")])[0]
    assert all(isinstance(face, Detection) for face in faces)
    assert faces[0].keypoints.shape == (5, 2) and faces[0].keypoints.dtype == np.float32
    areas = [face.box[2] * face.box[3] for face in faces]
    assert areas == sorted(areas, reverse=True)  # largest first


def test_no_face(detector: MTCNN) -> None:
    mountain = _load("images/free-mountain-vector-01.jpg")
    grey = np.full((240, 320, 3), 128, np.uint8)
    assert detector.detect([mountain, grey]) == [[], []]
    assert detector.detect([]) == []


def test_batch_equals_one_at_a_time(detector: MTCNN) -> None:
    # Four stills of one size share P-Net passes; single_face.jpg has another size, so grouping is
    # exercised too.
    images = [_load(rel) for rel in STILLS + ["images/single_face.jpg"]]
    batched = detector.detect(images)
    for image, faces in zip(images, batched):
        alone = detector.detect([image])[0]
        assert len(faces) == len(alone)
        for a, b in zip(faces, alone):
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)
            np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-3)
            assert a.score == pytest.approx(b.score, abs=1e-5)


def test_torch_resize_route_matches_cv2(detector: MTCNN, monkeypatch: pytest.MonkeyPatch) -> None:
    # CUDA runs resize the pyramid in torch, CPU runs with cv2; both must be TF's area resize. Checked
    # here on CPU so the GPU route is covered without a GPU.
    import torch

    from deid.models import mtcnn

    image = _load("images/single_face.jpg")
    batch = (torch.from_numpy(image).float()[None] - 127.5) / 128
    sizes = [(int(image.shape[0] * s), int(image.shape[1] * s)) for s in detector.scales(*image.shape[:2])]
    pairs = zip(mtcnn._area_pyramid(batch, sizes, detector._edges, use_cv2=True),
                mtcnn._area_pyramid(batch, sizes, detector._edges, use_cv2=False))
    for size, (by_cv2, by_torch) in zip(sizes, pairs):
        assert tuple(by_torch.shape[2:]) == size
        torch.testing.assert_close(by_torch, by_cv2, atol=1e-5, rtol=0)

    expected = detector.detect([image])[0]
    original = mtcnn._area_pyramid
    monkeypatch.setattr(mtcnn, "_area_pyramid", lambda *args: original(*args, use_cv2=False))
    found = detector.detect([image])[0]
    assert len(found) == len(expected)
    for a, b in zip(found, expected):
        np.testing.assert_allclose(a.box, b.box, atol=1e-2)
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-2)


def test_missing_package_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install mtcnn"):
        default_weights_dir()
