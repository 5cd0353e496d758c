"""stages.concat on real clips cut from the shared test videos."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from deid.core.errors import MediaError
from deid.stages.concat import concat_clips, list_clips

from media_helpers import count_frames, cut_clip


def cut(src: Path, out: Path, start: float, seconds: float = 1.0, fps: int | None = None) -> Path:
    """A short segment with the source's audio, as RAVDESS clips have."""
    return cut_clip(src, out, seconds, start=start, fps=fps)


def probe(path: Path) -> dict:
    result = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def clips(tmp_path_factory, data_dir) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    video = data_dir / "video"
    made = {f"t1_{i}": cut(video / "talking_1.mp4", folder / f"t1_{i}.mp4", start=2 * i, fps=22) for i in range(3)}
    made["t2"] = cut(video / "talking_2.mp4", folder / "t2.mp4", start=1)
    made["wl"] = cut(video / "WolfgangLanger_Pexels.mp4", folder / "wl.mp4", start=3)
    return made


def test_same_encoding_is_stream_copied_frame_exact_without_audio(clips, tmp_path):
    parts = [clips["t1_0"], clips["t1_1"], clips["t1_2"]]
    out = tmp_path / "nested" / "train.mp4"
    summary = concat_clips(parts, out, progress=False)

    expected = sum(count_frames(p) for p in parts)
    assert summary["method"] == "copy"
    assert summary["clips"] == 3
    assert count_frames(out) == expected == summary["frames"]
    info = probe(out)
    assert [s["codec_type"] for s in info["streams"]] == ["video"]
    assert (summary["width"], summary["height"], summary["fps"]) == (700, 700, 22.0)
    # Clip 0's audio outlasts its video: the list's per-clip durations keep the video free of gaps.
    assert summary["seconds"] == pytest.approx(expected / 22, abs=0.005)
    assert [p.name for p in out.parent.iterdir()] == ["train.mp4"]


def test_mixed_sizes_are_reencoded_to_the_first_clip(clips, tmp_path):
    parts = [clips["t1_0"], clips["t2"], clips["wl"]]
    out = tmp_path / "mixed.mp4"
    summary = concat_clips(parts, out, progress=False)

    assert summary["method"] == "reencode"
    stream = probe(out)["streams"]
    assert len(stream) == 1 and stream[0]["codec_name"] == "h264" and stream[0]["pix_fmt"] == "yuv420p"
    assert (stream[0]["width"], stream[0]["height"]) == (700, 700) == (summary["width"], summary["height"])
    assert stream[0].get("sample_aspect_ratio", "1:1") in ("1:1", "0:1")
    expected_seconds = sum(float(probe(p)["streams"][0]["duration"]) for p in parts)
    assert summary["seconds"] == pytest.approx(expected_seconds, abs=0.2)
    assert summary["fps"] == 22.0 and summary["frames"] == count_frames(out)


def test_missing_clip_names_it_and_leaves_nothing(clips, tmp_path):
    missing = tmp_path / "gone_clip.mp4"
    with pytest.raises(MediaError, match="gone_clip.mp4") as error:
        concat_clips([clips["t1_0"], missing], tmp_path / "out.mp4", progress=False)
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_text_file_named_mp4_is_rejected_with_its_name(clips, tmp_path):
    fake = tmp_path / "notes_clip.mp4"
    fake.write_text("not a video\n")
    out = tmp_path / "out" / "train.mp4"
    with pytest.raises(MediaError, match="notes_clip.mp4") as error:
        concat_clips([clips["t1_0"], fake], out, progress=False)
    assert "\n" not in str(error.value)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_ffmpeg_failure_is_one_line_and_removes_the_temp_file(clips, tmp_path):
    # libx264 cannot go into WebM: ffmpeg itself fails after the temp file was created.
    out = tmp_path / "mixed.webm"
    with pytest.raises(MediaError, match="mixed.webm") as error:
        concat_clips([clips["t1_0"], clips["wl"]], out, progress=False)
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_empty_list_and_bad_output_suffix(clips, tmp_path):
    with pytest.raises(MediaError, match="no clips"):
        concat_clips([], tmp_path / "out.mp4", progress=False)
    with pytest.raises(MediaError, match="out.txt"):
        concat_clips([clips["t1_0"]], tmp_path / "out.txt", progress=False)


def test_audio_only_file_has_no_video_stream(tmp_path):
    wav = tmp_path / "voice.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "0.5",
                    "-c:a", "aac", str(wav)], check=True)
    with pytest.raises(MediaError, match="voice.mp4: no video stream"):
        concat_clips([wav], tmp_path / "out.mp4", progress=False)


def test_list_clips_keeps_visible_videos_sorted(tmp_path):
    assert list_clips(tmp_path) == []
    for name in ("b.MP4", "a.mov", "c.mkv", ".hidden.mp4", "still.jpg", "notes.txt", "clip.webm"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.mp4").mkdir()
    (tmp_path / "sub.mp4" / "inner.mp4").write_bytes(b"x")
    assert [p.name for p in list_clips(tmp_path)] == ["a.mov", "b.MP4", "c.mkv", "clip.webm"]
    assert list_clips(tmp_path / "missing") == []
