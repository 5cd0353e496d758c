"""AU values computed here with py-feat (2.1.x), when py-feat and its weights are available.

py-feat is optional: not installed, or its weights not in the model folder, `load_detector` returns
(None, reason) and the report says "AU: not computed: <reason>". The weights are never fetched: the Hugging
Face hub is put offline (HF_HUB_OFFLINE) before py-feat looks for them.

Where py-feat looks: every model file goes through `hf_hub_download(repo_id, filename,
cache_dir=feat.utils.io.get_resource_path())`, i.e. a hub cache inside py-feat's own package folder
(`.../site-packages/feat/resources/models--py-feat--*/snapshots/<rev>/<file>`, `refs/main`); the
HF_HUB_CACHE variable is not consulted. `model_dir` (evaluate.pyfeat_model_dir) is a hub-cache folder of the
same layout; while the detector is built, py-feat's resource folder is pointed at it. Files needed for the
configuration below (`REQUIRED_FILES`); on a machine with network, for example:
    hf download py-feat/retinaface_r34 model.safetensors --cache-dir DIR
    hf download py-feat/mobilefacenet mobilefacenet_model_best.pth.tar --cache-dir DIR
    hf download py-feat/xgb_au xgb_au_classifier_v2.skops --cache-dir DIR
    hf download py-feat/pose_mlp_v2 pose_mlp_v2.safetensors pose_mlp_v2.json --cache-dir DIR   # optional: pose
then copy DIR over. (A copy of py-feat's resources folder after one online run works too.) The .skops file is
loaded with every type it names trusted (py-feat's choice): only use weights from a source you trust.

What the values are: with au_model="xgb", py-feat's AU columns (AU01..AU43, 20 of them) are per-AU
probabilities of the AU being present (0..1), not OpenFace-style 0..5 intensities.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

# Detectorv1 in py-feat 2.1: these are all its model arguments (there is no facepose_model argument; with
# retinaface, head pose comes from an optional landmarks-to-pose MLP).
DETECTOR_KWARGS = dict(face_model="retinaface", landmark_model="mobilefacenet", au_model="xgb",
                       emotion_model=None, identity_model=None, gaze_model=None)
# hub repo -> file names Detectorv1 tries, in order (the second is py-feat's fallback name).
REQUIRED_FILES = {
    "py-feat/retinaface_r34": ("model.safetensors", "retinaface_r34.safetensors"),
    "py-feat/mobilefacenet": ("mobilefacenet_model_best.pth.tar",),
    "py-feat/xgb_au": ("xgb_au_classifier_v2.skops", "xgb_au_classifier.skops"),
}
_RESOURCE_LOCK = threading.Lock()


def unavailable(model_dir: Path | None = None) -> str | None:
    """Why py-feat cannot compute AU here (not installed, weights missing), in one line; None when it may.

    Cheap (no import of py-feat): the CLI asks it before a run, so a user learns at the start, not at the end."""
    if model_dir is not None:
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            return f"py-feat model folder {model_dir} does not exist"
    spec = importlib.util.find_spec("feat")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        return ("py-feat is not installed; install.sh installs it (by hand: pip install -e \".[pyfeat]\" "
                "&& pip install --no-deps py-feat==2.1.5) and put its weights in evaluate.pyfeat_model_dir")
    folder = model_dir if model_dir is not None else Path(list(spec.submodule_search_locations)[0]) / "resources"
    try:
        missing = missing_files(folder)
    except ImportError as exc:
        return f"py-feat's dependency huggingface_hub is missing ({exc})"
    if missing:
        return (f"py-feat weights not found in {folder} (hub-cache layout models--py-feat--NAME/snapshots/...): "
                f"missing {', '.join(missing)}")
    return None


def load_detector(model_dir: Path | None = None, device: str = "cpu") -> tuple[Any | None, str | None]:
    """(detector, None) or (None, one-line reason). `model_dir`: a hub-cache folder holding the weights
    (None: py-feat's own resource folder); `device`: "cpu", "cuda", "cuda:1", "mps".
    The weight files are looked for before py-feat is imported (that alone takes seconds)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    reason = unavailable(model_dir)
    if reason is not None:
        return None, reason
    try:
        import feat
        import huggingface_hub.constants
        import torch
        from feat.detector import Detectorv1
    except ImportError as exc:
        return None, f"py-feat is not usable ({exc}); reports/pyfeat_au.py is written for py-feat 2.1.5"
    except Exception as exc:  # a broken install can fail in many ways
        return None, f"py-feat failed to import ({type(exc).__name__}: {_first_line(exc)})"
    # The variable is read when huggingface_hub is first imported, which may have happened before us.
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        torch_device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        return None, f"py-feat: device {device!r} is not a torch device ({_first_line(exc)})"
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        return None, f"py-feat: device {device!r} asked for, but torch sees no CUDA device"
    try:
        with _resources_at(model_dir), warnings.catch_warnings(), _grad_mode_kept():
            warnings.simplefilter("ignore")  # retinaface "no 6DoF pose" notice, sklearn/xgboost version notes
            detector = Detectorv1(device=torch_device, **DETECTOR_KWARGS)
            _preload_pose(detector)
    except Exception as exc:
        folder = model_dir if model_dir is not None else Path(feat.__file__).parent / "resources"
        return None, (f"py-feat {getattr(feat, '__version__', '?')} models could not be loaded offline from {folder} "
                      f"({type(exc).__name__}: {_first_line(exc)})")
    return detector, None


def missing_files(folder: Path) -> list[str]:
    """`repo/file` for each model REQUIRED_FILES lists that has none of its file names in the hub cache `folder`."""
    from huggingface_hub import try_to_load_from_cache

    missing = []
    for repo_id, names in REQUIRED_FILES.items():
        found = [n for n in names if isinstance(try_to_load_from_cache(repo_id, n, cache_dir=str(folder)), str)]
        if not found:
            missing.append(f"{repo_id}/{names[0]}")
    return missing


@contextlib.contextmanager
def _grad_mode_kept() -> Iterator[None]:
    """Building py-feat's Detector switches autograd off for the whole process (torch.set_grad_enabled(False)
    somewhere inside); training in the same process would then fail. Put the caller's mode back."""
    import torch

    enabled = torch.is_grad_enabled()
    try:
        yield
    finally:
        torch.set_grad_enabled(enabled)


@contextlib.contextmanager
def _resources_at(model_dir: Path | None) -> Iterator[None]:
    """Point py-feat's resource folder (its hub cache_dir) at `model_dir` while the models are loaded."""
    if model_dir is None:
        yield
        return
    import feat.detector
    import feat.utils.io

    def resource_path() -> str:
        return str(model_dir)

    with _RESOURCE_LOCK:
        saved = feat.utils.io.get_resource_path, feat.detector.get_resource_path
        feat.utils.io.get_resource_path = feat.detector.get_resource_path = resource_path
        try:
            yield
        finally:
            feat.utils.io.get_resource_path, feat.detector.get_resource_path = saved


def _preload_pose(detector: Any) -> None:
    """py-feat loads its (optional) pose MLP lazily at the first detection and caches it per device; load it
    now, while the resource folder points at model_dir. Absent, pose stays NaN (AUs do not use it)."""
    import torch
    try:
        from feat.utils.face_pose_mlp import pose_from_landmarks_mlp
    except ImportError:
        return
    device = torch.zeros(1, device=detector.device).device  # "cuda:0", as py-feat's tensors will say, not "cuda"
    probe = torch.rand(1, 68, 2, device=device)
    with contextlib.suppress(Exception):
        pose_from_landmarks_mlp(probe)


def detect_aus(detector: Any, frames: Sequence[tuple[int, np.ndarray]], batch_size: int = 8) -> pd.DataFrame:
    """AU table for RGB uint8 frames: index `frame` (the given indices, sorted), AUxx float columns, one row per
    given frame (its largest face; a NaN row where no face was found). Frames go to py-feat as uint8 tensors,
    `batch_size` at a time (a batch never mixes frame sizes), so at most one batch of frames is copied at once.
    Calling it on successive chunks of a video and concatenating the tables gives the same table as one call."""
    import torch

    from deid.reports.au import _one_row_per_frame

    frames = list(frames)
    if not frames:
        return pd.DataFrame(columns=_au_columns(), index=pd.Index([], name="frame", dtype="int64"), dtype=float)
    parts = []
    for indices, stack in _batches(frames, max(1, int(batch_size))):
        tensor = torch.from_numpy(stack).permute(0, 3, 1, 2)  # N,H,W,3 RGB -> N,3,H,W, what py-feat's readers give
        # detect() draws a tqdm bar even with progress_bar=False (a first pass over its loader): keep it off our
        # output, with py-feat's and sklearn's notices.
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings(), _grad_mode_kept():
            warnings.simplefilter("ignore")
            result = detector.detect(tensor, data_type="tensor", batch_size=len(indices), progress_bar=False)
        result = pd.DataFrame(result)
        aus = sorted(c for c in result.columns if str(c).startswith("AU") and str(c)[2:].isdigit())
        part = result[aus].apply(pd.to_numeric, errors="coerce").astype(float)
        # py-feat numbers the frames of one detect() call 0..n-1, one row per face (one NaN row if none).
        position = pd.to_numeric(result["frame"], errors="coerce").to_numpy().astype(int)
        part["frame"] = np.asarray(indices)[position]
        area = _column(result, "FaceRectWidth") * _column(result, "FaceRectHeight")
        part["_rank"] = -np.nan_to_num(area, nan=0.0)
        parts.append(part)
    table = _one_row_per_frame(pd.concat(parts, ignore_index=True), Path("py-feat"))
    wanted = pd.Index(sorted({int(i) for i, _ in frames}), name="frame")
    return table.reindex(wanted).astype(float)


def _column(table: pd.DataFrame, name: str) -> np.ndarray:
    if name not in table.columns:
        return np.zeros(len(table))
    return pd.to_numeric(table[name], errors="coerce").to_numpy(float)


def _batches(frames: list[tuple[int, np.ndarray]], size: int) -> Iterator[tuple[list[int], np.ndarray]]:
    """Consecutive frames in stacks of at most `size`, a new stack wherever the frame size changes."""
    run: list[tuple[int, np.ndarray]] = []
    for index, rgb in frames:
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"frame {index}: expected an RGB image HxWx3, got shape {rgb.shape}")
        if run and (rgb.shape != run[0][1].shape or len(run) == size):
            yield [i for i, _ in run], np.stack([f for _, f in run])
            run = []
        run.append((index, rgb.astype(np.uint8, copy=False)))
    if run:
        yield [i for i, _ in run], np.stack([f for _, f in run])


def _au_columns() -> list[str]:
    try:
        from feat.pretrained import AU_LANDMARK_MAP
        return list(AU_LANDMARK_MAP["Feat"])
    except Exception:
        return []


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
