"""One resampler: the face convert feeds the model is the face train fed it (issue 22, item 3).

Training crops go frame -> extract's aligned crop -> stored window -> training square; convert cuts the
model's square from the whole frame in one warp. Both must give the same pixels, in particular the same
high-frequency content on lip and eye edges: a plain `cv2.warpAffine(..., INTER_AREA)` (bilinear in
fact) shrinks a 300 px face to 64 px with aliasing, which is the control this test must tell apart.
"""
from __future__ import annotations

import subprocess

import cv2
import numpy as np
import pytest
import torch

from deid.pipeline.config import ExtractConfig
from deid.stages.alignments import load_alignments
from deid.stages.augment import plain
from deid.stages.extract import extract
from deid.stages.media import iter_frames, probe
from deid.stages.train_data import MARGIN, Window, frame_to_model, model_input, read_face, window_size

SIZE, CENTERING, COVERAGE = 64, "face", 0.875


@pytest.fixture(scope="module")
def faces(tmp_path_factory, data_dir):
    """(frame, landmarks, training square) for 3 frames of talking_1 (a ~300 px face in 700x700 frames)."""
    root = tmp_path_factory.mktemp("resampler")
    clip = root / "t.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(data_dir / "video" / "talking_1.mp4"),
                    "-frames:v", "3", "-c:v", "libx264", "-crf", "12", "-an", str(clip)], check=True)
    extract(clip, root / "ex", ExtractConfig(), device="cpu", progress=False)
    refs = {ref.frame: ref for ref in load_alignments(root / "ex").faces()}
    window = Window(window_size(SIZE, SIZE), CENTERING, COVERAGE, "extended")
    out = []
    for index, frame in iter_frames(probe(clip)):
        ref = refs[index]
        planes = torch.from_numpy(read_face(ref, window)[None])
        square = (plain(planes, SIZE, SIZE).input[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        out.append((frame, ref.landmarks, square))
    assert len(out) == 3
    return out


def detail(image: np.ndarray) -> float:
    """High-frequency energy: variance of the Laplacian of the grey image."""
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64), cv2.CV_64F).var())


def test_convert_input_matches_the_training_square(faces):
    for frame, landmarks, square in faces:
        cut = model_input(frame, landmarks, SIZE, CENTERING, COVERAGE)
        inner = slice(4, -4)  # the border pixels depend on each path's padding, not on the resampler
        difference = np.abs(cut.astype(np.float64) - square.astype(np.float64))[inner, inner].mean()
        ratio = detail(cut[inner, inner]) / detail(square[inner, inner])
        # Measured: 0.82 grey levels and 1.19 (the training square passes one more bilinear step).
        assert difference < 1.5, difference
        assert 0.8 < ratio < 1.3, ratio


def test_the_old_bilinear_cut_is_told_apart(faces):
    """Control: warpAffine's INTER_AREA flag (bilinear in fact) aliases; the test above would catch it."""
    ratios, differences = [], []
    for frame, landmarks, square in faces:
        matrix = frame_to_model(landmarks, SIZE, CENTERING, COVERAGE)
        aliased = cv2.warpAffine(frame, matrix, (SIZE, SIZE), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
        ratios.append(detail(aliased[4:-4, 4:-4]) / detail(square[4:-4, 4:-4]))
        differences.append(np.abs(aliased.astype(np.float64) - square.astype(np.float64))[4:-4, 4:-4].mean())
    # Measured: 3.7x the training square's detail and 2.5 grey levels apart.
    assert min(ratios) > 2.0 and min(differences) > 1.5, (ratios, differences)


def test_margin_is_what_the_window_assumes():
    assert window_size(SIZE, SIZE) >= SIZE * MARGIN
