"""Hardening of inputs and outputs: damaged videos, odd file names, full or read-only disks.

Each test is a row of issue 12's audit table: the exit status, the one line on stderr, and no file at
the final path where a finished output would otherwise be.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from deid.pipeline.cli import main
from deid.core.errors import MediaError
from deid.stages.media import iter_frames, probe
from deid.stages.video_writer import VideoWriter
from tests.media_helpers import cut_clip


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deid: error: "), err
    return err[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory, data_dir) -> Path:
    """1.5 s of a real talking face, with audio, moov atom first (as a web export is)."""
    folder = tmp_path_factory.mktemp("clip")
    cut = cut_clip(data_dir / "video" / "talking_1.mp4", folder / "cut.mp4", 1.5)
    out = folder / "clip.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(cut), "-c", "copy", "-movflags", "+faststart",
                    str(out)], check=True)
    return out


def _truncated(clip: Path, out: Path, share: float = 0.3) -> Path:
    data = clip.read_bytes()
    out.write_bytes(data[: int(len(data) * share)])
    return out


def test_truncated_video_stops_with_one_line_unless_allowed(clip, tmp_path, capsys):
    video = _truncated(clip, tmp_path / "cut.mp4")
    out = tmp_path / "faces"
    assert main(["-q", "extract", str(video), "-o", str(out), "--device", "cpu"]) == 2
    line = _error_line(capsys)
    assert str(video) in line and "truncated" in line and "--allow-damaged" in line
    assert not (out / "alignments.json").exists()

    assert main(["-q", "extract", str(video), "-o", str(out), "--device", "cpu", "--allow-damaged"]) == 0
    record = json.loads((out / "manifest.json").read_text())["stages"]["extract"]
    assert record["params"]["allow_damaged"] is True
    assert "can be read" in record["summary"]["damaged_input"]
    complete = probe(clip).frames
    assert 0 < record["summary"]["frames"] < complete


def test_bytes_damaged_inside_a_video_stop_decoding(clip, tmp_path):
    data = bytearray(clip.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    video = tmp_path / "damaged.mp4"
    video.write_bytes(bytes(data))
    info = probe(video)  # the container is intact: only decoding finds the damage
    with pytest.raises(MediaError, match="damaged video .*ffmpeg reports"):
        list(iter_frames(info))  # decode to the end: the damage shows only there
    decoded = sum(1 for _ in iter_frames(probe(video, allow_damaged=True)))
    assert decoded > 0


def test_intact_videos_of_every_test_container_are_accepted(data_dir):
    for video in sorted((data_dir / "video").iterdir()):
        info = probe(video)
        assert info.damage is None, video
        assert info.frames > 0


@pytest.mark.parametrize("name", ["-dash clip.mp4", "12:30 talk.mp4", "it's $(echo x) ü.mp4"])
def test_any_file_name_reaches_ffmpeg_as_a_file(clip, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    shutil.copy(clip, tmp_path / name)
    info = probe(Path(name))  # relative, as a user types it
    frames = [frame for _, frame in iter_frames(info)]
    assert len(frames) == info.frames > 0
    out = Path("-out 1:2.mp4")
    with VideoWriter(out, info, preset="ultrafast") as writer:
        for frame in frames:
            writer.write(frame)
    assert probe(out).frames == len(frames)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, out.name])


def test_writer_refuses_a_file_with_fewer_frames_than_written(clip, tmp_path):
    info = probe(clip)
    out = tmp_path / "out.mp4"
    with pytest.raises(MediaError, match="incomplete"):
        with VideoWriter(out, info, preset="ultrafast") as writer:
            for _, frame in iter_frames(info):
                writer.write(frame)
            writer.frames += 3  # what a silently dropped write would look like to the probe
    assert list(tmp_path.iterdir()) == []


@contextmanager
def _mount(folder: Path, options: str):
    folder.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.decode().strip()}); needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture(scope="module")
def clip_faces(clip, tmp_path_factory) -> Path:
    from deid.pipeline.config import ExtractConfig
    from deid.stages.extract import extract

    out = tmp_path_factory.mktemp("clip-faces")
    extract(clip, out, ExtractConfig(), device="cpu", progress=False)
    return out


def _convert_args(clip: Path, faces: Path, model: Path, out: Path) -> list[str]:
    return ["-q", "convert", str(clip), "--faces", str(faces), "--model", str(model), "-o", str(out), "--device", "cpu",
            "--min-face", "40"]


def test_convert_into_a_full_filesystem(clip, clip_faces, tiny_model, tmp_path, capsys):
    with _mount(tmp_path / "full", "size=64k") as full:
        assert main(_convert_args(clip, clip_faces, tiny_model, full / "out.mp4")) == 2
        line = _error_line(capsys)
        assert f"{full}: no space left" in line
        assert os.listdir(full) == []  # no output, no leftover temporary file


def test_convert_under_a_regular_file_or_on_a_read_only_mount(clip, clip_faces, tiny_model, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(_convert_args(clip, clip_faces, tiny_model, blocker / "out.mp4")) == 2
    assert "is not usable" in _error_line(capsys)
    with _mount(tmp_path / "ro", "size=64k,ro") as read_only:
        assert main(_convert_args(clip, clip_faces, tiny_model, read_only / "out.mp4")) == 2
        line = _error_line(capsys)
        assert str(read_only) in line and "read-only" in line
