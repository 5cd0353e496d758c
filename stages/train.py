"""Train: one shared encoder, decoder A (the person to hide) and decoder B (the donor); convert sends A's
faces through decoder B.

Inputs: two extract or clean output folders (A_DIR, B_DIR). Output folder MODEL_DIR:
    model.pt, optimizer.pt, state.json, best/   checkpoints (stages/checkpoint.py)
    loss.csv        iteration, loss_a, loss_b, lr (of that step: train.warmup ramps it), images_per_s (A and B
                    images per second of training step), identity (the identity term, empty when
                    train.identity_weight is 0), expression (the expression term, empty when train.expression_weight is 0)
    identity.csv    every identity_every iterations: face_recognition distance of A->B outputs to A's
                    own faces (a2b_to_a: must rise above 0.6, the recogniser's match threshold), the same
                    for A->A (the control: how far mere blur moves a face), A->B to B's faces, and the
                    share of A->B faces still recognised as A
    previews/<iteration>.jpg   rows of faces; columns A, A->A, A->B, B, B->B, B->A
Previews and the identity check also run when a run stops (unless their `*_every` is 0).

One iteration = one Adam step on an augmented batch of A and one of B (stages/augment.py), both through
the shared encoder in one pass. Loss per side (train.region_loss): `renormalised`, L1 weighted by the face
mask (eyes+brows and mouth weighted more, divided by the weights' sum) + DSSIM on the masked face; or
`multiplier` (faceswap's), L1 and a per-pixel DSSIM map both times face mask x (1 + eye_multiplier x eyes +
mouth_multiplier x mouth), averaged over pixels; + MSE of the learned mask for models that draw one. With
train.identity_weight > 0, a few of A's faces also go through decoder B and the recogniser: the hinge of
stages/identity_loss.py pushes them away from A and towards B. With train.expression_weight > 0, a few A->B
swaps must read as A's expression to a regressor fitted on the pair's crops (stages/expression_loss.py).
train.warmup ramps the learning rate up from 0 over its first iterations. On a CPU with train.width and
train.latent left at 0 the family's CPU size is used (announced in the log).

Running again on the same MODEL_DIR resumes from the saved iteration (`iterations` is the total).
Ctrl-C or SIGTERM saves, then stops. A non-finite loss skips the step and reloads the last checkpoint.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
import signal
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim import ssim

from deid.core.atomic import write_text
from deid.core.errors import ConfigError, DeidError
from deid.models.device import resolve_device
from deid.models.face_distance import SAME_PERSON_DISTANCE
from deid.models.swap import SwapModel, build_model, family
from deid.stages import checkpoint
from deid.stages.augment import AugmentSettings, Batch, augment, plain
from deid.stages.donor_coverage import check_donor_coverage, extreme_faces
from deid.stages.expression_loss import ExpressionLoss
from deid.stages.identity_loss import IdentityLoss
from deid.stages.image_file import write_image
from deid.stages.progress import make_progress
from deid.stages.train_config import TrainConfig
from deid.stages.train_data import REGION_GROW, FaceSet, Window, window_size

log = logging.getLogger("deid.train")

LOSS_CSV = "loss.csv"
IDENTITY_CSV = "identity.csv"
LOSS_HEADER = ["iteration", "loss_a", "loss_b", "lr", "images_per_s", "identity", "expression"]
IDENTITY_HEADER = ["iteration", "a2b_to_a", "a2a_to_a", "a2b_to_b", "a2b_reidentified"]
MATCH_THRESHOLD = SAME_PERSON_DISTANCE
PREVIEW_FACES = 4
IDENTITY_FACES = 8
IDENTITY_CENTRE_FACES = 32  # unaugmented faces per side whose mean descriptor the identity term aims from/at
IDENTITY_MIN_FACE = 20     # px: model outputs are small (64-256 px squares)
MAX_NAN_RELOADS = 5       # in a row, before giving up: the run diverges, reloading will not help
NORM_HISTORY = 100        # gradient norms whose median sets the clipping bound
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5  # pytorch_msssim's defaults, which the renormalised loss uses


def train(a_dir: Path, b_dir: Path, model_dir: Path, config: TrainConfig, device: str = "auto",
          progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the swap model in `model_dir`; returns the summary recorded in the manifest."""
    torch_device = resolve_device(device)
    model_dir = Path(model_dir)
    frozen = resolve_architecture(config, torch_device)
    with checkpoint.locked(model_dir):
        checkpoint.recover(model_dir)  # finish or discard a save that a kill interrupted
        checkpoint.recover(model_dir / checkpoint.BEST)
        previous = checkpoint.load(model_dir, torch_device)
        source_state = checkpoint.read_state(Path(config.init_from)) if config.init_from is not None else None
        if previous is not None:
            frozen = _keep_saved_defaults(frozen, previous.state, config)
            checkpoint.check_frozen(previous.state, frozen, model_dir)
        elif source_state is not None:  # a new pair takes the sizes of the model it starts from
            frozen = _keep_saved_defaults(frozen, source_state, config)
        elif frozen.pop("cpu_sized", False):
            log.info("train: on a CPU the %s family defaults to width %d, latent %d (its GPU size, %s, trains at a few "
                     "images/s here); set train.width and train.latent to choose", config.model, frozen["width"],
                     frozen["latent"], ", ".join(f"{k} {v}" for k, v in _family_defaults(config.model).items()))
        batch_size = config.batch_size or family(config.model).batch_size
        window = training_window(config, frozen)
        faces = {"a": FaceSet.load("A_DIR", a_dir, window, torch_device),
                 "b": FaceSet.load("B_DIR", b_dir, window, torch_device)}
        for side, faceset in faces.items():
            if len(faceset) < batch_size:
                raise DeidError(f"{faceset.label} {faceset.folder} has {len(faceset)} faces, fewer than the batch size "
                                f"{batch_size} (--batch-size / train.batch_size); lower the batch size or extract "
                                "more frames")
        coverage = check_donor_coverage([r.landmarks for r in faces["a"].refs], [r.landmarks for r in faces["b"].refs],
                                        model_dir)
        start_from = None
        if previous is None and config.init_from is not None:
            start_from = initial_weights(Path(config.init_from), frozen, faces["b"], torch_device)
        session = _open_session(model_dir, config, frozen, faces, batch_size, torch_device, previous, start_from)
        session.state["donor_coverage"] = {"covered": coverage["covered"], "findings": coverage["findings"]}
        session.preview_a = extreme_faces([r.landmarks for r in faces["a"].refs])
        start_iteration = session.iteration
        if start_iteration >= config.iterations:
            log.info("%s is already at iteration %d (target %d): nothing to train", model_dir, start_iteration,
                     config.iterations)
            return _summary(session, start_iteration, "already trained", 0.0)
        log.info("training %s (%s) on %s: %d faces of A, %d of B, batch %d per side, from iteration %d to %d",
                 config.model, ", ".join(f"{k} {v}" for k, v in frozen.items() if k != "model"), torch_device,
                 len(faces["a"]), len(faces["b"]), batch_size, start_iteration, config.iterations)
        started = time.perf_counter()
        with checkpoint.StopSignals() as stop:
            reason = _loop(session, stop, progress)
        seconds = time.perf_counter() - started
        _finish(session, reason, start_iteration, seconds)
    if reason in ("SIGINT", "SIGTERM"):
        raise KeyboardInterrupt  # the CLI and the runner record it as interrupted; the model is saved
    return _summary(session, start_iteration, reason, seconds)


def resolve_architecture(config: TrainConfig, device: torch.device | None = None) -> dict[str, Any]:
    """The frozen keys of this config: the model's arch() with family defaults filled in, plus the crop.

    On a CPU, width and latent both left at 0 take the family's `cpu_sizes` (marked "cpu_sized": True in
    the returned dict, which the caller pops): a device-sized default, as issue 15 measured."""
    overrides = {key: getattr(config, key) or None for key in checkpoint.ARCH_KEYS}
    cpu_sized = device is not None and device.type == "cpu" and not config.width and not config.latent
    if cpu_sized:
        overrides.update(family(config.model, "train.model").cpu_sizes)
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation time
            model = build_model(config.model, **overrides)
    except ValueError as exc:
        raise ConfigError(f"train: model {config.model}: {exc}") from None
    frozen = {**model.arch(), "centering": config.centering, "coverage": config.coverage or model.coverage}
    return {**frozen, "cpu_sized": True} if cpu_sized else frozen


def training_window(config: TrainConfig, frozen: dict[str, Any]) -> Window:
    """What each face's stored planes hold: the multiplier loss weighs the eyes without the brows and a mouth
    grown by train.mouth_dilation; the renormalised loss keeps the regions it has always used."""
    multiplier = config.region_loss == "multiplier"
    return Window(window_size(frozen["input_size"], frozen["output_size"]), config.centering, frozen["coverage"],
                  config.mask, brows=not multiplier, mouth_grow=config.mouth_dilation if multiplier else REGION_GROW)


def _family_defaults(name: str) -> dict[str, int]:
    with torch.device("meta"):
        model = build_model(name)
    return {"width": model.width, "latent": model.latent}


def _keep_saved_defaults(frozen: dict[str, Any], state: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
    """A resumed model keeps its saved sizes wherever this config says 0 ("the default"): a model started on
    a GPU at the family's size resumes on a CPU (whose default is smaller), and the other way round."""
    saved = state.get("frozen", {})
    kept = {key: saved[key] for key in (*checkpoint.ARCH_KEYS, "coverage") if not getattr(config, key) and key in saved}
    return {**{k: v for k, v in frozen.items() if k != "cpu_sized"}, **kept}


# --- the session: everything one training run holds ------------------------------------------------------------
@dataclass
class _Session:
    model_dir: Path
    config: TrainConfig
    frozen: dict[str, Any]
    faces: dict[str, FaceSet]
    batch_size: int
    device: torch.device
    model: SwapModel
    optimizer: torch.optim.Adam
    scaler: torch.amp.GradScaler
    autocast: torch.dtype | None
    augment: AugmentSettings
    state: dict[str, Any]
    iteration: int
    generator: torch.Generator
    pending_losses: list[list[Any]] = field(default_factory=list)     # rows not yet in loss.csv
    pending_identity: list[list[Any]] = field(default_factory=list)   # rows not yet in identity.csv
    nan_reloads: int = 0
    grad_norms: deque[float] = field(default_factory=lambda: deque(maxlen=NORM_HISTORY))
    identity_reference: dict[str, np.ndarray] | None = None
    last_preview: Path | None = None
    preview_a: list[int] = field(default_factory=list)  # A's faces the previews show (mouth and eye extremes)
    last_identity: dict[str, float] | None = None
    face_identity: Any = None  # models.face_identity.FaceIdentity, loaded at the first identity check
    identity_loss: IdentityLoss | None = None  # the training term, when train.identity_weight > 0
    expression_loss: ExpressionLoss | None = None  # the training term, when train.expression_weight > 0


def initial_weights(source: Path, frozen: dict[str, Any], donor: FaceSet, device: torch.device
                    ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The weights a new pair starts from (`train.init_from`): the source model's shared encoder, plus its
    decoder B when its donor is this pair's donor by face_recognition (mean embeddings within 0.6).

    faceswap and DeepFaceLab users do the same by hand ("load weights", pretrained models): an encoder that
    has already learnt faces saves most of a new pair's training."""
    model, state = checkpoint.load_model(source, "cpu")
    theirs = state.get("frozen", {})
    differ = [k for k in frozen if theirs.get(k) != frozen[k]]
    if differ:
        diffs = ", ".join(f"{k} {theirs.get(k)!r} vs {frozen[k]!r}" for k in differ)
        raise ConfigError(f"train.init_from {source}: trained with other architecture keys ({diffs}); start from a "
                          "model of the same family and sizes, or train from scratch")
    weights = model.state_dict()
    parts = ["encoder"]
    old_donor = Path(state.get("faces", {}).get("b", {}).get("folder", ""))
    distance = _donor_distance(old_donor, donor.folder, device)
    if distance is not None and distance < MATCH_THRESHOLD:
        parts.append("decoder_b")
    log.info("starting from %s: %s (donor distance %s)", source, " + ".join(parts),
             "n/a" if distance is None else f"{distance:.3f}")
    return {k: v for k, v in weights.items() if k.split(".")[0] in parts}, parts


def _donor_distance(old: Path, new: Path, device: torch.device, faces: int = 8) -> float | None:
    """Distance between the mean face_recognition embeddings of two face folders' crops; None if unknown."""
    from deid.models.face_identity import FaceIdentity
    from deid.stages.alignments import load_alignments

    if not (old / "alignments.json").is_file():
        log.info("init_from: the source model's donor faces (%s) are gone; decoder B is not reused", old)
        return None
    finder = FaceIdentity(device, min_face_size=IDENTITY_MIN_FACE)
    means = []
    for folder in (old, new):
        refs = list(load_alignments(folder).faces())
        step = max(1, len(refs) // faces)
        crops = [cv2.cvtColor(cv2.imread(str(r.image)), cv2.COLOR_BGR2RGB) for r in refs[::step][:faces]]
        embeddings = finder.embed_largest(crops)
        embeddings = embeddings[np.isfinite(embeddings).all(1)]
        if not len(embeddings):
            return None
        means.append(embeddings.mean(0))
    return float(np.linalg.norm(means[0] - means[1]))


def _open_session(model_dir: Path, config: TrainConfig, frozen: dict[str, Any], faces: dict[str, FaceSet],
                  batch_size: int, device: torch.device, previous: checkpoint.Checkpoint | None,
                  start_from: tuple[dict[str, torch.Tensor], list[str]] | None = None) -> _Session:
    overrides = {key: frozen[key] for key in checkpoint.ARCH_KEYS}
    with torch.random.fork_rng(devices=[]):  # seed the initial weights without touching the caller's RNG
        torch.manual_seed(config.seed)
        model = build_model(config.model, **overrides)
    autocast, use_scaler = _precision(device, config.mixed_precision)
    if device.type == "cuda":
        model = model.to(device, memory_format=torch.channels_last)  # faster convolutions on tensor cores
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    if previous is not None:
        model.load_state_dict(previous.model)
        optimizer.load_state_dict(previous.optimizer["optimizer"])
        if use_scaler and previous.optimizer.get("scaler"):
            scaler.load_state_dict(previous.optimizer["scaler"])
        for group in optimizer.param_groups:  # lr and betas may change between runs; the moments carry over
            group.update(lr=config.lr, betas=(config.beta1, config.beta2))
        state = previous.state
    else:
        state = {"iteration": 0, "frozen": frozen, "best_loss": None, "best_iteration": None, "runs": []}
        if start_from is not None:
            weights, parts = start_from
            model.load_state_dict(weights, strict=False)  # the other parts keep their fresh initialisation
            state["init_from"] = {"model": str(config.init_from), "parts": parts}
    plain = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()}
    state.update(config=plain, seed=config.seed,
                 rng="batch n draws from torch.Generator seeded with seed * 1000003 + n + 7919 * len(nan_events)")
    state.setdefault("nan_events", [])
    state["faces"] = {side: {"folder": str(fs.folder), "count": len(fs)} for side, fs in faces.items()}
    state["runs"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "from": state["iteration"],
                          "to": state["iteration"], "device": str(device), "batch_size": batch_size})
    session = _Session(model_dir=model_dir, config=config, frozen=frozen, faces=faces, batch_size=batch_size,
                       device=device, model=model.to(device), optimizer=optimizer, scaler=scaler, autocast=autocast,
                       augment=AugmentSettings(warp=config.warp, rotation=config.rotation, zoom=config.zoom,
                                               shift=config.shift, flip=config.flip, lightness=config.lightness,
                                               color_ab=config.color_ab),
                       state=state, iteration=int(state["iteration"]), generator=torch.Generator(device))
    if previous is not None:
        session.grad_norms.extend(previous.optimizer.get("grad_norms", []))
    if config.identity_weight:
        log.warning("train.identity_weight=%g: the model learns against the recogniser that convert's "
                    "re-identification check and evaluate's identity scores use, so those numbers are optimistic "
                    "for it; confirm with another recogniser before relying on them", config.identity_weight)
        session.identity_loss = IdentityLoss(frozen["output_size"], config.centering, frozen["coverage"], device,
                                             config.identity_margin)
        for side in ("a", "b"):
            batch, _ = _swaps(session, side, IDENTITY_CENTRE_FACES)
            session.identity_loss.set_centre(side, batch.target)
    if config.expression_weight:
        session.expression_loss = ExpressionLoss(faces, frozen["input_size"], frozen["output_size"], device,
                                                 config.expression_steps, config.seed)
        state["expression_regressor"] = session.expression_loss.fit_report
    _truncate_csv(model_dir / LOSS_CSV, LOSS_HEADER, session.iteration)
    _truncate_csv(model_dir / IDENTITY_CSV, IDENTITY_HEADER, session.iteration)
    if previous is None:
        _save(session)  # iteration 0: freezes the architecture and gives a NaN reload something to return to
    return session


def _precision(device: torch.device, enabled: bool) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a GradScaler is needed). bf16 needs no loss scaling; fp16 does."""
    if device.type != "cuda" or not enabled:
        return None, False  # CPU autocast is slower than float32 on most CPUs
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, False
    return torch.float16, True


def _reseed(s: _Session) -> None:
    """Seed the batch generator from the iteration, so a resumed run draws exactly the batches an
    uninterrupted one would have; after a NaN reload the draws differ, so the same batches are not replayed."""
    s.generator.manual_seed(s.config.seed * 1000003 + s.iteration + 7919 * len(s.state["nan_events"]))


# --- the loop ----------------------------------------------------------------------------------------------------
def _loop(s: _Session, stop: checkpoint.StopSignals, progress: bool) -> str:
    """Train until the target iteration, the time limit or a signal; returns which of them stopped it."""
    cfg = s.config
    deadline = time.monotonic() + cfg.minutes * 60 if cfg.minutes else math.inf
    bar = make_progress(cfg.iterations, f"train {cfg.model}", "it", progress, initial=s.iteration)
    rate = 0.0
    try:
        while s.iteration < cfg.iterations:
            if stop.received is not None:
                return signal.Signals(stop.received).name
            if time.monotonic() > deadline:
                return "minutes"
            tick = time.perf_counter()
            lr = learning_rate(cfg, s.iteration)
            losses = _step(s, lr)
            if losses is None:  # non-finite: the step was skipped and the last checkpoint reloaded
                bar.update(s.iteration - bar.n)
                continue
            s.iteration += 1
            images_per_s = 2 * s.batch_size / (time.perf_counter() - tick)
            rate = images_per_s if rate == 0 else 0.9 * rate + 0.1 * images_per_s
            terms = ["" if value is None else round(value, 6) for value in losses[2:]]
            s.pending_losses.append([s.iteration, round(losses[0], 6), round(losses[1], 6), lr,
                                     round(images_per_s, 2), *terms])
            bar.update(1)
            shown = "".join(f" {name} {value:.3f}" for name, value in zip(("id", "expr"), losses[2:])
                            if value is not None)
            bar.set_postfix_str(f"A {losses[0]:.4f} B {losses[1]:.4f}{shown} {rate:.1f} img/s")
            if s.iteration % cfg.save_every == 0:
                _save(s)
            if cfg.preview_every and s.iteration % cfg.preview_every == 0:
                _preview(s)
            if cfg.identity_every and s.iteration % cfg.identity_every == 0:
                _identity(s)
        return "iterations"
    finally:
        bar.close()


def learning_rate(config: TrainConfig, iteration: int) -> float:
    """The lr of the step that takes the model from `iteration` to `iteration` + 1: train.lr, ramped up
    linearly from 0 over the first train.warmup iterations. A function of the global iteration, so a resumed
    run or a NaN reload continues the ramp where that iteration stands."""
    if config.warmup and iteration < config.warmup:
        return config.lr * (iteration + 1) / config.warmup
    return config.lr


def _step(s: _Session, lr: float) -> tuple[float, float, float | None, float | None] | None:
    """One Adam step at learning rate `lr` on a batch of A and a batch of B. Returns the two reconstruction
    losses, the identity term and the expression term (each None when off), or None after a NaN."""
    s.model.train()
    _reseed(s)
    for group in s.optimizer.param_groups:
        group["lr"] = lr
    batches = [_batch(s, side) for side in ("a", "b")]
    swaps = _swap_count(s)
    with torch.autocast(s.device.type, dtype=s.autocast, enabled=s.autocast is not None):
        latent = s.model.encoder(torch.cat([batches[0].input, batches[1].input]))  # one encoder pass for both
        outputs = [s.model.decode(z, side) for z, side in zip(latent.chunk(2), ("a", "b"))]
        swapped = s.model.decode(latent[:swaps], "b")[0] if swaps else None  # A->B, for the swap terms
    losses = [reconstruction_loss(rgb, mask, batch, s.config) for (rgb, mask), batch in zip(outputs, batches)]
    total = losses[0] + losses[1]
    identity = torch.zeros((), device=s.device)
    expression = torch.zeros((), device=s.device)
    if s.identity_loss is not None:
        a, k = batches[0], min(s.config.identity_faces, s.batch_size)
        pasted = swapped[:k].float() * a.mask[:k] + a.target[:k] * (1 - a.mask[:k])  # as convert pastes it
        identity = s.identity_loss(pasted)[0]
        total = total + s.config.identity_weight * identity
    if s.expression_loss is not None:
        k = min(s.config.expression_faces, s.batch_size)
        expression = s.expression_loss(batches[0].target[:k], swapped[:k].float())
        total = total + s.config.expression_weight * expression
    s.optimizer.zero_grad(set_to_none=True)
    s.scaler.scale(total).backward()
    s.scaler.unscale_(s.optimizer)
    norm = torch.nn.utils.clip_grad_norm_(s.model.parameters(), _clip_bound(s))
    loss_a, loss_b, identity_value, expression_value, norm_value = torch.stack(
        [losses[0].detach(), losses[1].detach(), identity.detach().float(), expression.detach().float(),
         norm]).tolist()  # one sync
    # With fp16 loss scaling an infinite gradient is routine (the scaler skips the step and lowers its scale);
    # otherwise a non-finite loss or gradient means the weights are about to be destroyed.
    finite = math.isfinite(loss_a) and math.isfinite(loss_b) and math.isfinite(identity_value) \
        and math.isfinite(expression_value) and (s.scaler.is_enabled() or math.isfinite(norm_value))
    if not finite:
        _reload_after_nan(s, loss_a, loss_b, norm_value)
        return None
    s.scaler.step(s.optimizer)
    s.scaler.update()
    s.nan_reloads = 0
    if math.isfinite(norm_value):
        s.grad_norms.append(norm_value)
    return (loss_a, loss_b, identity_value if s.identity_loss is not None else None,
            expression_value if s.expression_loss is not None else None)


def _swap_count(s: _Session) -> int:
    """How many of A's faces go through decoder B this step: as many as the larger enabled swap term uses."""
    wanted = [s.config.identity_faces if s.identity_loss is not None else 0,
              s.config.expression_faces if s.expression_loss is not None else 0]
    return min(max(wanted), s.batch_size)


def _clip_bound(s: _Session) -> float:
    """grad_clip x the median of the recent gradient norms.

    Gradient norms grow several-fold as a swap model trains, so a fixed bound either clips every step
    (and quietly changes the optimiser) or none; relative to the running median it catches only spikes.
    """
    if not s.config.grad_clip or len(s.grad_norms) < 10:
        return math.inf
    return s.config.grad_clip * statistics.median(s.grad_norms)


def _batch(s: _Session, side: str) -> Batch:
    faces = s.faces[side]
    index = torch.randint(len(faces), (s.batch_size,), generator=s.generator, device=s.generator.device)
    batch = augment(faces.batch(index, s.device), s.augment, s.frozen["input_size"], s.frozen["output_size"],
                    s.generator)
    if s.device.type == "cuda":
        batch.input = batch.input.contiguous(memory_format=torch.channels_last)
    return batch


def reconstruction_loss(rgb: torch.Tensor, mask: torch.Tensor | None, batch: Batch,
                        config: TrainConfig) -> torch.Tensor:
    """Region-weighted L1 + DSSIM (+ learned-mask MSE), in float32, as train.region_loss says:
    renormalised, the weights divide the L1 term and DSSIM sees the masked face; multiplier, see
    multiplied_loss."""
    rgb = rgb.float()
    face = config.background_weight + (1 - config.background_weight) * batch.mask
    if config.region_loss == "multiplier":
        loss = multiplied_loss(rgb, batch, face, config)
    else:
        weight = face * (1 + (config.eye_weight - 1) * batch.eyes + (config.mouth_weight - 1) * batch.mouth)
        loss = (weight * (rgb - batch.target).abs()).sum() / (weight.sum() * 3)
        if config.dssim_weight:
            loss = loss + config.dssim_weight * (1 - ssim(rgb * face, batch.target * face, data_range=1.0)) / 2
    if mask is not None and config.mask_loss:
        loss = loss + config.mask_loss * F.mse_loss(mask.float(), batch.mask)
    return loss


def multiplied_loss(rgb: torch.Tensor, batch: Batch, face: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """faceswap's region emphasis: weight = face x (1 + eye_multiplier x eyes + mouth_multiplier x mouth) on
    every pixel of the L1 term and of the DSSIM map, averaged over pixels. Not divided by the weights' sum, so
    more weight on the mouth is more loss (and gradient) from it, not a smaller share for the rest."""
    weight = face * (1 + config.eye_multiplier * batch.eyes + config.mouth_multiplier * batch.mouth)
    loss = (weight * (rgb - batch.target).abs()).mean()
    if config.dssim_weight:
        dssim = (1 - ssim_map(rgb, batch.target)) / 2
        trim = (weight.shape[-1] - dssim.shape[-1]) // 2  # the map covers the pixels with a whole window
        inner = weight[..., trim:weight.shape[-2] - trim, trim:weight.shape[-1] - trim]
        loss = loss + config.dssim_weight * (inner * dssim).mean()
    return loss


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-pixel SSIM (n, c, h - 10, w - 10) with pytorch_msssim's Gaussian window (11 px, sigma 1.5) and
    constants; its `ssim` returns only means, and its mean over the map is exactly this map's mean."""
    coords = torch.arange(SSIM_WINDOW, dtype=torch.float32, device=x.device) - SSIM_WINDOW // 2
    g = torch.exp(-coords ** 2 / (2 * SSIM_SIGMA ** 2))
    g = (g / g.sum()).to(x.dtype)
    channels = x.shape[1]
    rows, cols = g.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable valid-mode Gaussian, one channel at a time
        return F.conv2d(F.conv2d(t, rows, groups=channels), cols, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y = blur(x * x) - mu_x ** 2, blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    return (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1) * (2 * cov + c2) / (var_x + var_y + c2)


def _reload_after_nan(s: _Session, loss_a: float, loss_b: float, norm: float) -> None:
    s.optimizer.zero_grad(set_to_none=True)
    s.nan_reloads += 1
    if s.nan_reloads > MAX_NAN_RELOADS:
        raise DeidError(f"training diverged: non-finite loss {MAX_NAN_RELOADS + 1} times in a row after reloading "
                        f"iteration {s.iteration} of {s.model_dir}; lower train.lr (now {s.config.lr:g}) or "
                        f"train.grad_clip (now {s.config.grad_clip:g}), or set train.mixed_precision false")
    saved = checkpoint.load(s.model_dir, s.device)
    assert saved is not None  # iteration 0 is saved before the loop starts
    failed = s.iteration + 1
    log.warning("iteration %d: non-finite loss (A %s, B %s, gradient norm %s): step skipped, reloaded the "
                "checkpoint of iteration %d (%d/%d)", failed, loss_a, loss_b, norm,
                saved.state["iteration"], s.nan_reloads, MAX_NAN_RELOADS)
    s.model.load_state_dict(saved.model)
    s.optimizer.load_state_dict(saved.optimizer["optimizer"])
    if s.scaler.is_enabled() and saved.optimizer.get("scaler"):
        s.scaler.load_state_dict(saved.optimizer["scaler"])
    for group in s.optimizer.param_groups:
        group.update(lr=s.config.lr, betas=(s.config.beta1, s.config.beta2))
    s.iteration = int(saved.state["iteration"])
    s.grad_norms.clear()
    s.grad_norms.extend(saved.optimizer.get("grad_norms", []))
    s.pending_losses.clear()  # they belong to iterations that are being redone
    s.pending_identity.clear()
    s.state["nan_events"].append({"at": failed, "reloaded": s.iteration})


# --- saving, previews, identity ------------------------------------------------------------------------------
def _save(s: _Session) -> None:
    """Flush the logs, commit a checkpoint, and back it up as best when the recent loss is the lowest yet."""
    recent = [row[1] + row[2] for row in s.pending_losses]
    with checkpoint.disk_errors(s.model_dir):  # on a full disk the logs fail first; same one line as the save
        _append_csv(s.model_dir / LOSS_CSV, LOSS_HEADER, s.pending_losses)
        _append_csv(s.model_dir / IDENTITY_CSV, IDENTITY_HEADER, s.pending_identity)
    s.pending_losses, s.pending_identity = [], []
    state = s.state
    mean = float(np.mean(recent)) if recent else None
    improved = mean is not None and (state["best_loss"] is None or mean < state["best_loss"])
    if improved:
        state.update(best_loss=round(mean, 6), best_iteration=s.iteration)
    state.update(iteration=s.iteration, recent_loss=None if mean is None else round(mean, 6),
                 identity=s.last_identity)
    state["runs"][-1]["to"] = s.iteration
    s.model.iteration.fill_(s.iteration)
    checkpoint.save(s.model_dir, {k: v.detach() for k, v in s.model.state_dict().items()},
                    {"optimizer": s.optimizer.state_dict(), "scaler": s.scaler.state_dict(), "iteration": s.iteration,
                     "grad_norms": list(s.grad_norms)},
                    state)
    if improved:
        checkpoint.backup_best(s.model_dir)
    log.debug("saved iteration %d to %s", s.iteration, s.model_dir)


def _finish(s: _Session, reason: str, start_iteration: int, seconds: float) -> None:
    trained = s.iteration - start_iteration
    s.state["runs"][-1].update(stopped=reason, seconds=round(seconds, 1),
                               images_per_second=round(2 * s.batch_size * trained / seconds, 2) if seconds else None)
    if reason in ("SIGINT", "SIGTERM"):  # stop promptly: a SIGTERM usually comes with a short grace period
        _save(s)
        return
    if s.config.preview_every and (s.last_preview is None or not s.last_preview.stem.endswith(f"{s.iteration:07d}")):
        _preview(s)
    if s.config.identity_every and (s.last_identity is None or s.last_identity["iteration"] != s.iteration):
        _identity(s)
    _save(s)
    log.info("%s: stopped at iteration %d (%s); loss A %s, B %s", s.model_dir, s.iteration, reason,
             *(_recent_losses(s.model_dir) or ("?", "?")))


@torch.no_grad()
def _swaps(s: _Session, side: str, count: int, index: torch.Tensor | None = None
           ) -> tuple[Batch, dict[str, torch.Tensor]]:
    """Unaugmented faces of one side (evenly spread, or `index`) and their reconstructions through both decoders."""
    faces = s.faces[side]
    if index is None:
        index = torch.linspace(0, len(faces) - 1, min(count, len(faces))).round().long()
    batch = plain(faces.batch(index, s.device), s.frozen["input_size"], s.frozen["output_size"])
    s.model.eval()
    with torch.autocast(s.device.type, dtype=s.autocast, enabled=s.autocast is not None):
        latent = s.model.encoder(batch.input)
        out = {to: s.model.decode(latent, to)[0].float().clamp(0, 1) for to in ("a", "b")}
    return batch, out


def _preview(s: _Session) -> None:
    """previews/<iteration>.jpg: labelled columns A, A->A, A->B, B, B->B, B->A, one row per face, and the
    last identity check's distances in the header. A's rows are its faces with the widest and the most closed
    mouth and eyes (stages/donor_coverage.extreme_faces): whether A->B follows them is what a preview must show."""
    picked = torch.tensor(s.preview_a[:PREVIEW_FACES]) if s.preview_a else None
    (a, a_out), (b, b_out) = _swaps(s, "a", PREVIEW_FACES, picked), _swaps(s, "b", PREVIEW_FACES)
    rows = min(len(a.target), len(b.target))
    columns = [a.target, a_out["a"], a_out["b"], b.target, b_out["b"], b_out["a"]]
    grid = torch.cat([torch.cat([c[:rows] for c in columns], dim=3)[i] for i in range(rows)], dim=1)
    image = (grid.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    image = np.concatenate([_preview_header(image.shape[1] // len(columns), s), image])
    path = s.model_dir / "previews" / f"{s.iteration:07d}.jpg"
    write_image(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    s.last_preview = path


PREVIEW_COLUMNS = ("A", "A->A", "A->B", "B", "B->B", "B->A")


def _preview_header(cell: int, s: _Session) -> np.ndarray:
    """White rows above the preview grid: the column labels, then the last identity check's distances."""
    lines = [None]
    ident = s.last_identity
    if ident and ident.get("a2b_to_a") is not None:
        lines.append(f"it {ident['iteration']}: A->B {ident['a2b_to_a']:.2f} from A, {ident['a2b_to_b'] or float('nan'):.2f}"
                     f" from B")
    line_height = max(14, cell // 4)
    header = np.full((line_height * len(lines), cell * len(PREVIEW_COLUMNS), 3), 255, np.uint8)
    scale = line_height / 30.0
    for i, label in enumerate(PREVIEW_COLUMNS):
        cv2.putText(header, label, (i * cell + 2, int(line_height * 0.75)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
    if len(lines) > 1:
        cv2.putText(header, lines[1], (2, int(line_height * 1.75)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return header


def _identity(s: _Session) -> None:
    """Log how far A->B moved from A, measured by the function evaluate scores with (models.face_identity):
    same detector, landmarks, alignment and recogniser, so identity.csv predicts the report."""
    if s.face_identity is None:
        from deid.models.face_identity import (
            FaceIdentity,  # loads dlib's models: only when the check runs
        )

        s.face_identity = FaceIdentity(s.device, min_face_size=IDENTITY_MIN_FACE)

    def encode(images: torch.Tensor) -> np.ndarray:
        pixels = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
        return s.face_identity.embed_largest([np.ascontiguousarray(p) for p in pixels])

    a, a_out = _swaps(s, "a", IDENTITY_FACES)
    if s.identity_reference is None:
        b, _ = _swaps(s, "b", IDENTITY_FACES)
        s.identity_reference = {"a": encode(a.target), "b": encode(b.target)}
    ref = s.identity_reference
    a2b, a2a = encode(a_out["b"]), encode(a_out["a"])
    # A face the detector cannot find (a smear) has no distance: NaN, left out of the means.
    to_a = np.linalg.norm(a2b - ref["a"], axis=1)
    found = np.isfinite(to_a)
    record = {"iteration": s.iteration, "a2b_to_a": _nanmean(to_a),
              "a2a_to_a": _nanmean(np.linalg.norm(a2a - ref["a"], axis=1)),
              "a2b_to_b": _nanmean(np.linalg.norm(a2b[:, None] - ref["b"][None], axis=2)),
              "a2b_reidentified": float((to_a[found] < MATCH_THRESHOLD).mean()) if found.any() else float("nan")}
    record = {k: (round(v, 4) if np.isfinite(v) else None) if isinstance(v, float) else v for k, v in record.items()}
    s.pending_identity.append([record[k] for k in IDENTITY_HEADER])
    s.last_identity = record
    shown = {k: "n/a" if v is None else f"{v:.3f}" for k, v in record.items() if k != "iteration"}
    log.info("iteration %d: A->B is %s from A (A->A %s, control), %s from B; share still recognised as A %s; "
             "a face found in %d/%d A->B swaps", s.iteration, shown["a2b_to_a"], shown["a2a_to_a"], shown["a2b_to_b"],
             shown["a2b_reidentified"], int(found.sum()), len(found))
    if (record["a2b_reidentified"] or 0.0) > 0.5:
        # The failure the literature warns about: decoder B learning to pass A through (an identity mapping).
        log.warning("iteration %d: %.0f%% of A->B swaps are still recognised as A (distance < %.1f): the swap is not "
                    "hiding A; check that A_DIR and B_DIR hold different people, train longer, or give B more "
                    "varied faces", s.iteration, 100 * record["a2b_reidentified"], MATCH_THRESHOLD)


def _nanmean(values: np.ndarray) -> float:
    finite = np.asarray(values, float)[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


# --- CSV logs ----------------------------------------------------------------------------------------------------
def _append_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    if not rows:
        return
    fresh = not path.exists()
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if fresh:
        writer.writerow(header)
    writer.writerows(rows)
    with open(path, "a", encoding="utf-8", newline="") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())


def _truncate_csv(path: Path, header: list[str], iteration: int) -> None:
    """Keep the rows up to the checkpoint's iteration: later ones (or a torn last line) belong to a lost run."""
    if not path.exists():
        return
    kept = []
    for row in csv.reader(path.read_text(encoding="utf-8").splitlines()):
        if len(row) < len(header) and row and row[0].isdigit() and path.name == LOSS_CSV:
            row = row + [""] * (len(header) - len(row))  # a loss.csv from before the identity column
        if len(row) == len(header) and row[0].isdigit() and int(row[0]) <= iteration:
            kept.append(row)
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *kept])
    write_text(path, buffer.getvalue())


def _recent_losses(model_dir: Path, count: int = 10) -> tuple[float, float] | None:
    path = model_dir / LOSS_CSV
    if not path.exists():
        return None
    rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))[-count:]
    if not rows:
        return None
    return (round(float(np.mean([float(r["loss_a"]) for r in rows])), 5),
            round(float(np.mean([float(r["loss_b"]) for r in rows])), 5))


def _summary(s: _Session, start_iteration: int, reason: str, seconds: float) -> dict[str, Any]:
    recent = _recent_losses(s.model_dir)
    trained = s.iteration - start_iteration
    return {
        "model": s.config.model,
        "frozen": s.frozen,
        "iteration": s.iteration,
        "iterations_this_run": trained,
        "stopped": reason,
        "faces_a": len(s.faces["a"]),
        "faces_b": len(s.faces["b"]),
        "batch_size": s.batch_size,
        "device": str(s.device),
        "seconds": round(seconds, 2),
        "images_per_second": round(2 * s.batch_size * trained / seconds, 2) if seconds and trained else None,
        "loss_a": recent[0] if recent else None,
        "loss_b": recent[1] if recent else None,
        "best_loss": s.state.get("best_loss"),
        "best_iteration": s.state.get("best_iteration"),
        "identity": s.last_identity,
        "preview": str(s.last_preview) if s.last_preview else None,
        "donor_coverage": s.state.get("donor_coverage"),
    }
