"""blendshapes: Action Unit intensities from MediaPipe's 52 face blendshapes, offline (models/mediapipe_face.py).

The face is followed through each video as MediaPipe tracks it: evaluate's detector (evaluate.detector, on
the frame shrunk to evaluate.detect_side like the identity pass) finds the largest face only where the
crop from the previous sampled frame holds no face any more; MediaPipe's face mesh gives its 478 landmarks
and the blendshape model 52 coefficients (0..1), mapped to FACS Action Units by AU_TABLE below. Values are
blendshape activations, 0..1, not OpenFace's 0..5 intensities: compare them only with each other.

AU_TABLE follows the ARKit-to-FACS correspondence of the blendshape definitions (each ARKit shape was
specified as a FACS movement); left/right pairs are averaged, since one AU value per face is what the
other sources give:

    AU01 inner brow raiser    browInnerUp
    AU02 outer brow raiser    browOuterUpLeft/Right
    AU04 brow lowerer         browDownLeft/Right
    AU05 upper lid raiser     eyeWideLeft/Right
    AU06 cheek raiser         cheekSquintLeft/Right
    AU07 lid tightener        eyeSquintLeft/Right
    AU09 nose wrinkler        noseSneerLeft/Right
    AU10 upper lip raiser     mouthUpperUpLeft/Right
    AU12 lip corner puller    mouthSmileLeft/Right
    AU14 dimpler              mouthDimpleLeft/Right
    AU15 lip corner depressor mouthFrownLeft/Right
    AU16 lower lip depressor  mouthLowerDownLeft/Right
    AU17 chin raiser          mouthShrugLower
    AU18 lip pucker           mouthPucker
    AU20 lip stretcher        mouthStretchLeft/Right
    AU22 lip funneler         mouthFunnel
    AU24 lip pressor          mouthPressLeft/Right
    AU25 lips part            jawOpen - mouthClose, clipped to 0..1 (mouthClose is "lips closed while the
                              jaw is open": what is left of jawOpen is the lips' opening)
    AU26 jaw drop             jawOpen
    AU28 lip suck             mouthRollLower/Upper
    AU45 blink                eyeBlinkLeft/Right

Not mapped: the eye-gaze shapes (eyeLook*: gaze, not an AU), cheekPuff (AU34 is not scored by the other
sources), jawForward/Left/Right and mouthLeft/Right (AD29/30 and lateral shifts), mouthShrugUpper, and
_neutral. A face whose face-mesh presence is below 0.5 gives a NaN row (no face), never zeros.

`auto` (registered here too) is py-feat where its weights are present, else blendshapes: `default_source`
is the resolution evaluate's configuration applies, so the summary names the source that actually ran.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import pandas as pd

from deid.models.mediapipe_face import (
    BLENDSHAPE_NAMES,
    MIN_PRESENCE,
    FaceMesh,
    Roi,
    roi_from_box,
    roi_from_landmarks,
)
from deid.models.mediapipe_face import unavailable as mesh_unavailable
from deid.reports.au_source import AU_SOURCES, AuPlugin, AuSettings

MTCNN_MIN_FACE = 12  # the smallest face MTCNN's first stage can see, px (models/face_identity.py)

_INDEX = {name: i for i, name in enumerate(BLENDSHAPE_NAMES)}


def _mean(*names: str) -> Callable[[np.ndarray], np.ndarray]:
    columns = [_INDEX[n] for n in names]
    return lambda shapes: shapes[:, columns].mean(axis=1)


def _lips_part(shapes: np.ndarray) -> np.ndarray:
    return np.clip(shapes[:, _INDEX["jawOpen"]] - shapes[:, _INDEX["mouthClose"]], 0.0, 1.0)


# AU -> its value from an (n, 52) array of blendshapes; the table of the module docstring.
AU_TABLE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "AU01": _mean("browInnerUp"),
    "AU02": _mean("browOuterUpLeft", "browOuterUpRight"),
    "AU04": _mean("browDownLeft", "browDownRight"),
    "AU05": _mean("eyeWideLeft", "eyeWideRight"),
    "AU06": _mean("cheekSquintLeft", "cheekSquintRight"),
    "AU07": _mean("eyeSquintLeft", "eyeSquintRight"),
    "AU09": _mean("noseSneerLeft", "noseSneerRight"),
    "AU10": _mean("mouthUpperUpLeft", "mouthUpperUpRight"),
    "AU12": _mean("mouthSmileLeft", "mouthSmileRight"),
    "AU14": _mean("mouthDimpleLeft", "mouthDimpleRight"),
    "AU15": _mean("mouthFrownLeft", "mouthFrownRight"),
    "AU16": _mean("mouthLowerDownLeft", "mouthLowerDownRight"),
    "AU17": _mean("mouthShrugLower"),
    "AU18": _mean("mouthPucker"),
    "AU20": _mean("mouthStretchLeft", "mouthStretchRight"),
    "AU22": _mean("mouthFunnel"),
    "AU24": _mean("mouthPressLeft", "mouthPressRight"),
    "AU25": _lips_part,
    "AU26": _mean("jawOpen"),
    "AU28": _mean("mouthRollLower", "mouthRollUpper"),
    "AU45": _mean("eyeBlinkLeft", "eyeBlinkRight"),
}


def au_table(frames: list[int], shapes: list[np.ndarray | None]) -> pd.DataFrame:
    """reports/au.py's layout: one row per frame index, one AUxx column each; NaN rows where no face."""
    values = np.full((len(frames), len(BLENDSHAPE_NAMES)), np.nan)
    for row, coefficients in enumerate(shapes):
        if coefficients is not None:
            values[row] = coefficients
    return pd.DataFrame({au: f(values) for au, f in AU_TABLE.items()},
                        index=pd.Index(frames, name="frame", dtype=int))


class FaceFinder:
    """The largest face of each frame as a first face-mesh crop, from evaluate's own detector (MTCNN gives
    eye keypoints, which level the crop; HOG does not, and the face mesh's second pass levels it)."""

    def __init__(self, config: AuSettings, device: str) -> None:
        import torch

        from deid.models.detectors import make_detector

        self.config = config
        self._device = torch.device(device)
        self._make = make_detector
        self._detectors: dict[int, object] = {}

    def rois(self, frames: list[np.ndarray]) -> list[Roi | None]:
        out: list[Roi | None] = []
        for frame in frames:  # frames of one video share a size; one at a time keeps this simple and bounded
            height, width = frame.shape[:2]
            scale = min(1.0, self.config.detect_side / max(1, min(height, width)))
            min_face = max(MTCNN_MIN_FACE, int(round(self.config.min_face_size * scale)))
            if min_face not in self._detectors:
                self._detectors[min_face] = self._make(self.config.detector, self._device, min_face)
            small = frame if scale == 1.0 else cv2.resize(
                frame, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
            faces = [f for f in self._detectors[min_face].detect([small])[0]  # type: ignore[attr-defined]
                     if max(f.rect.w, f.rect.h) / scale >= self.config.min_face_size]
            if not faces:
                out.append(None)
                continue
            face = max(faces, key=lambda f: f.rect.w * f.rect.h)
            r = face.rect
            eyes = None if face.keypoints is None else np.asarray(face.keypoints[:2], np.float64) / scale
            out.append(roi_from_box(r.x / scale, r.y / scale, r.w / scale, r.h / scale, eyes))
        return out


@AU_SOURCES.register("blendshapes")
class Blendshapes(AuPlugin):
    def __init__(self, config: AuSettings, device: str) -> None:
        super().__init__(config, device)
        self.reason = mesh_unavailable()
        self._tables: dict[str, list[pd.DataFrame]] = {"original": [], "swapped": []}
        self._last: dict[str, Roi | None] = {}  # per video: the crop for its next frame
        if self.reason is not None:
            return
        try:
            self.mesh = FaceMesh()
        except Exception as exc:  # a broken runtime install: one line, and evaluate scores geometry instead
            first = str(exc).splitlines()[0] if str(exc) else ""
            self.reason = f"MediaPipe face mesh could not be loaded ({type(exc).__name__}: {first})"
            return
        self.finder = FaceFinder(config, device)
        self.streaming = True

    @staticmethod
    def unavailable(config: AuSettings) -> str | None:
        return mesh_unavailable()

    def add(self, label: str, frames: list[tuple[int, np.ndarray]]) -> None:
        shapes = [self._face(label, frame) for _, frame in frames]
        self._tables[label].append(au_table([index for index, _ in frames], shapes))

    def _face(self, label: str, frame: np.ndarray) -> np.ndarray | None:
        """Blendshapes of the face followed in this video, as MediaPipe tracks: the crop the last frame's
        landmarks gave, and the detector only when the face mesh no longer finds a face there (first frame,
        a cut, a face gone). The detector costs ~20x the face mesh on CPU."""
        tracked = self._last.get(label)
        for roi in ([tracked] if tracked is not None else []) + [None]:
            roi = roi if roi is not None else self.finder.rois([frame])[0]
            if roi is None:
                break
            landmarks, presence = self.mesh.track(frame, roi)
            if presence >= MIN_PRESENCE:
                self._last[label] = roi_from_landmarks(landmarks)
                return self.mesh.blendshapes(landmarks)
        self._last[label] = None
        return None

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        empty = pd.DataFrame(index=pd.Index([], name="frame"))
        return tuple(pd.concat(self._tables[k]) if self._tables[k] else empty  # type: ignore[return-value]
                     for k in ("original", "swapped"))


def default_source(config: AuSettings) -> str:
    """The AU source `auto` stands for: py-feat where it can run (its weights present), else blendshapes
    where it can, else py-feat (whose reason then says what to install)."""
    pyfeat = AU_SOURCES.get("pyfeat", "evaluate.au")
    if pyfeat.unavailable(config) is None:
        return "pyfeat"
    return "blendshapes" if mesh_unavailable() is None else "pyfeat"


@AU_SOURCES.register("auto")
class Auto(AuPlugin):
    """`auto` run as a plugin: drives the source `default_source` picks. (Evaluate's configuration resolves
    `auto` to that name first, so the summary names the real source; this keeps `auto` working without.)"""

    def __init__(self, config: AuSettings, device: str) -> None:
        super().__init__(config, device)
        self.chosen = default_source(config)
        self.inner = AU_SOURCES.get(self.chosen, "evaluate.au")(config, device)
        self.reason, self.streaming = self.inner.reason, self.inner.streaming

    @staticmethod
    def unavailable(config: AuSettings) -> str | None:
        return AU_SOURCES.get(default_source(config), "evaluate.au").unavailable(config)

    def add(self, label: str, frames: list[tuple[int, np.ndarray]]) -> None:
        self.inner.add(label, frames)

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return self.inner.tables()
