"""Choosing the torch device from the `device` setting (auto | cpu | cuda)."""
from __future__ import annotations

import torch

from deid.core.errors import DeidError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeidError(f"device {name} requested but no CUDA GPU is usable by torch {torch.__version__}; "
                            "use --device auto or --device cpu")
        return torch.device(name)
    raise DeidError(f"unknown device {name!r}; use auto, cpu or cuda")
