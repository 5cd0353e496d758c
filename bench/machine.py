"""What a benchmark ran on: numbers without the machine are not worth reporting."""
from __future__ import annotations

import os
import platform
from pathlib import Path

from deid.pipeline.runner import package_versions


def machine_info() -> dict:
    cpu = platform.processor() or ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "versions": package_versions()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass  # torch missing: the machine facts above are still worth recording
    return info
