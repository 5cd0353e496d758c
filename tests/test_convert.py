"""The convert stage on real media: output guarantees, fail-closed protection, bad input."""
from __future__ import annotations

import json
from fractions import Fraction
import shutil
from pathlib import Path

import cv2
import face_recognition
import ffmpeg
import numpy as np
import pytest

from deid.pipeline.cli import main
from deid.pipeline.config import CleanConfig, ConvertConfig, ExtractConfig
from deid.stages.clean import clean
from deid.stages.convert import convert
from deid.stages.extract import extract
from deid.stages.media import iter_frames, probe
from deid.stages.protect_config import ProtectConfig

# These clips hold large faces only: searching from 40 px keeps the protection pass and the leak check
# ~10x cheaper here; small faces are tested in test_protect.py.
LARGE = ProtectConfig(min_face=40)



def video_facts(path: Path) -> dict:
    info = ffmpeg.probe(str(path), count_frames=None)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    return {"frames": int(video["nb_read_frames"]), "fps": video["avg_frame_rate"],
            "size": (int(video["width"]), int(video["height"])),
            "audio": any(s["codec_type"] == "audio" for s in info["streams"])}


def frames_of(path: Path) -> list[np.ndarray]:
    return [frame for _, frame in iter_frames(probe(path))]


def test_output_keeps_frame_count_fps_size_and_audio(tiny_model, extracted, data_dir, tmp_path):
    video = data_dir / "video" / "talking_1.mp4"
    out = tmp_path / "swapped.mp4"
    summary = convert(video, extracted("video/talking_1.mp4"), tiny_model, out, ConvertConfig(), device="cpu",
                      progress=False, protect=LARGE)
    source, result = video_facts(video), video_facts(out)
    assert result["frames"] == source["frames"] == summary["frames"]
    assert result["size"] == source["size"] and result["audio"] == source["audio"] is True
    assert abs(float(Fraction(result["fps"])) - float(Fraction(source["fps"]))) < 0.01
    assert summary["status"].get("swapped", 0) >= 0.95 * summary["frames"]
    rows = (tmp_path / "swapped.frames.csv").read_text().splitlines()
    assert rows[0].startswith("frame,status") and len(rows) == summary["frames"] + 1


def test_faceless_frames_untouched_and_face_changed_only_inside(tiny_model, extracted, data_dir, tmp_path):
    video = data_dir / "video" / "face_noface.mov"
    faces = extracted("video/face_noface.mov")
    out = tmp_path / "out.mp4"
    # Default search here: from 40 px CenterFace runs at 0.5x, where it fires on this clip's right edge.
    convert(video, faces, tiny_model, out, ConvertConfig(crf=8), device="cpu", progress=False)
    frames = json.loads((faces / "alignments.json").read_text())["frames"]
    source, result = frames_of(video), frames_of(out)
    assert len(source) == len(result) == len(frames)
    changed_inside, far_outside, faceless = [], [], []
    for i, (a, b) in enumerate(zip(source, result)):
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(2)
        if not frames[str(i)]:
            faceless.append(diff.mean())
            continue
        x, y, w, h = frames[str(i)][0]["box"]
        inside = diff[int(y + 0.3 * h):int(y + 0.8 * h), int(x + 0.25 * w):int(x + 0.75 * w)]
        changed_inside.append(inside.mean())
        far = np.ones_like(diff, bool)
        far[max(0, int(y - 1.5 * h)):int(y + 2.5 * h), max(0, int(x - 1.5 * w)):int(x + 2.5 * w)] = False
        far_outside.append(diff[far].mean())
    assert faceless and changed_inside
    assert max(faceless) < 1.5, "frames without a face must come out as they went in (up to encoding)"
    assert np.median(changed_inside) > 8, "the face must be replaced"
    assert max(far_outside) < 1.5, "pixels far from the face must not change"


def test_detection_gap_is_protected_and_unrecognisable(tiny_model, extracted, data_dir, tmp_path):
    faces = tmp_path / "faces"
    shutil.copytree(extracted("video/talking_1.mp4"), faces)
    alignments = json.loads((faces / "alignments.json").read_text())
    gap = range(40, 52)
    for i in gap:
        alignments["frames"][str(i)] = []
    (faces / "alignments.json").write_text(json.dumps(alignments))
    out = tmp_path / "out.mp4"
    summary = convert(data_dir / "video" / "talking_1.mp4", faces, tiny_model, out, ConvertConfig(max_gap=5),
                      device="cpu", progress=False, protect=LARGE)
    assert summary["status"]["protected"] == len(gap)
    result = frames_of(out)
    for i in gap:
        assert face_recognition.face_locations(result[i], number_of_times_to_upsample=1) == [], f"frame {i}"
    # A short gap is bridged: the swap continues instead of blurring.
    alignments["frames"] = {k: ([] if int(k) in (60, 61) else v) for k, v in
                            json.loads((extracted("video/talking_1.mp4") / "alignments.json").read_text())["frames"].items()}
    (faces / "alignments.json").write_text(json.dumps(alignments))
    summary = convert(data_dir / "video" / "talking_1.mp4", faces, tiny_model, tmp_path / "short.mp4",
                      ConvertConfig(max_gap=5), device="cpu", progress=False, protect=LARGE)
    assert summary["status"]["interpolated"] == 2 and "protected" not in summary["status"]


def test_bystander_is_protected(tiny_model, data_dir, tmp_path):
    """A clip of the target with a second person (Biden's photo) composited in: the bystander is hidden."""
    source = data_dir / "video" / "talking_1.mp4"
    biden = cv2.imread(str(data_dir / "identities" / "biden" / "1.jpg"))
    (top, right, bottom, left), = face_recognition.face_locations(biden[:, :, ::-1].copy())
    pad = (bottom - top) // 2
    patch = biden[max(0, top - pad):bottom + pad, max(0, left - pad):right + pad]
    patch = cv2.resize(patch, (200, int(200 * patch.shape[0] / patch.shape[1])))
    clip_dir = tmp_path / "clip"
    clip_dir.mkdir()
    composite = clip_dir / "with_bystander.mp4"
    info = probe(source)
    process = (ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{info.width}x{info.height}", framerate=22)
               .output(str(composite), vcodec="libx264", crf=12, pix_fmt="yuv420p").overwrite_output()
               .run_async(pipe_stdin=True, quiet=True))
    for index, frame in iter_frames(info):
        if index >= 40:
            break
        frame = frame.copy()
        frame[-patch.shape[0]:, -patch.shape[1]:] = patch[:, :, ::-1]
        process.stdin.write(frame.tobytes())
    process.stdin.close()
    assert process.wait() == 0
    extract(composite, tmp_path / "ex", ExtractConfig(), device="cpu", progress=False)
    reference = tmp_path / "target.png"
    cv2.imwrite(str(reference), cv2.cvtColor(next(iter_frames(info))[1], cv2.COLOR_RGB2BGR))
    clean(tmp_path / "ex", tmp_path / "cl", CleanConfig(), references=[reference], progress=False)
    out = tmp_path / "out.mp4"
    summary = convert(composite, tmp_path / "cl", tiny_model, out, ConvertConfig(), device="cpu", progress=False,
                      protect=LARGE)
    assert summary["faces_protected"] >= 38 and summary["faces_unprotected"] == 0
    biden_encoding = face_recognition.face_encodings(biden[:, :, ::-1].copy())[0]
    for frame in frames_of(out)[::5]:
        corner = frame[-patch.shape[0] - 40:, -patch.shape[1] - 40:].copy()
        encodings = face_recognition.face_encodings(corner)
        assert all(np.linalg.norm(e - biden_encoding) > 0.6 for e in encodings)


def test_fallback_none_fails_the_leak_check_and_publishes_nothing(tiny_model, extracted, data_dir, tmp_path, caplog,
                                                                  capsys):
    faces = tmp_path / "faces"
    shutil.copytree(extracted("video/talking_1.mp4"), faces)
    alignments = json.loads((faces / "alignments.json").read_text())
    for i in range(40, 52):
        alignments["frames"][str(i)] = []
    (faces / "alignments.json").write_text(json.dumps(alignments))
    code = main(["convert", str(data_dir / "video" / "talking_1.mp4"), "--faces", str(faces), "--model",
                 str(tiny_model), "-o", str(tmp_path / "o.mp4"), "--fallback", "none", "--min-face", "40"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and "leak check" in err[-1] and "o.leaky.mp4" in err[-1]
    assert not (tmp_path / "o.mp4").exists() and (tmp_path / "o.leaky.mp4").is_file()
    assert "UNPROTECTED" in caplog.text
    rows = (tmp_path / "o.frames.csv").read_text().splitlines()
    leaks = [r for r in rows[1:] if ",LEAK," in r]
    # The target is in clear in the 12 frames of the gap: each is listed with its box and distance.
    assert {int(r.split(",")[0]) for r in leaks} >= set(range(40, 52)) and "face found at" in leaks[0]


def test_bad_inputs(tiny_model, extracted, data_dir, tmp_path, capsys):
    talking = data_dir / "video" / "talking_1.mp4"
    # alignments of another video
    assert main(["-q", "convert", str(data_dir / "video" / "talking_2.mp4"), "--faces",
                 str(extracted("video/talking_1.mp4")), "--model", str(tiny_model), "-o", str(tmp_path / "a.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert "made from another video" in err and len(err.splitlines()) == 1
    # a model folder whose weights belong to another architecture
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    state = json.loads((broken / "state.json").read_text())
    state["frozen"]["latent"] = 64
    (broken / "state.json").write_text(json.dumps(state))
    assert main(["-q", "convert", str(talking), "--faces", str(extracted("video/talking_1.mp4")), "--model",
                 str(broken), "-o", str(tmp_path / "b.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert "broken" in err and len(err.splitlines()) == 1
    # no model at all
    assert main(["-q", "convert", str(talking), "--faces", str(extracted("video/talking_1.mp4")), "--model",
                 str(tmp_path / "nothing"), "-o", str(tmp_path / "c.mp4")]) == 2
    assert "no trained model" in capsys.readouterr().err
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        assert not (tmp_path / name).exists()


# The default run keeps the mask (the default method); blur and pixelate run with -m slow.
@pytest.mark.parametrize("method", [pytest.param("blur", marks=pytest.mark.slow),
                                    pytest.param("pixelate", marks=pytest.mark.slow), "mask"])
def test_baselines_hide_every_face_with_the_same_output_guarantees(extracted, data_dir, tmp_path, method):
    from deid.stages.baseline import baseline
    from deid.stages.protect_config import ProtectConfig

    video = data_dir / "video" / "single_face.mp4"
    out = tmp_path / f"{method}.mp4"
    # blur and pixelate may still be detectable by the leak check; here only the output guarantees matter.
    summary = baseline(video, extracted("video/single_face.mp4"), out, ProtectConfig(method=method),
                       allow_leaks=method != "mask", progress=False)
    assert summary["faces_extracted"] == 72 and summary["faces_detected"] >= 72
    facts, source = video_facts(out), video_facts(video)
    assert facts["frames"] == source["frames"] and facts["size"] == source["size"] and facts["audio"] == source["audio"]
    for frame in frames_of(out)[::12]:
        assert face_recognition.face_locations(frame, number_of_times_to_upsample=1) == []
