"""hist: per-channel histogram matching under the mask."""
from __future__ import annotations

import numpy as np

from deid.stages.colour import COLOURS


@COLOURS.register("hist")
class HistogramMatch:
    def process(self, face: np.ndarray, frame_region: np.ndarray, inside: np.ndarray) -> np.ndarray:
        out = face.copy()
        for c in range(3):
            out[..., c] = _match_channel(face[..., c], face[..., c][inside], frame_region[..., c][inside])
        return out


def _match_channel(channel: np.ndarray, source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    src_cdf = np.cumsum(np.bincount(source, minlength=256)).astype(np.float64)
    ref_cdf = np.cumsum(np.bincount(reference, minlength=256)).astype(np.float64)
    src_cdf /= src_cdf[-1]
    ref_cdf /= ref_cdf[-1]
    lookup = np.interp(src_cdf, ref_cdf, np.arange(256)).astype(np.uint8)
    return lookup[channel]
