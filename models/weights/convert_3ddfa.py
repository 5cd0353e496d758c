"""Build-time conversion of 3DDFA_V2's MobileNet-V1 (width 0.5, 120 px) into files deid can load safely.

Run once, by hand, on a copy of the public repository cleardusk/3DDFA_V2 (MIT); deid never runs this and
never unpickles anything at run time. It reads

    weights/mb05_120x120.pth                  a torch checkpoint {"epoch", "state_dict"}
    configs/param_mean_std_62d_120x120.pkl    a pickled {"mean", "std"} of the 62 parameters (numpy float32)

and writes, next to this script,

    tddfa_mb05_120.safetensors                the network's tensors under models/tddfa.py's own layer names
    tddfa_mb05_120_param_stats.json           the 62 means and standard deviations, with the source hashes

Neither source file needs a general unpickler: the checkpoint holds only tensors and an int
(`torch.load(weights_only=True)`), and the statistics only numpy arrays, read by an unpickler that refuses
every global but numpy's array reconstruction. The converted network is loaded back into models/tddfa.py's
MobileNet with strict key and shape checks before anything is written.

    python models/weights/convert_3ddfa.py SOURCE [--commit REV]

SOURCE is a checkout of the repository, or its bare git directory (the files are then read from REV,
default HEAD, with `git show`).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # run as a script from anywhere: models.tddfa is importable

from deid.models.tddfa import PARAM_STATS_FILE, WEIGHTS_FILE, MobileNetV1  # noqa: E402

CHECKPOINT = "weights/mb05_120x120.pth"
STATS = "configs/param_mean_std_62d_120x120.pkl"
REPOSITORY = "cleardusk/3DDFA_V2"
# The checkpoint's blocks in forward order; models/tddfa.py numbers them 0..12.
THEIR_BLOCKS = ["dw2_1", "dw2_2", "dw3_1", "dw3_2", "dw4_1", "dw4_2",
                "dw5_1", "dw5_2", "dw5_3", "dw5_4", "dw5_5", "dw5_6", "dw6"]
# Inside a block: their module name -> index in our nn.Sequential (depthwise conv, BN, ReLU, pointwise conv, BN, ReLU)
THEIR_PARTS = {"conv_dw": 0, "bn_dw": 1, "conv_sep": 3, "bn_sep": 4}


class _NumpyOnly(pickle.Unpickler):
    """Unpickles plain numpy arrays and nothing else (the statistics file's only content)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):  # noqa: ANN201 (pickle's signature)
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{STATS}: refusing to unpickle {module}.{name}")
        if module == "numpy":
            return getattr(np, name)
        try:  # numpy >= 2 moved numpy.core to numpy._core
            from numpy._core.multiarray import _reconstruct
        except ImportError:
            from numpy.core.multiarray import _reconstruct
        return _reconstruct


def read_source(source: Path, rel: str, commit: str) -> bytes:
    """A file of the repository, from a checkout or from a bare git directory."""
    if (source / rel).is_file():
        return (source / rel).read_bytes()
    return subprocess.run(["git", "--git-dir", str(source), "show", f"{commit}:{rel}"],
                          check=True, capture_output=True).stdout


def resolved_commit(source: Path, commit: str) -> str | None:
    """The full commit a git directory's REV names (recorded with the weights); None for a checkout folder."""
    if (source / CHECKPOINT).is_file():
        return None
    return subprocess.run(["git", "--git-dir", str(source), "rev-parse", commit],
                          check=True, capture_output=True, text=True).stdout.strip()


def rename(key: str) -> str | None:
    """Their checkpoint key -> ours; None for what our network does not have (the 136-landmark head)."""
    key = key.removeprefix("module.")
    if key.startswith("fc_lm."):
        return None  # an auxiliary landmark regressor used in training; the 62 parameters do not need it
    if key.startswith("fc_param."):
        return "head." + key.split(".", 1)[1]
    stem = re.fullmatch(r"(conv1|bn1)\.(.+)", key)
    if stem:
        return f"stem.{0 if stem[1] == 'conv1' else 1}.{stem[2]}"
    block, part, rest = key.split(".", 2)
    return f"blocks.{THEIR_BLOCKS.index(block)}.{THEIR_PARTS[part]}.{rest}"


def convert_state_dict(raw: bytes) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    ours = {}
    for key, tensor in checkpoint["state_dict"].items():
        name = rename(key)
        if name is not None:
            ours[name] = tensor.contiguous()
    net = MobileNetV1()
    net.load_state_dict(ours, strict=True)  # every key and shape of our network, nothing left over
    return ours


def convert_stats(raw: bytes) -> dict[str, list[float]]:
    stats = _NumpyOnly(io.BytesIO(raw)).load()
    mean, std = (np.asarray(stats[k], dtype=np.float32).reshape(-1) for k in ("mean", "std"))
    if mean.shape != (62,) or std.shape != (62,) or not (std > 0).all():
        raise SystemExit(f"{STATS}: expected 62 means and 62 positive standard deviations")
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="checkout or bare git directory of cleardusk/3DDFA_V2")
    parser.add_argument("--commit", default="HEAD", help="revision to read from a git directory (default HEAD)")
    args = parser.parse_args(argv)
    from safetensors.torch import save_file

    checkpoint, stats = (read_source(args.source, rel, args.commit) for rel in (CHECKPOINT, STATS))
    provenance = {"source": REPOSITORY, "licence": "MIT", "checkpoint": CHECKPOINT, "statistics": STATS,
                  "checkpoint_sha256": hashlib.sha256(checkpoint).hexdigest(),
                  "statistics_sha256": hashlib.sha256(stats).hexdigest()}
    commit = resolved_commit(args.source, args.commit)
    if commit:
        provenance["commit"] = commit
    tensors, numbers = convert_state_dict(checkpoint), convert_stats(stats)
    # Written beside the final names and renamed: an interrupted build leaves no half-written model file.
    weights, partial = HERE / WEIGHTS_FILE, HERE / (WEIGHTS_FILE + ".partial")
    # One metadata key: safetensors writes several in hash order, and a rebuild should give the same bytes.
    save_file(tensors, str(partial), metadata={"provenance": json.dumps(provenance, sort_keys=True)})
    partial.chmod(0o644)  # safetensors writes 0600; the file ships with the package
    partial.replace(weights)
    partial = HERE / (PARAM_STATS_FILE + ".partial")
    partial.write_text(json.dumps({**provenance, **numbers}, indent=1) + "\n")
    partial.replace(HERE / PARAM_STATS_FILE)
    print(f"wrote {HERE / WEIGHTS_FILE} and {HERE / PARAM_STATS_FILE}")


if __name__ == "__main__":
    main()
