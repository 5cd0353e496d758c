"""Building blocks of the swap autoencoders, and the `SwapModel` base every family derives from.

Two choices against the checkerboard artefacts that upscaling decoders are known for:
- every convolution pads by *reflection*, so the border of a face is continued, not faded into zeros
  (zero padding prints a dark frame into every output that the decoder then has to fight);
- upscaling is a 3x3 convolution to 4x the channels followed by a pixel shuffle (sub-pixel conv), its
  kernel initialised with ICNR (Aitken et al. 2017): the four sub-pixel kernels start identical, so at
  initialisation the block is a nearest-neighbour upscale of a normal convolution and has no checkerboard
  to unlearn.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from torch import nn

Side = Literal["a", "b"]
LEAK = 0.1


def conv(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, padding_mode="reflect")


def icnr_(weight: torch.Tensor, scale: int = 2) -> None:
    """ICNR: initialise a sub-pixel conv so that all `scale`^2 sub-pixels of an output channel share one kernel."""
    out_ch, in_ch, kh, kw = weight.shape
    sub = torch.empty(out_ch // scale ** 2, in_ch, kh, kw)
    nn.init.kaiming_uniform_(sub, a=LEAK)
    with torch.no_grad():
        # PixelShuffle builds output channel c from input channels c*s^2 .. c*s^2 + s^2 - 1.
        weight.copy_(sub.repeat_interleave(scale ** 2, dim=0))


class ConvBlock(nn.Sequential):
    """Conv (reflect padding) + LeakyReLU; stride 2 halves the resolution."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 5, stride: int = 2) -> None:
        super().__init__(conv(in_ch, out_ch, kernel, stride), nn.LeakyReLU(LEAK, inplace=True))


class Upscale(nn.Sequential):
    """Double the resolution: 3x3 conv to 4x channels (ICNR init), LeakyReLU, pixel shuffle."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(conv(in_ch, out_ch * 4, 3), nn.LeakyReLU(LEAK, inplace=True), nn.PixelShuffle(2))
        icnr_(self[0].weight)
        nn.init.zeros_(self[0].bias)


class Residual(nn.Module):
    """x + conv(lrelu(conv(x))), then LeakyReLU (faceswap's ResidualBlock).

    The second conv starts at a tenth of its usual scale, so a deep stack starts close to the identity
    and the early iterations do not blow up the activations.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv(channels, channels, 3)
        self.conv2 = conv(channels, channels, 3)
        self.act = nn.LeakyReLU(0.2)
        with torch.no_grad():
            self.conv2.weight.mul_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.conv2(self.act(self.conv1(x))))


class Dense(nn.Module):
    """Flatten -> Linear -> (optionally) reshape to a feature map: the autoencoder's bottleneck."""

    def __init__(self, in_features: int, out_features: int, shape: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x.flatten(1))
        return x if self.shape is None else x.view(x.shape[0], *self.shape)


def log2_int(value: int, what: str) -> int:
    exponent = int(round(math.log2(value))) if value > 0 else -1
    if value <= 0 or 2 ** exponent != value:
        raise ValueError(f"{what} must be a power of two, got {value}")
    return exponent


class SwapModel(nn.Module):
    """One shared encoder, one decoder per side. At convert time A's faces go through decoder B.

    Subclasses set the class defaults below, build `encoder`, `decoder_a` and `decoder_b` in
    `__init__`, and list in `ARCH_KEYS` the constructor arguments that define the weights' shapes; those
    are what `arch()` returns and what a checkpoint freezes. Decoders return logits with 3 colour
    channels (+1 mask channel when `learns_mask`); `forward` applies the sigmoid.
    """

    name: ClassVar[str]
    input_size: int = 64          # px of the face the encoder sees
    output_size: int = 64         # px of the face the decoders draw
    coverage: float = 0.875       # default share of the "face"-centred crop the model is trained on
    batch_size: int = 16          # default batch size per side
    # Width and latent when training on a CPU with both left at 0: the GPU-sized defaults train at a few
    # images/s on a CPU and show nothing but a smear within an hour (issue 15); a quarter of the width does.
    cpu_sizes: ClassVar[dict[str, int]] = {"width": 32, "latent": 512}
    learns_mask: ClassVar[bool] = False
    ARCH_KEYS: ClassVar[tuple[str, ...]] = ("input_size", "output_size", "width", "latent")

    encoder: nn.Module
    decoder_a: nn.Module
    decoder_b: nn.Module
    iteration: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        # Saved with the weights, so a model.pt on its own says how far it was trained and a checkpoint
        # can prove that its model.pt and state.json belong together.
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    def arch(self) -> dict[str, Any]:
        """The frozen architecture: family name and every shape-defining argument."""
        return {"model": self.name, **{key: getattr(self, key) for key in self.ARCH_KEYS}}

    def forward(self, x: torch.Tensor, side: Side) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.decode(self.encoder(x), side)

    def decode(self, latent: torch.Tensor, side: Side) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decoder `side` on encoder features (training encodes A and B in one pass, then decodes each)."""
        if side not in ("a", "b"):
            raise ValueError(f"side must be 'a' or 'b', got {side!r}")
        decoder = self.decoder_a if side == "a" else self.decoder_b
        out = torch.sigmoid(decoder(latent))
        if self.learns_mask:
            return out[:, :3], out[:, 3:4]
        return out, None
