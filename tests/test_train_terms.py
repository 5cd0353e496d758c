"""The optional training terms of issue 22 on real faces (talking_1 = A, talking_2 = B from tests/data), on the
CPU: region-weighted loss (train.region_loss), learning-rate warm-up (train.warmup) and the expression-consistency
term (train.expression_weight). Every one is off by default, and the defaults must reproduce the loss as it was.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_msssim import ssim

import deid.stages.train as train_module
from deid.models.alignment import transform_points
from deid.pipeline.config import load_config
from deid.core.errors import ConfigError
from deid.stages.augment import AugmentSettings, Batch, augment
from deid.stages.expression_loss import ExpressionLoss, expression_labels
from deid.stages.train import (
    learning_rate,
    reconstruction_loss,
    ssim_map,
    train,
    training_window,
)
from deid.stages.train_config import TrainConfig
from deid.stages.train_data import FaceSet, Window, frame_to_model, window_size

ARCH = {"model": "original", "width": 8, "latent": 16, "batch_size": 4}
FROZEN = {"input_size": 64, "output_size": 64, "coverage": 0.875}
CPU = torch.device("cpu")


def config(**overrides) -> TrainConfig:
    return TrainConfig(**{**ARCH, "preview_every": 0, "identity_every": 0, "save_every": 50,
                          "mixed_precision": False, **overrides})


def loss_rows(model_dir: Path) -> list[dict[str, float]]:
    with open(model_dir / "loss.csv", newline="") as handle:
        return [{k: float(v) if v != "" else math.nan for k, v in row.items()} for row in csv.DictReader(handle)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tests run many tiny convolutions: on 2 cores shared with other jobs, two torch threads spin
    against each other (measured: 8 minutes for this file instead of 50 s). One thread, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def people(extracted) -> tuple[Path, Path]:
    return extracted("video/talking_1.mp4"), extracted("video/talking_2.mp4")


def faces_of(folder: Path, cfg: TrainConfig) -> FaceSet:
    return FaceSet.load("A_DIR", folder, training_window(cfg, FROZEN), CPU)


def fixed_batch(faces: FaceSet, count: int = 8) -> Batch:
    """The same augmented batch every time (seeded), as training draws it."""
    index = torch.linspace(0, len(faces) - 1, count).round().long()
    return augment(faces.batch(index, CPU), AugmentSettings(), 64, 64, torch.Generator().manual_seed(3))


# --- region-weighted loss -------------------------------------------------------------------------------------
def test_default_loss_is_the_formula_it_always_was(people):
    """train.region_loss renormalised (the default) is bit for bit the loss before issue 22: L1 weighted by
    face x (1 + (eye_weight - 1) eyes + (mouth_weight - 1) mouth) divided by the weights' sum, DSSIM of the
    masked face, MSE of a learned mask; and its planes are the ones training always stored."""
    cfg = config()
    assert training_window(cfg, FROZEN) == Window(window_size(64, 64), "face", 0.875, "extended")
    batch = fixed_batch(faces_of(people[0], cfg))
    rgb = (batch.target + 0.15 * torch.randn(batch.target.shape, generator=torch.Generator().manual_seed(5))).clamp(0, 1)
    learned = torch.rand(batch.mask.shape, generator=torch.Generator().manual_seed(6))

    face = 0.1 + 0.9 * batch.mask  # background_weight 0.1
    weight = face * (1 + 2.0 * batch.eyes + 1.0 * batch.mouth)  # eye_weight 3, mouth_weight 2
    old = (weight * (rgb - batch.target).abs()).sum() / (weight.sum() * 3)
    old = old + 1.0 * (1 - ssim(rgb * face, batch.target * face, data_range=1.0)) / 2
    assert torch.equal(reconstruction_loss(rgb, None, batch, cfg), old)
    with_mask = old + 1.0 * F.mse_loss(learned, batch.mask)
    assert torch.equal(reconstruction_loss(rgb, learned, batch, cfg), with_mask)
    assert float(old) > 0.05  # a real error, not a zero that any formula matches


def test_ssim_map_is_pytorch_msssims_ssim_per_pixel(people):
    batch = fixed_batch(faces_of(people[1], config()), 4)
    noisy = (batch.target + 0.1 * torch.randn(batch.target.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    per_pixel = ssim_map(noisy, batch.target)
    assert per_pixel.shape == (4, 3, 54, 54)  # valid-mode 11 px window
    assert float(per_pixel.mean()) == pytest.approx(float(ssim(noisy, batch.target, data_range=1.0)), abs=1e-6)
    assert torch.allclose(ssim_map(batch.target, batch.target), torch.ones_like(per_pixel), atol=1e-5)


def patch_error(batch: Batch, where: torch.Tensor, amount: float = 0.3) -> torch.Tensor:
    """The target with `amount` added to every channel where `where` (n, 1, h, w) is true."""
    return (batch.target + amount * where.float()).clamp(0, 1)


def regions(batch: Batch, pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per face, the `pixels` most mouth-covered pixels, and as many face pixels with no eye or mouth
    weight at all nearest the face centre (cheeks, nose): same count, same face-mask weight."""
    mouth, other = torch.zeros_like(batch.mask, dtype=torch.bool), torch.zeros_like(batch.mask, dtype=torch.bool)
    ys, xs = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    centre = ((ys - 34.0) ** 2 + (xs - 32.0) ** 2).flatten()
    for i in range(len(batch.mask)):
        mouth.view(len(mouth), -1)[i, batch.mouth[i].flatten().topk(pixels).indices] = True
        plain_face = (batch.mouth[i] == 0) & (batch.eyes[i] == 0) & (batch.mask[i] > 0.999)
        score = torch.where(plain_face.flatten(), centre, torch.full_like(centre, 1e9))
        other.view(len(other), -1)[i, score.topk(pixels, largest=False).indices] = True
    assert bool((batch.mouth[mouth] > 0.99).all()) and bool((batch.mask[mouth] > 0.999).all())
    return mouth, other


def test_multiplier_weighs_a_mouth_error_more_and_is_not_renormalised(people):
    cfg = config(region_loss="multiplier")
    batch = fixed_batch(faces_of(people[0], cfg))
    mouth, other = regions(batch, 40)
    l1_only = config(region_loss="multiplier", dssim_weight=0.0)
    at_mouth = float(reconstruction_loss(patch_error(batch, mouth), None, batch, l1_only))
    elsewhere = float(reconstruction_loss(patch_error(batch, other), None, batch, l1_only))
    clipped = (patch_error(batch, mouth) - batch.target).abs().sum() / (patch_error(batch, other) - batch.target).abs().sum()
    # The same error costs (1 + mouth_multiplier) = 3 times as much on the mouth (up to clipping at white).
    assert at_mouth / elsewhere == pytest.approx(3.0 * float(clipped), rel=5e-3)
    # With the SSIM map weighted too, the mouth error still costs clearly more.
    assert float(reconstruction_loss(patch_error(batch, mouth), None, batch, cfg)) > \
        1.5 * float(reconstruction_loss(patch_error(batch, other), None, batch, cfg))

    # Not renormalised: more weight on the mouth leaves what an error elsewhere costs as it was, and an error on
    # the mouth costs (1 + multiplier) / 3 times more; the renormalised loss instead shrinks the error elsewhere.
    l1_heavier = config(region_loss="multiplier", mouth_multiplier=8.0, dssim_weight=0.0)
    assert float(reconstruction_loss(patch_error(batch, other), None, batch, l1_heavier)) == \
        pytest.approx(elsewhere, rel=1e-6)
    assert float(reconstruction_loss(patch_error(batch, mouth), None, batch, l1_heavier)) == \
        pytest.approx(3.0 * at_mouth, rel=1e-4)
    renormalised = [float(reconstruction_loss(patch_error(batch, other), None, batch, config(mouth_weight=w)))
                    for w in (2.0, 9.0)]
    assert renormalised[1] < 0.95 * renormalised[0]
    # Averaged over every pixel, not over the weights (which are 1 on those face pixels).
    assert elsewhere == pytest.approx(float((patch_error(batch, other) - batch.target).abs().mean()), rel=2e-3)


def test_multiplier_regions_are_the_eyes_without_brows_and_a_dilated_mouth(people):
    source = people[0]
    refs = FaceSet.load("A_DIR", source, training_window(config(), FROZEN), CPU).refs
    index = torch.arange(0, len(refs), 30)
    planes = {name: FaceSet.load("A_DIR", source, training_window(cfg, FROZEN), CPU).batch(index, CPU)
              for name, cfg in (("renormalised", config()), ("multiplier", config(region_loss="multiplier")),
                                ("wide", config(region_loss="multiplier", mouth_dilation=0.5)))}
    window = training_window(config(), FROZEN)
    for k, i in enumerate(index.tolist()):
        # Landmarks in stored-window pixels: the model square is the centre of the window.
        offset = (window.size - 64) / 2
        points = transform_points(refs[i].landmarks, frame_to_model(refs[i].landmarks, 64, "face", 0.875)) + offset
        brow = np.round(points[17:22].mean(0)).astype(int)  # the middle of one brow
        eye = np.round(points[36:42].mean(0)).astype(int)
        for name in planes:
            assert planes[name][k, 4, eye[1], eye[0]] > 200, name  # every variant covers the eye itself
        assert planes["renormalised"][k, 4, brow[1], brow[0]] > 200  # today's region reaches the brows ...
        assert planes["multiplier"][k, 4, brow[1], brow[0]] == 0  # ... the multiplier's stops at the eyes
    areas = {name: int((p[:, 5] > 127).sum()) for name, p in planes.items()}
    assert areas["renormalised"] < areas["multiplier"] < areas["wide"]  # grown 0.12 < 0.2 < 0.5 of the eye distance
    assert torch.equal(planes["renormalised"][:, :4], planes["multiplier"][:, :4])  # RGB and mask unchanged


# --- warm-up --------------------------------------------------------------------------------------------------
def test_warmup_ramps_the_learning_rate_from_zero_and_a_resume_continues_it(people, tmp_path):
    cfg = config(warmup=6, lr=1e-4)
    ramp = [learning_rate(cfg, i) for i in range(8)]
    assert ramp == pytest.approx([1e-4 * k / 6 for k in range(1, 7)] + [1e-4, 1e-4])
    assert all(learning_rate(config(), i) == 5e-5 for i in (0, 1, 10 ** 6))  # warmup 0: train.lr from the start

    a, b = people
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(a, b, straight, config(warmup=6, lr=1e-4, iterations=8, save_every=4), device="cpu", progress=False)
    train(a, b, resumed, config(warmup=6, lr=1e-4, iterations=3, save_every=4), device="cpu", progress=False)
    train(a, b, resumed, config(warmup=6, lr=1e-4, iterations=8, save_every=4), device="cpu", progress=False)
    rows = [[{k: v for k, v in r.items() if k != "images_per_s"} for r in loss_rows(d)] for d in (straight, resumed)]
    assert [r["lr"] for r in rows[0]] == pytest.approx(ramp)
    assert rows[0] == rows[1]  # the resumed run took exactly the steps of the uninterrupted one
    one, two = (torch.load(d / "model.pt", weights_only=True) for d in (straight, resumed))
    assert all(torch.equal(one[k], two[k]) for k in one)


def test_warmup_survives_a_nan_reload(people, tmp_path, monkeypatch, caplog):
    """A non-finite loss during the ramp reloads the last checkpoint; the redone steps take the ramp's lr of
    their own iteration, and the run finishes finite."""
    real_loss = train_module.reconstruction_loss
    calls = {"n": 0}

    def loss_with_one_nan(rgb, mask, batch, cfg):
        calls["n"] += 1
        loss = real_loss(rgb, mask, batch, cfg)
        return loss * float("nan") if calls["n"] == 2 * 7 - 1 else loss  # side A of iteration 7

    monkeypatch.setattr(train_module, "reconstruction_loss", loss_with_one_nan)
    with caplog.at_level(logging.WARNING, logger="deid.train"):
        train(*people, tmp_path / "model", config(warmup=10, iterations=12, save_every=5), device="cpu", progress=False)
    assert "iteration 7: non-finite loss" in caplog.text
    rows = loss_rows(tmp_path / "model")
    assert [int(r["iteration"]) for r in rows] == list(range(1, 13))
    assert [r["lr"] for r in rows] == pytest.approx([5e-5 * min(1.0, k / 10) for k in range(1, 13)])
    assert all(np.isfinite(r["loss_a"]) for r in rows)


# --- expression term ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def expression(people) -> tuple[ExpressionLoss, dict[str, FaceSet]]:
    faces = {"a": faces_of(people[0], config()), "b": faces_of(people[1], config())}
    return ExpressionLoss(faces, 64, 64, CPU, steps=300, seed=0), faces


def test_expression_regressor_reads_the_mouth_of_held_out_faces(expression):
    term, _ = expression
    report = term.fit_report
    print("expression regressor held-out r:", report["held_out_r"])
    assert report["steps"] == 300 and report["held_out_faces"] >= 40
    assert report["held_out_r"]["mouth_open"] > 0.3  # chance is 0: the last fifth of each video, never fitted on
    assert not any(p.requires_grad for p in term.net.parameters()) and not term.net.training  # frozen


def test_expression_term_is_finite_differentiable_and_follows_the_mouth(expression):
    term, faces = expression
    labels = {side: expression_labels(faces[side].refs)[:, 0] for side in faces}  # mouth_open from the landmarks
    order = {side: np.argsort(np.nan_to_num(labels[side], nan=np.nanmedian(labels[side]))) for side in faces}

    def crops(side: str, index: np.ndarray) -> torch.Tensor:
        return augment(faces[side].batch(torch.as_tensor(index.copy()), CPU), AugmentSettings(warp=0.0), 64, 64,
                       torch.Generator().manual_seed(0)).target

    a_open = crops("a", order["a"][-8:])
    b_open, b_closed = crops("b", order["b"][-8:]), crops("b", order["b"][:8])
    swapped = b_closed.clone().requires_grad_(True)
    loss = term(a_open, swapped)
    loss.backward()
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    assert swapped.grad is not None and torch.isfinite(swapped.grad).all() and swapped.grad.abs().sum() > 0
    # A's widest mouths read as closer to B's widest mouths than to B's most closed ones.
    assert float(term(a_open, b_open)) < float(term(a_open, b_closed))


def test_the_expression_fit_is_seeded(people):
    faces = {"a": faces_of(people[0], config()), "b": faces_of(people[1], config())}
    one, two = (ExpressionLoss(faces, 64, 64, CPU, steps=3, seed=4) for _ in range(2))
    assert all(torch.equal(p, q) for p, q in zip(one.net.state_dict().values(), two.net.state_dict().values()))


# --- all together, and the keys -------------------------------------------------------------------------------
def test_every_option_on_trains_and_saves(people, tmp_path):
    model_dir = tmp_path / "model"
    cfg = config(region_loss="multiplier", eye_multiplier=3.0, mouth_multiplier=2.0, mouth_dilation=0.3, warmup=2,
                 expression_weight=1.0, expression_faces=3, expression_steps=20, identity_weight=1.0,
                 identity_faces=2, iterations=4, save_every=2)
    summary = train(*people, model_dir, cfg, device="cpu", progress=False)
    assert summary["iteration"] == 4 and summary["stopped"] == "iterations"
    rows = loss_rows(model_dir)
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    assert all(math.isfinite(r[k]) for r in rows for k in ("loss_a", "loss_b", "identity", "expression"))
    assert [r["lr"] for r in rows] == pytest.approx([2.5e-5, 5e-5, 5e-5, 5e-5])
    state = json.loads((model_dir / "state.json").read_text())
    assert state["config"]["region_loss"] == "multiplier" and state["config"]["expression_weight"] == 1.0
    assert state["expression_regressor"]["steps"] == 20 and "mouth_open" in state["expression_regressor"]["held_out_r"]
    model = torch.load(model_dir / "model.pt", weights_only=True)
    assert int(model["iteration"]) == 4 and all(torch.isfinite(v.float()).all() for v in model.values())


@pytest.mark.parametrize("overrides, message", [
    ({"region_loss": "faceswap"}, "train.region_loss must be renormalised or multiplier, got 'faceswap'"),
    ({"warmup": -1}, "train.warmup must be in 0..1000000000, got -1"),
    ({"eye_multiplier": 101.0}, "train.eye_multiplier must be in 0..100"),
    ({"mouth_dilation": 2.0}, "train.mouth_dilation must be in 0..1"),
    ({"expression_weight": -1.0}, "train.expression_weight must be in 0..100"),
    ({"expression_faces": 0}, "train.expression_faces must be in 1..4096"),
    ({"expression_steps": 0}, "train.expression_steps must be in 1..1000000"),
])
def test_new_keys_are_range_checked(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig(**overrides)


def test_new_keys_load_from_pipeline_yaml(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text("train:\n  region_loss: multiplier\n  warmup: 200\n  expression_weight: 0.5\n")
    train_config = load_config(path).train
    assert (train_config.region_loss, train_config.warmup, train_config.expression_weight) == ("multiplier", 200, 0.5)
    path.write_text("train:\n  region_loss: dfl\n")
    with pytest.raises(ConfigError, match=r"train\.region_loss"):
        load_config(path)
