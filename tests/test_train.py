"""The train stage on real faces (talking_1.mp4 = A, talking_2.mp4 = B from tests/data), on the CPU.

Models are the real families at reduced width so a few hundred iterations fit in CI time; everything
else (data, augmentation, loss, optimiser, checkpoints) is what `deid train` runs.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

import deid.stages.train as train_module
from deid.models.alignment import transform_points
from deid.core.errors import ConfigError, DeidError
from deid.stages import checkpoint
from deid.stages.alignments import load_alignments
from deid.stages.augment import AugmentSettings, augment, lab_to_rgb, plain, rgb_to_lab
from deid.stages.train import train
from deid.stages.train_config import TrainConfig
from deid.stages.train_data import FaceSet, Window, frame_to_model, window_size

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"width": 16, "latent": 128, "batch_size": 8}  # `original` at a quarter width: same code, CI-sized
TINY = {"width": 8, "latent": 16, "batch_size": 4}


def config(**overrides) -> TrainConfig:
    return TrainConfig(**{**SMALL, "preview_every": 0, "identity_every": 0, "save_every": 50, **overrides})


def loss_rows(model_dir: Path) -> list[dict[str, float]]:
    with open(model_dir / "loss.csv", newline="") as handle:
        return [{k: float(v) if v != "" else math.nan for k, v in row.items()} for row in csv.DictReader(handle)]


def state_of(model_dir: Path) -> dict:
    return json.loads((model_dir / "state.json").read_text())


@pytest.fixture(scope="module")
def people(extracted) -> tuple[Path, Path]:
    return extracted("video/talking_1.mp4"), extracted("video/talking_2.mp4")


@pytest.fixture(scope="module")
def trained(people, tmp_path_factory) -> SimpleNamespace:
    """`original` on two real people: 150 iterations, stop, then `train` again to a total of 300."""
    a, b = people
    model_dir = tmp_path_factory.mktemp("train") / "model"
    settings = {"save_every": 50, "preview_every": 100, "identity_every": 150}
    first = train(a, b, model_dir, config(iterations=150, **settings), device="cpu", progress=False)
    after_first = SimpleNamespace(state=state_of(model_dir), rows=loss_rows(model_dir),
                                  optimizer=torch.load(model_dir / "optimizer.pt", weights_only=True))
    second = train(a, b, model_dir, config(iterations=300, **settings), device="cpu", progress=False)
    return SimpleNamespace(dir=model_dir, first=first, second=second, after_first=after_first)


def test_original_learns_two_real_people_and_writes_previews(trained):
    rows = loss_rows(trained.dir)
    assert [int(r["iteration"]) for r in rows] == list(range(1, 301))
    for side in ("loss_a", "loss_b"):
        first10 = np.mean([r[side] for r in rows[:10]])
        last10 = np.mean([r[side] for r in rows[-10:]])
        print(f"{side}: first-10 mean {first10:.4f}, last-10 mean {last10:.4f} ({last10 / first10:.0%})")
        assert last10 < 0.7 * first10, f"{side} fell only from {first10:.4f} to {last10:.4f}"
    assert all(r["images_per_s"] > 0 and r["lr"] == pytest.approx(5e-5) for r in rows)

    previews = sorted(p.name for p in (trained.dir / "previews").iterdir())
    assert previews == ["0000100.jpg", "0000150.jpg", "0000200.jpg", "0000300.jpg"]  # every 100 and at each stop
    image = cv2.imread(str(trained.dir / "previews" / "0000300.jpg"))
    header = image.shape[0] - 4 * 64  # column labels and the identity line above the faces
    assert image.shape[1:] == (6 * 64, 3) and header > 0  # 4 faces x (A, A->A, A->B, B, B->B, B->A) at 64 px
    assert (image[:header] < 128).mean() > 0.01  # text on the white header
    grid = image[header:]
    cells = [grid[:64, 64 * i:64 * (i + 1)].astype(float) for i in range(6)]
    # The reconstruction A->A is closer to A than the swap A->B is: the decoders are not the same map.
    assert np.abs(cells[1] - cells[0]).mean() < np.abs(cells[2] - cells[0]).mean()
    assert trained.second["preview"].endswith("0000300.jpg")


def test_resume_continues_counter_optimiser_and_loss_curve(trained):
    first = trained.after_first
    assert first.state["iteration"] == 150 and len(first.rows) == 150
    assert first.optimizer["iteration"] == 150
    assert {int(s["step"]) for s in first.optimizer["optimizer"]["state"].values()} == {150}

    state = state_of(trained.dir)
    assert state["iteration"] == 300 and trained.second["iterations_this_run"] == 150
    runs = [(r["from"], r["to"], r["stopped"]) for r in state["runs"]]
    assert runs == [(0, 150, "iterations"), (150, 300, "iterations")]
    optimizer = torch.load(trained.dir / "optimizer.pt", weights_only=True)
    assert {int(s["step"]) for s in optimizer["optimizer"]["state"].values()} == {300}  # Adam's moments carried on
    model = torch.load(trained.dir / "model.pt", weights_only=True)
    assert int(model["iteration"]) == 300
    rows = loss_rows(trained.dir)
    assert rows[:150] == first.rows  # the first run's curve is kept, not rewritten
    # The second run starts where the first stopped, not from an untrained model.
    start = sum(r["loss_a"] + r["loss_b"] for r in rows[:10])
    resumed = sum(r["loss_a"] + r["loss_b"] for r in rows[150:160])
    assert resumed < 0.8 * start
    best = checkpoint.load(trained.dir / "best")
    assert best.state["iteration"] == state["best_iteration"] > 0
    assert int(best.model["iteration"]) == state["best_iteration"]


def test_trained_model_loads_for_convert(trained):
    model, state = checkpoint.load_model(trained.dir)
    assert state["frozen"] == {"model": "original", "input_size": 64, "output_size": 64, "width": 16, "latent": 128,
                               "centering": "face", "coverage": 0.875}
    assert not model.training and int(model.iteration) == 300
    with torch.no_grad():
        swapped, mask = model(torch.rand(2, 3, 64, 64), "b")
    assert swapped.shape == (2, 3, 64, 64) and mask is None


def test_identity_distance_is_logged(trained):
    with open(trained.dir / "identity.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["iteration"]) for r in rows] == [150, 300]
    last = {k: float(v) for k, v in rows[-1].items()}
    for key in ("a2b_to_a", "a2a_to_a", "a2b_to_b"):
        assert 0.05 < last[key] < 1.5
    assert 0 <= last["a2b_reidentified"] <= 1
    # The swap of A looks more like the donor than like A, per face_recognition.
    assert last["a2b_to_b"] < last["a2b_to_a"]
    assert trained.second["identity"]["iteration"] == 300


def test_resume_is_exact(people, tmp_path):
    """Stopping and resuming gives bit-identical weights and losses to an uninterrupted run."""
    a, b = people
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(a, b, straight, config(**TINY, iterations=12, save_every=4), device="cpu", progress=False)
    train(a, b, resumed, config(**TINY, iterations=6, save_every=4), device="cpu", progress=False)
    train(a, b, resumed, config(**TINY, iterations=12, save_every=4), device="cpu", progress=False)
    without_rate = [[{k: v for k, v in row.items() if k != "images_per_s"} for row in loss_rows(d)]
                    for d in (straight, resumed)]
    assert len(without_rate[0]) == 12 and without_rate[0] == without_rate[1]
    one = torch.load(straight / "model.pt", weights_only=True)
    two = torch.load(resumed / "model.pt", weights_only=True)
    assert all(torch.equal(one[k], two[k]) for k in one)
    # Reaching the target again is a no-op.
    again = train(a, b, resumed, config(**TINY, iterations=12, save_every=4), device="cpu", progress=False)
    assert again["iterations_this_run"] == 0 and again["stopped"] == "already trained"


# --- kills and signals --------------------------------------------------------------------------------------
TRAIN_SCRIPT = """
import sys
from pathlib import Path
from deid.stages.train import train
from deid.stages.train_config import TrainConfig
a, b, out, save_every = sys.argv[1:5]
config = TrainConfig(width=8, latent=16, batch_size=4, iterations=10 ** 6, save_every=int(save_every),
                     preview_every=0, identity_every=0)
try:
    train(Path(a), Path(b), Path(out), config, device="cpu", progress=False)
except KeyboardInterrupt:
    sys.exit(130)
"""
PENDING = re.compile(r"^\.(model|optimizer)-\d+\.pt$|\.part\.")


def start_training(a: Path, b: Path, model_dir: Path, save_every: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(a), str(b), str(model_dir), str(save_every)],
                            cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_mid_save_leaves_a_loadable_checkpoint(people, tmp_path):
    a, b = people
    model_dir = tmp_path / "model"
    iterations = []
    committed = 0
    for delay in (0.0, 0.0005, 0.002, 0.005):
        process = start_training(a, b, model_dir, save_every=1)  # saves all the time: kills land in saves
        try:
            deadline = time.monotonic() + 90
            # Wait until this process has committed a new iteration, then until it is in the middle of a save.
            while state_of_safe(model_dir) <= committed:
                assert process.poll() is None, process.communicate()[1][-2000:]
                assert time.monotonic() < deadline, "no checkpoint in 90 s"
                time.sleep(0.01)
            while not any(PENDING.search(n) for n in os.listdir(model_dir)):
                assert process.poll() is None, process.communicate()[1][-2000:]
                assert time.monotonic() < deadline, "no save seen in 90 s"
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait()

        state = state_of(model_dir)
        saved = checkpoint.load(model_dir)  # read-only: works even when the kill fell between commit and rename
        assert int(saved.model["iteration"]) == saved.optimizer["iteration"] == state["iteration"]
        checkpoint.recover(model_dir)  # what the next `deid train` does first
        model = torch.load(model_dir / "model.pt", weights_only=True)
        optimizer = torch.load(model_dir / "optimizer.pt", weights_only=True)
        state = state_of(model_dir)
        assert int(model["iteration"]) == optimizer["iteration"] == state["iteration"] > 0
        assert not [n for n in os.listdir(model_dir) if PENDING.search(n)]
        iterations.append(state["iteration"])
        committed = state["iteration"]
    assert iterations == sorted(iterations) and iterations[-1] > iterations[0]  # every restart resumed


def state_of_safe(model_dir: Path) -> int:
    try:
        return state_of(model_dir)["iteration"]
    except (OSError, json.JSONDecodeError):  # not there yet
        return -1


def test_sigterm_saves_then_stops(people, tmp_path):
    a, b = people
    model_dir = tmp_path / "model"
    process = start_training(a, b, model_dir, save_every=10 ** 6)  # only the start and the stop save
    try:
        deadline = time.monotonic() + 90
        while not (model_dir / "state.json").exists() and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()[1][-2000:]
            time.sleep(0.05)
        time.sleep(2.0)  # some iterations
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr[-2000:]
    assert "SIGTERM received: saving" in stderr
    state = state_of(model_dir)
    assert state["iteration"] > 0 and state["runs"][-1]["stopped"] == "SIGTERM"
    assert int(torch.load(model_dir / "model.pt", weights_only=True)["iteration"]) == state["iteration"]
    assert int(loss_rows(model_dir)[-1]["iteration"]) == state["iteration"]


# --- NaN protection -----------------------------------------------------------------------------------------
def test_nan_loss_skips_the_step_and_reloads_the_last_checkpoint(people, tmp_path, monkeypatch, caplog):
    a, b = people
    real_loss = train_module.reconstruction_loss
    calls = {"n": 0}

    def loss_with_one_nan(rgb, mask, batch, cfg):
        calls["n"] += 1
        loss = real_loss(rgb, mask, batch, cfg)
        return loss * float("nan") if calls["n"] == 2 * 15 - 1 else loss  # side A of iteration 15

    monkeypatch.setattr(train_module, "reconstruction_loss", loss_with_one_nan)
    model_dir = tmp_path / "model"
    with caplog.at_level(logging.WARNING, logger="deid.train"):
        summary = train(a, b, model_dir, config(**TINY, iterations=24, save_every=10), device="cpu", progress=False)
    assert summary["iteration"] == 24
    assert "iteration 15: non-finite loss" in caplog.text and "reloaded the checkpoint of iteration 10" in caplog.text
    assert state_of(model_dir)["nan_events"] == [{"at": 15, "reloaded": 10}]
    rows = loss_rows(model_dir)
    assert [int(r["iteration"]) for r in rows] == list(range(1, 25))  # 11..14 redone, each logged once
    assert all(np.isfinite(r["loss_a"]) and np.isfinite(r["loss_b"]) for r in rows)
    model = torch.load(model_dir / "model.pt", weights_only=True)
    assert all(torch.isfinite(v.float()).all() for v in model.values())


def test_persistent_nan_stops_with_a_clear_error(people, tmp_path, monkeypatch):
    a, b = people
    monkeypatch.setattr(train_module, "reconstruction_loss",
                        lambda rgb, mask, batch, cfg: rgb.float().mean() * float("nan"))
    with pytest.raises(DeidError) as err:
        train(a, b, tmp_path / "model", config(**TINY, iterations=10), device="cpu", progress=False)
    message = str(err.value)
    assert message.startswith("training diverged") and "train.lr" in message and "\n" not in message


# --- bad input ----------------------------------------------------------------------------------------------
def test_a_without_faces_is_a_one_line_error(people, extracted, tmp_path):
    empty = extracted("video/no_face.mp4")
    with pytest.raises(DeidError) as err:
        train(empty, people[1], tmp_path / "model", config(iterations=5), device="cpu", progress=False)
    message = str(err.value)
    assert message.startswith(f"A_DIR {empty} has no faces (0 in ") and "\n" not in message
    with pytest.raises(DeidError, match=r"^B_DIR .* has no faces"):
        train(people[0], empty, tmp_path / "model", config(iterations=5), device="cpu", progress=False)


def test_too_few_faces_for_the_batch_size(people, tmp_path):
    # A clean-style folder that lists 3 of talking_1's faces (faces_root points at the extract output).
    source = people[0]
    data = json.loads((source / "alignments.json").read_text())
    keep = sorted(data["frames"], key=int)[:3]
    data["frames"] = {k: data["frames"][k] for k in keep}
    data["faces_root"] = str(source)
    few = tmp_path / "few"
    few.mkdir()
    (few / "alignments.json").write_text(json.dumps(data))
    with pytest.raises(DeidError) as err:
        train(few, people[1], tmp_path / "model", config(iterations=5, batch_size=16), device="cpu", progress=False)
    assert str(err.value) == (f"A_DIR {few} has 3 faces, fewer than the batch size 16 (--batch-size / "
                              "train.batch_size); lower the batch size or extract more frames")


def test_model_dir_of_another_architecture_is_refused(people, tmp_path):
    a, b = people
    model_dir = tmp_path / "model"
    train(a, b, model_dir, config(**TINY, iterations=2), device="cpu", progress=False)
    with pytest.raises(DeidError) as err:
        train(a, b, model_dir, config(**TINY, iterations=4, model="dfaker"), device="cpu", progress=False)
    message = str(err.value)
    assert "model 'original' -> 'dfaker'" in message and "frozen" in message and "\n" not in message
    with pytest.raises(DeidError, match=r"width 8 -> 16"):
        train(a, b, model_dir, config(**{**TINY, "width": 16}, iterations=4), device="cpu", progress=False)
    with pytest.raises(DeidError, match=r"coverage 0.875 -> 0.75"):
        train(a, b, model_dir, config(**TINY, iterations=4, coverage=0.75), device="cpu", progress=False)
    assert state_of(model_dir)["iteration"] == 2  # refused before touching anything
    # Non-architecture keys may change on resume.
    summary = train(a, b, model_dir, config(**TINY, iterations=4, lr=1e-4), device="cpu", progress=False)
    assert summary["iteration"] == 4


@pytest.mark.parametrize("overrides, message", [
    ({"coverage": 0.3}, "train.coverage must be 0 (the model's default) or in 0.5..1.0"),
    ({"input_size": 100}, "train.input_size must be 0 (the model's default) or a power of two"),
    ({"batch_size": -1}, "train.batch_size must be 0 (the model's default) or in 1..4096"),
    ({"lr": 0.0}, "train.lr must be in"),
    ({"flip": 1.5}, "train.flip must be in 0..1"),
])
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig(**overrides)


def test_impossible_model_size_is_a_config_error(people, tmp_path):
    with pytest.raises(ConfigError, match="train: model villain: input_size and output_size must be at least 32"):
        train(*people, tmp_path / "model", TrainConfig(model="villain", input_size=16), device="cpu", progress=False)
    assert not (tmp_path / "model").exists()


# --- data and augmentation ----------------------------------------------------------------------------------
def test_faces_load_once_as_uint8_and_the_window_matches_the_frame_geometry(people):
    import face_recognition

    source = people[0]
    faces = FaceSet.load("A_DIR", source, Window(window_size(128, 128), "face", 0.875, "extended"), torch.device("cpu"))
    refs = list(load_alignments(source).faces())
    assert faces.data is not None and faces.data.dtype == torch.uint8
    assert tuple(faces.data.shape) == (len(refs), 6, window_size(128, 128), window_size(128, 128))
    batch = plain(faces.batch(torch.arange(0, len(refs), 20), torch.device("cpu")), 128, 128)
    errors = []
    for image, mask, eyes, ref in zip(batch.target, batch.mask, batch.eyes, refs[::20]):
        # Where convert will look for the eyes (frame_to_model) is where an independent detector finds them
        # in the training square.
        expected = transform_points(ref.landmarks, frame_to_model(ref.landmarks, 128, "face", 0.875))
        pixels = np.ascontiguousarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        found = face_recognition.face_landmarks(pixels, [(0, 128, 128, 0)], model="large")[0]
        errors.append(np.linalg.norm(np.mean(found["left_eye"], 0) - expected[36:42].mean(0)))
        eye_pixels = np.argwhere(eyes[0].numpy() > 0.5)[:, ::-1]
        eyes_and_brows = np.concatenate([expected[17:27], expected[36:48]])
        assert np.linalg.norm(eye_pixels.mean(0) - eyes_and_brows.mean(0)) < 6  # the region sits on eyes and brows
        assert mask[0, 64, 64] > 0.9 and mask[0, 2, 2] < 0.1  # the face mask covers the face, not the corner
    assert np.median(errors) < 3.0, errors


def test_augmentation_moves_image_and_masks_together(people):
    window = Window(window_size(64, 64), "face", 0.875, "extended")
    faces = FaceSet.load("B_DIR", people[1], window, torch.device("cpu"))
    planes = faces.batch(torch.arange(8), torch.device("cpu")).clone()
    planes[:, 0] = planes[:, 4]  # the red channel carries the eye region: it must stay on the eye plane
    geometric = AugmentSettings(warp=0.0, lightness=0.0, color_ab=0.0, flip=0.5)
    generator = torch.Generator().manual_seed(1)
    batch = augment(planes, geometric, 64, 64, generator)
    assert torch.allclose(batch.target[:, 0:1], batch.eyes, atol=1e-5)
    assert torch.allclose(batch.input, batch.target, atol=1e-5)  # no warp: the input is the same view
    unaugmented = plain(planes, 64, 64)
    assert not torch.allclose(batch.target, unaugmented.target, atol=0.05)  # but a different view than plain

    warped = augment(planes, AugmentSettings(lightness=0.0, color_ab=0.0), 64, 64, torch.Generator().manual_seed(1))
    assert (warped.input - warped.target).abs().mean() > 0.01  # the warp touches the input only
    assert torch.allclose(warped.target[:, 0:1], warped.eyes, atol=1e-5)

    coloured = augment(planes, AugmentSettings(warp=0.0, rotation=0, zoom=0, shift=0, flip=0), 64, 64,
                       torch.Generator().manual_seed(2))
    assert torch.allclose(coloured.mask, unaugmented.mask, atol=1e-5)  # colour changes never move the mask
    assert (coloured.target - unaugmented.target).abs().mean() > 0.01


def test_lab_round_trip():
    rgb = torch.rand(2, 3, 16, 16)
    lab = rgb_to_lab(rgb)
    assert lab[:, 0].min() >= -1e-3 and lab[:, 0].max() <= 100 + 1e-3
    assert torch.allclose(lab_to_rgb(lab), rgb, atol=1e-4)
    white = rgb_to_lab(torch.ones(1, 3, 1, 1))
    assert torch.allclose(white.flatten(), torch.tensor([100.0, 0.0, 0.0]), atol=0.05)


def test_window_holds_the_model_square_plus_margin():
    assert window_size(64, 64) == 80 and window_size(64, 128) == 160 and window_size(256, 256) == 320


def test_init_from_starts_a_new_pair_from_a_trained_model(people, tmp_path):
    """A second pair with the same donor starts from the first pair's encoder and decoder B; with another
    donor only the encoder is taken; a model of other sizes is refused with one line."""
    first = tmp_path / "first"
    # Another seed than the new pairs': their fresh decoder A cannot come out equal to the source's by chance.
    train(people[0], people[1], first, config(iterations=2, seed=1), device="cpu", progress=False)
    source = torch.load(first / "model.pt", weights_only=True)

    same = tmp_path / "same_donor"
    train(people[0], people[1], same, config(iterations=1, init_from=first), device="cpu", progress=False)
    state = json.loads((same / "state.json").read_text())
    assert state["init_from"]["parts"] == ["encoder", "decoder_b"]
    started = torch.load(same / "model.pt", weights_only=True)  # after one Adam step (lr 5e-5) from the start
    for key, value in started.items():
        if not value.dtype.is_floating_point or value.numel() < 2:
            continue
        moved = float((value - source[key]).abs().max())
        if key.startswith(("encoder.", "decoder_b.")):
            assert moved < 1e-3, (key, moved)
        elif key.startswith("decoder_a.") and key.endswith("weight"):
            assert moved > 1e-2, (key, moved)  # a fresh decoder A, not the source's

    other = tmp_path / "other_donor"
    train(people[1], people[0], other, config(iterations=1, init_from=first), device="cpu", progress=False)
    assert json.loads((other / "state.json").read_text())["init_from"]["parts"] == ["encoder"]

    with pytest.raises(ConfigError, match="other architecture keys"):
        train(people[0], people[1], tmp_path / "wider", config(iterations=1, init_from=first, width=32),
              device="cpu", progress=False)


def test_a_cpu_trains_a_cpu_sized_model_by_default_and_a_resume_keeps_the_saved_sizes(people, tmp_path, caplog):
    """Width and latent left at 0 on a CPU: the family's cpu_sizes, said in the log. A model started at other
    sizes resumes with 0s in the config (they mean "the default", not "change the architecture")."""
    a, b = people
    model_dir = tmp_path / "cpu"
    with caplog.at_level(logging.INFO, logger="deid.train"):
        train(a, b, model_dir, config(width=0, latent=0, iterations=1), device="cpu", progress=False)
    frozen = state_of(model_dir)["frozen"]
    assert (frozen["width"], frozen["latent"]) == (32, 512)
    assert "on a CPU the original family defaults to width 32, latent 512" in caplog.text
    explicit = tmp_path / "explicit"
    train(a, b, explicit, config(**TINY, iterations=1), device="cpu", progress=False)
    train(a, b, explicit, config(width=0, latent=0, batch_size=4, iterations=2), device="cpu", progress=False)
    assert state_of(explicit)["iteration"] == 2 and state_of(explicit)["frozen"]["width"] == 8


def test_identity_term_is_logged_and_moves_the_swap_towards_the_donor(people, tmp_path):
    """train.identity_weight > 0: loss.csv's identity column holds the hinge; with it off the column is empty."""
    a, b = people
    on, off = tmp_path / "on", tmp_path / "off"
    train(a, b, on, config(**TINY, iterations=3, identity_weight=1.0, identity_faces=2), device="cpu", progress=False)
    train(a, b, off, config(**TINY, iterations=3), device="cpu", progress=False)
    rows_on, rows_off = loss_rows(on), loss_rows(off)
    assert all(math.isfinite(r["identity"]) and r["identity"] >= 0 for r in rows_on)
    assert all(math.isnan(r["identity"]) for r in rows_off)
    assert state_of(on)["config"]["identity_weight"] == 1.0
