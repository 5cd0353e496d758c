"""`deid doctor`: what this machine can and cannot do for deid, optional parts included, in one table."""
from __future__ import annotations

import importlib
import shutil
import subprocess
from importlib import metadata


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _ffmpeg() -> tuple[bool, str]:
    path = shutil.which("ffmpeg")
    if path is None or shutil.which("ffprobe") is None:
        return False, "not found on PATH: install ffmpeg (Debian/Ubuntu: apt-get install ffmpeg)"
    try:
        first = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        first = path
    return True, first


def _gpu() -> tuple[bool, str]:
    import torch

    if not torch.cuda.is_available():
        return False, f"none (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}): training, convert " \
                      "and evaluate run on the CPU"
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return True, f"{torch.cuda.device_count()} x {names} (torch {torch.__version__}, CUDA {torch.version.cuda})"


def _pyfeat() -> tuple[bool, str]:
    version = _version("py-feat")
    if version is None:
        return False, "not installed: AU intensities not computed (expression scored by landmark geometry); " \
                      "pip install -e '.[pyfeat]'"
    from deid.reports.pyfeat_au import load_detector

    detector, reason = load_detector(None)
    if detector is None:
        return False, f"py-feat {version} installed, models not usable offline: {reason}"
    return True, f"py-feat {version}, models found in the local hub cache"


def _module(name: str, package: str, missing: str) -> tuple[bool, str]:
    try:
        importlib.import_module(name)
    except Exception as exc:  # an optional part: any failure means "not available", with the reason
        return False, f"{missing} ({type(exc).__name__})"
    return True, f"{package} {_version(package) or ''}".strip()


def _chromium() -> tuple[bool, str]:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return True, f"{name} (report screenshots)"
    return False, "not found: only the report screenshot test needs it"


def _expression_models() -> list[tuple[str, bool, str]]:
    """Each shipped model of the evaluation and protection, and whether it can run here (nothing downloads)."""
    from deid.models.mediapipe_face import unavailable as mesh_unavailable
    from deid.models.yunet import WEIGHTS as YUNET

    rows = []
    reason = mesh_unavailable()
    rows.append(("MediaPipe face mesh + blendshapes (AU, --au blendshapes)", reason is None,
                 reason or "shipped in models/weights/, runs offline"))
    from deid.models.tddfa import unavailable as tddfa_unavailable

    reason = tddfa_unavailable()
    rows.append(("3DDFA_V2 3DMM expression and pose (--metric 3dmm)", reason is None,
                 reason or "shipped in models/weights/, runs offline"))
    from deid.models.second_recogniser import load as load_sface

    _, reason = load_sface()
    rows.append(("SFace (evaluate's second recogniser)", reason is None,
                 reason or "shipped in models/weights/, runs offline"))
    rows.append(("YuNet (--search yunet)", YUNET.is_file(), "shipped in models/weights/" if YUNET.is_file()
                 else f"{YUNET} is missing: restore it from the repository"))
    return rows


def checks() -> list[tuple[str, bool, str]]:
    rows = [("ffmpeg", *_ffmpeg()), ("GPU", *_gpu()),
            ("dlib", *_module("dlib", "dlib-bin", "not importable: reinstall with install.sh")),
            ("face_recognition models", *_module("face_recognition_models", "face-recognition-models",
                                                 "missing: reinstall with install.sh")),
            ("onnxruntime (CenterFace)", *_module("onnxruntime", "onnxruntime", "missing: reinstall with install.sh")),
            ("py-feat (AU)", *_pyfeat()),
            *_expression_models(),
            ("Ray (deid batch --executor ray)", *_module("ray", "ray", "not installed: pip install -e '.[ray]'")),
            ("Chromium", *_chromium())]
    return rows


def run_doctor() -> int:
    """Print the table; exit 1 when a required part (ffmpeg, dlib, models, onnxruntime) is missing."""
    rows = checks()
    width = max(len(name) for name, _, _ in rows)
    for name, ok, detail in rows:
        print(f"{name:<{width}}  {'yes' if ok else 'no ':<3}  {detail}")
    required = {"ffmpeg", "dlib", "face_recognition models", "onnxruntime (CenterFace)"}
    return 0 if all(ok for name, ok, _ in rows if name in required) else 1
