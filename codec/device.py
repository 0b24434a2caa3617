"""`--device auto|cpu|cuda`: where the networks run (indices, tables and media stay on the CPU)."""

from __future__ import annotations

import re

from .errors import MediaError

DEVICE_HELP = "Where the networks run: auto (CUDA when present), cpu, cuda or cuda:N."


def resolve(device: str) -> str:
    """`auto` -> `cuda` when a GPU is usable, else `cpu`; `cuda[:N]` must exist (a user error otherwise)."""
    if device == "cpu":
        return device
    if device != "auto" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise MediaError(f"--device {device!r}: choose auto, cpu, cuda or cuda:N")
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
