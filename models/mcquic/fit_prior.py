"""Fit the mcquic index priors on training photos and write the shipped weights file.

    python models/mcquic/fit_prior.py --network .ckpt/out/mcquic.safetensors \\
        --out models/mcquic/weights/mcquic.safetensors

Encodes the training photos with the exported network on the CPU (all four stages, in tiles
like the codec), fits one `ContextPrior` per codebook on the contexts of `codec.contexts` plus
a unigram table, reports bits/index on held-out training photos against the fixed 8 bits, and
writes one safetensors file with the network and the integer priors (so the header's weights
hash covers both). Never point it at the dev set.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import typer
from nmc.codec import entropy as E
from nmc.codec import media as M
from nmc.codec.prior import fit_prior, ideal_bits
from nmc.models.mcquic.codec import (
    COARSE_M,
    FINE_M,
    TILE,
    IndexPrior,
    context_sizes,
    contexts,
    tile_indices,
    tiles,
    write_weights,
)
from nmc.models.mcquic.network import export_tensors, load_model

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")


def encode_all(net, files: list[Path], stages: int) -> list[list[np.ndarray]]:  # type: ignore[no-untyped-def]
    """Index grids of every tile of every file (coarse codebooks, then fine)."""
    out = []
    for path in files:
        rgb, _ = M.to_rgb8(M.read_image(path))
        out += [tile_indices(net, rgb, box, stages) for box in tiles(rgb.shape[0], rgb.shape[1], TILE)]
    return out


def stack(tiles_: list[list[np.ndarray]], k: int, K: int) -> tuple[np.ndarray, np.ndarray]:
    """Symbols `(N,)` and context rows `(N, n_ctx)` of codebook k over all tiles."""
    return np.concatenate([t[k].ravel() for t in tiles_]), np.concatenate([contexts(t, k, K) for t in tiles_])


def main(
    network: Path = Path(".ckpt/out/mcquic.safetensors"),  # export of train.py (fp16 convs, fp32 codebooks)
    out: Path = Path("models/mcquic/weights/mcquic.safetensors"),  # combined weights file
    data: Path = Path("../shared/data/train/images"),  # training photos (never dev)
    held_out: int = 10,  # every n-th photo is kept for the report
    dim: int = 32,  # ContextPrior embedding size
    steps: int = 3000,  # Adam steps per codebook
    batch: int = 4096,
    seed: int = 0,
    threads: int = 1,  # torch threads (more threads stall on a loaded box)
    cache: Path = Path(""),  # .npz of the encoded indices: reused if it exists, else written
) -> None:
    t0 = time.time()
    if "dev" in data.resolve().parts:
        raise typer.BadParameter(f"refusing to fit priors on a dev set: {data}")
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    net = load_model(network)
    if not all(torch.isfinite(vq.embed).all() for vq in net.vq):
        raise typer.BadParameter(f"{network}: codebooks are not finite (an fp16 export? re-export with network.save_model)")
    a = net.args
    K, n_cb = a.coarse_k, COARSE_M + FINE_M * a.fine_stages
    files = sorted(p for p in data.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    test_files = files[::held_out]
    train_files = [f for f in files if f not in test_files]
    if str(cache) not in ("", ".") and cache.exists():
        with np.load(cache) as z:
            train = [[z[f"train{i}_{k}"] for k in range(n_cb)] for i in range(int(z["n_train"]))]
            test = [[z[f"test{i}_{k}"] for k in range(n_cb)] for i in range(int(z["n_test"]))]
    else:
        train, test = encode_all(net, train_files, a.qualities), encode_all(net, test_files, a.qualities)
        if str(cache) not in ("", "."):
            arrays = {f"{name}{i}_{k}": g.astype(np.uint8) for name, ts in (("train", train), ("test", test)) for i, t in enumerate(ts) for k, g in enumerate(t)}
            np.savez(cache, n_train=len(train), n_test=len(test), **arrays)  # type: ignore[arg-type]
    train = [[g.astype(np.int64) for g in t] for t in train]
    test = [[g.astype(np.int64) for g in t] for t in test]
    print(f"{len(files)} photos from {data}: {len(train)} train / {len(test)} held-out tiles ({time.time() - t0:.0f} s)", flush=True)

    priors, unigram, rows = [], [], []
    for k in range(n_cb):
        y, ctx = stack(train, k, K)
        prior = fit_prior(y, ctx, K, context_sizes(k, K), dim=dim, steps=steps, batch=batch, seed=seed + k)
        uni = E.freqs_from_counts(np.bincount(y, minlength=K) + 0.5)
        yt, ct = stack(test, k, K)
        ctx_bits, uni_bits = ideal_bits(prior, yt, ct) / len(yt), E.cross_entropy_bits(yt, uni) / len(yt)
        priors.append(prior)
        unigram.append(uni)
        rows.append({"codebook": k, "context_bits": round(ctx_bits, 4), "unigram_bits": round(uni_bits, 4)})
        stage = "coarse" if k < COARSE_M else f"fine stage {(k - COARSE_M) // FINE_M + 1}"
        print(f"codebook {k} ({stage}): context {ctx_bits:.3f} bit/index, unigram {uni_bits:.3f}, fixed {np.log2(K):.0f} "
              f"({len(y)} train indices, {time.time() - t0:.0f} s)", flush=True)
    prior = IndexPrior(priors, np.stack(unigram).astype(np.int32))

    # what the codec writes: range-coded held-out tiles at each quality, against the fixed length
    pixels = sum(t[0].size * 256 for t in test)
    print("quality  coded bpp  fixed bpp  saving  (held-out tiles, indices only, range-coded)")
    for q in range(1, a.qualities + 1):
        n = COARSE_M + FINE_M * (q - 1)
        nbytes = 0
        for t in test:
            enc = E.Encoder()
            prior.encode(enc, t[:n])
            nbytes += len(enc.to_bytes())
        bpp, fixed = 8 * nbytes / pixels, net.bpp(q, 16, 16)
        rows.append({"quality": q, "coded_bpp": round(bpp, 4), "fixed_bpp": fixed})
        print(f"q{q}       {bpp:9.4f}  {fixed:9.4f}  {100 * (1 - bpp / fixed):5.1f} %")
    info = {"network": network.name, "data": str(data), "photos": len(files), "held_out_photos": len(test_files),
            "dim": dim, "steps": steps, "results": rows}
    write_weights(out, export_tensors(net), json.dumps(asdict(a)), prior, info)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    typer.run(main)
