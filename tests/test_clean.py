"""The clean stage on real faces from tests/data."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import cv2
import face_recognition
import numpy as np
import skimage.data

from deid.pipeline.cli import main
from deid.pipeline.config import CleanConfig, ExtractConfig
from deid.core.hashing import hash_input
from deid.stages.alignments import load_alignments
from deid.stages.clean import clean
from deid.stages.extract import extract


def rejected(out: Path) -> list[dict]:
    with open(out / "rejected.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def kept(out: Path) -> list:
    return list(load_alignments(out).faces())


def independent_distance(image: np.ndarray, box, reference: np.ndarray) -> float:
    """face_recognition's own embedding of the face in the original image, from our box."""
    x, y, w, h = box
    encoding = face_recognition.face_encodings(image, [(int(y), int(x + w), int(y + h), int(x))])[0]
    return float(np.linalg.norm(encoding - reference))


def test_astronaut_patch_false_positive_is_rejected_and_the_face_kept(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "astronaut.png"), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    extract(folder, tmp_path / "ex", ExtractConfig(detector="hog"), device="cpu", progress=False)
    faces = load_alignments(tmp_path / "ex").frames["0"]
    assert len(faces) == 2, "dlib's HOG detector is expected to fire on the mission patch"
    summary = clean(tmp_path / "ex", tmp_path / "cl", CleanConfig(), progress=False)
    assert summary["kept"] == 1 and summary["rejected"] == 1
    (row,) = rejected(tmp_path / "cl")
    assert row["reason"] and row["value"]
    (face,) = kept(tmp_path / "cl")
    # The kept face is hers: her face is in the upper half of the 512 px portrait, the patch on her chest
    # in the lower half.
    x, y, w, h = face.record["box"]
    assert y + h / 2 < 256
    patch = faces[int(row["face"])]
    assert patch["box"][1] + patch["box"][3] / 2 > 256


def test_obama_reference_keeps_only_obama(tmp_path, data_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    os.symlink(data_dir / "images" / "obama_and_biden.jpg", folder / "obama_and_biden.jpg")
    extract(folder, tmp_path / "ex", ExtractConfig(), device="cpu", progress=False)
    references = sorted((data_dir / "identities" / "obama").glob("*.jpg"))
    before = hash_input(tmp_path / "ex")
    clean(tmp_path / "ex", tmp_path / "cl", CleanConfig(), references=references, progress=False)
    assert hash_input(tmp_path / "ex") == before, "clean must never modify its input"

    image = face_recognition.load_image_file(data_dir / "images" / "obama_and_biden.jpg")
    obama = face_recognition.face_encodings(face_recognition.load_image_file(references[0]))[0]
    biden = face_recognition.face_encodings(face_recognition.load_image_file(data_dir / "identities" / "biden" / "1.jpg"))[0]
    (face,) = kept(tmp_path / "cl")
    assert independent_distance(image, face.record["box"], obama) < 0.5
    assert face.image.is_file(), "kept faces point back at the extract's crops"
    frames = load_alignments(tmp_path / "ex").frames["0"]
    rows = rejected(tmp_path / "cl")
    assert {row["reason"] for row in rows} == {"identity"}
    biden_rows = [r for r in rows if independent_distance(image, frames[int(r["face"])]["box"], biden) < 0.5]
    assert len(biden_rows) == 1
    assert float(biden_rows[0]["value"]) >= 0.6 and float(biden_rows[0]["threshold"]) == 0.6


def test_mixed_people_with_references_for_one(tmp_path, data_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    sources = [data_dir / "identities" / "obama" / "2.jpg", data_dir / "identities" / "obama" / "3.jpg",
               *sorted((data_dir / "identities" / "biden").glob("*.jpg")),
               data_dir / "images" / "multi_face.jpg", data_dir / "images" / "single_face.jpg",
               data_dir / "images" / "obama_and_biden.jpg"]
    for i, source in enumerate(sources):
        os.symlink(source, folder / f"{i:02d}_{source.parent.name}_{source.name}")
    extract(folder, tmp_path / "ex", ExtractConfig(), device="cpu", progress=False)
    reference = data_dir / "identities" / "obama" / "1.jpg"
    summary = clean(tmp_path / "ex", tmp_path / "cl", CleanConfig(), references=[reference], progress=False)

    obama = face_recognition.face_encodings(face_recognition.load_image_file(reference))[0]
    files = load_alignments(tmp_path / "ex").video["files"]
    images = {i: face_recognition.load_image_file(folder / name) for i, name in enumerate(files)}
    kept_faces = kept(tmp_path / "cl")
    assert len(kept_faces) == 3  # obama 2.jpg, 3.jpg and his face in obama_and_biden.jpg
    for face in kept_faces:
        assert independent_distance(images[face.frame], face.record["box"], obama) < 0.6
    all_faces = list(load_alignments(tmp_path / "ex").faces())
    assert summary["rejected"] == len(all_faces) - 3
    for row in rejected(tmp_path / "cl"):
        record = load_alignments(tmp_path / "ex").frames[row["frame"]][int(row["face"])]
        assert independent_distance(images[int(row["frame"])], record["box"], obama) > 0.5


def test_single_person_clip_without_references_keeps_expressive_frames(extracted, tmp_path, caplog):
    caplog.set_level("INFO")
    source = extracted("video/WolfgangLanger_Pexels.mp4")
    summary = clean(source, tmp_path, CleanConfig(), progress=False)
    assert summary["kept"] >= 0.95 * summary["faces"], summary
    assert summary["reasons"].get("identity", 0) == 0, summary
    assert "no reference photos" in caplog.text
    assert "dominant identity" in json.loads((tmp_path / "summary.json").read_text())["identity"]
    # Every frame is still listed (empty where nothing was kept), so convert can line frames up.
    assert len(load_alignments(tmp_path).frames) == 472


def test_blur_filter_rejects_blurred_copies_and_keeps_sharp_originals(tmp_path, data_dir):
    from deid.stages.media import iter_frames, probe

    folder = tmp_path / "in"
    folder.mkdir()
    info = probe(data_dir / "video" / "WolfgangLanger_Pexels.mp4")
    for index, frame in iter_frames(info, every=30):
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(folder / f"{index:04d}_sharp.png"), bgr)
        if index % 90 == 0:
            cv2.imwrite(str(folder / f"{index:04d}_blurred.png"), cv2.GaussianBlur(bgr, (0, 0), 2.5))
    extract(folder, tmp_path / "ex", ExtractConfig(), device="cpu", progress=False)
    clean(tmp_path / "ex", tmp_path / "cl", CleanConfig(), progress=False)
    files = load_alignments(tmp_path / "ex").video["files"]
    blurred = {i for i, name in enumerate(files) if "blurred" in name}
    sharp = set(range(len(files))) - blurred
    assert len(blurred) == 6 and len(sharp) == 16
    rows = rejected(tmp_path / "cl")
    assert {int(r["frame"]) for r in rows if r["reason"] == "blur"} == blurred
    assert {face.frame for face in kept(tmp_path / "cl")} == sharp


def test_dedupe_and_cap_keep_the_most_varied(extracted, tmp_path):
    source = extracted("video/WolfgangLanger_Pexels.mp4")
    summary = clean(source, tmp_path, CleanConfig(dedupe=True, max_faces=50), progress=False)
    assert summary["kept"] == 50
    assert summary["reasons"]["duplicate"] > 0 and summary["reasons"]["cap"] > 0
    frames = sorted(face.frame for face in kept(tmp_path))
    assert frames[-1] - frames[0] > 300, "the cap must keep faces from the whole clip, not the first 50"


def test_bad_inputs(tmp_path, data_dir, capsys, extracted):
    (tmp_path / "not_extract").mkdir()
    assert main(["-q", "clean", str(tmp_path / "not_extract"), "-o", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not_extract: no alignments.json" in err and len(err.splitlines()) == 1

    source = extracted("video/single_face.mp4")
    mountain = data_dir / "images" / "free-mountain-vector-01.jpg"
    assert main(["-q", "clean", str(source), "-o", str(tmp_path / "o2"), "--reference", str(mountain)]) == 2
    err = capsys.readouterr().err.strip()
    assert "free-mountain-vector-01.jpg: no face found" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o2" / "alignments.json").exists()

    assert main(["-q", "clean", str(source), "-o", str(tmp_path / "o3"), "--threshold", "-1"]) == 2
    assert "--threshold" in capsys.readouterr().err

    empty = extracted("video/no_face.mp4")
    assert main(["-q", "clean", str(empty), "-o", str(tmp_path / "o4")]) == 0
    assert "kept 0/0 faces" in capsys.readouterr().out
    assert all(v == [] for v in load_alignments(tmp_path / "o4").frames.values())


def test_sort_views(extracted, tmp_path):
    from deid.stages.sort import sort_faces

    source = extracted("video/single_face.mp4")
    for key in ("size", "yaw", "blur", "hist", "face"):
        index = sort_faces(source, tmp_path / key, key, progress=False)
        with open(index, newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 72 and sorted(int(r["frame"]) for r in rows) == list(range(72))
        links = sorted((tmp_path / key).glob("*.png"))
        assert len(links) == 72 and cv2.imread(str(links[0])) is not None
    sizes = [float(r["value"]) for r in csv.DictReader(open(tmp_path / "size" / "index.csv"))]
    assert sizes == sorted(sizes, reverse=True)


def test_reference_photos_are_searched_with_the_extractions_detector(tmp_path, data_dir, monkeypatch):
    """An extraction made with `hog` has its reference photos found by `hog` too, not by a hard-coded MTCNN."""
    import deid.models.identity as identity

    used = []
    real = identity.make_detector

    def recording(name, device, min_face_size):
        used.append(name)
        return real(name, device, min_face_size)

    monkeypatch.setattr(identity, "make_detector", recording)
    folder = tmp_path / "in"
    folder.mkdir()
    os.symlink(data_dir / "images" / "obama_and_biden.jpg", folder / "obama_and_biden.jpg")
    extract(folder, tmp_path / "ex", ExtractConfig(detector="hog"), device="cpu", progress=False)
    references = sorted((data_dir / "identities" / "obama").glob("*.jpg"))[:1]
    summary = clean(tmp_path / "ex", tmp_path / "cl", CleanConfig(), references=references, progress=False)
    assert used == ["hog"] and summary["kept"] == 1
