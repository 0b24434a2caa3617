"""Size and CPU time of the vqgan network on a 768x512 photo (random weights: speed does not depend on training).

    python models/vqgan/bench_cpu.py --threads 1

Times `encode` (image -> indices) and `decode` (indices -> image) with `--threads` torch threads,
best of `--repeats`; prints parameters and conv MACs per pixel of g_a and g_s. Entropy coding is
not included (the codec adapter does not exist yet).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import typer
from PIL import Image

from nmc.models.trainkit.runtime import conv_macs
from nmc.models.vqgan.network import VQGAN, PatchDiscriminator, VQGANArgs


def describe(net: VQGAN) -> str:
    """Parameters and conv MACs per pixel of each part (one line)."""
    x = torch.zeros(1, 3, 256, 256)
    px = x[0, 0].numel()
    y_hat = net.vq.out_proj(net.vq.indices_to_codes(torch.zeros(1, 16, 16, dtype=torch.long)))
    m = lambda mod: sum(p.numel() for p in mod.parameters()) / 1e6  # noqa: E731
    return (f"params {m(net) :.2f} M (g_a {m(net.g_a):.2f}, vq {m(net.vq):.3f}, g_s {m(net.g_s):.2f}), "
            f"MAC/pixel g_a {conv_macs(net.g_a, x) / px / 1e3:.1f} k, g_s {conv_macs(net.g_s, y_hat) / px / 1e3:.1f} k; "
            f"discriminator {m(PatchDiscriminator()):.2f} M, {conv_macs(PatchDiscriminator(), x) / px / 1e3:.1f} kMAC/pixel")


def main(image: Path = Path("samples/photo_aqua.png"), threads: int = 1, repeats: int = 3) -> None:
    torch.set_num_threads(threads)
    x = torch.from_numpy(np.array(Image.open(image).convert("RGB"))).permute(2, 0, 1)[None].float().div(255)
    torch.manual_seed(0)
    net = VQGAN(VQGANArgs()).eval()
    print(describe(net))
    for fmt in (torch.contiguous_format, torch.channels_last):
        net.to(memory_format=fmt)  # type: ignore[call-overload]  # the stub lacks memory_format
        xf = x.contiguous(memory_format=fmt)
        enc, dec = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            idx = net.encode(xf)
            t1 = time.perf_counter()
            net.decode(idx, (x.shape[-2], x.shape[-1]))
            enc.append(t1 - t0)
            dec.append(time.perf_counter() - t1)
        print(f"{tuple(x.shape[-2:])}, {threads} thread(s), {fmt}: encode {min(enc):.3f} s, decode {min(dec):.3f} s")


if __name__ == "__main__":
    typer.run(main)
