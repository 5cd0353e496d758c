"""`deid ravdess`: RAVDESS names, the actor scan, and the manifest built over a small tree of real clips."""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deid.core.errors import DeidError
from deid.pipeline.ravdess import build_manifest, configure_parser, parse_actors, parse_name, run_command, scan

from media_helpers import count_frames, cut_clip

ACTOR_1_VIDEOS = ("01-01-01-01-01-01-01.mp4", "01-01-03-02-01-01-01.mp4", "02-01-03-02-01-01-01.mp4")
ACTOR_2_VIDEOS = ("01-01-03-02-01-01-02.mp4", "01-01-05-01-02-02-02.mp4")


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def cut(src: Path, out: Path, start: float, audio: bool = True) -> Path:
    """A 1 s segment at 25 fps; RAVDESS video-only clips have no audio."""
    return cut_clip(src, out, 1, start=start, fps=25, audio=audio)


@pytest.fixture(scope="session")
def ravdess_tree(tmp_path_factory, data_dir) -> Path:
    """ROOT/Actor_01 (male, talking_1) and Actor_02 (female, talking_2) of real clips under RAVDESS names."""
    root = tmp_path_factory.mktemp("ravdess")
    video = data_dir / "video"
    actor_1, actor_2 = root / "Actor_01", root / "Actor_02"
    actor_1.mkdir()
    actor_2.mkdir()
    for i, name in enumerate(ACTOR_1_VIDEOS):
        cut(video / "talking_1.mp4", actor_1 / name, start=2 * i, audio=not name.startswith("02"))
    ffmpeg("-ss", "2", "-i", str(video / "talking_1.mp4"), "-t", "1", "-vn", "-c:a", "pcm_s16le",
           str(actor_1 / "03-01-03-02-01-01-01.wav"))
    (actor_1 / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (actor_1 / "notes.txt").write_text("not a clip\n")
    for i, name in enumerate(ACTOR_2_VIDEOS):
        cut(video / "talking_2.mp4", actor_2 / name, start=2 * i)
    (root / "README.txt").write_text("RAVDESS test tree\n")
    return root


@pytest.fixture(scope="session")
def donors(tmp_path_factory, data_dir) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("donors")
    return {"male": cut(data_dir / "video" / "WolfgangLanger_Pexels.mp4", folder / "donor_m.mp4", start=3),
            "female": cut(data_dir / "video" / "single_face.mp4", folder / "donor_f.mp4", start=0.5)}


@pytest.fixture(scope="module")
def built(ravdess_tree, donors, tmp_path_factory) -> tuple[dict, Path]:
    manifest = tmp_path_factory.mktemp("study") / "manifest.yaml"
    summary = build_manifest(ravdess_tree, manifest, donor_male=donors["male"], donor_female=donors["female"],
                             progress=False)
    return summary, manifest


def test_parse_name_decodes_every_field():
    clip = parse_name(Path("/data/Actor_01/01-01-03-02-01-01-01.mp4"))
    assert (clip.modality, clip.vocal, clip.emotion, clip.intensity) == ("audio-video", "speech", "happy", "strong")
    assert (clip.statement, clip.repetition, clip.actor, clip.gender) == (1, 1, 1, "male")
    assert clip.code == "01-01-03-02-01-01-01"
    song = parse_name(Path("02-02-06-01-02-02-24.mp4"))
    assert (song.modality, song.vocal, song.emotion, song.intensity) == ("video-only", "song", "fearful", "normal")
    assert (song.statement, song.repetition, song.actor, song.gender) == (2, 2, 24, "female")
    voice = parse_name(Path("03-01-08-02-02-01-13.wav"))
    assert (voice.modality, voice.emotion, voice.gender) == ("audio-only", "surprised", "male")


@pytest.mark.parametrize("name, words", [
    ("01-01-03-02-01-01.mp4", ["01-01-03-02-01-01.mp4", "6 fields", "expected 7"]),
    ("01-01-xx-02-01-01-01.mp4", ["emotion 'xx'", "two-digit number"]),
    ("01-01-09-02-01-01-01.mp4", ["emotion '09'", "01 neutral", "08 surprised"]),
    ("01-01-01-02-01-01-01.mp4", ["intensity 02 (strong)", "neutral", "intensity 01 only"]),
    ("01-02-07-01-01-01-01.mp4", ["emotion 07 (disgust)", "song", "06 fearful"]),
    ("01-01-03-02-01-01-25.mp4", ["actor '25'", "01..24"]),
    ("01-01-03-02-01-01-01.avi", ["extension '.avi'", ".mp4 or .wav"]),
    ("03-01-03-02-01-01-01.mp4", ["modality 03 (audio-only)", ".wav"]),
])
def test_parse_name_rejects_with_a_one_line_message(name, words):
    with pytest.raises(DeidError) as error:
        parse_name(Path("/data/Actor_01") / name)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"/data/Actor_01/{name}: ")
    assert "rename or remove it" in message
    for word in words:
        assert word in message


def test_parse_actors():
    assert parse_actors("1,2,5-8") == [1, 2, 5, 6, 7, 8]
    assert parse_actors("3, 1,3") == [1, 3]
    for bad in ("0", "25", "8-5", "x", ""):
        with pytest.raises(DeidError, match="--actors"):
            parse_actors(bad)


def test_scan_reads_actor_folders_and_ignores_other_files(ravdess_tree):
    clips = scan(ravdess_tree)
    assert list(clips) == [1, 2]
    assert [c.path.name for c in clips[1]] == sorted([*ACTOR_1_VIDEOS, "03-01-03-02-01-01-01.wav"])
    assert [c.path.name for c in clips[2]] == list(ACTOR_2_VIDEOS)
    assert list(scan(ravdess_tree, actors=[2])) == [2]
    with pytest.raises(DeidError, match="Actor_05"):
        scan(ravdess_tree, actors=[1, 5])


def test_scan_without_actor_folders_names_root(tmp_path):
    nested = tmp_path / "Video_Speech_Actor_01" / "Actor_01"
    nested.mkdir(parents=True)
    with pytest.raises(DeidError, match=f"{tmp_path}: no Actor_XX folders .*Video_Speech_Actor_01"):
        scan(tmp_path)


def test_manifest_pairs_each_actor_with_the_gender_matched_donor(built, ravdess_tree, donors):
    summary, manifest = built
    assert summary["pairs"] == 2 and summary["actors"] == [1, 2] and summary["concatenated"] == 2
    text = manifest.read_text()
    assert text.startswith("# deid batch manifest written by `deid ravdess`")
    assert f"# root: {ravdess_tree}" in text
    pairs = yaml.safe_load(text)["pairs"]
    assert [p["name"] for p in pairs] == ["Actor_01", "Actor_02"]
    first, second = pairs
    assert first["target"] == "ravdess_work/Actor_01_train.mp4"
    assert first["convert"] == str(ravdess_tree / "Actor_01" / "01-01-03-02-01-01-01.mp4")
    assert second["convert"] == str(ravdess_tree / "Actor_02" / "01-01-03-02-01-01-02.mp4")
    assert (first["donor"], second["donor"]) == (str(donors["male"]), str(donors["female"]))
    assert "donor_references" not in first
    assert first["ravdess"] == {"actor": 1, "gender": "male", "training_clips": 3,
                                "convert_clip": "01-01-03-02-01-01-01.mp4", "hold_out": False}
    assert second["ravdess"]["gender"] == "female" and second["ravdess"]["training_clips"] == 2


def test_training_video_is_every_video_clip_and_no_wav(built, ravdess_tree):
    _, manifest = built
    work = manifest.parent / "ravdess_work"
    for actor, names in ((1, ACTOR_1_VIDEOS), (2, ACTOR_2_VIDEOS)):
        train = work / f"Actor_{actor:02d}_train.mp4"
        expected = sum(count_frames(ravdess_tree / f"Actor_{actor:02d}" / name) for name in names)
        assert count_frames(train) == expected
        sidecar = json.loads((work / f"Actor_{actor:02d}_train.json").read_text())
        assert [c["name"] for c in sidecar["clips"]] == sorted(names)
        assert sidecar["summary"]["frames"] == expected and sidecar["summary"]["method"] == "copy"
    assert sorted(p.name for p in work.iterdir()) == ["Actor_01_train.json", "Actor_01_train.mp4",
                                                      "Actor_02_train.json", "Actor_02_train.mp4"]


def test_rerun_does_not_concatenate_again(built, ravdess_tree, donors):
    _, manifest = built
    work = manifest.parent / "ravdess_work"
    before = {p.name: p.stat().st_mtime_ns for p in work.iterdir()}
    again = build_manifest(ravdess_tree, manifest, donor_male=donors["male"], donor_female=donors["female"],
                           progress=False)
    assert (again["concatenated"], again["up_to_date"]) == (0, 2)
    assert {p.name: p.stat().st_mtime_ns for p in work.iterdir()} == before

    (work / "Actor_02_train.mp4").unlink()
    redo = build_manifest(ravdess_tree, manifest, donor_male=donors["male"], donor_female=donors["female"],
                          progress=False)
    assert (redo["concatenated"], redo["up_to_date"]) == (1, 1)
    assert (work / "Actor_01_train.json").stat().st_mtime_ns == before["Actor_01_train.json"]
    assert (work / "Actor_02_train.json").stat().st_mtime_ns > before["Actor_02_train.json"]


def test_hold_out_drops_the_convert_clip_and_its_video_only_twin(ravdess_tree, donors, tmp_path):
    manifest = tmp_path / "held" / "manifest.yaml"
    build_manifest(ravdess_tree, manifest, donors=[donors["male"], donors["female"]], actors=[1], hold_out=True,
                   progress=False)
    pairs = yaml.safe_load(manifest.read_text())["pairs"]
    assert [p["name"] for p in pairs] == ["Actor_01__donor_m", "Actor_01__donor_f"]
    assert pairs[0]["ravdess"]["training_clips"] == 1 and pairs[0]["ravdess"]["hold_out"] is True
    assert pairs[0]["convert"].endswith("Actor_01/01-01-03-02-01-01-01.mp4")
    sidecar = json.loads((tmp_path / "held" / "ravdess_work" / "Actor_01_train.json").read_text())
    assert [c["name"] for c in sidecar["clips"]] == ["01-01-01-01-01-01-01.mp4"]
    assert count_frames(tmp_path / "held" / "ravdess_work" / "Actor_01_train.mp4") == count_frames(
        ravdess_tree / "Actor_01" / "01-01-01-01-01-01-01.mp4")


def test_badly_named_file_stops_with_one_line_naming_it(ravdess_tree, donors, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(ravdess_tree, root)
    shutil.copy(root / "Actor_01" / ACTOR_1_VIDEOS[0], root / "Actor_01" / "take 3 final.mp4")
    with pytest.raises(DeidError) as error:
        build_manifest(root, tmp_path / "m.yaml", donors=[donors["male"]], progress=False)
    message = str(error.value)
    assert "\n" not in message and "take 3 final.mp4" in message and "rename or remove it" in message
    assert not (tmp_path / "m.yaml").exists() and not (tmp_path / "ravdess_work").exists()

    (root / "Actor_01" / "take 3 final.mp4").rename(root / "Actor_01" / "01-01-01-01-01-02-07.mp4")
    with pytest.raises(DeidError, match="01-01-01-01-01-02-07.mp4: actor field 07 .* Actor_01; rename or remove it"):
        build_manifest(root, tmp_path / "m.yaml", donors=[donors["male"]], progress=False)


def test_missing_convert_clip_names_actor_and_code(ravdess_tree, donors, tmp_path):
    # Only Actor_01 has the neutral clip.
    with pytest.raises(DeidError, match="/Actor_02: no conversion clip 01-01-01-01-01-01-02.mp4"):
        build_manifest(ravdess_tree, tmp_path / "m.yaml", donors=[donors["male"]], convert_clip="01-01-01-01-01-01",
                       progress=False)
    assert not (tmp_path / "ravdess_work").exists()


def test_donor_options_are_checked_before_any_work(ravdess_tree, donors, tmp_path):
    manifest = tmp_path / "m.yaml"
    with pytest.raises(DeidError, match="no donor; give --donor"):
        build_manifest(ravdess_tree, manifest, progress=False)
    with pytest.raises(DeidError, match="Actor_02 is female: give --donor-female"):
        build_manifest(ravdess_tree, manifest, donor_male=donors["male"], progress=False)
    with pytest.raises(DeidError, match="--donor .*nobody.mp4: no such file"):
        build_manifest(ravdess_tree, manifest, donors=[tmp_path / "nobody.mp4"], progress=False)
    with pytest.raises(DeidError, match="--convert-clip 01-01-09-02-01-01: emotion '09'"):
        build_manifest(ravdess_tree, manifest, donors=[donors["male"]], convert_clip="01-01-09-02-01-01",
                       progress=False)
    assert list(tmp_path.iterdir()) == []


def test_command_line_writes_the_manifest(ravdess_tree, donors, tmp_path, capsys, data_dir):
    parser = argparse.ArgumentParser(prog="deid ravdess")
    configure_parser(parser)
    reference = data_dir / "images" / "single_face.jpg"
    args = parser.parse_args([str(ravdess_tree), "-o", str(tmp_path / "m.yaml"), "--donor", str(donors["female"]),
                              "--donor-references", str(reference), "--actors", "2", "--work", str(tmp_path / "w")])
    assert run_command(args, progress=False) == 0
    assert "1 pairs for 1 actors" in capsys.readouterr().out
    (pair,) = yaml.safe_load((tmp_path / "m.yaml").read_text())["pairs"]
    assert pair["name"] == "Actor_02" and pair["target"] == "w/Actor_02_train.mp4"
    assert pair["donor_references"] == [str(reference)]
    with pytest.raises(SystemExit):
        parser.parse_args([str(ravdess_tree), "-o", "m.yaml", "--actors", "1-30"])


def test_the_manifest_is_a_batch_manifest_that_converts_the_chosen_clip(built, ravdess_tree, tmp_path):
    from deid.pipeline.batch_manifest import load_batch
    from deid.pipeline.workflow import plan

    _, manifest = built
    jobs = load_batch(manifest, tmp_path / "runs")
    assert [job.name for job in jobs] == ["Actor_01", "Actor_02"] and all(job.error is None for job in jobs)
    assert jobs[0].info["gender"] == "male"
    config = jobs[0].config
    assert config.target == manifest.parent / "ravdess_work" / "Actor_01_train.mp4"
    assert config.convert_video == ravdess_tree / "Actor_01" / "01-01-03-02-01-01-01.mp4"
    pair, specs = plan(config, progress=False, shared=tmp_path / "runs" / "_shared")
    keys = [spec.key for spec in specs]
    # Trained on the concatenation, converted and evaluated on the chosen clip, extracted and cleaned on its own.
    assert "extract:01-01-03-02-01-01-01" in keys and "clean:01-01-03-02-01-01-01" in keys
    convert = next(spec for spec in specs if spec.key == "convert")
    assert convert.inputs["video"] == config.convert_video
    evaluate = next(spec for spec in specs if spec.key == "evaluate")
    assert evaluate.inputs["original"] == config.convert_video
    assert pair.swapped.name == "01-01-03-02-01-01-01.mp4"


def test_a_folder_of_clips_is_concatenated_before_extraction(ravdess_tree, donors, tmp_path):
    from deid.pipeline.config import config_from_mapping
    from deid.pipeline.workflow import plan

    config = config_from_mapping({"target": str(ravdess_tree / "Actor_02"), "donor": str(donors["female"]),
                                  "runs_dir": str(tmp_path / "runs"), "pair": "folder"}, tmp_path)
    pair, specs = plan(config, progress=False)
    assert [s.key for s in specs][:2] == ["concat:Actor_02", "extract:Actor_02"]
    assert pair.target.video == tmp_path / "runs" / "folder" / "sources" / "Actor_02.mp4"
    assert specs[1].needs == ("concat:Actor_02",)
    summary = specs[0].run()
    assert summary["clips"] == 2 and pair.target.video.is_file()


@pytest.mark.slow  # ~50 s: a whole batch; the manifest tests above stay in the default run
def test_ravdess_manifest_runs_through_deid_batch(ravdess_tree, donors, tmp_path):
    """The whole chain on the fake tree: concatenated training video -> train -> convert the chosen clip."""
    import sys

    manifest = tmp_path / "manifest.yaml"
    build_manifest(ravdess_tree, manifest, donor_male=donors["male"], donor_female=donors["female"], actors=[2],
                   progress=False)
    tiny = ["device=cpu", "train.width=16", "train.latent=64", "train.iterations=4", "train.batch_size=4",
            "train.preview_every=0", "train.identity_every=0", "evaluate.frames=20", "evaluate.au=none",
            "protect.min_face=40"]  # large faces only: the small-face search is tested in test_protect.py
    runs = tmp_path / "runs"
    result = subprocess.run([sys.executable, "-m", "deid.pipeline.cli", "-q", "batch", str(manifest), "-o", str(runs),
                             *(arg for item in tiny for arg in ("--set", item))],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    status = json.loads((runs / "status.json").read_text())["pairs"]
    assert [(p["name"], p["status"]) for p in status] == [("Actor_02", "done")]
    convert_clip = ravdess_tree / "Actor_02" / "01-01-03-02-01-01-02.mp4"
    swapped = runs / "Actor_02" / "convert" / "01-01-03-02-01-01-02.mp4"
    assert count_frames(swapped) == count_frames(convert_clip)
    manifest_records = json.loads((runs / "Actor_02" / "manifest.json").read_text())["stages"]
    assert manifest_records["evaluate"]["inputs"]["original"]["path"] == str(convert_clip)
    assert manifest_records["train"]["summary"]["faces_a"] >= 45  # the 2-clip (50-frame) training video
