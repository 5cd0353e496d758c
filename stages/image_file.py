"""Writing an image atomically: encoded in memory by OpenCV, renamed into place by core.atomic.

Kept out of core so that the core layer (and everything that only needs atomic JSON or text) never
imports OpenCV.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from deid.core.atomic import atomic_path


def write_image(path: Path, image: np.ndarray, params: list[int] | None = None) -> None:
    """Encode in memory and write atomically; `image` is what cv2 expects (BGR or single channel)."""
    ok, encoded = cv2.imencode(Path(path).suffix or ".png", image, params or [])
    if not ok:
        raise OSError(f"could not encode image for {path}")
    # No fsync per face: thousands of small files would make extraction disk-bound; the rename alone
    # still guarantees that a file with the final name is complete.
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())
