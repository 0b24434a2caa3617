"""CPU time and MACs of mcquic networks (`network.ARCHS`: v1, v2, v3) on a 768x512 photo.

    python models/mcquic/bench_cpu.py --threads 1 --archs v2,v3 --repeats 7

Times what the codec runs: `compress` at q4 with `--threads` torch threads, `decompress` on one
thread (the codec's decoder always uses one, for bit-identical output). Random weights: speed does
not depend on training. Entropy coding (the same for every architecture) is not included. The
architectures take turns within each repeat, so load from other jobs hits them alike; compare the
ratios to the first one, measured in the same run. MACs: conv layers counted with hooks
(`trainkit.runtime.conv_macs`), per pixel of the image.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import typer
from PIL import Image
from torch import nn

from nmc.models.mcquic.network import ARCHS, McQuic, McQuicArgs
from nmc.models.trainkit.runtime import conv_macs


class _Call(nn.Module):
    """A method of `net` as a module's forward, for the MAC hooks."""

    def __init__(self, net: McQuic, fn: str, *args: object) -> None:
        super().__init__()
        self.net, self.fn, self.args = net, fn, args

    def forward(self, *inputs: object) -> object:
        return getattr(self.net, self.fn)(*inputs, *self.args)


def build(args: McQuicArgs) -> McQuic:
    """A random network of `args` with codebooks drawn from data, in eval mode."""
    torch.manual_seed(0)
    net = McQuic(args).train()
    net(torch.rand(2, 3, 64, 64))
    return net.eval()


def measure(archs: dict[str, McQuicArgs], x: torch.Tensor, threads: int = 1, repeats: int = 5) -> dict[str, dict[str, float]]:
    """Per architecture: params (M), kMAC/px of encode and decode at q4, best-of-`repeats` wall seconds (total, encode,
    decode) and best-of-`repeats` CPU seconds of the process (`cpu`: less disturbed by other jobs taking the core away)."""
    nets = {name: build(a) for name, a in archs.items()}
    px = x.shape[-1] * x.shape[-2]
    out: dict[str, dict[str, float]] = {}
    for name, net in nets.items():
        torch.set_num_threads(1)
        c = net.compress(x, 4)
        enc = conv_macs(_Call(net, "compress", 4), x) / px / 1e3
        dec = conv_macs(_Call(net, "decompress", 4, c.shape), c.indices) / px / 1e3
        out[name] = {"params": sum(p.numel() for p in net.parameters()) / 1e6, "enc_kmac": enc, "dec_kmac": dec, "best": float("inf"), "cpu": float("inf")}
    for _ in range(repeats):
        for name, net in nets.items():
            torch.set_num_threads(threads)
            t0, p0 = time.perf_counter(), time.process_time()
            c = net.compress(x, 4)
            t1 = time.perf_counter()
            torch.set_num_threads(1)
            net.decompress(c.indices, 4, c.shape)
            t2, p2 = time.perf_counter(), time.process_time()
            out[name]["cpu"] = min(out[name]["cpu"], p2 - p0)
            if t2 - t0 < out[name]["best"]:
                out[name].update(best=t2 - t0, enc=t1 - t0, dec=t2 - t1)
    return out


def main(image: Path = Path("samples/photo_aqua.png"), threads: int = 1, repeats: int = 5, archs: str = "v1,v2,v3") -> None:
    names = archs.split(",")
    if unknown := [n for n in names if n not in ARCHS]:
        raise typer.BadParameter(f"unknown architecture(s) {unknown}; known: {', '.join(ARCHS)}")
    x = torch.from_numpy(np.array(Image.open(image).convert("RGB"))).permute(2, 0, 1)[None].float().div(255)
    res = measure({n: ARCHS[n] for n in names}, x, threads, repeats)
    ref = res[names[0]]["best"]
    for name, r in res.items():
        print(f"{name}: {r['params']:.2f} M params, {r['enc_kmac']:.1f} + {r['dec_kmac']:.1f} kMAC/px, {tuple(x.shape[-2:])} q4, "
              f"{threads} thread(s), best of {repeats}: {r['best']:.3f} s (encode {r['enc']:.3f} + decode {r['dec']:.3f}), "
              f"{r['best'] / ref:.2f}x {names[0]}; CPU time {r['cpu']:.3f} s, {r['cpu'] / res[names[0]]['cpu']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    typer.run(main)
