"""The `train:` section of pipeline.yaml as a typed, validated object.

Field names are the YAML keys; defaults are the documented defaults. A value of 0 for the size,
width, latent, coverage and batch-size keys means "the model family's default", so one config works
for every family. The architecture keys (model, input_size, output_size, width, latent) and the crop
keys (centering, coverage) are frozen into a model's state.json by its first run.

This module imports nothing from deid.pipeline.config, so that module can import it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from deid.core.errors import ConfigError
from deid.models.alignment import Centering

TrainCentering = Centering  # one definition: models/alignment.py
TrainMask = Literal["extended", "components"]
RegionLoss = Literal["renormalised", "multiplier"]


@dataclass(frozen=True)
class TrainConfig:
    # what is trained (model .. coverage are frozen into state.json by a model's first run)
    model: str = "original"            # a registered model family (models/swap/): original (64 px) | dfaker
                                       # (64 -> 128 px, learned mask) | villain (256 px) | a plugin's
    input_size: int = 0                # px the encoder sees; 0 = the family's default
    output_size: int = 0               # px the decoders draw; 0 = the family's default
    width: int = 0                     # base channel count; 0 = the family's default (128, 128, 64; on a CPU with
                                       # latent also 0, its cpu_sizes: 32, 32, 16)
    latent: int = 0                    # dense bottleneck size; 0 = the family's default (1024, 512, 1024; CPU 512, 256, 512)
    centering: TrainCentering = "face"  # which crop the coverage is a share of: face | legacy | head
    coverage: float = 0.0              # share of that crop the model sees, 0.5..1; 0 = the family's default (0.875)
    # how long
    iterations: int = 100000           # total target; a rerun on the same model folder resumes towards it
    minutes: float = 0.0               # also stop (and save) after this many minutes of this run; 0 = no limit
    batch_size: int = 0                # faces per side per iteration; 0 = the family's default (16, 16, 8)
    # optimiser
    lr: float = 5e-5                   # Adam learning rate
    warmup: int = 0                    # iterations over which the lr rises linearly from 0 to lr (by the global
                                       # iteration, so a resume continues the ramp); 0 = none
    beta1: float = 0.5                 # Adam beta1
    beta2: float = 0.999               # Adam beta2
    grad_clip: float = 5.0             # clip gradient norms above this many times their running median; 0 = off
    mixed_precision: bool = True       # CUDA only: bf16 autocast (fp16 + loss scaling on GPUs without bf16)
    seed: int = 0                      # seeds the initial weights and every batch (a resumed run is exact)
    # loss
    mask: TrainMask = "extended"       # face mask that weights the loss (and that learned masks imitate)
    background_weight: float = 0.1     # loss weight outside the mask (inside is 1)
    region_loss: RegionLoss = "renormalised"  # how eyes and mouth weigh in the loss: renormalised (L1 only, weights
                                       # eye_weight / mouth_weight, divided by their sum) | multiplier (faceswap's:
                                       # L1 and the SSIM map x face x (1 + eye_multiplier x eyes + mouth_multiplier x
                                       # mouth), averaged over pixels, not renormalised; eyes without the brows)
    eye_weight: float = 3.0            # renormalised: loss weight on eyes and brows (from the landmarks)
    mouth_weight: float = 2.0          # renormalised: loss weight on the mouth
    eye_multiplier: float = 3.0        # multiplier: the eyes' extra weight (faceswap's eye_multiplier)
    mouth_multiplier: float = 2.0      # multiplier: the mouth's extra weight (faceswap's mouth_multiplier)
    mouth_dilation: float = 0.2        # multiplier: the mouth region grown by this share of the inter-ocular distance
    dssim_weight: float = 1.0          # weight of DSSIM (structural dissimilarity) next to the masked L1
    mask_loss: float = 1.0             # weight of the learned-mask MSE (dfaker, villain); 0 = do not learn the mask
    identity_weight: float = 0.0       # weight of the identity hinge on A->B swaps (stages/identity_loss.py); 0 = off
    identity_faces: int = 4            # A faces per step that go through decoder B and the recogniser for it
    identity_margin: float = 0.05      # the hinges hold A->B at >= 0.6 + margin from A and <= 0.6 - margin from B
    expression_weight: float = 0.0     # weight of the expression-consistency term on A->B (stages/expression_loss.py):
                                       # a regressor fitted on the pair's crops must read A's expression in A->B; 0 = off
    expression_faces: int = 8          # A faces per step that go through decoder B for that term
    expression_steps: int = 300        # Adam steps that fit the expression regressor at the start of each run
    # augmentation (in batch, on the training device)
    warp: float = 0.02                 # random 5x5 grid warp of the input: std of point moves, share of face width
    rotation: float = 10.0             # random rotation, +- degrees
    zoom: float = 0.05                 # random zoom, +- share
    shift: float = 0.05                # random shift, +- share of the width
    flip: float = 0.5                  # chance of a horizontal flip
    lightness: float = 0.3             # LAB lightness moved up to this share towards white or black
    color_ab: float = 0.08             # LAB a*, b* moved by up to this share of their range
    # monitoring and checkpoints
    save_every: int = 500              # iterations between checkpoints (also saved on stop, Ctrl-C, SIGTERM)
    preview_every: int = 500           # iterations between previews/<iteration>.jpg; 0 = none
    identity_every: int = 1000         # iterations between face_recognition checks of A->B against A; 0 = none
    init_from: Path | None = None      # a trained model folder: a new model starts from its encoder (and decoder B
                                       # when its donor is this pair's donor, checked by identity)
    share_donor_model: bool = True     # deid batch / ravdess: a pair whose donor an earlier pair has starts from
                                       # that pair's model (pipeline/donor_start.py); false = every pair from scratch

    def __post_init__(self) -> None:
        from deid.models.swap import (
            family,  # the registry imports torch: only when a config is built
        )

        family(self.model, "train.model")
        for key, low in (("input_size", 16), ("output_size", 16)):
            value = getattr(self, key)
            if value and (value < low or value > 1024 or value & (value - 1)):
                raise ConfigError(f"train.{key} must be 0 (the model's default) or a power of two in {low}..1024, "
                                  f"got {value}")
        _int_range("train.width", self.width, 0, 1024, zero_means_default=True, low_if_set=8)
        _int_range("train.latent", self.latent, 0, 65536, zero_means_default=True, low_if_set=8)
        if self.coverage and not 0.5 <= self.coverage <= 1.0:
            raise ConfigError(f"train.coverage must be 0 (the model's default) or in 0.5..1.0, got {self.coverage}")
        _int_range("train.iterations", self.iterations, 1, 10 ** 9)
        _float_range("train.minutes", self.minutes, 0.0, 1e7)
        _int_range("train.batch_size", self.batch_size, 0, 4096, zero_means_default=True, low_if_set=1)
        if not 0.0 < self.lr <= 1.0:
            raise ConfigError(f"train.lr must be in (0, 1], got {self.lr}")
        _int_range("train.warmup", self.warmup, 0, 10 ** 9)
        _float_range("train.beta1", self.beta1, 0.0, 0.999999)
        _float_range("train.beta2", self.beta2, 0.0, 0.999999)
        _float_range("train.grad_clip", self.grad_clip, 0.0, 1e6)
        _int_range("train.seed", self.seed, 0, 2 ** 31 - 1)
        if self.region_loss not in ("renormalised", "multiplier"):
            raise ConfigError(f"train.region_loss must be renormalised or multiplier, got {self.region_loss!r}")
        for key in ("background_weight", "eye_weight", "mouth_weight", "eye_multiplier", "mouth_multiplier",
                    "dssim_weight", "mask_loss"):
            _float_range(f"train.{key}", getattr(self, key), 0.0, 100.0)
        _float_range("train.mouth_dilation", self.mouth_dilation, 0.0, 1.0)
        _float_range("train.identity_weight", self.identity_weight, 0.0, 100.0)
        _int_range("train.identity_faces", self.identity_faces, 1, 4096)
        _float_range("train.identity_margin", self.identity_margin, 0.0, 0.4)
        _float_range("train.expression_weight", self.expression_weight, 0.0, 100.0)
        _int_range("train.expression_faces", self.expression_faces, 1, 4096)
        _int_range("train.expression_steps", self.expression_steps, 1, 10 ** 6)
        _float_range("train.warp", self.warp, 0.0, 0.2)
        _float_range("train.rotation", self.rotation, 0.0, 90.0)
        _float_range("train.zoom", self.zoom, 0.0, 0.5)
        _float_range("train.shift", self.shift, 0.0, 0.5)
        _float_range("train.flip", self.flip, 0.0, 1.0)
        _float_range("train.lightness", self.lightness, 0.0, 1.0)
        _float_range("train.color_ab", self.color_ab, 0.0, 1.0)
        _int_range("train.save_every", self.save_every, 1, 10 ** 9)
        _int_range("train.preview_every", self.preview_every, 0, 10 ** 9)
        _int_range("train.identity_every", self.identity_every, 0, 10 ** 9)


def _int_range(key: str, value: int, low: int, high: int, zero_means_default: bool = False,
               low_if_set: int | None = None) -> None:
    if zero_means_default and value == 0:
        return
    low = low_if_set if low_if_set is not None else low
    if not low <= value <= high:
        default = "0 (the model's default) or " if zero_means_default else ""
        raise ConfigError(f"{key} must be {default}in {low}..{high}, got {value}")


def _float_range(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{key} must be in {low:g}..{high:g}, got {value}")
