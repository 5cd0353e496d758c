"""Expression and pose from dlib's 68 landmarks: always available, whatever AU tool can or cannot run.

Per frame: head pose (yaw, pitch, roll by a global PnP solve with a camera fixed by the frame's size,
models.face_quality.head_pose) and four
expression distances normalised by the inter-ocular distance (eye centre to eye centre), so they do
not depend on face size: mouth opening (inner lips), lip-corner distance, eye aperture (both eyes),
brow height (brow centroid above the line through the eye centres). Original vs swapped: pose mean
absolute error in degrees (angle differences wrapped to [-180, 180]), and PCC / RMSE per expression
measure. These averaged PCCs are shown for continuity; the verdict's expression input, when no AU model
runs, is the calibrated measure of reports/expression.py.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from deid.models.face_quality import head_pose
from deid.reports.au import pcc_rmse, summarize

GEOMETRY = ("mouth_open", "lip_corners", "eye_aperture", "brow_height")
POSE = ("yaw", "pitch", "roll")


def frame_geometry(landmarks: np.ndarray | None, image_size: tuple[int, int] | None = None) -> dict[str, float]:
    """Pose and expression measures of one face; NaN everywhere when landmarks are missing.

    `image_size`: (width, height) of the frame the landmarks are in; it fixes the pose's camera. Without it
    the landmarks are placed in a square twice their extent (a camera that moves with the face: only for
    a lone photo)."""
    lm = np.asarray(landmarks, np.float64) if landmarks is not None else None
    if lm is None or lm.shape != (68, 2) or not np.isfinite(lm).all():
        return {k: float("nan") for k in POSE + GEOMETRY}
    left_eye, right_eye = lm[36:42].mean(0), lm[42:48].mean(0)
    iod = float(np.linalg.norm(right_eye - left_eye))
    if iod < 1e-6:
        return {k: float("nan") for k in POSE + GEOMETRY}
    mouth_open = np.mean([np.linalg.norm(lm[a] - lm[b]) for a, b in ((61, 67), (62, 66), (63, 65))])
    lip_corners = np.linalg.norm(lm[48] - lm[54])
    eye_aperture = np.mean([np.linalg.norm(lm[a] - lm[b]) for a, b in ((37, 41), (38, 40), (43, 47), (44, 46))])
    axis = (right_eye - left_eye) / iod
    normal = np.array([axis[1], -axis[0]])  # points up the face (image y grows downwards)
    brows = np.mean([np.dot(lm[17:22].mean(0) - left_eye, normal), np.dot(lm[22:27].mean(0) - right_eye, normal)])
    if image_size is not None:
        yaw, pitch, roll = head_pose(lm, image_size)
    else:
        lo, hi = lm.min(0), lm.max(0)
        side = float(2.0 * max(hi - lo))
        yaw, pitch, roll = head_pose(lm - (lo + hi) / 2 + side / 2, int(round(side)))
    return {"yaw": yaw, "pitch": pitch, "roll": roll, "mouth_open": float(mouth_open / iod),
            "lip_corners": float(lip_corners / iod), "eye_aperture": float(eye_aperture / iod),
            "brow_height": float(brows / iod)}


def geometry_table(landmarks: list[np.ndarray | None], frames: list[int],
                   image_sizes: Sequence[tuple[int, int] | None] | None = None) -> pd.DataFrame:
    """One row per frame (index `frame`), columns yaw, pitch, roll and the expression measures.

    `image_sizes`: (width, height) of each frame, the pose's fixed camera (see frame_geometry)."""
    sizes = list(image_sizes) if image_sizes is not None else [None] * len(landmarks)
    rows = [frame_geometry(lm, size) for lm, size in zip(landmarks, sizes)]
    return pd.DataFrame(rows, index=pd.Index(list(frames), name="frame"), columns=list(POSE + GEOMETRY))


def geometry_preservation(original: pd.DataFrame, swapped: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Per measure: PCC/RMSE (expression) and MAE (pose, degrees), over frames with a face in both."""
    frames = original.index.intersection(swapped.index)
    a, b = original.loc[frames], swapped.loc[frames]
    rows = []
    for col in GEOMETRY:
        r, rmse, n = pcc_rmse(a[col].to_numpy(), b[col].to_numpy())
        rows.append({"measure": col, "pcc": r, "rmse": rmse, "mae": None, "frames": n})
    maes = {}
    for col in POSE:
        diff = np.abs(_angle_diff(a[col].to_numpy(float), b[col].to_numpy(float)))
        diff = diff[np.isfinite(diff)]
        maes[col] = float(diff.mean()) if len(diff) else None
        rows.append({"measure": col, "pcc": None, "rmse": None, "mae": maes[col], "frames": int(len(diff))})
    table = pd.DataFrame(rows, columns=["measure", "pcc", "rmse", "mae", "frames"])
    expr = summarize(table[table["measure"].isin(GEOMETRY)].rename(columns={"measure": "au"}))
    defined = [v for v in maes.values() if v is not None]
    summary = {"pose_mae": float(np.mean(defined)) if defined else None,
               "pose_mae_yaw": maes["yaw"], "pose_mae_pitch": maes["pitch"], "pose_mae_roll": maes["roll"],
               "geometry_pcc_mean": expr["pcc_mean"], "geometry_pcc_sd": expr["pcc_sd"],
               "geometry_pcc_undefined": expr["pcc_undefined"],
               "geometry_rmse_mean": expr["rmse_mean"], "geometry_rmse_sd": expr["rmse_sd"],
               "frames_paired": int(table["frames"].max()) if len(table) else 0}
    return table, summary


def _angle_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a - b wrapped to [-180, 180): 179 and -179 degrees are 2 apart, not 358."""
    return (a - b + 180.0) % 360.0 - 180.0
