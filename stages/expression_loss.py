"""The expression-consistency term of training: A->B must show the expression A shows.

The reconstruction loss trains decoder B only on B's own faces, so nothing asks it to keep A's mouth
opening or eye closure when A's latent goes through it. This term does, with a small regressor of three
landmark ratios (reports/expression.frame_ratios: mouth_open, eye_open, brow_raise) read from pixels:

1. **Labels** come from the extraction's own 68 landmarks (FaceRef.landmarks) of both people's training
   faces, each person's median (their neutral face) removed, in units of the pooled spread, so the three
   measures weigh alike and "mouth a little more open than usual" means the same for A and B.
2. **Fit** at the start of every run, seeded, for `train.expression_steps` Adam steps, on the crops
   training sees, with a random similarity, mirror and per-channel gain (which leave the ratios unchanged)
   and a random blur (decoder outputs are soft). Each person's last HELD_OUT share of faces (a contiguous
   stretch of the video: neighbouring frames would flatter the score) is held out, and Pearson r per
   measure on them (readings minus their person's offset, as the term uses them) is logged once and kept
   in state.json: how much the term can know.
3. **Frozen**, then per step on a few A faces: penalise (f(A->B) - offset_B) - (f(A) - offset_A), where
   offset_X is the regressor's median reading of X's own crops (its remaining bias per person).

It is a training aid only: it trains against this regressor, so the expression scores of evaluate stay with
models training never sees (3DDFA_V2, the blendshapes, the calibrated landmark measure).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deid.core.errors import DeidError
from deid.reports.expression import frame_ratios
from deid.stages.alignments import FaceRef
from deid.stages.augment import AugmentSettings, augment, plain
from deid.stages.train_data import FaceSet

log = logging.getLogger("deid.train")

MEASURES = ("mouth_open", "eye_open", "brow_raise")
SIZE = 64                # px the regressor sees, whatever the model's output size: its cost stays fixed
FIT_BATCH = 32
FIT_LR = 1e-3
HELD_OUT = 0.2           # share of each person's faces (their last ones) kept out of the fit to score it
MIN_HELD_OUT = 10        # fewer held-out crops in all: no r worth logging
OFFSET_FACES = 256       # crops per person whose median reading is that person's offset
WEAK_FIT = 0.3           # held-out r of mouth_open below this: the term knows little, said in the log
# Ratios are invariant to rotation, zoom, shift and a mirror (both eyes and brows are averaged), so the
# labels stay true under this augmentation; the warp would bend lips and lids and is left out. Colour is
# varied by random_gain instead of the LAB jitter, which costs more than the regressor itself on a CPU.
FIT_AUGMENT = AugmentSettings(warp=0.0, rotation=8.0, zoom=0.05, shift=0.04, flip=0.5, lightness=0.0, color_ab=0.0)
GAIN = 0.2               # random_gain: brightness x (1 +- GAIN), each channel x (1 +- GAIN / 4)


def expression_labels(refs: list[FaceRef]) -> np.ndarray:
    """(n, 3) float: mouth_open, eye_open, brow_raise of each face from its landmarks (NaN where unusable)."""
    ratios = [frame_ratios(ref.landmarks) for ref in refs]
    return np.array([[r[m] for m in MEASURES] for r in ratios], np.float64).reshape(len(refs), len(MEASURES))


class ExpressionRegressor(nn.Module):
    """Four strided convolutions and a linear read-out: (n, 3, S, S) faces in 0..1 -> (n, 3) expression.

    The read-out keeps the 4 x 4 spatial layout (no global pooling): faces are aligned, so where the mouth
    and the eyes are is fixed, and the net only has to read their shape."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = [3, 16, 32, 64, 64]
        for cin, cout in pairwise(channels):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.LeakyReLU(0.1)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(64 * (SIZE // 16) ** 2, len(MEASURES))

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.read(resize(faces))

    def read(self, faces: torch.Tensor) -> torch.Tensor:
        """The same, for faces already at SIZE px."""
        return self.head(self.features(faces - 0.5).flatten(1))


def resize(faces: torch.Tensor) -> torch.Tensor:
    faces = faces.float()
    if faces.shape[-1] == SIZE:
        return faces
    return F.interpolate(faces, size=(SIZE, SIZE), mode="area" if faces.shape[-1] > SIZE else "bilinear")


def random_gain(faces: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each face brighter or darker and slightly tinted, at random."""
    n = len(faces)
    light = 1 + (torch.rand(n, 1, 1, 1, generator=generator, device=faces.device) * 2 - 1) * GAIN
    tint = 1 + (torch.rand(n, 3, 1, 1, generator=generator, device=faces.device) * 2 - 1) * GAIN / 4
    return (faces * light * tint).clamp(0, 1)


def random_blur(faces: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each face mixed with a 5 px box-blurred copy of itself by a random share: sharp to soft, as the
    decoder's outputs are early in training."""
    soft = F.avg_pool2d(F.avg_pool2d(faces, 3, 1, 1, count_include_pad=False), 3, 1, 1, count_include_pad=False)
    share = torch.rand(len(faces), 1, 1, 1, generator=generator, device=faces.device)
    return faces + share * (soft - faces)


@dataclass(frozen=True)
class Split:
    """One person's faces with usable labels: which are fitted on and which are held out."""

    fit: np.ndarray        # face indices
    held_out: np.ndarray
    labels: np.ndarray     # (len(faceset), 3), the person's median removed, in pooled-spread units


class ExpressionLoss:
    """The fitted, frozen regressor and the per-step term (see the module docstring)."""

    def __init__(self, faces: dict[str, FaceSet], input_size: int, output_size: int, device: torch.device,
                 steps: int, seed: int) -> None:
        self.device, self.output_size, self.input_size = device, output_size, input_size
        with torch.random.fork_rng(devices=[]):  # seeded initial weights without touching the caller's RNG
            torch.manual_seed(seed)
            self.net = ExpressionRegressor()
        self.net.to(device)
        self.splits = _splits(faces)
        self._fit(faces, steps, seed)
        self.net.eval()
        for parameter in self.net.parameters():
            parameter.requires_grad_(False)
        self.offsets = {side: self._offset(faceset) for side, faceset in faces.items()}
        self.fit_report = self._report(faces, steps)

    def __call__(self, a: torch.Tensor, swapped: torch.Tensor) -> torch.Tensor:
        """Mean squared difference, in pooled-spread units, between the expression read in A's faces and in
        their A->B swaps, each minus its person's offset. Gradients flow into `swapped` only."""
        with torch.no_grad():
            wanted = self.net(a) - self.offsets["a"]
        return F.mse_loss(self.net(swapped) - self.offsets["b"], wanted)

    # --- fitting -----------------------------------------------------------------------------------------------
    def _fit(self, faces: dict[str, FaceSet], steps: int, seed: int) -> None:
        generator = torch.Generator(self.device).manual_seed(seed * 1000003 + 104729)
        pool = [(side, int(i)) for side, split in self.splits.items() for i in split.fit]
        optimiser = torch.optim.Adam(self.net.parameters(), lr=FIT_LR)
        self.net.train()
        for _ in range(steps):
            pick = torch.randint(len(pool), (min(FIT_BATCH, len(pool)),), generator=generator,
                                 device=generator.device).tolist()
            crops, labels = self._crops(faces, [pool[i] for i in pick], generator)
            crops = random_blur(random_gain(resize(crops), generator), generator)
            loss = F.smooth_l1_loss(self.net.read(crops), labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

    def _report(self, faces: dict[str, FaceSet], steps: int) -> dict[str, Any]:
        """Held-out r per measure, logged once; a warning when the mouth is not read."""
        report = {"steps": steps, "fit_faces": sum(len(s.fit) for s in self.splits.values()),
                  "held_out_faces": sum(len(s.held_out) for s in self.splits.values()),
                  "held_out_r": self._held_out_r(faces)}
        shown = ", ".join(f"{m} {_fmt(r)}" for m, r in report["held_out_r"].items())
        log.info("expression regressor: %d steps on %d crops of both people; r on %d held-out crops (the last %d%% "
                 "of each person's faces): %s", steps, report["fit_faces"], report["held_out_faces"],
                 round(100 * HELD_OUT), shown)
        mouth = report["held_out_r"]["mouth_open"]
        if mouth is None or mouth < WEAK_FIT:
            log.warning("expression regressor: held-out r of mouth_open is %s (< %.1f): the expression term can "
                        "tell little here; give the pair more varied faces, or raise train.expression_steps",
                        _fmt(mouth), WEAK_FIT)
        return report

    def _crops(self, faces: dict[str, FaceSet], picks: list[tuple[str, int]], generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented output-size crops and their labels for (side, face index) picks, A's first, then B's."""
        crops, labels = [], []
        for side in ("a", "b"):
            index = [i for s, i in picks if s == side]
            if not index:
                continue
            planes = faces[side].batch(torch.tensor(index), self.device)
            crops.append(augment(planes, FIT_AUGMENT, self.input_size, self.output_size, generator).target)
            labels.append(torch.from_numpy(self.splits[side].labels[index]).float())
        return torch.cat(crops), torch.cat(labels).to(self.device)

    @torch.no_grad()
    def _read(self, faceset: FaceSet, index: np.ndarray) -> torch.Tensor:
        """The regressor's reading of unaugmented crops, in batches."""
        out = []
        for start in range(0, len(index), 64):
            chunk = torch.as_tensor(index[start:start + 64], dtype=torch.long)
            out.append(self.net(plain(faceset.batch(chunk, self.device), self.input_size, self.output_size).target))
        return torch.cat(out) if out else torch.zeros(0, len(MEASURES), device=self.device)

    def _held_out_r(self, faces: dict[str, FaceSet]) -> dict[str, float | None]:
        """Pearson r of readings and labels of held-out crops, both people pooled, each reading minus its
        person's offset as the term uses it (so a constant per person cannot pass for expression)."""
        predicted, wanted = [], []
        for side, split in self.splits.items():
            predicted.append((self._read(faces[side], split.held_out) - self.offsets[side]).cpu().numpy())
            wanted.append(split.labels[split.held_out])
        p, w = np.concatenate(predicted), np.concatenate(wanted)
        if len(p) < MIN_HELD_OUT:
            return {m: None for m in MEASURES}
        return {m: _pearson(p[:, k], w[:, k]) for k, m in enumerate(MEASURES)}

    def _offset(self, faceset: FaceSet) -> torch.Tensor:
        index = np.unique(np.linspace(0, len(faceset) - 1, min(OFFSET_FACES, len(faceset))).round().astype(int))
        return self._read(faceset, index).median(0).values


def _splits(faces: dict[str, FaceSet]) -> dict[str, Split]:
    """Per person: usable faces, their last HELD_OUT share held out; labels minus the person's median, divided
    by the spread of all fitted labels (per measure)."""
    raw = {side: expression_labels(faceset.refs) for side, faceset in faces.items()}
    centred, usable = {}, {}
    for side, labels in raw.items():
        usable[side] = np.flatnonzero(np.isfinite(labels).all(1))
        if len(usable[side]) < 2:
            raise DeidError(f"{faces[side].label} {faces[side].folder}: {len(usable[side])} faces with usable "
                            "landmarks for train.expression_weight; extract more frames or set it to 0")
        centred[side] = labels - np.median(labels[usable[side]], axis=0)
    held = {side: max(1, math.ceil(len(idx) * HELD_OUT)) for side, idx in usable.items()}
    fit = {side: idx[:-held[side]] for side, idx in usable.items()}
    spread = np.concatenate([centred[side][fit[side]] for side in raw]).std(0)
    spread = np.where(spread > 1e-6, spread, 1.0)  # a measure that never moves: unit scale, not a division by 0
    labels = {side: np.nan_to_num(centred[side] / spread) for side in raw}
    return {side: Split(fit=fit[side], held_out=usable[side][-held[side]:], labels=labels[side]) for side in raw}


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 3 or np.std(x) < 1e-12 or np.std(y) < 1e-12:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
