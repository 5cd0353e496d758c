"""The demo clips must be real, decodable videos of one detectable face each, with audio, built once."""
from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import cv2
import ffmpeg
import numpy as np
import pytest

import deid.pipeline.demo_media as demo_media
from deid.pipeline.demo_media import DemoClip, build_demo_clips

with warnings.catch_warnings():
    # face_recognition_models still imports pkg_resources, which newer setuptools deprecates.
    warnings.simplefilter("ignore")
    import face_recognition

# Small enough to keep the test fast, large enough for dlib's HOG detector (face ~70 px wide).
SECONDS = 1.0
FPS = 12
SIZE = 192
FRAMES = 12


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoClip, DemoClip]:
    return build_demo_clips(tmp_path_factory.mktemp("demo"), seconds=SECONDS, fps=FPS, size=SIZE)


def _decode_all(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    return frames


def test_clips_describe_what_was_written(clips: tuple[DemoClip, DemoClip]) -> None:
    astronaut, grace_hopper = clips
    assert (astronaut.person, grace_hopper.person) == ("astronaut", "grace_hopper")
    for clip in clips:
        assert clip.path.name == f"{clip.person}.mp4" and clip.path.is_file()
        assert clip.frames == FRAMES and clip.fps == FPS
        assert not [p for p in clip.path.parent.iterdir() if ".part" in p.name], "temporary files left behind"


@pytest.mark.parametrize("which", [0, 1])
def test_probe_frames_fps_and_audio(clips: tuple[DemoClip, DemoClip], which: int) -> None:
    info = ffmpeg.probe(str(clips[which].path))
    video = [s for s in info["streams"] if s["codec_type"] == "video"]
    audio = [s for s in info["streams"] if s["codec_type"] == "audio"]
    assert len(video) == 1 and len(audio) == 1
    assert video[0]["codec_name"] == "h264" and video[0]["pix_fmt"] == "yuv420p"
    assert (video[0]["width"], video[0]["height"]) == (SIZE, SIZE)
    assert int(video[0]["nb_frames"]) == FRAMES
    assert Fraction(video[0]["r_frame_rate"]) == FPS
    assert audio[0]["codec_name"] == "aac"
    assert float(audio[0]["duration"]) == pytest.approx(SECONDS, abs=0.05)


@pytest.mark.parametrize("which", [0, 1])
def test_first_middle_last_frame_show_one_face(clips: tuple[DemoClip, DemoClip], which: int) -> None:
    frames = _decode_all(clips[which].path)
    assert len(frames) == FRAMES
    for index in (0, FRAMES // 2, FRAMES - 1):
        assert len(face_recognition.face_locations(frames[index], model="hog")) == 1, f"frame {index}"


@pytest.mark.parametrize("which", [0, 1])
def test_reference_is_a_still_of_the_same_size_with_one_face(clips: tuple[DemoClip, DemoClip], which: int) -> None:
    reference = cv2.imread(str(clips[which].reference))
    assert reference is not None and reference.shape == (SIZE, SIZE, 3)
    assert len(face_recognition.face_locations(cv2.cvtColor(reference, cv2.COLOR_BGR2RGB), model="hog")) == 1


def test_second_call_reuses_the_files(clips: tuple[DemoClip, DemoClip]) -> None:
    files = [p for clip in clips for p in (clip.path, clip.reference)]
    before = [p.stat().st_mtime_ns for p in files]
    again = build_demo_clips(clips[0].path.parent, seconds=SECONDS, fps=FPS, size=SIZE)
    assert again == clips
    assert [p.stat().st_mtime_ns for p in files] == before


def test_ffmpeg_failure_raises_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_media, "_AUDIO_RATE", -1)  # the sine source rejects it
    with pytest.raises(RuntimeError, match="ffmpeg failed.*sample_rate"):
        build_demo_clips(tmp_path, seconds=0.2, fps=10, size=64)
    assert not list(tmp_path.glob("*.mp4")) and not list(tmp_path.glob("*.part*"))
