"""Fit the mcquic index priors on training photos and write the shipped weights file.

    python models/mcquic/fit_prior.py --network .ckpt/out/mcquic.safetensors \\
        --out models/mcquic/weights/mcquic.safetensors

Encodes the training photos with the exported network on the CPU or `--device cuda` (all four stages, in tiles
like the codec) and hands the tiles to the prior-fitting driver (`models/trainkit/priors.py`):
one `ContextPrior` per codebook on the contexts of `index_coding.contexts` plus a unigram table,
bits per index on held-out training photos, and one safetensors file with the network and the
integer priors (so the header's weights hash covers both). Never point it at the dev set.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import typer

from nmc.codec import entropy as E
from nmc.codec import media as M
from nmc.codec.prior import PriorSet
from nmc.codec.threads import torch_threads
from nmc.codec.weights import read_weights
from nmc.models.mcquic.codec import ENC_MARGIN, SETTINGS, TILE, McQuicCodec, Quality
from nmc.models.mcquic.tiling import local, tile_indices, tiles
from nmc.models.mcquic.index_coding import COARSE_M, FINE_M, context_sizes, contexts, encode_tile
from nmc.models.mcquic.network import McQuic
from nmc.models.trainkit.priors import FitConfig, IndexSource, Packet, cached_packets, fit_priors, split_files, write

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")


def tile_packets(net: McQuic, files: list[Path], device: str = "cpu") -> list[Packet]:
    """Index grids of every tile of every file (coarse codebooks, then fine)."""
    out, run = [], local(net, device)
    for path in files:
        rgb, _ = M.to_rgb8(M.read_image(path))
        out += [tile_indices(run, rgb, box, net.args.qualities, ENC_MARGIN) for box in tiles(rgb.shape[0], rgb.shape[1], TILE)]
    return out


def index_source(net: McQuic, device: str = "cpu") -> IndexSource:
    """The codec's indices, contexts and coding, for the prior-fitting driver."""

    def code(prior: PriorSet, packet: Packet, ks: list[int]) -> bytes:
        enc = E.Encoder()
        encode_tile(enc, prior, [packet[k] for k in ks])  # ks: the first codebooks
        return enc.to_bytes()

    return IndexSource(
        alphabets=[net.args.coarse_k] * (COARSE_M + FINE_M * net.args.fine_stages),
        packets=lambda files: tile_packets(net, files, device),
        contexts=lambda packet, k: contexts(packet, k, net.args.coarse_k),
        sizes=lambda k: context_sizes(k, net.args.coarse_k),
        code=code,
        settings={s.name: list(range(COARSE_M + FINE_M * (s.stages - 1))) for s in SETTINGS if isinstance(s, Quality)},
    )


def main(
    network: Path = Path(".ckpt/out/mcquic.safetensors"),  # export of train.py (fp16 convs, fp32 codebooks)
    out: Path = Path("models/mcquic/weights/mcquic.safetensors"),  # combined weights file
    data: Path = Path("../shared/data/train/images"),  # training photos (never dev)
    held_out: float = 0.1,  # fraction of the photos kept for the report
    dim: int = 32,  # ContextPrior embedding size
    steps: int = 3000,  # Adam steps per codebook
    batch: int = 4096,
    seed: int = 0,
    threads: int = 1,  # torch threads (more threads stall on a loaded box)
    cache: Path = Path(""),  # .npz of the encoded indices: reused if it exists, else written
    device: str = "cpu",  # cuda: encode and fit there (the tables are integers either way)
) -> None:
    t0 = time.time()
    torch.manual_seed(seed)
    try:
        train_files, test_files = split_files(data, IMAGE_EXTS, held_out, seed)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    export = read_weights(network)
    with torch_threads(threads):
        net = McQuicCodec().build_net(export.state, export.args).to(device)
        if not all(torch.isfinite(vq.embed).all() for vq in net.vq):
            raise typer.BadParameter(f"{network}: codebooks are not finite (an fp16 export? re-export with train.py --export)")
        src = index_source(net, device)
        train, test = cached_packets(cache if str(cache) not in ("", ".") else None, lambda: (src.packets(train_files), src.packets(test_files)))
        print(f"{len(train_files) + len(test_files)} photos from {data}: {len(train)} train / {len(test)} held-out tiles ({time.time() - t0:.0f} s)", flush=True)
        prior, rows = fit_priors(src, train, test, FitConfig(dim, steps, batch, seed=seed, device=device))
    report = {"data": str(data), "photos": len(train_files) + len(test_files), "held_out_photos": len(test_files), "dim": dim, "steps": steps, "results": rows}
    write(out, export, prior, report)
    print(f"done in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    typer.run(main)
