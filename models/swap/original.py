"""`original`: faceswap's default model, 64 px in and out.

Encoder: four stride-2 5x5 convolutions (width, 2, 4, 8 x width channels) down to 4x4, a dense
bottleneck (`latent`, 1024 by default), a dense layer back to 4x4 and one upscale to 8x8; the encoder
is shared by both people. Decoder (one per person): three upscales (64 -> 32 -> 16 -> 8 px features
become 8 -> 16 -> 32 -> 64) and a 5x5 convolution to RGB. With width 128 this is faceswap's shape.
"""
from __future__ import annotations

from torch import nn

from deid.models.swap import FAMILIES
from deid.models.swap.blocks import ConvBlock, Dense, SwapModel, Upscale, conv, log2_int


def dense_encoder(input_size: int, width: int, latent: int) -> tuple[nn.Sequential, int]:
    """Stride-2 convolutions down to 4x4, dense bottleneck, back to 4x4 and up to 8x8.

    Returns the encoder and the channel count of its 8x8 output. Shared by `original` and `dfaker`.
    """
    if input_size < 16:
        raise ValueError(f"input_size must be at least 16, got {input_size}")
    downs = log2_int(input_size, "input_size") - 2  # halvings from input_size to 4x4
    layers: list[nn.Module] = []
    channels = 3
    for i in range(downs):
        out = min(width * 2 ** i, width * 8)
        layers.append(ConvBlock(channels, out))
        channels = out
    layers += [Dense(channels * 16, latent), Dense(latent, channels * 16, (channels, 4, 4)),
               Upscale(channels, channels // 2)]
    return nn.Sequential(*layers), channels // 2


@FAMILIES.register("original")
class Original(SwapModel):
    input_size = 64
    output_size = 64
    coverage = 0.875
    batch_size = 16

    def __init__(self, input_size: int = 64, output_size: int = 64, width: int = 128, latent: int = 1024) -> None:
        super().__init__()
        if output_size < 16:
            raise ValueError(f"output_size must be at least 16, got {output_size}")
        if width < 8 or latent < 8:
            raise ValueError(f"width and latent must be at least 8, got width {width}, latent {latent}")
        self.input_size, self.output_size, self.width, self.latent = input_size, output_size, width, latent
        self.encoder, channels = dense_encoder(input_size, width, latent)
        ups = log2_int(output_size, "output_size") - 3  # the encoder already delivers 8x8
        self.decoder_a = self._decoder(channels, ups)
        self.decoder_b = self._decoder(channels, ups)

    @staticmethod
    def _decoder(channels: int, ups: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        for _ in range(ups):
            out = max(channels // 2, 16)
            layers.append(Upscale(channels, out))
            channels = out
        layers.append(conv(channels, 3, 5))
        return nn.Sequential(*layers)
