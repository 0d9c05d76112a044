"""What a worker tells the broker about its machine (`/health` → `hardware`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any


def _memory_mb() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError, AttributeError):
        return None


def _gpus() -> list[dict[str, Any]]:
    """NVIDIA GPUs by `nvidia-smi`, without importing a GPU library just to ask."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        name, _, memory = line.rpartition(",")
        if name:
            gpus.append({"name": name.strip(), "memory_mb": int(float(memory or 0))})
    return gpus


def describe() -> dict[str, Any]:
    """Blocking (it may run nvidia-smi): call once, at start, off the event loop."""
    gpus = _gpus()
    return {
        "device": "gpu" if gpus else "cpu",
        "cpus": os.cpu_count(),
        "memory_mb": _memory_mb(),
        "gpus": gpus,
    }
