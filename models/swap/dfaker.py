"""`dfaker`: DFaker's model as faceswap ships it, 64 px in, 128 px out, with a learned mask.

The encoder is `original`'s (latent 512 by default, as DFaker used). Each decoder upscales from 8x8
to 128x128 with a residual block after every upscale but the last, so it can add detail at each scale
rather than only interpolate, and ends in two 5x5 heads: RGB, and a mask that the model learns from
the landmark mask. At convert time the learned mask follows the *swapped* face's outline, which a mask
drawn from A's landmarks cannot.
"""
from __future__ import annotations

from torch import nn

from deid.models.swap import FAMILIES
from deid.models.swap.blocks import Residual, Upscale, conv
from deid.models.swap.original import Original


@FAMILIES.register("dfaker")
class DFaker(Original):
    """`original`'s encoder and constructor checks; only the decoders and the defaults differ."""

    output_size = 128
    learns_mask = True
    cpu_sizes = {"width": 32, "latent": 256}

    def __init__(self, input_size: int = 64, output_size: int = 128, width: int = 128, latent: int = 512) -> None:
        super().__init__(input_size, output_size, width, latent)

    @staticmethod
    def _decoder(channels: int, ups: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        for i in range(ups):
            out = max(channels if i == 0 else channels // 2, 16)  # DFaker keeps the width at the first upscale
            layers.append(Upscale(channels, out))
            if i < ups - 1:
                layers.append(Residual(out))
            channels = out
        layers.append(conv(channels, 4, 5))  # RGB + mask logits
        return nn.Sequential(*layers)
