"""Batched augmentation on the training device: one grid_sample per output, no per-image Python.

From a batch of stored windows (uint8, N x 6 x S x S: RGB, mask, eyes, mouth; stages/train_data.py):
1. colour: LAB lightness and a*b* shifts per image (faceswap's colour augmentation), same for input and
   target, so the model learns lighting as something to carry over, not identity;
2. one random similarity per image (rotation, zoom, shift, horizontal flip), same for input and target;
3. the classic random warp for the input only: a 5x5 grid of control points, each moved by Gaussian
   noise, interpolated to a smooth displacement field. The target is the unwarped face, so the model
   must learn faces rather than copy pixels; this is what makes the shared encoder generalise across
   people.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from deid.stages.train_data import MARGIN


@dataclass(frozen=True)
class AugmentSettings:
    warp: float = 0.02       # std of control-point moves, as a share of the face width
    rotation: float = 10.0   # degrees, uniform +-
    zoom: float = 0.05       # uniform +- share
    shift: float = 0.05      # uniform +- share of the width
    flip: float = 0.5        # chance of a horizontal flip
    lightness: float = 0.3   # LAB L moved up to this share towards white or black
    color_ab: float = 0.08   # LAB a*, b* moved by up to this share of their range


NO_AUGMENTATION = AugmentSettings(warp=0.0, rotation=0.0, zoom=0.0, shift=0.0, flip=0.0, lightness=0.0, color_ab=0.0)


@dataclass
class Batch:
    """Float tensors in 0..1 on the training device."""

    input: torch.Tensor    # (n, 3, input_size, input_size), warped
    target: torch.Tensor   # (n, 3, output_size, output_size)
    mask: torch.Tensor     # (n, 1, output_size, output_size)
    eyes: torch.Tensor     # (n, 1, ...): eyes, with or without the brows (stages/train_data.Window.brows)
    mouth: torch.Tensor    # (n, 1, ...): the mouth, grown by Window.mouth_grow


def augment(planes: torch.Tensor, settings: AugmentSettings, input_size: int, output_size: int,
            generator: torch.Generator) -> Batch:
    """Augmented training pairs from uint8 windows (n, 6, S, S)."""
    n = planes.shape[0]
    x = planes.float().div_(255)
    rgb = jitter_lab(x[:, :3], settings.lightness, settings.color_ab, generator)
    x = torch.cat([rgb, x[:, 3:]], 1)
    theta = random_similarity(n, settings, generator, x.device)
    target = F.grid_sample(x, F.affine_grid(theta, [n, 6, output_size, output_size], align_corners=False),
                           mode="bilinear", padding_mode="border", align_corners=False)
    # Warp at the larger of the two sizes and shrink with area averaging: grid_sample does not antialias.
    size = max(input_size, output_size)
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    if settings.warp > 0:
        grid = grid + random_warp_field(n, size, settings.warp * 2 / MARGIN, generator, x.device)
    warped = F.grid_sample(rgb, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if size != input_size:
        warped = F.interpolate(warped, size=(input_size, input_size), mode="area")
    return Batch(input=warped, target=target[:, :3], mask=target[:, 3:4], eyes=target[:, 4:5], mouth=target[:, 5:6])


def plain(planes: torch.Tensor, input_size: int, output_size: int) -> Batch:
    """The training square without augmentation (previews, identity checks)."""
    generator = torch.Generator(planes.device)  # unused: no augmentation draws anything that matters
    return augment(planes, NO_AUGMENTATION, input_size, output_size, generator)


def _uniform(n: int, spread: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=generator, device=device) * 2 - 1) * spread


def random_similarity(n: int, s: AugmentSettings, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n, 2, 3) affine_grid matrices: output square -> stored window, with random rotation/zoom/shift/flip.

    The training square is the centre 1/MARGIN of the stored window, hence the 1/MARGIN factor.
    """
    angle = torch.deg2rad(_uniform(n, s.rotation, generator, device))
    scale = (1 + _uniform(n, s.zoom, generator, device)) / MARGIN
    flip = torch.where(torch.rand(n, generator=generator, device=device) < s.flip, -1.0, 1.0)
    shift = torch.stack([_uniform(n, s.shift * 2, generator, device), _uniform(n, s.shift * 2, generator, device)], 1)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0] / MARGIN], 1),
                         torch.stack([sin * flip, cos, shift[:, 1] / MARGIN], 1)], 1)
    return theta


def random_warp_field(n: int, size: int, std: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n, size, size, 2) smooth displacement in grid units: 5x5 Gaussian moves, bicubic in between."""
    points = torch.randn(n, 2, 5, 5, generator=generator, device=device) * std
    field = F.interpolate(points, size=(size, size), mode="bicubic", align_corners=True)
    return field.permute(0, 2, 3, 1)


# --- colour ------------------------------------------------------------------------------------------------
# sRGB (D65) <-> CIE LAB, on tensors (n, 3, h, w) in 0..1. LAB separates lightness from colour, so lighting
# changes can be simulated without tinting the face and tint without changing the light.
_RGB_TO_XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                            [0.212671, 0.715160, 0.072169],
                            [0.019334, 0.119193, 0.950227]])
_WHITE = torch.tensor([0.950456, 1.0, 1.088754])


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).clamp_min(0) ** 2.4, rgb / 12.92)
    xyz = torch.einsum("ij,njhw->nihw", _RGB_TO_XYZ.to(rgb), linear) / _WHITE.to(rgb).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-8) ** (1 / 3), 7.787 * xyz + 16 / 116)
    lightness = 116 * f[:, 1] - 16
    a = 500 * (f[:, 0] - f[:, 1])
    b = 200 * (f[:, 1] - f[:, 2])
    return torch.stack([lightness, a, b], 1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    fy = (lab[:, 0] + 16) / 116
    f = torch.stack([fy + lab[:, 1] / 500, fy, fy - lab[:, 2] / 200], 1)
    xyz = torch.where(f > 0.206893, f ** 3, (f - 16 / 116) / 7.787) * _WHITE.to(lab).view(1, 3, 1, 1)
    linear = torch.einsum("ij,njhw->nihw", torch.linalg.inv(_RGB_TO_XYZ).to(lab), xyz).clamp(0, 1)
    return torch.where(linear > 0.0031308, 1.055 * linear ** (1 / 2.4) - 0.055, linear * 12.92).clamp(0, 1)


def jitter_lab(rgb: torch.Tensor, lightness: float, color_ab: float, generator: torch.Generator) -> torch.Tensor:
    """Per image: move L towards white or black by up to `lightness`, shift a*, b* by up to `color_ab` x 128."""
    if lightness <= 0 and color_ab <= 0:
        return rgb
    n, device = rgb.shape[0], rgb.device
    lab = rgb_to_lab(rgb)
    amount = _uniform(n, lightness, generator, device).view(n, 1, 1)
    lab_l = lab[:, 0]
    lab_l = torch.where(amount >= 0, lab_l + (100 - lab_l) * amount, lab_l * (1 + amount))
    ab = lab[:, 1:] + torch.stack([_uniform(n, color_ab, generator, device),
                                   _uniform(n, color_ab, generator, device)], 1).view(n, 2, 1, 1) * 128
    return lab_to_rgb(torch.cat([lab_l[:, None], ab], 1))
