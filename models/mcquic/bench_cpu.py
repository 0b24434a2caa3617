"""CPU time and MACs of mcquic networks (`network.ARCHS`: v1, v2, v3, and v3's alternatives) on a 768x512 photo.

    python models/mcquic/bench_cpu.py --threads 1 --archs v2,v3 --repeats 7
    python models/mcquic/bench_cpu.py --archs v2,v3,v3-gdn-only,v3-no-gdn,v3-f4x2 --repeats 7   # v3's alternatives
    python models/mcquic/bench_cpu.py --archs v3 --layers [--channels-last]   # time and GMAC/s of every layer

Times what the codec runs: `compress` at q4 with `--threads` torch threads, `decompress` on one
thread (the codec's decoder always uses one, for bit-identical output). Random weights: speed does
not depend on training. Entropy coding (the same for every architecture) is not included. The
architectures take turns within each repeat, so load from other jobs hits them alike; compare the
ratios to the first one, measured in the same run. MACs: conv layers counted with hooks
(`trainkit.runtime.conv_macs`), per pixel of the image.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import typer
from PIL import Image
from torch import nn

from nmc.models.mcquic.network import ARCHS, McQuic, McQuicArgs
from nmc.models.trainkit.runtime import conv_macs

CANDIDATES = {  # the alternatives weighed for v3 (CARD "v3"): variations of it, with or without its parts
    **ARCHS,
    "v3-gdn-only": replace(ARCHS["v2"], gdn=True),  # v2's widths and blocks plus the GDN gates
    "v3-no-gdn": replace(ARCHS["v3"], gdn=False),  # v3's decoder without the gates
    "v3-f4x2": replace(ARCHS["v3"], dec_channels=(32, 80), dec_blocks=(2, 2, 2)),  # two 80-wide f4 ResBlocks instead of one of 96
    "v3-f2-48": replace(ARCHS["v3"], dec_channels=(48, 96)),  # a wider f2 as well
    "v3-f8-192": replace(ARCHS["v3"], channels=(32, 64, 192, 192)),  # 192 channels at f8 in g_a and g_s
}


class _Call(nn.Module):
    """A call of `net`'s methods as a module's forward (`net` a submodule), for the MAC hooks."""

    def __init__(self, net: McQuic, fn: Callable[[], object]) -> None:
        super().__init__()
        self.net, self.fn = net, fn

    def forward(self) -> object:
        return self.fn()


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
        enc = conv_macs(_Call(net, lambda: net.compress(x, 4))) / px / 1e3
        dec = conv_macs(_Call(net, lambda: net.decompress(c.indices, 4, c.shape))) / px / 1e3
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


@torch.no_grad()
def layers(args: McQuicArgs, x: torch.Tensor, repeats: int, channels_last: bool) -> None:
    """Best-of-`repeats` time, kMAC/px and GMAC/s of every layer of the conv stacks, one thread, in the order
    the codec runs them (`g_c` on the unquantized latent: same shapes; FiLM and the VQ left out)."""
    torch.set_num_threads(1)
    net, px = build(args), x.shape[-1] * x.shape[-2]
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def run(stack: nn.Sequential, name: str, h: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(stack):
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                out = layer(h)
                best = min(best, time.perf_counter() - t0)
            macs = conv_macs(layer, h)
            print(f"{name}[{i}] {type(layer).__name__:12s} in {tuple(h.shape[1:])}: {best * 1e3:6.1f} ms, {macs / px / 1e3:5.2f} kMAC/px, {macs / best / 1e9:5.1f} GMAC/s")
            h = out
        return h

    y8 = run(net.g_a8, "g_a8", x)
    c8 = run(net.g_c, "g_c", torch.tanh(run(net.g_a16, "g_a16", y8)))
    run(net.g_r, "g_r", torch.cat([y8, c8], 1))
    run(net.g_s, "g_s", c8)


def main(
    image: Path = Path("samples/photo_aqua.png"),
    threads: int = 1,
    repeats: int = 5,
    archs: str = "v1,v2,v3",
    layers_: bool = typer.Option(False, "--layers", help="time every layer of the (first) architecture instead"),
    channels_last: bool = False,  # --layers: run them in channels_last (the codec runs NCHW)
) -> None:
    names = archs.split(",")
    if unknown := [n for n in names if n not in CANDIDATES]:
        raise typer.BadParameter(f"unknown architecture(s) {unknown}; known: {', '.join(CANDIDATES)}")
    x = torch.from_numpy(np.array(Image.open(image).convert("RGB"))).permute(2, 0, 1)[None].float().div(255)
    if layers_:
        return layers(CANDIDATES[names[0]], x, repeats, channels_last)
    res = measure({n: CANDIDATES[n] for n in names}, x, threads, repeats)
    ref = res[names[0]]["best"]
    for name, r in res.items():
        print(f"{name}: {r['params']:.2f} M params, {r['enc_kmac']:.1f} + {r['dec_kmac']:.1f} kMAC/px, {tuple(x.shape[-2:])} q4, "
              f"{threads} thread(s), best of {repeats}: {r['best']:.3f} s (encode {r['enc']:.3f} + decode {r['dec']:.3f}), "
              f"{r['best'] / ref:.2f}x {names[0]}; CPU time {r['cpu']:.3f} s, {r['cpu'] / res[names[0]]['cpu']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    typer.run(main)
