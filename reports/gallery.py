"""Identification among a gallery of people: would a recogniser with a watch list pick the original person?"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from deid.reports.identity import (
    gallery_embeddings,
    list_gallery,
    match_gallery_name,
    rank_identification,
)


def gallery_identification(gallery_dir: Path, embed_photo: Callable[[Path], np.ndarray | None],
                           ref_original: np.ndarray, original: np.ndarray, swapped: np.ndarray,
                           threshold: float) -> dict:
    """Rank-1/5 identification of the original and swapped frames' faces among the gallery's people.

    The original person joins the gallery from the reference photo when no gallery person matches it,
    so the true identity is always there to be found."""
    gallery = gallery_embeddings(list_gallery(gallery_dir), embed_photo)
    true_name = match_gallery_name(gallery, ref_original, threshold)
    added = true_name is None
    if added:
        true_name = "(original reference)"
        gallery[true_name] = np.asarray(ref_original)[None, :]
    return {"people": len(gallery), "true_identity_added_from_reference": added,
            "swapped": rank_identification(swapped, gallery, true_name),
            "original": rank_identification(original, gallery, true_name)}
