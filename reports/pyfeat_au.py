"""AU intensities computed here with py-feat, when py-feat and its weights are available.

py-feat is optional: not installed, or its weights not in the local hub cache, `load_detector`
returns (None, reason) and the report says "AU: not computed: <reason>". The weights are never
fetched: HF_HUB_OFFLINE=1 is set before py-feat is imported, and `model_dir` (a Hugging Face hub
cache folder, `models--py-feat--*/snapshots/...`) is where they must already be.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import pandas as pd

DETECTOR_KWARGS = dict(face_model="retinaface", landmark_model="mobilefacenet", au_model="xgb",
                       emotion_model=None, identity_model=None, gaze_model=None)


def load_detector(model_dir: Path | None = None, device: str = "cpu") -> tuple[Any | None, str | None]:
    """(detector, None) or (None, one-line reason)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    if model_dir is not None:
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            return None, f"py-feat model folder {model_dir} does not exist"
        os.environ["HF_HUB_CACHE"] = str(model_dir)
        os.environ["HUGGINGFACE_HUB_CACHE"] = str(model_dir)
    try:
        import feat  # noqa: F401
    except ImportError as exc:
        return None, f"py-feat is not installed ({exc}); pip install py-feat and put its weights in evaluate.pyfeat_model_dir"
    except Exception as exc:  # a broken install can fail in many ways
        return None, f"py-feat failed to import ({type(exc).__name__}: {_first_line(exc)})"
    try:
        from feat import Detectorv1 as Detector
    except ImportError:
        try:
            from feat import Detector
        except ImportError as exc:
            return None, f"py-feat has no Detector class ({exc})"
    try:
        detector = Detector(device=device, **DETECTOR_KWARGS)
    except TypeError:  # older py-feat without gaze/identity arguments
        try:
            kwargs = {k: v for k, v in DETECTOR_KWARGS.items() if k not in ("gaze_model", "identity_model")}
            detector = Detector(device=device, **kwargs)
        except Exception as exc:
            return None, f"py-feat models could not be loaded ({type(exc).__name__}: {_first_line(exc)})"
    except Exception as exc:
        return None, f"py-feat models could not be loaded offline ({type(exc).__name__}: {_first_line(exc)})"
    return detector, None


def detect_aus(detector: Any, frames: Sequence[tuple[int, np.ndarray]], batch_size: int = 8) -> pd.DataFrame:
    """AU table (index frame, AUxx columns) for RGB frames; one row per frame, largest face."""
    from reports.au import _one_row_per_frame

    rows = []
    with tempfile.TemporaryDirectory(prefix="deid-pyfeat-") as tmp:
        paths = []
        for index, rgb in frames:
            path = Path(tmp) / f"{index:08d}.png"
            cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            paths.append((index, str(path)))
        for index, path in paths:
            if hasattr(detector, "detect"):
                result = detector.detect([path], data_type="image", batch_size=1)
            else:
                result = detector.detect_image([path])
            frame = pd.DataFrame(result).copy()
            frame["frame"] = index
            rows.append(frame)
    if not rows:
        return pd.DataFrame()
    table = pd.concat(rows, ignore_index=True)
    aus = sorted(c for c in table.columns if str(c).startswith("AU") and str(c)[2:].isdigit())
    out = table[aus].astype(float)
    out["frame"] = table["frame"].to_numpy()
    area = table.get("FaceRectWidth", pd.Series(0.0, index=table.index)) * table.get("FaceRectHeight", pd.Series(0.0, index=table.index))
    out["_rank"] = -pd.to_numeric(area, errors="coerce").fillna(0.0).to_numpy()
    return _one_row_per_frame(out, Path("py-feat"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
