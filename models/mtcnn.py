"""MTCNN face detection in PyTorch, running on the weights that the `mtcnn` PyPI package (1.0.0) ships.

Why a port: the package runs on TensorFlow, which we do not want beside torch in the same process, and it
processes a batch by padding every image to the largest one. This module keeps the package's trained
networks (its `assets/weights/*.lz4`, read with joblib as the package does) and its exact cascade
(pyramid, thresholds, box arithmetic, its own flavour of NMS, TF's area resize and crop_and_resize), so
its detections match the package's runner to a fraction of a pixel (tests/test_mtcnn.py checks that
against tests/fixtures/mtcnn_reference.json), while batching frames and running on CPU or CUDA.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import joblib
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# The package's defaults (mtcnn/stages/stage_*.py in 1.0.0); kept so results equal its runner's.
DEFAULT_MIN_FACE_SIZE = 20
DEFAULT_THRESHOLDS = (0.6, 0.7, 0.8)
DEFAULT_SCALE_FACTOR = 0.709
_CELL = 12  # P-Net's window; also the smallest pyramid level the package builds for
_NMS_PNET_SCALE = 0.5  # within one pyramid level
_NMS_PNET_ALL = 0.7  # across levels
_NMS_RNET = 0.7
_NMS_ONET = 0.7  # the package uses intersection-over-minimum here, IoU elsewhere
# Crops per R-Net / O-Net pass and NMS rows per step: bound peak memory (~100 MB) on CPU and GPU.
_RNET_CHUNK = 2048
_ONET_CHUNK = 512
_NMS_CHUNK = 512


@dataclass(frozen=True, eq=False)  # eq=False: == on the ndarray field would be ambiguous
class Detection:
    """One face, in the pixels of the image it was found in."""

    box: tuple[float, float, float, float]  # x, y, w, h; clipped to the image as the package does
    score: float  # O-Net's face probability
    keypoints: np.ndarray  # (5, 2) float32: left_eye, right_eye, nose, mouth_left, mouth_right (package naming)


def default_weights_dir() -> Path:
    """The installed `mtcnn` package's `assets/weights`.

    Found with find_spec rather than an import because `mtcnn/__init__` imports TensorFlow.
    """
    spec = importlib.util.find_spec("mtcnn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("MTCNN weights come from the `mtcnn` package, which is not installed: pip install mtcnn")
    weights = Path(next(iter(spec.submodule_search_locations))) / "assets" / "weights"
    if not (weights / "pnet.lz4").is_file():
        raise FileNotFoundError(f"no pnet.lz4 in {weights}: the `mtcnn` install looks broken; pip install --force-reinstall mtcnn")
    return weights


# --- networks ---------------------------------------------------------------------------------------
# Layers are registered in the order of Keras' get_weights() so _load_keras_weights can walk both lists.
# TF's 'same' max pooling pads only bottom/right with -inf, which is what ceil_mode=True does for these
# kernel/stride pairs. Before each dense layer the package permutes NHWC to NWHC and flattens; from NCHW
# that is permute(0, 3, 2, 1), so the dense kernels load unchanged.


class PNet(nn.Module):
    """Proposal net: fully convolutional, one 12x12 window every 2 px."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 4, 1)
        self.conv4_2 = nn.Conv2d(32, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_1(x), torch.softmax(self.conv4_2(x), dim=1)[:, 1]


class RNet(nn.Module):
    """Refinement net on 24x24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.fc4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.fc5_1 = nn.Linear(128, 4)
        self.fc5_2 = nn.Linear(128, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2)
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).flatten(1)
        x = self.prelu4(self.fc4(x))
        return self.fc5_1(x), torch.softmax(self.fc5_2(x), dim=1)[:, 1]


class ONet(nn.Module):
    """Output net on 48x48 crops: final box, score and the five landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.fc5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.fc6_1 = nn.Linear(256, 4)
        self.fc6_2 = nn.Linear(256, 10)
        self.fc6_3 = nn.Linear(256, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).flatten(1)
        x = self.prelu5(self.fc5(x))
        return self.fc6_1(x), self.fc6_2(x), torch.softmax(self.fc6_3(x), dim=1)[:, 1]


def _load_keras_weights(net: nn.Module, path: Path) -> None:
    """Copy a Keras weight list (the package's joblib file) into `net`, converting TF layouts."""
    arrays = list(joblib.load(path))
    converters = {
        nn.Conv2d: [lambda a: a.transpose(3, 2, 0, 1), lambda a: a],  # kernel HWIO -> OIHW, bias
        nn.Linear: [lambda a: a.T, lambda a: a],  # kernel (in, out) -> (out, in), bias
        nn.PReLU: [lambda a: a.reshape(-1)],  # alpha (1, 1, C) or (C,)
    }
    params = [(p, convert) for layer in net.children()
              for p, convert in zip(layer.parameters(), converters[type(layer)])]
    if len(params) != len(arrays):
        raise ValueError(f"{path}: {len(arrays)} arrays for {len(params)} parameters of {type(net).__name__}")
    with torch.no_grad():
        for (param, convert), array in zip(params, arrays):
            value = torch.from_numpy(np.ascontiguousarray(convert(np.asarray(array, np.float32))))
            if value.shape != param.shape:  # copy_ would broadcast silently
                raise ValueError(f"{path}: array of shape {tuple(value.shape)} for parameter {tuple(param.shape)}")
            param.copy_(value)


# --- box helpers ------------------------------------------------------------------------------------


def _pairwise_overlap(a: torch.Tensor, b: torch.Tensor, use_min: bool) -> torch.Tensor:
    """The package's overlap: areas without the +1, IoU or intersection over the smaller area."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    w = (torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp(min=0)
    h = (torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1])).clamp(min=0)
    inter = w * h
    denom = torch.minimum(area_a[:, None], area_b[None, :]) if use_min else area_a[:, None] + area_b[None, :] - inter
    return inter / denom


def _package_order(scores: torch.Tensor, image_ids: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Candidate order the package's NMS sees: by image, then numpy's reversed argsort of the scores.

    Saturated scores (exactly 1.0) tie often, and which tied proposal comes first decides which one
    survives NMS, moving the final box and landmarks by several pixels. numpy's default argsort is not
    stable (it dispatches to SIMD sorting networks), so no torch sort reproduces its tie order; calling
    it on the same float64 values does. Sorting per image, where the package sorts the whole batch,
    keeps a batch's results identical to one-image calls. Returns the order and each image's end.
    """
    values = scores.double().cpu().numpy()
    ids = image_ids.cpu().numpy()
    if len(ids) == 0:  # no candidate survived in any image of the batch
        return torch.zeros(0, dtype=torch.long, device=scores.device), []
    parts = []
    for image_id in np.unique(ids):
        members = np.flatnonzero(ids == image_id)  # keeps the package's relative order
        parts.append(members[np.argsort(values[members])[::-1]])
    ends = np.cumsum([len(part) for part in parts])
    group_end = np.repeat(ends, [len(part) for part in parts]).tolist()
    return torch.from_numpy(np.concatenate(parts)).to(scores.device), group_end


def _nms(boxes: torch.Tensor, scores: torch.Tensor, image_ids: torch.Tensor, threshold: float,
         use_min: bool = False) -> torch.Tensor:
    """Indices to keep, grouped by image and best score first within each image.

    `boxes` must be in the package's order (image, then raster or stage order) for ties to resolve alike.
    Not greedy NMS (torchvision.ops.nms): the package drops a box when ANY higher-scored box of the same
    image overlaps it above `threshold`, even one that was itself dropped. That removes more proposals
    than greedy NMS, and matching the reference means doing the same. Rows are processed in chunks and,
    since candidates are sorted by image, each chunk only meets the columns of its own images.
    """
    order, group_end = _package_order(scores, image_ids)
    boxes, ids = boxes[order], image_ids[order]
    n = len(order)
    position = torch.arange(n, device=boxes.device)
    suppressed = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    for start in range(0, n, _NMS_CHUNK):
        stop = min(start + _NMS_CHUNK, n)
        end = group_end[stop - 1]
        overlap = _pairwise_overlap(boxes[start:stop], boxes[start:end], use_min) > threshold
        later = position[None, start:end] > position[start:stop, None]
        same_image = ids[None, start:end] == ids[start:stop, None]
        suppressed[start:end] |= (overlap & later & same_image).any(0)
    return order[~suppressed]


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow the short side about the centre (the package does not round)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], 1)


def _refine(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Apply R/O-Net offsets, which are fractions of the +1 width/height."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    return boxes + offsets * torch.stack([w, h, w, h], 1)


def _area_edges(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Where TF's ResizeArea cuts one axis: pixel index and fraction of each of the n_out + 1 edges.

    Output pixel i averages the input span [i*s, (i+1)*s), s = n_in/n_out, weighting the edge pixels by
    their covered fraction (torch's 'area' mode, adaptive pooling, weights whole pixels instead).
    """
    edges = (torch.arange(n_out + 1, dtype=torch.float64, device=device) * (n_in / n_out)).clamp(max=n_in)
    index = edges.floor().long().clamp(max=n_in - 1)  # the last edge, n_in, is the end of pixel n_in - 1
    return index, edges - index


def _area_axis(values: torch.Tensor, cumsum: torch.Tensor, dim: int, index: torch.Tensor,
               fraction: torch.Tensor) -> torch.Tensor:
    """Area-average `values` along `dim` from its running sum (leading zero included).

    The sum up to a fractional edge t is cumsum[floor t] + frac(t) * values[floor t]; each output is the
    difference between its two edges over the span. Cost is independent of the span, so the many tiny
    pyramid levels cost almost nothing, unlike a gather of every covered pixel.
    """
    shape = [1] * values.dim()
    shape[dim] = -1
    upto = cumsum.index_select(dim, index) + values.index_select(dim, index) * fraction.view(shape)
    n_out = len(index) - 1
    span = values.shape[dim] / n_out
    return (upto.narrow(dim, 1, n_out) - upto.narrow(dim, 0, n_out)) / span


def _running_sum(values: torch.Tensor, dim: int) -> torch.Tensor:
    """Cumulative sum along `dim` with a leading zero, so that sum(values[a:b]) = c[b] - c[a]."""
    return F.pad(values.cumsum(dim), [0, 0] * (values.dim() - 1 - dim) + [1, 0])


def _area_pyramid(batch: torch.Tensor, sizes: list[tuple[int, int]],
                  edges: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
                  use_cv2: bool | None = None) -> Iterator[torch.Tensor]:
    """TF's area resize of an NHWC float32 batch to each size, as channels-last NCHW float32.

    Two exact routes (they agree to 1e-7, and with TF to 3e-5): cv2's INTER_AREA on CPU, and running
    sums in torch elsewhere. The torch route is memory-bound, ~10x slower than cv2 on a CPU; a GPU
    does not mind and keeps the frames on the device. Channels-last is the layout mkldnn's and
    cuDNN's convolutions run fastest on.
    """
    if use_cv2 is None:
        use_cv2 = batch.device.type == "cpu"
    if use_cv2:
        frames = batch.numpy()
        for out_h, out_w in sizes:
            levels = [cv2.resize(frame, (out_w, out_h), interpolation=cv2.INTER_AREA) for frame in frames]
            yield torch.from_numpy(levels[0][None] if len(levels) == 1 else np.stack(levels)).permute(0, 3, 1, 2)
        return
    # float64 because the running sums reach thousands, where float32 would lose ~1e-4 per pixel.
    nchw = batch.permute(0, 3, 1, 2).double()
    row_sum = _running_sum(nchw, 2)  # shared by every level
    for out_h, out_w in sizes:
        rows = _area_axis(nchw, row_sum, 2, *edges(nchw.shape[2], out_h))
        resized = _area_axis(rows, _running_sum(rows, 3), 3, *edges(nchw.shape[3], out_w))
        yield resized.float().contiguous(memory_format=torch.channels_last)


# --- detector ---------------------------------------------------------------------------------------


class MTCNN:
    """Three-stage cascade on the package's weights; images of equal size are batched through P-Net."""

    def __init__(self, device: str | torch.device = "cpu", min_face_size: int = DEFAULT_MIN_FACE_SIZE,
                 thresholds: tuple[float, float, float] = DEFAULT_THRESHOLDS,
                 scale_factor: float = DEFAULT_SCALE_FACTOR, weights_dir: Path | None = None) -> None:
        self.device = torch.device(device)
        self.min_face_size = min_face_size
        self.thresholds = thresholds
        self.scale_factor = scale_factor
        weights_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        for net, name in ((self.pnet, "pnet"), (self.rnet, "rnet"), (self.onet, "onet")):
            _load_keras_weights(net, weights_dir / f"{name}.lz4")
            net.to(self.device).eval().requires_grad_(False)
        # Resize edges depend only on (input, output) length; video frames reuse them every call.
        self._edge_cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def scales(self, height: int, width: int) -> list[float]:
        """The package's pyramid (mtcnn.utils.images.build_scale_pyramid), in its float64 arithmetic."""
        count = round(-((np.log(min(height, width) / _CELL) / np.log(self.scale_factor)) + 1))
        return list((_CELL / self.min_face_size) * self.scale_factor ** np.arange(count))

    @torch.inference_mode()
    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """RGB uint8 HxWx3 images -> faces per image, largest first."""
        if len(images) == 0:
            return []
        for image in images:
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"expected RGB uint8 HxWx3 images, got {image.dtype} {image.shape}")

        # All pixels, normalised as the package does, in one flat HWC buffer: R/O-Net crops gather from
        # it by index whatever the image sizes, and each same-size group is a contiguous NHWC batch.
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(image.shape[:2], []).append(i)
        layout = [i for members in groups.values() for i in members]
        sizes = np.array([images[i].shape[:2] for i in range(len(images))], dtype=np.int64)
        offsets = np.zeros(len(images), dtype=np.int64)
        offsets[layout] = np.concatenate([[0], np.cumsum(sizes[layout, 0] * sizes[layout, 1])[:-1]])
        flat = torch.cat([torch.from_numpy(np.ascontiguousarray(images[i])).reshape(-1, 3) for i in layout])
        pixels = flat.to(self.device).float().sub_(127.5).div_(128)
        meta = torch.as_tensor(np.column_stack([offsets, sizes]), device=self.device)  # offset, H, W

        boxes, ids = self._propose(pixels, groups, offsets)
        if len(boxes):
            boxes, ids = self._rnet_stage(pixels, meta, boxes, ids)
        if len(boxes):
            boxes, landmarks, scores, ids = self._onet_stage(pixels, meta, boxes, ids)
            return self._to_detections(boxes, landmarks, scores, ids, sizes)
        return [[] for _ in images]

    def _propose(self, pixels: torch.Tensor, groups: dict[tuple[int, int], list[int]],
                 offsets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """P-Net over the pyramid of every size group: square proposals (x1, y1, x2, y2) and image ids."""
        threshold = self.thresholds[0]
        all_boxes, all_scores, all_ids = [], [], []
        for (height, width), members in groups.items():
            start = int(offsets[members[0]])
            batch = pixels[start:start + len(members) * height * width]
            batch = batch.view(len(members), height, width, 3)
            member_ids = torch.as_tensor(members, device=self.device)
            scales = [s for s in self.scales(height, width) if min(height * s, width * s) >= _CELL]
            # The package sizes each level as int(shape * scale), i.e. truncated. Levels under P-Net's
            # window would give it nothing to do (and make torch raise), so they are skipped.
            sizes = [(int(height * s), int(width * s)) for s in scales]
            for scale, level in zip(scales, _area_pyramid(batch, sizes, self._edges)):
                reg, prob = self.pnet(level)
                b, y, x = torch.nonzero(prob > threshold, as_tuple=True)
                if len(b) == 0:
                    continue
                scores, ids = prob[b, y, x], member_ids[b]
                # The package's window corners: 2*idx + 1 and 2*idx + 12, regressed by 11 px per unit.
                left, top = x.float() * 2, y.float() * 2
                windows = torch.stack([left + 1, top + 1, left + _CELL, top + _CELL], 1)
                boxes = (windows + reg[b, :, y, x] * (_CELL - 1)) / scale
                keep = _nms(boxes, scores, ids, _NMS_PNET_SCALE)
                all_boxes.append(boxes[keep])
                all_scores.append(scores[keep])
                all_ids.append(ids[keep])
        if not all_boxes:
            return torch.empty(0, 4, device=self.device), torch.empty(0, dtype=torch.long, device=self.device)
        boxes, scores, ids = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_ids)
        keep = _nms(boxes, scores, ids, _NMS_PNET_ALL)
        return _square(boxes[keep]), ids[keep]

    def _edges(self, n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (n_in, n_out)
        if key not in self._edge_cache:
            self._edge_cache[key] = _area_edges(n_in, n_out, self.device)
        return self._edge_cache[key]

    def _rnet_stage(self, pixels: torch.Tensor, meta: torch.Tensor, boxes: torch.Tensor,
                    ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        offsets, scores = [], []
        for start in range(0, len(boxes), _RNET_CHUNK):
            chunk = slice(start, start + _RNET_CHUNK)
            offset, score = self.rnet(_crop(pixels, meta, boxes[chunk], ids[chunk], 24))
            offsets.append(offset)
            scores.append(score)
        scores = torch.cat(scores)
        boxes = _refine(boxes, torch.cat(offsets))
        passed = scores > self.thresholds[1]
        boxes, scores, ids = boxes[passed], scores[passed], ids[passed]
        keep = _nms(boxes, scores, ids, _NMS_RNET)
        return _square(boxes[keep]), ids[keep]

    def _onet_stage(self, pixels: torch.Tensor, meta: torch.Tensor, boxes: torch.Tensor,
                    ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        offsets, marks, scores = [], [], []
        for start in range(0, len(boxes), _ONET_CHUNK):
            chunk = slice(start, start + _ONET_CHUNK)
            offset, mark, score = self.onet(_crop(pixels, meta, boxes[chunk], ids[chunk], 48))
            offsets.append(offset)
            marks.append(mark)
            scores.append(score)
        scores, marks = torch.cat(scores), torch.cat(marks)
        # Landmarks are fractions of the box O-Net saw (before its own refinement), less one pixel.
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        landmarks = torch.stack([w * marks[:, :5] + boxes[:, :1] - 1, h * marks[:, 5:] + boxes[:, 1:2] - 1], 2)
        boxes = _refine(boxes, torch.cat(offsets))
        passed = scores > self.thresholds[2]
        boxes, landmarks, scores, ids = boxes[passed], landmarks[passed], scores[passed], ids[passed]
        keep = _nms(boxes, scores, ids, _NMS_ONET, use_min=True)
        return boxes[keep], landmarks[keep], scores[keep], ids[keep]

    @staticmethod
    def _to_detections(boxes: torch.Tensor, landmarks: torch.Tensor, scores: torch.Tensor, ids: torch.Tensor,
                       sizes: np.ndarray) -> list[list[Detection]]:
        boxes_np = boxes.double().cpu().numpy()
        landmarks_np = landmarks.cpu().numpy().astype(np.float32)
        scores_np, ids_np = scores.double().cpu().numpy(), ids.cpu().numpy()
        # The package clips boxes (not landmarks) to [0, size - 1] before reporting x, y, w, h.
        limits = (sizes[ids_np][:, [1, 0, 1, 0]] - 1).astype(np.float64)
        boxes_np = np.clip(boxes_np, 0, limits)
        results: list[list[Detection]] = [[] for _ in range(len(sizes))]
        for (x1, y1, x2, y2), mark, score, image_id in zip(boxes_np, landmarks_np, scores_np, ids_np):
            results[image_id].append(Detection((float(x1), float(y1), float(x2 - x1), float(y2 - y1)),
                                               float(score), mark))
        return [sorted(faces, key=lambda d: -d.box[2] * d.box[3]) for faces in results]


def _crop(pixels: torch.Tensor, meta: torch.Tensor, boxes: torch.Tensor, ids: torch.Tensor, size: int) -> torch.Tensor:
    """TF's crop_and_resize (bilinear, 0 outside the image) of each box, batched as index gathers.

    The package hands TF boxes divided by H and W, and TF maps them back with (H - 1) and (W - 1); that
    slight shrink towards the origin is reproduced. Sample rows/columns outside the image read as 0,
    the normalised value of mid-grey, whole (TF does not blend them with the border).
    """
    offset, height, width = meta[ids, 0], meta[ids, 1], meta[ids, 2]
    steps = torch.arange(size, device=pixels.device, dtype=torch.float32)

    def axis(lo: torch.Tensor, hi: torch.Tensor,
             extent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per box and sample: the two neighbouring pixel indices, the weight of the second, in-image."""
        span = (extent - 1).float()
        lo_n, hi_n = lo / extent, hi / extent
        pos = (lo_n * span)[:, None] + steps[None, :] * ((hi_n - lo_n) * span / (size - 1))[:, None]
        inside = (pos >= 0) & (pos <= span[:, None])
        floor = pos.floor()
        frac = pos - floor
        limit = (extent - 1)[:, None]
        first = torch.minimum(floor.long().clamp(min=0), limit)
        second = torch.minimum(pos.ceil().long().clamp(min=0), limit)
        return first, second, frac, inside

    y0, y1, fy, in_y = axis(boxes[:, 1], boxes[:, 3], height)
    x0, x1, fx, in_x = axis(boxes[:, 0], boxes[:, 2], width)
    base = offset[:, None, None]
    row0, row1 = base + y0[:, :, None] * width[:, None, None], base + y1[:, :, None] * width[:, None, None]
    top_left, top_right = pixels[row0 + x0[:, None, :]], pixels[row0 + x1[:, None, :]]
    bottom_left, bottom_right = pixels[row1 + x0[:, None, :]], pixels[row1 + x1[:, None, :]]
    fx = fx[:, None, :, None]
    top = top_left + (top_right - top_left) * fx
    bottom = bottom_left + (bottom_right - bottom_left) * fx
    patch = top + (bottom - top) * fy[:, :, None, None]
    patch = patch * (in_y[:, :, None] & in_x[:, None, :])[..., None]
    return patch.permute(0, 3, 1, 2)  # NHWC memory, i.e. channels-last: the fast layout for mkldnn
