"""Who is who: reference embeddings, distances, and the dominant identity of a set of faces.

Distances are Euclidean between face_recognition's 128-d embeddings; 0.6 is the recogniser's own
"same person" threshold.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, Sequence

import cv2
import dlib
import numpy as np
import torch

from deid.core.errors import DeidError
from deid.models.detectors import make_detector
from deid.models.landmarks import IdentityModel, LandmarkModel

log = logging.getLogger("deid.identity")


def reference_embeddings(paths: Sequence[Path], identity: IdentityModel, detector_name: str = "mtcnn") -> np.ndarray:
    """(n, 128) embeddings of the largest face in each reference photo, found by `detector_name` (a name in
    models.detectors.DETECTORS: clean passes the detector its extraction used)."""
    detector = make_detector(detector_name, torch.device("cpu"), min_face_size=20)
    landmarks = LandmarkModel()
    embeddings = []
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DeidError(f"{path}: reference photo missing or not a readable image; check the path")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        faces = detector.detect([image])[0]
        if not faces:
            raise DeidError(f"{path}: no face found in this reference photo; give a photo where the face is clearly visible")
        if len(faces) > 1:
            log.info("%s: %d faces in the reference photo, using the largest", path, len(faces))
        points = landmarks.predict(image, detector.landmark_rect(faces[0]))
        embeddings.append(identity.embed(image, points))
    return np.stack(embeddings)


def distance_to_references(embeddings: np.ndarray, references: np.ndarray,
                           mode: Literal["mean", "closest"]) -> np.ndarray:
    """Per face: distance to the mean reference embedding, or to the closest reference photo."""
    embeddings = np.atleast_2d(embeddings)
    if mode == "mean":
        return np.linalg.norm(embeddings - references.mean(0), axis=1)
    return np.linalg.norm(embeddings[:, None, :] - references[None, :, :], axis=2).min(1)


def dominant_cluster(embeddings: np.ndarray, threshold: float, tie_break: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the faces in the largest identity cluster.

    Chinese-whispers clustering links two faces closer than `threshold`, so a person's expressive or
    turned frames join the cluster through chains of similar frames even where they are far from the
    average face. Ties between equally large clusters go to the higher summed `tie_break` (e.g. size
    x detector score).
    """
    if len(embeddings) == 0:
        return np.zeros(0, bool)
    labels = np.array(dlib.chinese_whispers_clustering([dlib.vector(e.astype(float).tolist()) for e in embeddings],
                                                        threshold))
    weights = np.ones(len(labels)) if tie_break is None else np.asarray(tie_break, float)
    best = max(set(labels.tolist()), key=lambda lab: ((labels == lab).sum(), weights[labels == lab].sum()))
    return labels == best
