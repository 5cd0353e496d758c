"""PLUMBING test: reports/pyfeat_au.py against the real py-feat 2.1 package, with RANDOM weights.

Every AU number produced here is meaningless: the models are py-feat's own architectures with random
weights written at test time in a hub-cache folder (tests/pyfeat_weights.py), and their face detector is
rigged to report two fixed "faces" per frame (or none). What is checked is the calling code: that our
`load_detector` builds py-feat's Detectorv1 offline from a model folder, and that `detect_aus` feeds it
real video frames in batches and maps its output to our AU table (index = our frame indices, AUxx columns,
one row per frame = the largest face, a NaN row where there is no face).

No network: the detector is built with socket connections and name look-ups recorded (none may happen),
and the whole file passes inside a network namespace with no interface but loopback:
    unshare -n bash -c 'ip link set lo up && exec python -m pytest -q tests/test_pyfeat_plumbing.py'
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT / "tests" / "data" / "video" / "talking_1.mp4"
SIDE = 128  # frames are shrunk to this: the fixture's two "faces" per frame hold up to 128 px (pyfeat_weights.MAX_SIDE)


def _pyfeat_version() -> str | None:
    if importlib.util.find_spec("feat") is None:  # no import here: py-feat takes ~10 s to import
        return None
    try:
        return importlib.metadata.version("py-feat")
    except importlib.metadata.PackageNotFoundError:
        return None


_VERSION = _pyfeat_version()
pytestmark = [
    pytest.mark.skipif(_VERSION is None, reason="py-feat is not installed (install.sh installs it; by hand: "
                                                "pip install -e '.[pyfeat]' && pip install --no-deps py-feat==2.1.5); "
                                                "the AU plumbing test needs the real package"),
    pytest.mark.skipif(_VERSION is not None and not _VERSION.startswith("2."),
                       reason=f"py-feat {_VERSION}: reports/pyfeat_au.py targets py-feat 2.x"),
]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Speed only: on a busy 2-core machine two OpenMP threads per op spin against each other (7x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from pyfeat_weights import build_pyfeat_cache

    return build_pyfeat_cache(tmp_path_factory.mktemp("pyfeat-hub-cache"), faces=True)


@contextlib.contextmanager
def _network_recorded(attempts: list):
    real_connect, real_connect_ex, real_getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def connect(self, address):
        attempts.append(("connect", address))
        return real_connect(self, address)

    def connect_ex(self, address):
        attempts.append(("connect_ex", address))
        return real_connect_ex(self, address)

    def getaddrinfo(*args, **kwargs):
        attempts.append(("getaddrinfo", args[:2]))
        return real_getaddrinfo(*args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
    try:
        yield
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = real_connect, real_connect_ex, real_getaddrinfo


@pytest.fixture(scope="module")
def loaded(weights):
    from deid.reports.pyfeat_au import load_detector

    attempts: list = []
    with _network_recorded(attempts):
        detector, reason = load_detector(weights, device="cpu")
    assert reason is None, reason
    return detector, attempts


@pytest.fixture(scope="module")
def detector(loaded):
    return loaded[0]


@pytest.fixture(scope="module")
def frames() -> list[tuple[int, np.ndarray]]:
    """Five real frames of talking_1.mp4 (every 10th), shrunk to SIDE x SIDE."""
    import cv2
    from deid.stages.media import iter_frames, probe

    out = []
    with contextlib.closing(iter_frames(probe(VIDEO), every=10)) as decoded:
        for index, rgb in decoded:
            out.append((index, cv2.resize(rgb, (SIDE, SIDE), interpolation=cv2.INTER_AREA)))
            if len(out) == 5:
                break
    return out


@pytest.fixture(scope="module")
def au_table(detector, frames):
    """detect_aus on all frames, 2 at a time, and the batch sizes py-feat's face detector was given."""
    from deid.reports.pyfeat_au import detect_aus

    with pytest.MonkeyPatch.context() as monkeypatch:
        batches = _record_batches(detector, monkeypatch)
        table = detect_aus(detector, frames, batch_size=2)
    return table, batches


def _au_names() -> list[str]:
    from feat.pretrained import AU_LANDMARK_MAP

    return sorted(AU_LANDMARK_MAP["Feat"])


def _record_batches(detector, monkeypatch, drop=lambda image: False) -> list[int]:
    """Wrap py-feat's face detector (its `.forward` is the documented hook) to record each batch's size;
    images for which `drop` is true get no detection."""
    sizes: list[int] = []
    face_detector = detector.facepose_detector
    real = face_detector.forward

    def forward(images):
        sizes.append(int(images.shape[0]))
        found = real(images)
        return [[] if drop(images[i]) else dets for i, dets in enumerate(found)]

    monkeypatch.setattr(face_detector, "forward", forward)
    return sizes


def test_detector_is_built_offline_from_the_model_folder(loaded, weights):
    import feat.detector
    import feat.utils.io
    import huggingface_hub.constants
    import torch
    from safetensors.torch import load_file
    from pyfeat_weights import REVISION
    from deid.reports.pyfeat_au import DETECTOR_KWARGS

    detector, attempts = loaded
    assert attempts == [], f"load_detector touched the network: {attempts}"
    assert huggingface_hub.constants.HF_HUB_OFFLINE
    assert type(detector).__name__ == "Detectorv1"
    for key in ("face_model", "landmark_model", "au_model", "emotion_model", "identity_model", "gaze_model"):
        assert detector.info[key] == DETECTOR_KWARGS[key]
    assert detector.device == torch.device("cpu")
    assert next(detector.landmark_detector.parameters()).device == torch.device("cpu")
    # The weights came from our folder: the rigged class-head biases and the landmark net are the files' own.
    snapshot = weights / "models--py-feat--retinaface_r34" / "snapshots" / REVISION
    saved = load_file(str(snapshot / "model.safetensors"))
    net = detector.facepose_detector.net
    for name, value in net.state_dict().items():
        if name.startswith("ClassHead") or name == "body.conv1.weight":
            assert torch.equal(value, saved[name]), name
    mobilefacenet = torch.load(weights / "models--py-feat--mobilefacenet" / "snapshots" / REVISION
                               / "mobilefacenet_model_best.pth.tar", weights_only=True)["state_dict"]
    assert all(torch.equal(v, mobilefacenet[k]) for k, v in detector.landmark_detector.state_dict().items())
    assert sorted(detector.au_detector.classifiers) == sorted(detector.au_detector.au_keys)
    # py-feat's own resource folder is left as it was once the detector is built.
    assert feat.detector.get_resource_path is feat.utils.io.get_resource_path
    assert Path(feat.utils.io.get_resource_path()) != weights


def test_missing_weights_or_bad_device_give_a_one_line_reason(tmp_path, weights, detector):
    import torch
    from deid.reports.pyfeat_au import load_detector

    none, reason = load_detector(weights, device="tpu")
    assert none is None and "not a torch device" in reason
    if not torch.cuda.is_available():
        none, reason = load_detector(weights, device="cuda")
        assert none is None and "no CUDA device" in reason

    none, reason = load_detector(tmp_path / "absent")
    assert none is None and "does not exist" in reason
    empty = tmp_path / "empty"
    empty.mkdir()
    none, reason = load_detector(empty)
    assert none is None and "\n" not in reason
    for wanted in ("py-feat/retinaface_r34/model.safetensors", "py-feat/mobilefacenet/mobilefacenet_model_best.pth.tar",
                   "py-feat/xgb_au/xgb_au_classifier_v2.skops"):
        assert wanted in reason


def test_au_table_one_row_per_frame_from_the_largest_face(detector, frames, au_table):
    import torch

    table, batches = au_table
    assert batches == [2, 2, 1]  # py-feat really got them 2 at a time
    assert table.index.name == "frame"
    assert table.index.tolist() == [index for index, _ in frames]
    assert table.columns.tolist() == _au_names() and len(table.columns) == 20
    assert table.notna().all().all()
    assert ((table >= 0) & (table <= 1)).all().all()  # xgb AUs are probabilities
    assert len(table.drop_duplicates()) == len(table)  # frames' rows are not copies of one another

    # Against py-feat's own output for the same frames: two faces per frame, and ours is the larger one's.
    batch = torch.from_numpy(np.stack([rgb for _, rgb in frames])).permute(0, 3, 1, 2)
    raw = pd.DataFrame(detector.detect(batch, data_type="tensor", batch_size=len(frames), progress_bar=False))
    assert sorted(raw["frame"].unique()) == list(range(len(frames)))
    assert raw["Pitch"].notna().all()  # the pose MLP, which py-feat loads lazily, came from our folder too
    for position, (index, _) in enumerate(frames):
        faces = raw[raw["frame"] == position]
        assert len(faces) == 2
        area = faces["FaceRectWidth"] * faces["FaceRectHeight"]
        largest, other = faces.loc[area.idxmax(), _au_names()], faces.loc[area.idxmin(), _au_names()]
        assert not np.allclose(largest.to_numpy(float), other.to_numpy(float))
        np.testing.assert_allclose(table.loc[index].to_numpy(), largest.to_numpy(float), rtol=0, atol=1e-5)


def test_calls_on_consecutive_chunks_concatenate_to_one_call(detector, frames, au_table):
    """How a caller streaming a video uses it: one call per chunk of frames, tables concatenated."""
    from deid.reports.pyfeat_au import detect_aus

    whole, _ = au_table
    pieces = pd.concat([detect_aus(detector, frames[:1], batch_size=2), detect_aus(detector, frames[1:4], batch_size=3),
                        detect_aus(detector, frames[4:], batch_size=2)])
    pd.testing.assert_frame_equal(pieces, whole, check_exact=False, atol=1e-5, rtol=0)


def test_a_frame_without_a_face_is_a_nan_row_among_the_others(detector, frames, au_table, monkeypatch):
    from deid.reports.pyfeat_au import detect_aus

    black = (999, np.zeros_like(frames[0][1]))
    batches = _record_batches(detector, monkeypatch, drop=lambda image: int(image.max()) == 0)
    table = detect_aus(detector, [frames[0], black, frames[1]], batch_size=4)
    assert batches == [3]
    assert table.index.tolist() == [frames[0][0], frames[1][0], 999]
    assert table.loc[999].isna().all()
    pd.testing.assert_frame_equal(table.drop(index=999), au_table[0].iloc[:2], check_exact=False, atol=1e-5, rtol=0)


def test_frames_of_two_sizes_and_no_frames(detector, frames):
    import cv2
    from deid.reports.pyfeat_au import detect_aus

    narrow = (frames[1][0], cv2.resize(frames[1][1], (SIDE, SIDE * 3 // 4), interpolation=cv2.INTER_AREA))
    table = detect_aus(detector, [frames[0], narrow, frames[2]], batch_size=8)
    assert table.index.tolist() == [frames[0][0], frames[1][0], frames[2][0]]
    assert table.notna().all().all()
    empty = detect_aus(detector, [], batch_size=8)
    assert empty.empty and empty.index.name == "frame" and empty.columns.tolist() == _au_names()


def test_no_face_anywhere_gives_nan_rows(weights, frames, tmp_path):
    from pyfeat_weights import build_no_face_variant
    from deid.reports.pyfeat_au import detect_aus, load_detector

    detector, reason = load_detector(build_no_face_variant(tmp_path / "no-face-cache", weights))
    assert reason is None, reason
    table = detect_aus(detector, frames[:3], batch_size=2)
    assert table.index.tolist() == [index for index, _ in frames[:3]]
    assert table.columns.tolist() == _au_names()
    assert table.isna().all().all()


def test_py_feat_leaves_autograd_as_it_found_it(weights, frames):
    """Building py-feat's Detector switched autograd off process-wide; in one process with training (a
    batch worker, the test suite) every backward pass then failed. load_detector/detect_aus restore it."""
    import torch

    from deid.reports.pyfeat_au import detect_aus, load_detector

    assert torch.is_grad_enabled()
    detector, reason = load_detector(weights)
    assert reason is None and torch.is_grad_enabled()
    detect_aus(detector, frames[:2], batch_size=2)
    assert torch.is_grad_enabled()
    x = torch.ones(2, requires_grad=True)
    (x * 3).sum().backward()
    assert x.grad is not None
