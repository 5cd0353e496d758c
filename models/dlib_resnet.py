"""dlib's 128-d face recognition ResNet in PyTorch, on the weights face_recognition_models ships.

Why a port: dlib's descriptor (the one behind `face_recognition.face_encodings` and our
`models.landmarks.IdentityModel`) is a black box to autograd and runs on the CPU only (~10 faces/s).
This module reads dlib's own serialized network (`dlib_face_recognition_resnet_model_v1.dat`) and
rebuilds it as a `torch.nn.Module`, and it re-implements dlib's face-chip extraction
(`get_face_chip_details(shape, 150, 0.25)` + `extract_image_chips`, pyramid and truncating bilinear
sampling included), so `embed()` gives dlib's descriptor to float rounding (tests/test_dlib_resnet.py
checks that against tests/fixtures/dlib_face_descriptors.npz and against dlib live) while batching,
running on CUDA, and letting gradients flow from the descriptor back to the image pixels.

File format (dlib 19.x/20.x serialization, read from dlib/serialize.h, dlib/dnn/core.h, layers.h):
- integers: a control byte (low 4 bits = byte count, 0x80 = negative) then little-endian bytes;
- strings: an integer length then the bytes; bools: the ASCII byte '1' or '0';
- scalar floats: float_details, i.e. an integer mantissa then an integer exponent (value = m * 2**e);
- tensors: version 2, then num_samples, k, nr, nc as integers, then raw little-endian float32 data
  (not float_details); alias_tensor: version 1 and four integers (a view into `params`).
- a network serializes outside-in: add_loss_layer writes its version and loss details, then each
  add_layer / tag / skip writes its version and recurses into its subnetwork *before* writing its own
  layer details. So the file holds all wrapper versions first (outermost first), then the input layer,
  then every computational layer's details in input-to-output order. Tags and skips write nothing
  after their version, so the topology (which tag an add_prev adds) is not in the file: it is the
  `anet_type` of dlib/examples/dnn_face_recognition_ex.cpp, which `DlibFaceNet` rebuilds and checks
  the parsed layer sequence against.
- after its details each add_layer writes training state: three bools and the tensors x_grad,
  cached_output and params_grad (the layer on the input: grad_final, then from version 3 an integer).
  The reader assumes add_layer version 2, which is what this file holds: the parse ends exactly at EOF.
"""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deid.models.alignment import MEAN_FACE_X, MEAN_FACE_Y

CHIP_SIZE = 150  # input_rgb_image_sized<150>
CHIP_PADDING = 0.25  # compute_face_descriptor's default padding

# --- reading dlib's serialization ---------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def int(self) -> int:
        control = self.data[self.pos]
        size = control & 0x0F
        if size == 0 or size > 8:
            raise ValueError(f"bad integer control byte {control:#x} at offset {self.pos}")
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if control & 0x80 else value

    def str(self) -> str:
        n = self.int()
        text = self.data[self.pos:self.pos + n].decode("ascii")
        self.pos += n
        return text

    def bool(self) -> bool:
        ch = self.data[self.pos:self.pos + 1]
        if ch not in (b"0", b"1"):
            raise ValueError(f"bad bool {ch!r} at offset {self.pos}")
        self.pos += 1
        return ch == b"1"

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent >= 32000:  # float_details' is_inf / is_ninf / is_nan markers
            return {32000: math.inf, 32001: -math.inf}.get(exponent, math.nan)
        return math.ldexp(mantissa, exponent)

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise ValueError(f"tensor version {version} at offset {self.pos} (only 2 is known)")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        values = np.frombuffer(self.data, "<f4", count, self.pos).reshape(shape)
        self.pos += 4 * count
        return values

    def alias(self) -> tuple[int, ...]:
        if self.int() != 1:
            raise ValueError(f"alias_tensor version at offset {self.pos}")
        return tuple(self.int() for _ in range(4))


@dataclass
class Layer:
    """One computational layer as the file describes it (tags and skips are not in the file)."""

    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, fc
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def _con(r: _Reader, version: str) -> Layer:
    params = r.tensor()
    num_filters, nr, nc = r.int(), r.int(), r.int()
    stride = (r.int(), r.int())
    padding = (r.int(), r.int())
    filters = r.alias()
    r.alias()  # biases: the num_filters values after the filters in params
    for _ in range(4):  # learning-rate and weight-decay multipliers: training only
        r.float()
    use_bias = r.bool() if version in ("con_5", "con_6") else True
    if version == "con_6":
        r.bool()  # use_relu: a fused relu, only set by dlib's own layer fusion
    flat = params.reshape(-1)
    n_w = int(np.prod(filters))
    weight = flat[:n_w].reshape(filters)
    if weight.shape[0] != num_filters or weight.shape[2:] != (nr, nc):
        raise ValueError(f"con filters {filters} disagree with num_filters={num_filters}, {nr}x{nc}")
    bias = flat[n_w:n_w + num_filters] if use_bias else np.zeros(num_filters, np.float32)
    return Layer("con", {"weight": weight, "bias": bias}, {"stride": stride, "padding": padding})


def _affine(r: _Reader, version: str) -> Layer:
    params = r.tensor().reshape(-1)
    gamma, beta = r.alias(), r.alias()
    r.int()  # mode: CONV_MODE (per channel) or FC_MODE; every affine here follows a con
    if version == "affine_2":
        r.bool()  # disabled
    n = int(np.prod(gamma))
    if int(np.prod(beta)) != n or params.size < 2 * n:
        raise ValueError(f"affine gamma {gamma} / beta {beta} disagree with {params.size} params")
    return Layer("affine", {"gamma": params[:n], "beta": params[n:2 * n]})


def _pool(kind: str):
    def read(r: _Reader, version: str) -> Layer:
        size = (r.int(), r.int())
        stride = (r.int(), r.int())
        padding = (r.int(), r.int())
        return Layer(kind, config={"size": size, "stride": stride, "padding": padding})
    return read


def _relu(r: _Reader, version: str) -> Layer:
    if version == "relu_2":
        r.bool()  # disabled
    return Layer("relu")


def _fc(r: _Reader, version: str) -> Layer:
    num_outputs, num_inputs = r.int(), r.int()
    params = r.tensor().reshape(-1)
    r.alias(), r.alias()  # weights, biases: views whose layout num_inputs / num_outputs already fix
    bias_mode = r.int()  # 0 = FC_HAS_BIAS, 1 = FC_NO_BIAS
    for _ in range(4):  # learning-rate and weight-decay multipliers
        r.float()
    use_bias = r.bool() if version == "fc_3" else True
    # dlib computes output = input * W with W stored row-major as (num_inputs, num_outputs).
    weight = params[:num_inputs * num_outputs].reshape(num_inputs, num_outputs)
    has_bias = bias_mode == 0 and use_bias
    bias = params[num_inputs * num_outputs:][:num_outputs] if has_bias else np.zeros(num_outputs, np.float32)
    return Layer("fc", {"weight": weight, "bias": bias})


_LAYER_READERS = {
    "con_4": _con, "con_5": _con, "con_6": _con,
    "affine_": _affine, "affine_2": _affine,
    "relu_": _relu, "relu_2": _relu,
    "max_pool_2": _pool("max_pool"), "avg_pool_2": _pool("avg_pool"),
    "add_prev_": lambda r, v: Layer("add_prev"),
    "fc_2": _fc, "fc_3": _fc,
}
_INPUT_MARK = b"\x01\x15input_rgb_image_sized"  # the string "input_rgb_image_sized" as dlib writes it


@dataclass
class DlibNetFile:
    """The parsed contents of a dlib metric-learning network file."""

    input_mean: tuple[float, float, float]  # input_rgb_image_sized's avg_red, avg_green, avg_blue
    input_size: tuple[int, int]
    layers: list[Layer]
    wrappers: int  # add_layer / tag / skip versions before the input layer (a structural checksum)


def read_dlib_net(path: str | Path) -> DlibNetFile:
    """Parse a dlib `loss_metric` network file (such as dlib_face_recognition_resnet_model_v1.dat)."""
    r = _Reader(Path(path).read_bytes())
    if r.int() != 1:
        raise ValueError("not a dlib add_loss_layer (version 1)")
    loss = r.str()
    if loss == "loss_metric_2":
        r.float(), r.float()  # margin and distance threshold: training only
    elif loss != "loss_metric_":
        raise ValueError(f"expected a loss_metric network, found {loss!r}")
    # Wrapper versions, outermost first, until the input add_layer's version, which directly
    # precedes the input layer's name.
    wrappers = 0
    while True:
        version = r.int()
        wrappers += 1
        if r.data.startswith(_INPUT_MARK, r.pos):
            input_version = version
            break
        if r.pos > 4096:
            raise ValueError("no input_rgb_image_sized layer found")
    r.str()
    mean = (r.float(), r.float(), r.float())
    size = (r.int(), r.int())
    layers: list[Layer] = []
    while r.pos < len(r.data):
        name = r.str()
        if name not in _LAYER_READERS:
            raise ValueError(f"unsupported dlib layer {name!r} at offset {r.pos}")
        layers.append(_LAYER_READERS[name](r, name))
        # add_layer's training state (empty here): setup/stale/disabled flags, x_grad, cached_output,
        # then params_grad (version 2) or, for the layer on the input, grad_final and from version 3
        # a sample expansion factor.
        r.bool(), r.bool(), r.bool()
        r.tensor(), r.tensor(), r.tensor()
        if len(layers) == 1 and input_version >= 3:
            r.int()
    return DlibNetFile(mean, size, layers, wrappers)


# --- the network ----------------------------------------------------------------------------------------


def _padded_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the output takes the larger of each dimension and each input counts as zero where
    it has no value. The down-sampling blocks rely on it twice: the shortcut has half the channels of the
    residual branch, and from 8x8 the branch gives 3x3 (3x3 conv, stride 2, no padding) but the shortcut
    4x4 (2x2 average pooling), so the output keeps a 4x4 grid whose last row and column come from the
    shortcut alone (and from 4x4: 1x1 vs 2x2)."""
    shape = [max(x, y) for x, y in zip(a.shape, b.shape)]

    def pad(t: torch.Tensor) -> torch.Tensor:
        if list(t.shape) == shape:
            return t
        return F.pad(t, (0, shape[3] - t.shape[3], 0, shape[2] - t.shape[2], 0, shape[1] - t.shape[1]))
    return pad(a) + pad(b)


def _conv(layer: Layer, affine: Layer) -> nn.Conv2d:
    """A con followed by its affine (batch norm frozen to scale and shift), folded into one convolution:
    fewer passes over the activations; the rounding differs from dlib's two steps by ~1e-7 relative."""
    weight, bias = torch.from_numpy(layer.arrays["weight"].copy()), torch.from_numpy(layer.arrays["bias"].copy())
    gamma, beta = torch.from_numpy(affine.arrays["gamma"].copy()), torch.from_numpy(affine.arrays["beta"].copy())
    out_ch, in_ch, kh, kw = weight.shape
    conv = nn.Conv2d(in_ch, out_ch, (kh, kw), layer.config["stride"], layer.config["padding"])
    with torch.no_grad():
        conv.weight.copy_(weight * gamma[:, None, None, None])
        conv.bias.copy_(bias * gamma + beta)
    return conv


class _Residual(nn.Module):
    """dlib's `ares` / `ares_down`: relu(block(x) + shortcut(x)), block = con-affine-relu-con-affine;
    the down variant strides the first con by 2 and average-pools the shortcut 2x2."""

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d, down: bool) -> None:
        super().__init__()
        self.conv1, self.conv2, self.down = conv1, conv2, down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_padded_add(y, shortcut))


class DlibFaceNet(nn.Module):
    """dlib's face recognition ResNet (`anet_type` of dnn_face_recognition_ex.cpp).

    Input: N x 3 x 150 x 150 float RGB in 0..255 (a face chip as `face_chips` makes it).
    Output: N x 128 descriptors; Euclidean distance < 0.6 means the same person (dlib's convention).
    On CUDA, cuDNN's default TF32 convolutions move descriptors ~4e-4 from dlib's; `embed` turns TF32
    off for its call, a training loop may well keep it.
    """

    def __init__(self, net: DlibNetFile) -> None:
        super().__init__()
        layers = net.layers
        kinds = [layer.kind for layer in layers]
        if kinds[:4] != ["con", "affine", "relu", "max_pool"] or kinds[-2:] != ["avg_pool", "fc"]:
            raise ValueError(f"not dlib's face ResNet layout: starts {kinds[:4]}, ends {kinds[-2:]}")
        self.register_buffer("mean", torch.tensor(net.input_mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.stem = _conv(layers[0], layers[1])
        pool = layers[3].config
        self.pool = nn.MaxPool2d(pool["size"], pool["stride"], pool["padding"])
        blocks = []
        i, end = 4, len(layers) - 2
        plain = ["con", "affine", "relu", "con", "affine", "add_prev", "relu"]
        down = ["con", "affine", "relu", "con", "affine", "avg_pool", "add_prev", "relu"]
        while i < end:
            if kinds[i:i + len(plain)] == plain:
                blocks.append(_Residual(_conv(layers[i], layers[i + 1]), _conv(layers[i + 3], layers[i + 4]), False))
                i += len(plain)
            elif kinds[i:i + len(down)] == down and layers[i + 5].config == {"size": (2, 2), "stride": (2, 2),
                                                                              "padding": (0, 0)}:
                blocks.append(_Residual(_conv(layers[i], layers[i + 1]), _conv(layers[i + 3], layers[i + 4]), True))
                i += len(down)
            else:
                raise ValueError(f"unexpected layer sequence at layer {i}: {kinds[i:i + 8]}")
        if layers[-2].config["size"] != (0, 0):  # avg_pool_everything is avg_pool<0,0,0,0>
            raise ValueError("expected avg_pool_everything before the fc layer")
        self.blocks = nn.Sequential(*blocks)
        weight = torch.from_numpy(layers[-1].arrays["weight"].copy())
        self.fc = nn.Linear(weight.shape[0], weight.shape[1], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(weight.T)
        if np.any(layers[-1].arrays["bias"]):
            raise ValueError("expected fc_no_bias")

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        # input_rgb_image_sized::to_tensor: (pixel - channel mean) / 256
        x = (chips - self.mean) / 256.0
        x = self.pool(F.relu(self.stem(x)))
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))


def default_model_path() -> Path:
    """dlib_face_recognition_resnet_model_v1.dat as installed by face_recognition_models."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # face_recognition_models imports pkg_resources, which warns
        import face_recognition_models
    return Path(face_recognition_models.face_recognition_model_location())


def load_dlib_face_net(path: str | Path | None = None, device: str | torch.device = "cpu") -> DlibFaceNet:
    """The network of `path` (default: face_recognition_models' file), in eval mode on `device`."""
    net = DlibFaceNet(read_dlib_net(path or default_model_path()))
    return net.eval().to(device)


# --- face chips --------------------------------------------------------------------------------------------
# A re-implementation of get_face_chip_details + extract_image_chips (dlib/image_transforms/interpolation.h,
# dlib 19.x-20.0), for one face per call, as face_recognition and IdentityModel call compute_face_descriptor.
# (Given several faces at once, dlib builds one pyramid on the union of their regions; its pixel grid then
# starts elsewhere and a chip can differ slightly from the one-face call.) The geometry is float64 numpy
# with dlib's formulas in dlib's order; the pixels are torch, so that gradients reach the image. Measured
# on the fixture's faces, the chips come out bit-identical to dlib.get_face_chip.

# 5-point template (dlib's shape_predictor_5_face_landmarks order), in units of the unpadded chip.
_TEMPLATE_5 = np.array([(0.8595674595992, 0.2134981538014), (0.6460604764104, 0.2289674387677),
                        (0.1205750620789, 0.2137274526848), (0.3340850613712, 0.2290642403242),
                        (0.4901123135679, 0.6277975316475)])
# Mean face shape of points 17..67 of the iBUG 68-point layout: dlib's, the one extract aligns with too.
_MEAN_X_17_67, _MEAN_Y_17_67 = MEAN_FACE_X, MEAN_FACE_Y
# dlib aligns on 68-point indices 27..54 and 60..64: eyebrows (17..26) and the lower lip are left out.
_USED_68 = np.array([i for i in range(17, 68) if not (17 <= i <= 26 or 55 <= i <= 59 or 65 <= i <= 67)])


def _template(num_parts: int, size: int, padding: float) -> np.ndarray:
    if num_parts == 5:
        points = _TEMPLATE_5
    elif num_parts == 68:
        points = np.stack([_MEAN_X_17_67[_USED_68 - 17], _MEAN_Y_17_67[_USED_68 - 17]], 1)
    else:
        raise ValueError(f"dlib's face chips need 5 or 68 landmarks, got {num_parts}")
    return (padding + points) / (2 * padding + 1) * size


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """find_similarity_transform (Umeyama, as dlib writes it): 2x2 matrix and translation mapping src to dst."""
    mean_src, mean_dst = src.mean(0), dst.mean(0)
    sigma_src = ((src - mean_src) ** 2).sum(1).mean()
    cov = (dst - mean_dst).T @ (src - mean_src) / len(src)
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    if np.linalg.det(cov) < 0 or (np.linalg.det(cov) == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        s[1, 1] = -1  # numpy's singular values are sorted descending, so the smaller one is d[1]
    r = u @ s @ vt
    c = np.trace(np.diag(d) @ s) / sigma_src if sigma_src != 0 else 1.0
    return c * r, mean_dst - c * r @ mean_src


@dataclass(frozen=True)
class ChipPlan:
    """Where and how one face chip is sampled: the crop of the image dlib's pyramid is built on, how many
    times that crop is halved, and the (x, y) sample position of every chip pixel in the halved crop."""

    box: tuple[int, int, int, int]  # left, top, right, bottom (inclusive), clipped to the image
    levels: int  # pyramid_down<2> applications on the crop (0: sample the crop itself)
    xy: np.ndarray  # (size, size, 2) float64


def _rect_down(rect: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    # pyramid_down<2>::point_down(p) = p/2 - (1.25, 0.75)
    left, top, right, bottom = rect
    return left / 2.0 - 1.25, top / 2.0 - 0.75, right / 2.0 - 1.25, bottom / 2.0 - 0.75


def _area(rect: tuple[float, float, float, float]) -> float:
    left, top, right, bottom = rect  # drectangle: width = right - left + 1
    if top > bottom or left > right:
        return 0.0
    return (right - left + 1) * (bottom - top + 1)


def _rotate(center: np.ndarray, p: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    q = p - center
    return np.array([c * q[0] - s * q[1], s * q[0] + c * q[1]]) + center


def _corners(rect: tuple[float, float, float, float], angle: float) -> np.ndarray:
    """tl, tr, bl, br of a drectangle rotated about its centre."""
    left, top, right, bottom = rect
    center = np.array([left + right, top + bottom]) / 2.0
    return np.stack([_rotate(center, np.array(p, float), angle)
                     for p in ((left, top), (right, top), (left, bottom), (right, bottom))])


def plan_chip(landmarks: np.ndarray, image_shape: Sequence[int], size: int = CHIP_SIZE,
              padding: float = CHIP_PADDING) -> ChipPlan:
    """dlib's get_face_chip_details(shape, size, padding) and the sampling plan extract_image_chips makes.

    `landmarks`: (68, 2) or (5, 2) x, y pixels. dlib's shape predictors give whole pixels; fractional
    values are used as given (dlib itself would only ever see whole ones).
    """
    points = np.asarray(landmarks, np.float64)
    template = _template(len(points), size, padding)
    if len(points) == 68:
        points = points[_USED_68]
    m, t = _similarity(template, points)
    # chip_details(chip_points, img_points, dims): the transform's rotation and scale, and a rectangle of
    # size*scale centred on the image of the chip centre (centered_drect subtracts 1 from each side).
    p = m @ np.array([1.0, 0.0])
    angle = math.atan2(p[1], p[0])
    scale = math.hypot(p[0], p[1])
    center = m @ np.array([size / 2.0, size / 2.0]) + t
    half = (size * scale - 1) / 2
    rect = (center[0] - half, center[1] - half, center[0] + half, center[1] + half)
    chip_area = size * size

    # extract_image_chips: halve the region with a pyramid while its half is still bigger than the chip,
    # so that bilinear sampling never skips pixels. With 150 px chips that starts at a ~300 px region, i.e.
    # dlib HOG boxes of ~270 px; skipping it there would move the descriptor by 0.04-0.08.
    depth, grow = 0, 2.0
    down = _rect_down(rect)
    while _area(down) > chip_area:
        down = _rect_down(down)
        depth += 1
        grow = grow * 2 + 2  # a border that keeps the pyramid's filter off the crop's edge
    corners = _corners(rect, angle)
    height, width = image_shape[:2]
    (x0, y0), (x1, y1) = corners.min(0) - grow, corners.max(0) + grow
    clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, width - 1.0), min(y1, height - 1.0))
    box = tuple(int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5)) for v in clipped)  # lround
    # The level's rectangle, in the crop's coordinates.
    level_rect = (rect[0] - box[0], rect[1] - box[1], rect[2] - box[0], rect[3] - box[1])
    for _ in range(depth):
        level_rect = _rect_down(level_rect)
    # The affine map from chip pixels to the level: chip corners (0,0), (size-1,0), (0,size-1) onto the
    # rotated rectangle's tl, tr, bl (dlib solves the same three-point system with a pseudo-inverse).
    tl, tr, bl, _ = _corners(level_rect, angle)
    grid = np.arange(size, dtype=np.float64)
    col, row = np.meshgrid(grid, grid)
    ex, ey = (tr - tl) / (size - 1), (bl - tl) / (size - 1)
    xy = tl + col[..., None] * ex + row[..., None] * ey
    return ChipPlan(box, depth, xy)


def _floor_st(x: torch.Tensor) -> torch.Tensor:
    """floor() forward (dlib truncates to uint8 / integer pixels), identity backward, so the chips equal
    dlib's while gradients still reach the image. Exact in float64: x - (x - floor(x)) == floor(x)."""
    return x + (torch.floor(x) - x).detach()


_PYRAMID_KERNEL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])


def _pyramid_down(image: torch.Tensor) -> torch.Tensor:
    """pyramid_down<2> on (C, H, W): a 5x5 [1 4 6 4 1]^2 filter at every other row and column, no padding,
    integer sums divided by 256 and truncated. Output pixel (r, c) is centred on input (2r+2, 2c+2).
    float32 is exact here for whole-valued pixels (sums stay below 2**16)."""
    channels, height, width = image.shape
    if height <= 8 or width <= 8:  # dlib returns an empty image, so every chip pixel becomes background
        return image.new_zeros((channels, 0, 0))
    k = _PYRAMID_KERNEL.to(image.device)
    kernel = (k[:, None] * k[None, :]).expand(channels, 1, 5, 5)
    out = F.conv2d(image[None].float(), kernel, stride=2, groups=channels)[0]
    return _floor_st(out / 256.0)


def _sample(image: torch.Tensor, xy: np.ndarray) -> torch.Tensor:
    """interpolate_bilinear at every (x, y): black where any of the four neighbours is outside `image`;
    the value is computed in float64 in dlib's expression order, then truncated as dlib's uint8 cast does."""
    channels, height, width = image.shape
    if height < 2 or width < 2:
        return image.new_zeros((channels,) + xy.shape[:2])
    x, y = torch.from_numpy(xy).to(image.device, torch.float64).unbind(-1)
    left, top = torch.floor(x), torch.floor(y)
    inside = (left >= 0) & (top >= 0) & (left + 1 < width) & (top + 1 < height)
    lr, tb = x - left, y - top
    index = (top.clamp(0, height - 2) * width + left.clamp(0, width - 2)).long()
    flat = image.reshape(channels, -1)
    tl, tr = flat[:, index], flat[:, index + 1]
    bl, br = flat[:, index + width], flat[:, index + width + 1]
    value = (1 - tb) * ((1 - lr) * tl + lr * tr) + tb * ((1 - lr) * bl + lr * br)
    return _floor_st(value * inside)


def face_chips(image: np.ndarray | torch.Tensor, landmarks_list: Sequence[np.ndarray],
               device: str | torch.device | None = None) -> torch.Tensor:
    """dlib's 150x150 aligned face chips (what compute_face_descriptor feeds its network), N x 3 x 150 x 150
    float32 RGB with whole values in 0..255.

    `image`: H x W x 3 RGB numpy (uint8) or a 3 x H x W float tensor in 0..255, through which gradients
    flow (straight through dlib's truncations). `landmarks_list`: one (68, 2) or (5, 2) x, y array per face.
    """
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"a tensor image must be 3 x H x W RGB, got {tuple(image.shape)}")
        shape = image.shape[1:]
        device = device or image.device
    else:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"a numpy image must be H x W x 3 RGB, got {image.shape}")
        shape = image.shape[:2]
        device = device or "cpu"
    chips = []
    for landmarks in landmarks_list:
        plan = plan_chip(landmarks, shape)
        left, top, right, bottom = plan.box
        # Only the crop dlib works on is converted: the sampling needs float64 to round as dlib does.
        if isinstance(image, torch.Tensor):
            level = image[:, max(top, 0):bottom + 1, max(left, 0):right + 1].to(device, torch.float64)
        else:
            crop = image[max(top, 0):bottom + 1, max(left, 0):right + 1].transpose(2, 0, 1)
            level = torch.from_numpy(np.ascontiguousarray(crop)).to(device, torch.float64)
        for _ in range(plan.levels):
            level = _pyramid_down(level)
        chips.append(_sample(level.to(torch.float64), plan.xy))
    if not chips:
        return torch.zeros((0, 3, CHIP_SIZE, CHIP_SIZE), device=device)
    return torch.stack(chips).to(torch.float32)


_NETS: dict[tuple[str, str], DlibFaceNet] = {}


@contextmanager
def full_fp32() -> Iterator[None]:
    """cuDNN convolutions run in TF32 by default on Ampere and later GPUs: measured on an H200, that moves
    descriptors ~3.4e-4 (max 5e-4) from dlib's, against ~1e-6 in full float32."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def embed(image: np.ndarray | torch.Tensor, landmarks_list: Sequence[np.ndarray],
          device: str | torch.device = "cpu", net: DlibFaceNet | None = None, batch_size: int = 64) -> np.ndarray:
    """(N, 128) float32 descriptors of the faces whose landmarks are given: dlib's
    compute_face_descriptor(image, shape, num_jitters=1) for each face, batched on `device`.

    Without `net`, the default network is loaded once per device and kept.
    """
    if net is None:
        key = (str(default_model_path()), str(device))
        if key not in _NETS:
            _NETS[key] = load_dlib_face_net(device=device)
        net = _NETS[key]
    device = next(net.parameters()).device
    chips = face_chips(image, landmarks_list, device)
    with torch.no_grad(), full_fp32():
        out = [net(chips[i:i + batch_size]) for i in range(0, len(chips), batch_size)]
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, 128), np.float32)
