"""CPU seconds of the queen encoder's parts on the first frames of a `.ply` sequence (one group).

    python -P scripts/queen_profile.py .data/gaussians/g20k --frames 6 --lam 1e-6

Process CPU time (not wall: the dev box is shared), one torch thread, around the decoder fits,
the keyframe, the residual frames and, inside those, the position gate and the RDOQ.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import typer

from nmc.codec import media as M
from nmc.models.queen import core, latent


def main(folder: Path, frames: int = 6, lam: float = 1e-6) -> None:
    torch.set_num_threads(1)
    spent: dict[str, float] = {}

    def timed(owner: Any, name: str, key: str) -> None:
        fn: Callable[..., Any] = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] = spent.get(key, 0.0) + time.process_time() - t0

        setattr(owner, name, wrapper)

    for owner, name, key in [(core.GroupEncoder, "_fit", "fits"), (core.GroupEncoder, "_keyframe", "keyframe"),
                             (core.GroupEncoder, "_delta", "residual_frames"), (core.gate, "fit_gate", "gate"),
                             (latent.LatentCoder, "choose", "rdoq")]:
        timed(owner, name, key)
    seq = M.read_gaussians(folder)
    stream = seq.frames()
    group = [next(stream) for _ in range(min(frames, len(seq.names)))]
    t0 = time.process_time()
    coded = core.GroupEncoder(seq.layout, core.Settings(lam=lam)).encode_group(group)
    spent["total"] = time.process_time() - t0
    print(json.dumps({**{k: round(v, 2) for k, v in spent.items()}, "bytes": len(coded.header) + sum(map(len, coded.packets))}))


if __name__ == "__main__":
    typer.run(main)
