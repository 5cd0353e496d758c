"""Footage as officers receive it (issue 20, items 4, 7, 8): shifted timestamps, several audio tracks,
interlaced CCTV with non-square pixels.

Every input is built by ffmpeg from tests/data into pytest's temporary folders: remuxes and offsets that
are intact and must be accepted (and their truncated copies, which must still be refused), a .mov with
AAC then PCM audio, and a woven 704x576 6 fps MPEG-4 .avi flagged 12:11 whose fields come from
different moments, as a camera's do.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from deid.core.errors import MediaError
from deid.stages.media import MediaInfo, iter_frames, probe
from deid.stages.video_writer import VideoWriter


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def streams(path: Path) -> list[dict]:
    result = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout)["streams"]


def packet_hash(path: Path, selector: str) -> str:
    """Hash of one stream's packets as stored: equal for a stream copied without re-encoding."""
    result = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", f"0:{selector}",
                             "-c", "copy", "-f", "hash", "-"], check=True, capture_output=True, text=True)
    return result.stdout.strip()


def write_all(info: MediaInfo, out: Path, audio: bool = True) -> list[np.ndarray]:
    frames = [frame for _, frame in iter_frames(info)]
    with VideoWriter(out, info, preset="ultrafast", audio=audio) as writer:
        for frame in frames:
            writer.write(frame)
    return frames


def truncated(path: Path, out: Path, share: float) -> Path:
    data = path.read_bytes()
    out.write_bytes(data[: int(len(data) * share)])
    return out


# --- Container timestamps (item 7): a stream that starts after 0 is not damage -----------------------

@pytest.fixture(scope="module")
def shifted(tmp_path_factory, data_dir) -> dict[str, tuple[Path, Path]]:
    """name -> (intact file whose timestamps do not start at 0 for the video, the source it came from)."""
    folder = tmp_path_factory.mktemp("shifted")
    video = data_dir / "video"
    made = {}
    for name in ("talking_1", "WolfgangLanger_Pexels", "single_face"):
        made[f"{name}.mkv"] = (folder / f"{name}.mkv", video / f"{name}.mp4")
        ffmpeg("-i", str(video / f"{name}.mp4"), "-c", "copy", str(made[f"{name}.mkv"][0]))
    source = video / "single_face.mp4"
    for suffix in (".mp4", ".mkv"):
        made[f"offset{suffix}"] = (folder / f"offset{suffix}", source)
        ffmpeg("-i", str(source), "-c", "copy", "-output_ts_offset", "2", str(made[f"offset{suffix}"][0]))
    # The video track starting 1 s after the audio, as a camera that starts sound first writes it.
    made["video_late.mkv"] = (folder / "video_late.mkv", source)
    ffmpeg("-itsoffset", "1", "-i", str(source), "-i", str(source), "-map", "0:v", "-map", "1:a", "-c", "copy",
           str(made["video_late.mkv"][0]))
    # Audio running 2.6 s past the video: Matroska's duration is then the audio's.
    made["long_audio.mkv"] = (folder / "long_audio.mkv", source)
    ffmpeg("-i", str(source), "-f", "lavfi", "-i", "sine=frequency=440:duration=5", "-map", "0:v", "-map", "1:a",
           "-c:v", "copy", "-c:a", "aac", str(made["long_audio.mkv"][0]))
    return made


@pytest.mark.parametrize("name", ["talking_1.mkv", "WolfgangLanger_Pexels.mkv", "single_face.mkv", "offset.mp4",
                                  "offset.mkv", "video_late.mkv", "long_audio.mkv"])
def test_intact_video_not_starting_at_zero_is_accepted_and_decodes_whole(shifted, name):
    path, source = shifted[name]
    info = probe(path)
    assert info.damage is None
    assert info.frames == probe(source).frames
    assert sum(1 for _ in iter_frames(info)) == info.frames


def test_interlaced_h264_mkv_is_accepted_as_interlaced(data_dir, tmp_path):
    path = tmp_path / "interlaced.mkv"
    ffmpeg("-i", str(data_dir / "video" / "single_face.mp4"), "-t", "2", "-flags", "+ildct+ilme", "-top", "1",
           "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(path))
    assert streams(path)[0]["field_order"] == "tt"  # the input is what the test claims
    info = probe(path)
    assert info.damage is None and info.interlaced and info.field_order == "tt"
    assert sum(1 for _ in iter_frames(info)) == info.frames == 60


@pytest.mark.parametrize("name", ["talking_1.mkv", "offset.mkv", "video_late.mkv"])
def test_truncated_shifted_video_is_still_refused(shifted, tmp_path, name):
    cut = truncated(shifted[name][0], tmp_path / f"cut-{name}", 0.6)
    with pytest.raises(MediaError, match=r"damaged or truncated video \(.*can be read\).*--allow-damaged"):
        probe(cut)
    allowed = probe(cut, allow_damaged=True)
    assert "can be read" in allowed.damage
    assert 0 < allowed.frames < probe(shifted[name][0]).frames


def test_kept_audio_stays_in_sync_with_a_video_that_starts_late(shifted, tmp_path):
    info = probe(shifted["video_late.mkv"][0])
    assert info.video_delay == pytest.approx(1.0, abs=0.05)
    out = tmp_path / "late.mp4"
    write_all(info, out)
    video, audio = streams(out)
    # The lag of the source survives (to a frame): audio from 0, video from 1 s, every frame kept.
    assert float(audio["start_time"]) == pytest.approx(0.0, abs=0.05)
    assert float(video["start_time"]) == pytest.approx(1.0, abs=1 / info.fps + 0.01)
    assert probe(out).frames == info.frames


# --- Audio under --audio keep (item 8): every stream kept, in order, copied or re-encoded -------------

@pytest.fixture(scope="module")
def two_tracks(tmp_path_factory, data_dir) -> Path:
    """1 s of a real face with mono AAC then stereo PCM audio in a .mov, as an editor exports it."""
    path = tmp_path_factory.mktemp("audio") / "two tracks.mov"
    ffmpeg("-i", str(data_dir / "video" / "single_face.mp4"), "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
           "-f", "lavfi", "-i", "sine=frequency=1000:duration=1", "-filter_complex", "[2:a]aformat=channel_layouts=stereo[st]",
           "-map", "0:v", "-map", "1:a", "-map", "[st]", "-t", "1", "-c:v", "copy", "-c:a:0", "aac",
           "-c:a:1", "pcm_s16le", str(path))
    return path


def test_every_audio_stream_is_kept_in_order_copied_or_reencoded(two_tracks, tmp_path):
    info = probe(two_tracks)
    assert info.audio_codecs == ("aac", "pcm_s16le")
    out = tmp_path / "out.mp4"
    write_all(info, out)
    audio = [s for s in streams(out) if s["codec_type"] == "audio"]
    assert [(s["codec_name"], s["channels"]) for s in audio] == [("aac", 1), ("aac", 2)]  # order kept
    assert packet_hash(out, "a:0") == packet_hash(two_tracks, "a:0")  # the AAC track copied as it was
    assert probe(out).frames == info.frames
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_dropped_audio_leaves_no_audio_stream(two_tracks, tmp_path):
    out = tmp_path / "silent.mp4"
    write_all(probe(two_tracks), out, audio=False)
    assert [s["codec_type"] for s in streams(out)] == ["video"]


def test_an_ffmpeg_failure_names_the_input_not_the_hidden_file(two_tracks, tmp_path):
    # Claiming the PCM track is AAC makes the writer copy it, which MP4 refuses: a real ffmpeg failure.
    info = dataclasses.replace(probe(two_tracks), audio_codecs=("aac", "aac"))
    out = tmp_path / "out.mp4"
    with pytest.raises(MediaError) as raised:
        write_all(info, out)
    message = str(raised.value)
    assert message.startswith(f"{two_tracks}: ") and str(out) in message
    assert "pcm_s16le" in message and ".part" not in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


# --- Interlaced CCTV (item 4): deinterlaced for detection, pixel aspect kept -------------------------

@pytest.fixture(scope="module")
def cctv(tmp_path_factory, data_dir) -> Path:
    """704x576 6 fps MPEG-4 .avi, 12:11 pixels, each frame woven from two moments 1/12 s apart."""
    path = tmp_path_factory.mktemp("cctv") / "cam 1.avi"
    ffmpeg("-i", str(data_dir / "video" / "single_face.mp4"), "-t", "2.4", "-vf",
           "fps=12,scale=704:576,tinterlace=mode=interleave_top,setfield=tff,setsar=12/11",
           "-c:v", "mpeg4", "-q:v", "3", "-flags", "+ildct+ilme", "-top", "1", "-an", str(path))
    return path


def test_interlaced_cctv_is_probed_interlaced_with_its_pixel_aspect(cctv):
    stream = streams(cctv)[0]
    assert stream["codec_name"] == "mpeg4" and stream.get("field_order", "unknown") == "unknown"  # only frames tell
    info = probe(cctv)
    assert info.interlaced and info.field_order == "tt"
    assert info.sar == (12, 11) and (info.width, info.height, info.fps) == (704, 576, 6.0)
    assert info.as_json()["sar"] == "12:11" and info.as_json()["field_order"] == "tt"


def test_deinterlaced_decode_keeps_every_frame_and_removes_the_combing(cctv):
    info = probe(cctv)
    clean = np.stack([frame for _, frame in iter_frames(info)]).astype(np.float32).mean(-1)
    woven = np.stack([frame for _, frame in iter_frames(dataclasses.replace(info, field_order=None))]
                     ).astype(np.float32).mean(-1)
    assert len(clean) == len(woven) == info.frames == 14
    # Where the picture moves, woven fields differ line by line (combs); deinterlaced lines do not.
    moving = np.abs(np.diff(woven, axis=0)).mean(0)[1:] > 10
    assert moving.mean() > 0.02  # the test clip has motion to comb
    combs = [np.abs(np.diff(frames, axis=1)).mean(0)[moving].mean() for frames in (woven, clean)]
    assert combs[1] < 0.6 * combs[0], combs


def test_written_cctv_keeps_frame_count_size_and_display_aspect(cctv, tmp_path):
    info = probe(cctv)
    out = tmp_path / "cam 1.mp4"
    write_all(info, out)
    written = probe(out)
    assert (written.frames, written.width, written.height, written.sar) == (info.frames, 704, 576, (12, 11))
    assert not written.interlaced
    assert streams(out)[0]["display_aspect_ratio"] == streams(cctv)[0]["display_aspect_ratio"] == "4:3"
