"""Colour corrections: how a swapped face's colours are matched to the frame it is pasted into.

Each correction is one module here: a class registered with `@COLOURS.register("name")` whose
`process(face, frame_region, inside)` gets the warped face and the frame's pixels under it (RGB uint8,
the same size) and the boolean mask of the face, and returns the corrected face. `convert.color` /
`deid convert --color` choices are the registered names.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from deid.core.plugins import Registry


class ColourCorrection(Protocol):
    def process(self, face: np.ndarray, frame_region: np.ndarray, inside: np.ndarray) -> np.ndarray:
        """The face (RGB uint8) with colours matched to `frame_region` inside `inside`."""


COLOURS: Registry[type[ColourCorrection]] = Registry(
    "colour correction", ["deid.stages.colour.avg", "deid.stages.colour.transfer", "deid.stages.colour.hist", "deid.stages.colour.seamless",
     "deid.stages.colour.none"])
