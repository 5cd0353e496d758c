"""The identity term of training: push A->B swaps away from A and towards B, as face_recognition sees them.

A reconstruction loss alone lets decoder B drift towards an identity mapping of A (issue 15: at 4000
iterations 12 % of A->B faces were still recognised as A). With dlib's recogniser ported to PyTorch
(models/dlib_resnet.py) the recogniser's distance is differentiable, so the swap direction gets a hinge:

    identity = relu((0.6 + margin) - |f(A->B) - centre_A|) + relu(|f(A->B) - centre_B| - (0.6 - margin))

0.6 is face_recognition's "same person" distance; the hinges stop pulling once a swap is far enough from A
and close enough to B, so the term does not fight the reconstruction of a face that is already de-identified.
centre_A and centre_B are the mean descriptors of unaugmented training faces of each side, taken once.

The swapped face is pasted into A's own crop with A's face mask first (what convert does), and the
chip is cut with the fixed similarity that maps the training window's mean face onto dlib's 150 px chip
template: training faces are aligned to that mean face already, so no landmarks are needed per step.

Caveat (said in docs/stages.md, train): the evaluation scores identity with the same recogniser. A term trained
against it can fool it more than it fools a person; read its curve with the pictures beside it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from deid.models.dlib_resnet import CHIP_PADDING, CHIP_SIZE, load_dlib_face_net
from deid.models.face_distance import SAME_PERSON_DISTANCE
from deid.stages.train_data import coverage_matrix

MATCH_THRESHOLD = SAME_PERSON_DISTANCE


def chip_grid(window: int, centering: str, coverage: float, device: torch.device) -> torch.Tensor:
    """grid_sample grid (1, 150, 150, 2) that cuts dlib's face chip out of a `window` px training square."""
    chip = np.arange(CHIP_SIZE, dtype=np.float64)
    # dlib's chip template: unit face point p sits at (padding + p) / (1 + 2 padding) * size in the chip.
    unit = chip / CHIP_SIZE * (1 + 2 * CHIP_PADDING) - CHIP_PADDING
    ux, uy = np.meshgrid(unit, unit)
    m = coverage_matrix(window, centering, coverage)
    px = m[0, 0] * ux + m[0, 1] * uy + m[0, 2]
    py = m[1, 0] * ux + m[1, 1] * uy + m[1, 2]
    # pixel centres at integers -> grid_sample's normalised coordinates (align_corners=False)
    grid = np.stack([(px + 0.5) / window * 2 - 1, (py + 0.5) / window * 2 - 1], axis=-1)
    return torch.from_numpy(grid[None]).to(device, torch.float32)


class IdentityLoss:
    """The hinge above, for A->B swaps of the training window (N x 3 x S x S, 0..1)."""

    def __init__(self, output_size: int, centering: str, coverage: float, device: torch.device,
                 margin: float) -> None:
        self.net = load_dlib_face_net(device=device)
        for parameter in self.net.parameters():
            parameter.requires_grad_(False)
        self.grid = chip_grid(output_size, centering, coverage, device)
        self.margin = margin
        self.centres: dict[str, torch.Tensor] = {}

    def descriptors(self, faces: torch.Tensor) -> torch.Tensor:
        chips = F.grid_sample(faces.float() * 255, self.grid.expand(len(faces), -1, -1, -1), mode="bilinear",
                              padding_mode="border", align_corners=False)
        return self.net(chips)

    @torch.no_grad()
    def set_centre(self, side: str, faces: torch.Tensor) -> None:
        self.centres[side] = self.descriptors(faces).mean(0)

    def __call__(self, swapped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, distances to A's centre, distances to B's centre) for a batch of pasted A->B faces."""
        d = self.descriptors(swapped)
        to_a = (d - self.centres["a"]).norm(dim=1)
        to_b = (d - self.centres["b"]).norm(dim=1)
        loss = F.relu(MATCH_THRESHOLD + self.margin - to_a) + F.relu(to_b - (MATCH_THRESHOLD - self.margin))
        return loss.mean(), to_a.detach(), to_b.detach()
