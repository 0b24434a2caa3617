"""`--device auto|cpu|cuda`: where the networks run (indices, tables and media stay on the CPU)."""

from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .errors import MediaError

DEVICE_HELP = "Where the networks run: auto (CUDA when present), cpu, cuda or cuda:N."


def resolve(device: str) -> str:
    """`auto` -> `cuda` when a GPU is usable, else `cpu`; `cuda[:N]` must exist (a user error otherwise)."""
    if device == "cpu":
        return device
    if device != "auto" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise MediaError(f"--device {device!r}: choose auto, cpu, cuda or cuda:N")
    if device == "auto" and "torch" not in sys.modules and not _cuda_possible():
        return "cpu"  # known without importing torch (2 s of a short command)
    import torch

    if not torch.cuda.is_available():
        if device == "auto":
            return "cpu"
        built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise MediaError(f"--device {device}: no CUDA device is available (torch {torch.__version__}, {built})")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise MediaError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return "cuda" if device == "auto" else device


def _cuda_possible() -> bool:
    """False when torch cannot see a GPU here, known without importing it: a CPU-only build of torch, or no NVIDIA
    driver (Linux: /proc/driver/nvidia or /dev/nvidia*; WSL: its libcuda)."""
    try:
        if "+cpu" in version("torch"):
            return False
    except PackageNotFoundError:
        return False
    if sys.platform != "linux":
        return True  # no cheap test there: ask torch
    return (Path("/proc/driver/nvidia/version").exists() or any(Path("/dev").glob("nvidia[0-9]*"))
            or Path("/usr/lib/wsl/lib/libcuda.so.1").exists())  # fmt: skip
