"""CPU seconds of the queen encoder's and decoder's parts on the first frames of a `.ply` sequence (one group).

    python -P scripts/queen_profile.py .data/gaussians/g20k --frames 6 --lam 1e-6

Process CPU time (not wall: the dev box is shared), one torch thread, around the decoder fits,
the keyframe, the residual frames and, inside those, the position gate and the RDOQ. Then the
group is decoded `decodes` times by fresh decoders (the first in the process is the "cold" one,
as in `measure.py`): the keyframe and the residual frames (each yielded as a copy, as the codec
does), and inside those the range coder's calls; the minimum over the decodes (`decode_*`) and
the cold keyframe (`decode_keyframe_cold`); residual frames per frame; frames per CPU second of
the fastest pass (`decode_frames_per_s`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import typer

from nmc.codec import entropy
from nmc.codec import media as M
from nmc.models.queen import core, latent


def main(folder: Path, frames: int = 6, lam: float = 1e-6, decodes: int = 3) -> None:
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
                             (latent.LatentCoder, "choose", "rdoq"), (entropy.Decoder, "decode", "range_coder"),
                             (entropy.Decoder, "decode_uniform", "range_coder")]:
        if hasattr(owner, name):  # (decode_uniform is newer than some trees this script is run against)
            timed(owner, name, key)
    seq = M.read_gaussians(folder)
    stream = seq.frames()
    group = [next(stream) for _ in range(min(frames, len(seq.names)))]
    t0 = time.process_time()
    coded = core.GroupEncoder(seq.layout, core.Settings(lam=lam)).encode_group(group)
    spent["total"] = time.process_time() - t0
    out: dict[str, Any] = {k: round(v, 2) for k, v in spent.items()}
    out["bytes"] = len(coded.header) + sum(map(len, coded.packets))
    runs = []  # per decode: keyframe s, its range coder s, residual frames s, their range coder s (CPU)
    for _ in range(decodes):
        decoded = core.GroupDecoder(seq.layout, len(group[0])).decode_group(coded.header, coded.packets)
        run = [0.0] * 4
        for k in range(len(coded.packets)):
            coder0, t0 = spent.get("range_coder", 0.0), time.process_time()
            next(decoded)
            run[2 * (k > 0)] += time.process_time() - t0
            run[2 * (k > 0) + 1] += spent["range_coder"] - coder0
        runs.append(run)
    residual = max(1, len(coded.packets) - 1)
    out["decode_keyframe_cold"] = round(runs[0][0], 4)
    out["decode_frames_per_s"] = round(len(coded.packets) / min(r[0] + r[2] for r in runs), 2)  # the best whole pass
    for i, key in enumerate(["keyframe", "keyframe_range_coder", "residual_frame", "residual_frame_range_coder"]):
        out[f"decode_{key}"] = round(min(r[i] for r in runs) / (1 if i < 2 else residual), 4)
    print(json.dumps(out))


if __name__ == "__main__":
    typer.run(main)
