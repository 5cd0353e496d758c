"""`villain`: a larger 256 px model with residual blocks and skip connections.

After faceswap's Villain (residual blocks, skip connections) and DeepFaceLab's SAEHD (256 px, large
dense latent). Encoder: stride-2 5x5 convolutions from 256 px down to 8x8, each followed by a residual
block once the maps are small enough to afford one, then the dense bottleneck. Decoder: upscale +
residual block per scale, and an output skip at every scale: each scale draws its own RGB + mask and
the drawings are summed after upsampling (as in StyleGAN2's output skips). The coarse scales learn the
face's layout in the first thousand iterations, the fine scales only add detail, which keeps a 256 px
decoder from stalling on a blurry mean face.

Why no U-Net skips from encoder to decoder: they would carry A's own high-resolution features past the
bottleneck straight into decoder B, which is exactly the identity leak the swap must not have. Every
skip here stays on one side of the bottleneck.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deid.models.swap import FAMILIES
from deid.models.swap.blocks import (
    ConvBlock,
    Dense,
    Residual,
    SwapModel,
    Upscale,
    conv,
    log2_int,
)

RESIDUAL_MAX_SIZE = 64  # residual blocks only on maps up to this size: above it they cost more than they add


@FAMILIES.register("villain")
class Villain(SwapModel):
    input_size = 256
    output_size = 256
    coverage = 0.875
    batch_size = 8
    cpu_sizes = {"width": 16, "latent": 512}
    learns_mask = True

    def __init__(self, input_size: int = 256, output_size: int = 256, width: int = 64, latent: int = 1024) -> None:
        super().__init__()
        if input_size < 32 or output_size < 32:
            raise ValueError(f"input_size and output_size must be at least 32, got {input_size} and {output_size}")
        if width < 8 or latent < 8:
            raise ValueError(f"width and latent must be at least 8, got width {width}, latent {latent}")
        self.input_size, self.output_size, self.width, self.latent = input_size, output_size, width, latent
        self.encoder = _Encoder(input_size, width, latent)
        channels = self.encoder.out_channels
        self.decoder_a = _Decoder(channels, output_size)
        self.decoder_b = _Decoder(channels, output_size)


class _Encoder(nn.Module):
    def __init__(self, input_size: int, width: int, latent: int) -> None:
        super().__init__()
        downs = log2_int(input_size, "input_size") - 3  # to 8x8
        layers: list[nn.Module] = []
        channels, size = 3, input_size
        for i in range(downs):
            out = min(width * 2 ** i, width * 8)
            size //= 2
            layers.append(ConvBlock(channels, out))
            if size <= RESIDUAL_MAX_SIZE:
                layers.append(Residual(out))
            channels = out
        self.convs = nn.Sequential(*layers)
        self.dense = nn.Sequential(Dense(channels * 64, latent), Dense(latent, channels * 64, (channels, 8, 8)))
        self.up = Upscale(channels, channels // 2)
        self.out_channels = channels // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.dense(self.convs(x)))  # 16x16 features


class _Decoder(nn.Module):
    """Upscale + residual per scale from 16x16; every scale adds its own RGB + mask logits (output skips)."""

    def __init__(self, channels: int, output_size: int) -> None:
        super().__init__()
        ups = log2_int(output_size, "output_size") - 4  # features arrive at 16x16
        self.levels = nn.ModuleList()
        self.heads = nn.ModuleList([conv(channels, 4, 3)])
        size = 16
        for i in range(ups):
            out = max(channels if i == 0 else channels // 2, 16)
            size *= 2
            block: list[nn.Module] = [Upscale(channels, out)]
            if size <= RESIDUAL_MAX_SIZE * 2:
                block.append(Residual(out))
            self.levels.append(nn.Sequential(*block))
            self.heads.append(conv(out, 4, 5 if i == ups - 1 else 3))
            channels = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = self.heads[0](x)
        for level, head in zip(self.levels, self.heads[1:]):
            x = level(x)
            image = F.interpolate(image, scale_factor=2, mode="bilinear", align_corners=False) + head(x)
        return image
