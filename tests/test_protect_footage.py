"""`deid protect` on footage as officers receive it: repair then verify, never touch an input, folders of
mixed recordings, exit codes.

The judge of "no face left" is face_recognition's HOG detector (upsample 2), which shares nothing with the
protection pass (CenterFace) or the leak check (MTCNN).
"""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import face_recognition
import numpy as np
import pytest

from deid.pipeline.cli import main
from deid.core.locks import folder_lock
from deid.stages.media import iter_frames, probe
from deid.stages.protect_batch import protect_many
from deid.stages.protect_config import ProtectConfig


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, data_dir) -> Path:
    """12 frames of a real face (single_face.mp4 at 320x180): a face of ~70 px."""
    out = tmp_path_factory.mktemp("footage") / "clip.mp4"
    ffmpeg("-i", str(data_dir / "video" / "single_face.mp4"), "-frames:v", "12", "-vf", "scale=320:180",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-an", str(out))
    return out


class _Blind:
    """The real search, made to find nothing: what the leak check finds must then be repaired."""

    name = "blind"

    def find(self, frames):
        return [np.zeros((0, 5), np.float32) for _ in frames]


def faces_left(path: Path) -> int:
    return sum(len(face_recognition.face_locations(frame, number_of_times_to_upsample=2))
               for _, frame in iter_frames(probe(path)))


def test_the_judge_sees_the_face_in_the_original(clip):
    assert faces_left(clip) >= 10  # else the tests below would prove nothing


def test_what_the_check_finds_is_repaired_and_checked_again(clip, tmp_path, monkeypatch):
    import deid.stages.protect as protect_mod

    monkeypatch.setattr(protect_mod, "make_search", lambda *a: _Blind())
    code = protect_many([clip], tmp_path / "o", ProtectConfig(), device="cpu", progress=False)
    assert code == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())["clips"][0]
    assert summary["status"] == "published" and summary["leaks"] == 0 and summary["repaired"] >= 10
    assert faces_left(tmp_path / "o" / "clip.mp4") == 0
    with open(tmp_path / "o" / "clip.frames.csv") as f:
        rows = list(csv.DictReader(f))
    repaired = [r for r in rows if r["repaired"]]
    assert len(repaired) >= 10 and all(r["leaks"] == "" for r in rows)
    # Its distance is never the same pixels compared with themselves: the blind search knew no original face.
    assert "round 1: face found at" in repaired[0]["repaired"]
    assert "nearest face found in the original frame n/a" in repaired[0]["repaired"]


def test_without_repair_rounds_a_leak_fails_closed_and_its_row_has_numbers(clip, tmp_path, monkeypatch, capsys):
    import deid.stages.protect as protect_mod

    monkeypatch.setattr(protect_mod, "make_search", lambda *a: _Blind())
    code = protect_many([clip], tmp_path / "o", ProtectConfig(repair_rounds=0), device="cpu", progress=False)
    assert code == 1
    assert not (tmp_path / "o" / "clip.mp4").exists() and (tmp_path / "o" / "clip.leaky.mp4").exists()
    row = json.loads((tmp_path / "o" / "summary.json").read_text())["clips"][0]
    assert row["status"] == "LEAKS: not published"
    assert row["frames"] == 12 and row["leaks"] >= 10 and row["faces_found"] == 0 and row["regions_hidden"] == 0
    assert row["output"].endswith("clip.leaky.mp4")


def test_output_folder_equal_to_the_input_folder_is_refused(clip, tmp_path, capsys):
    folder = tmp_path / "evidence"
    folder.mkdir()
    original = folder / "clip.mp4"
    shutil.copy(clip, original)
    before = original.read_bytes()
    for args in (["protect", str(original), "-o", str(folder)], ["protect", str(folder), "-o", str(folder)],
                 ["protect", "--recursive", str(tmp_path), "-o", str(folder)]):
        assert main(["-q", *args, "--device", "cpu"]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("deid: error:") and str(folder) in err[0], err
    assert original.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["clip.mp4"]


def test_a_second_run_on_the_same_output_folder_says_who_holds_it(clip, tmp_path, capsys):
    with folder_lock(tmp_path / "o", "deid protect -o first"):
        assert main(["-q", "protect", str(clip), "-o", str(tmp_path / "o"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another run is writing this folder" in err[0] and "deid protect -o first" in err[0]
    assert not (tmp_path / "o" / "clip.mp4").exists()


def test_a_folder_of_mixed_recordings_takes_every_video_and_lists_what_it_skipped(clip, tmp_path, capsys):
    footage = tmp_path / "footage"
    (footage / "day2").mkdir(parents=True)
    ffmpeg("-i", str(clip), "-c:v", "libx264", "-f", "mpegts", str(footage / "cam1.MTS"))
    ffmpeg("-i", str(clip), "-c:v", "mpeg4", str(footage / "day2" / "phone.3gp"))
    (footage / "._cam1.MTS").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)  # AppleDouble header
    (footage / "notes.txt").write_text("shift log")
    code = main(["protect", str(footage), "-o", str(tmp_path / "o"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert (tmp_path / "o" / "cam1.mp4").exists() and not (tmp_path / "o" / "day2").exists()
    skipped = {Path(s["path"]).name: s["reason"]
               for s in json.loads((tmp_path / "o" / "summary.json").read_text())["skipped"]}
    assert "AppleDouble" in skipped["._cam1.MTS"] and "--recursive" in skipped["day2"]
    assert "notes.txt" in skipped and "skipped" in out and "notes.txt" in out
    # --recursive reaches the phone clip and keeps its folder in the output path.
    code = main(["-q", "protect", "--recursive", str(footage), "-o", str(tmp_path / "r"), "--device", "cpu"])
    assert code == 0
    assert (tmp_path / "r" / "cam1.mp4").exists() and (tmp_path / "r" / "day2" / "phone.mp4").exists()
    assert faces_left(tmp_path / "r" / "day2" / "phone.mp4") == 0


def test_a_bad_single_input_is_one_error_line_and_exit_2(tmp_path, capsys):
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    assert main(["-q", "protect", str(fake), "-o", str(tmp_path / "o"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deid: error:") and "fake.mp4" in err[0]


# --- Footage that used to be refused or published with a face (media built by tests/test_footage_media.py) --

from tests.test_footage_media import cctv, streams, two_tracks  # noqa: E402,F401  (fixtures reused)


def test_interlaced_cctv_is_hidden_and_keeps_its_pixel_aspect(cctv, tmp_path):  # noqa: F811 (fixture)
    assert faces_left(cctv) >= 5  # the judge finds the face in the deinterlaced original
    code = main(["-q", "protect", str(cctv), "-o", str(tmp_path / "o"), "--device", "cpu"])
    assert code == 0
    out = tmp_path / "o" / "cam 1.mp4"
    video = [s for s in streams(out) if s["codec_type"] == "video"][0]
    assert (video["width"], video["height"], video["sample_aspect_ratio"]) == (704, 576, "12:11")
    assert faces_left(out) == 0


def test_an_mkv_remux_with_a_timestamp_offset_is_protected_not_refused(clip, tmp_path):
    remux = tmp_path / "remux.mkv"
    ffmpeg("-i", str(clip), "-c", "copy", "-output_ts_offset", "2", str(remux))
    assert main(["-q", "protect", str(remux), "-o", str(tmp_path / "o"), "--device", "cpu"]) == 0
    assert faces_left(tmp_path / "o" / "remux.mp4") == 0


def test_pcm_audio_is_kept_by_reencoding_it(two_tracks, tmp_path):  # noqa: F811 (fixture)
    assert main(["-q", "protect", str(two_tracks), "-o", str(tmp_path / "o"), "--device", "cpu"]) == 0
    audio = [s["codec_name"] for s in streams(tmp_path / "o" / "two tracks.mp4") if s["codec_type"] == "audio"]
    assert audio == ["aac", "aac"]


def test_a_checker_sharing_a_detector_with_a_union_search_is_refused():
    from deid.core.errors import ConfigError

    for search, checker in (("centerface", "centerface"), ("centerface+yunet", "yunet"),
                            ("centerface+yunet", "centerface")):
        with pytest.raises(ConfigError, match="must not share a detector"):
            ProtectConfig(search=search, checker=checker)
    assert ProtectConfig(search="centerface+yunet", checker="mtcnn").checker == "mtcnn"


@pytest.mark.parametrize("name, vf", [
    ("dark", "eq=brightness=-0.3,noise=alls=25:allf=t"),
    ("ir", "format=gray,eq=brightness=-0.3:contrast=1.3,noise=alls=25:allf=t,format=yuv420p"),
    # talking_1 (700x700) scaled to 1920x1920 and cropped to 1080 rows: a ~700 px close-up at 1080p.
    ("closeup", "scale=1920:1920,crop=1920:1080:0:150"),
])
def test_dark_ir_and_1080p_close_up_footage_is_hidden_or_fails_closed(data_dir, tmp_path, name, vf):
    """End to end through `deid protect`: published with no face the judge can find, or not published."""
    src = data_dir / "video" / ("talking_1.mp4" if name == "closeup" else "WolfgangLanger_Pexels.mp4")
    clip = tmp_path / f"{name}.mp4"
    ffmpeg("-i", str(src), "-vf", vf, "-frames:v", "6", "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
           "-pix_fmt", "yuv420p", str(clip))
    upsample = 0 if name == "closeup" else 1  # a 700 px face needs no upsampling (and 1080p x4 costs minutes)
    seen = sum(len(face_recognition.face_locations(f, number_of_times_to_upsample=upsample))
               for _, f in iter_frames(probe(clip)))
    code = main(["-q", "protect", str(clip), "-o", str(tmp_path / "o"), "--device", "cpu"])
    out = tmp_path / "o" / f"{name}.mp4"
    if code == 0:
        left = sum(len(face_recognition.face_locations(f, number_of_times_to_upsample=upsample))
                   for _, f in iter_frames(probe(out)))
        assert left == 0, (name, seen, left)
    else:
        assert code == 1 and not out.exists()
