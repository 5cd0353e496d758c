"""Randomly initialised stand-ins for py-feat's model files, in the Hugging Face hub-cache layout.

PLUMBING ONLY: every number these "models" produce is meaningless. They exist so a test can construct
py-feat's real `Detectorv1` offline (no network, no real weights) and push real frames through its real
code path, to check that deid's calling code (reports/pyfeat_au.py) matches py-feat's API.

What py-feat 2.1.5's `Detectorv1(face_model="retinaface", landmark_model="mobilefacenet", au_model="xgb",
emotion_model=None, identity_model=None, gaze_model=None)` loads, all through
`huggingface_hub.hf_hub_download(repo_id, filename, cache_dir=feat.utils.io.get_resource_path())`:

| hub repo                | file                               | format                                             |
|-------------------------|------------------------------------|----------------------------------------------------|
| py-feat/retinaface_r34  | model.safetensors                  | safetensors state_dict of feat's `RetinaFace(RETINAFACE_R34_CFG)` (ResNet34), strict |
| py-feat/mobilefacenet   | mobilefacenet_model_best.pth.tar   | torch.save({"state_dict": ...}) of `MobileFaceNet([112, 112], 136)`, weights_only load |
| py-feat/xgb_au          | xgb_au_classifier_v2.skops         | skops.io dump of feat's `XGBClassifier` wrapper: StandardScaler + PCA for the upper, lower and full face HOG features, and a dict AU1..AU43 -> xgboost.XGBClassifier (input: PCA components + 136 landmark coordinates) |
| py-feat/pose_mlp_v2     | pose_mlp_v2.safetensors + .json    | optional (pose only): feat's `PoseMLP` state_dict and its architecture/normalisation JSON |

(Fallback names, tried when the first is absent: retinaface_r34.safetensors, xgb_au_classifier.skops.)
Each lands as `models--py-feat--NAME/snapshots/<revision>/FILE` with `refs/main` holding the revision,
which is what hf_hub_download resolves when HF_HUB_OFFLINE=1.

Where "faces" are found is decided by RetinaFace's class and box heads. With random weights it would be
left to chance (in practice: none, or hundreds of boxes per frame), so the fixture fixes it: the heads' 1x1
convolutions are zeroed and only their biases speak (`_force_heads`); the rest of every network stays random.
- faces=False (`build_no_face_variant`): every anchor says "background" -> no face in any frame.
- faces=True: on frames of at most MAX_SIDE (128) px per side, exactly two "faces" per frame, 819 px and
  410 px boxes centred in the frame, so "keep the largest face" is exercised too. The boxes do not depend on the
  image content; the landmarks and AU values do (random networks on real pixels).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

REVISION = "0123456789abcdef0123456789abcdef01234567"  # any 40-hex string; refs/main points at it

HOG_SAMPLES = 24
PCA_COMPONENTS = 6
LANDMARK_SPREAD = 0.02
BOX_GROWTH = 1.6
MAX_SIDE = 128  # frames larger than this get more than two "faces" each (see _force_heads)


def _snapshot(cache: Path, repo_id: str) -> Path:
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(REVISION)
    snap = folder / "snapshots" / REVISION
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def build_pyfeat_cache(cache: Path, *, faces: bool = True, pose: bool = True, seed: int = 0) -> Path:
    """Write random stand-ins for every file Detectorv1 loads (table above) under `cache`; return `cache`."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)

    # Face detector: feat's own RetinaFace, random init; class and box heads forced (see module docstring).
    from feat.face_detectors.Retinaface.Retinaface_model import RETINAFACE_R34_CFG, RetinaFace

    state = _state(RetinaFace(RETINAFACE_R34_CFG))
    _force_heads(state, faces)
    save_file(state, str(_snapshot(cache, "py-feat/retinaface_r34") / "model.safetensors"))

    # Landmarks: feat's MobileFaceNet, saved the way py-feat reads it (["state_dict"]). Its own init leaves every
    # bias and BatchNorm shift at zero, so a blank crop (py-feat's stand-in for "no face") would put all 68
    # landmarks on one point and py-feat's face alignment would fail on a singular matrix; trained weights do
    # not do that, so the BatchNorm statistics are randomised too, the last one around a face-sized spread.
    from feat.landmark_detectors.mobilefacenet_test import MobileFaceNet

    landmarks = MobileFaceNet([112, 112], 136, device="cpu").eval()
    _randomise_batchnorm(landmarks, torch.Generator().manual_seed(seed))
    torch.save({"state_dict": landmarks.state_dict()},
               _snapshot(cache, "py-feat/mobilefacenet") / "mobilefacenet_model_best.pth.tar")

    # AU model: feat's XGBClassifier wrapper holding sklearn StandardScalers/PCAs (fitted on the HOG features
    # feat's own extractor gives for random crops, so the shapes and scales are what Detectorv1.forward feeds
    # them) and one small xgboost classifier per AU. The classifiers are linear boosters (gblinear), so their
    # probabilities move with every input and differ between faces and frames; py-feat's real ones are tree
    # boosters, read and called the same way (skops, predict_proba).
    from skops.io import dump
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits
    from xgboost import XGBClassifier as Booster
    from feat.au_detectors.StatLearning.SL_test import XGBClassifier
    from feat.utils.face_mask import extract_hog_features_batched

    crops = torch.rand(HOG_SAMPLES, 3, 112, 112, generator=torch.Generator().manual_seed(seed))
    spots = 0.3 + 0.4 * torch.rand(HOG_SAMPLES, 136, generator=torch.Generator().manual_seed(seed + 1))
    hog, _ = extract_hog_features_batched(crops, spots)
    with threadpool_limits(1):  # a 24 x 5408 SVD; more BLAS threads only spin on a busy machine
        scaler = StandardScaler().fit(hog)
        pca = PCA(n_components=PCA_COMPONENTS, svd_solver="full").fit(scaler.transform(hog))
    fitted = [(copy.deepcopy(scaler), copy.deepcopy(pca)) for _ in range(3)]  # upper, lower, full face
    wrapper = XGBClassifier()
    classifiers = {}
    for i, key in enumerate(wrapper.au_keys):
        # inputs: PCA components, then the 68 aligned landmarks (pixels of a 112 px crop), as in detect_au
        x = np.hstack([rng.normal(size=(64, PCA_COMPONENTS)), rng.uniform(0, 112, size=(64, 136))])
        y = rng.integers(0, 2, size=64)
        y[:2] = (0, 1)
        classifiers[key] = Booster(booster="gblinear", n_estimators=4, n_jobs=1, random_state=seed + i).fit(x, y)
    wrapper.load_weights(scaler_upper=fitted[0][0], pca_model_upper=fitted[0][1],
                         scaler_lower=fitted[1][0], pca_model_lower=fitted[1][1],
                         scaler_full=fitted[2][0], pca_model_full=fitted[2][1], classifiers=classifiers)
    dump(wrapper, _snapshot(cache, "py-feat/xgb_au") / "xgb_au_classifier_v2.skops")

    if pose:  # optional in py-feat: without it the pose columns stay NaN
        from feat.utils.face_pose_mlp import PoseMLP

        hidden, dropout = (32, 16), 0.0
        mlp = PoseMLP(hidden=hidden, dropout=dropout, use_layernorm=True).eval()
        snap = _snapshot(cache, "py-feat/pose_mlp_v2")
        save_file(_state(mlp), str(snap / "pose_mlp_v2.safetensors"))
        (snap / "pose_mlp_v2.json").write_text(json.dumps({"architecture": {
            "hidden": list(hidden), "dropout": dropout,
            "output_normalization": {"mean": [0.0] * 6, "std": [1.0] * 6}}}))
    return cache


def build_no_face_variant(cache: Path, like: Path) -> Path:
    """A second cache identical to `like` (built by build_pyfeat_cache) except that its RetinaFace finds no face."""
    from safetensors.torch import load_file, save_file

    cache, like = Path(cache), Path(like)
    cache.mkdir(parents=True, exist_ok=True)
    for folder in like.iterdir():
        if folder.name != "models--py-feat--retinaface_r34":
            (cache / folder.name).symlink_to(folder.resolve(), target_is_directory=True)
    state = load_file(str(like / "models--py-feat--retinaface_r34" / "snapshots" / REVISION / "model.safetensors"))
    _force_heads(state, faces=False)
    save_file(state, str(_snapshot(cache, "py-feat/retinaface_r34") / "model.safetensors"))
    return cache


def _state(module) -> dict:
    return {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}


def _force_heads(state: dict, faces: bool) -> None:
    """Zero RetinaFace's class and box heads and set their biases, in its state_dict (module docstring).

    Per position, the class head gives [bg, face] logits for anchor 0 then anchor 1, the box head
    [dx, dy, log w, log h] (scaled by the variances 0.1, 0.2) for anchor 0 then anchor 1. On the coarsest level
    the anchors are 256 px and 512 px (stride 32). faces=True: both say "face" (p = 0.982 and 0.998, so the
    512 px ones win NMS first) and are widened by BOX_GROWTH (to 410 px and 819 px). On a frame of at most
    MAX_SIDE px per side the anchor centres of a size are at most 96 px apart, so any two boxes of a size
    overlap with IoU > 0.4 and NMS keeps exactly one of each size per frame (a 410 px box inside an 819 px one
    has IoU 0.25: both stay). Their centres are within the frame; the boxes reach past its edges.
    """
    import math
    import torch

    levels = sorted({int(k.split(".")[2]) for k in state if k.startswith("ClassHead._convs.")})
    for level in levels:
        cls, box = f"ClassHead._convs.{level}.", f"BboxHead._convs.{level}."
        state[cls + "weight"] = torch.zeros_like(state[cls + "weight"])
        state[box + "weight"] = torch.zeros_like(state[box + "weight"])
        if faces and level == levels[-1]:
            grow = math.log(BOX_GROWTH) / 0.2
            state[cls + "bias"] = torch.tensor([-2.0, 2.0, -3.0, 3.0])
            state[box + "bias"] = torch.tensor([0.0, 0.0, grow, grow, 0.0, 0.0, grow, grow])
        else:
            state[cls + "bias"] = torch.tensor([12.0, -12.0, 12.0, -12.0])
            state[box + "bias"] = torch.zeros(8)


def _randomise_batchnorm(net, generator) -> None:
    import torch

    norms = [m for m in net.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    with torch.no_grad():
        for norm in norms:
            n = norm.num_features
            norm.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            norm.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            norm.weight.copy_(0.5 + torch.rand(n, generator=generator))
            norm.bias.copy_(0.1 * torch.randn(n, generator=generator))
        last = norms[-1]  # the landmark output (x0..x67, y0..y67 as fractions of the crop)
        last.weight.copy_(torch.full((last.num_features,), LANDMARK_SPREAD))
        last.bias.copy_(0.3 + 0.4 * torch.rand(last.num_features, generator=generator))
