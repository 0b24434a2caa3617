"""CPU time of the mcquic network, v1 against the current `McQuicArgs()`, on a 768x512 photo.

    python models/mcquic/bench_cpu.py --threads 1
    python models/mcquic/bench_cpu.py --threads 2

Times what the codec runs: `compress` at q4 with `--threads` torch threads, `decompress` on one
thread (the codec's decoder always uses one, for bit-identical output). Random weights: speed does
not depend on training. Entropy coding (the same for every architecture) is not included.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import typer
from PIL import Image

from nmc.models.mcquic.network import V1_ARGS, McQuic, McQuicArgs

V1 = McQuicArgs(channels=(32, 64, 128, 128), enc_blocks=(1, 2, 2), dec_blocks=(1, 2, 2), **V1_ARGS)  # type: ignore[arg-type]


def main(image: Path = Path("samples/photo_aqua.png"), threads: int = 1, repeats: int = 5) -> None:
    x = torch.from_numpy(np.array(Image.open(image).convert("RGB"))).permute(2, 0, 1)[None].float().div(255)
    for name, args in (("v1", V1), ("v2", McQuicArgs())):
        torch.manual_seed(0)
        net = McQuic(args).train()
        net(torch.rand(2, 3, 64, 64))  # codebooks from data
        net.eval()
        times = []
        for _ in range(repeats):
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            c = net.compress(x, 4)
            t1 = time.perf_counter()
            torch.set_num_threads(1)
            net.decompress(c.indices, 4, c.shape)
            times.append((time.perf_counter() - t0, t1 - t0, time.perf_counter() - t1))
        total, enc, dec = min(times)
        params = sum(p.numel() for p in net.parameters()) / 1e6
        print(f"{name}: {params:.2f} M params, {tuple(x.shape[-2:])} q4, {threads} thread(s): {total:.3f} s (encode {enc:.3f} + decode {dec:.3f})")


if __name__ == "__main__":
    typer.run(main)
