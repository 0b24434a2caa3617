"""Fit the hificodec index priors on training speech and write the shipped weights file.

    python models/hificodec/fit_prior.py --generator .ckpt/out/hificodec_16k.safetensors \\
        --out models/hificodec/weights/hificodec_16k.safetensors

Encodes training speech with the exported generator on the CPU (all levels, in packets of
`CHUNK_FRAMES` frames like the codec), fits one `ContextPrior` per codebook on the contexts of
`codec.contexts` plus a unigram table, reports bits/index on held-out training files against
the fixed 10 bits, and writes one safetensors file with the fp16 generator and the integer
priors (so the header's weights hash covers both). Never point it at the dev set.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch
import typer
from nmc.codec import entropy as E
from nmc.codec.prior import fit_prior, ideal_bits
from nmc.models.hificodec.codec import (
    CHUNK_FRAMES,
    SAMPLE_RATE,
    GRVQPrior,
    contexts,
    write_weights,
)
from nmc.models.hificodec.network import CodecConfig, HiFiCodec
from safetensors import safe_open

AUDIO_EXTS = (".opus", ".flac", ".wav", ".ogg")


def read_mono(path: Path) -> np.ndarray:
    """One file as 16 kHz mono float32 (channel mean)."""
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    return (soxr.resample(x, sr, SAMPLE_RATE) if sr != SAMPLE_RATE else x).astype(np.float32)


def packet_indices(net: HiFiCodec, files: list[Path], device: str = "cpu") -> list[np.ndarray]:
    """Indices `(n_codebooks, T <= CHUNK_FRAMES)` of every packet of every file (all levels)."""
    out = []
    with torch.inference_mode():
        for path in files:
            x = read_mono(path)
            x = x / max(1.0, float(np.abs(x).max(initial=0.0)))  # the codec's gain policy
            idx = net.encode(torch.from_numpy(x)[None, None].to(device), net.config.levels)[0].cpu().numpy()
            out += [idx[:, i : i + CHUNK_FRAMES] for i in range(0, idx.shape[1], CHUNK_FRAMES)]
    return out


def stack(packets: list[np.ndarray], k: int, groups: int, K: int) -> tuple[np.ndarray, np.ndarray]:
    """Symbols `(N,)` and context rows `(N, n_ctx)` of codebook k over all packets."""
    ctx = np.concatenate([contexts(p, k, groups, K) for p in packets])
    return np.concatenate([p[k] for p in packets]), ctx


def main(
    generator: Path = Path(".ckpt/out/hificodec_16k.safetensors"),  # fp16 export of train.py
    out: Path = Path("models/hificodec/weights/hificodec_16k.safetensors"),  # combined weights file
    data: Path = Path("../shared/data/train/speech"),  # training speech (never dev)
    minutes: float = 60.0,                # audio used, drawn at random from the files
    held_out: float = 0.1,                # fraction of those files kept for the report
    dim: int = 32,                        # ContextPrior embedding size
    steps: int = 2000,                    # Adam steps per codebook
    batch: int = 2048,
    seed: int = 0,
    threads: int = 1,                     # torch threads (more threads stall on a loaded box)
    cache: Path = Path(""),               # .npz of the encoded indices: reused if it exists, else written
    device: str = "cpu",                  # cuda: encode and fit there (the tables are integers either way)
) -> None:
    t0 = time.time()
    if "dev" in data.resolve().parts:
        raise typer.BadParameter(f"refusing to fit priors on a dev set: {data}")
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    with safe_open(str(generator), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in list(f.keys()) if not k.startswith("prior.")}
    config = CodecConfig.from_json(meta["config"])
    net = HiFiCodec.from_state_dict(state, config).to(device)
    K, groups, n_cb = config.codebook_size, config.groups, config.groups * config.levels

    files = sorted(p for p in data.rglob("*") if p.suffix.lower() in AUDIO_EXTS)
    random.Random(seed).shuffle(files)
    picked, total = [], 0.0
    for path in files:
        if total >= minutes * 60:
            break
        picked.append(path)
        total += sf.info(str(path)).duration
    n_test = max(1, round(held_out * len(picked)))
    if str(cache) not in ("", ".") and cache.exists():
        with np.load(cache) as z:
            train, test = [z[f"train{i}"] for i in range(int(z["n_train"]))], [z[f"test{i}"] for i in range(int(z["n_test"]))]
    else:
        train, test = packet_indices(net, picked[n_test:], device), packet_indices(net, picked[:n_test], device)
        if str(cache) not in ("", "."):
            arrays: dict[str, Any] = {"n_train": len(train), "n_test": len(test)}
            arrays.update({f"train{i}": x for i, x in enumerate(train)} | {f"test{i}": x for i, x in enumerate(test)})
            np.savez(cache, **arrays)
    n_train, n_test_frames = sum(x.shape[1] for x in train), sum(x.shape[1] for x in test)
    print(f"{len(picked)} files, {total / 60:.1f} min from {data}: {n_train} train / {n_test_frames} held-out frames "
          f"({time.time() - t0:.0f} s)", flush=True)

    priors, unigram, rows = [], [], []
    for k in range(n_cb):
        y, ctx = stack(train, k, groups, K)
        prior = fit_prior(y, ctx, K, [K] * ctx.shape[1], dim=dim, steps=steps, batch=batch, seed=seed + k,
                           device=device)
        uni = E.freqs_from_counts(np.bincount(y, minlength=K) + 0.5)
        yt, ct = stack(test, k, groups, K)
        ctx_bits = ideal_bits(prior, yt, ct) / len(yt)
        uni_bits = E.cross_entropy_bits(yt, uni) / len(yt)
        used = np.count_nonzero(np.bincount(y, minlength=K)) / K
        priors.append(prior)
        unigram.append(uni)
        rows.append({"codebook": k, "context_bits": round(ctx_bits, 4), "unigram_bits": round(uni_bits, 4), "used": round(used, 4)})
        print(f"codebook {k} (level {k // groups}, group {k % groups}): context {ctx_bits:.3f} bit/index, "
              f"unigram {uni_bits:.3f}, fixed 10, codes used {100 * used:.1f} % ({time.time() - t0:.0f} s)", flush=True)
    grvq = GRVQPrior(priors, np.stack(unigram).astype(np.int32), groups)

    # what the codec writes: per packet and codebook the cheaper of context and unigram table
    print("codebooks  bits/index  saving vs 10 bit  (held-out, range-coded)")
    for n in range(groups, n_cb + 1, groups):
        nbytes = 0
        for packet in test:
            enc = E.Encoder()
            grvq.encode(enc, packet[:n])
            nbytes += len(enc.to_bytes())
        bits = 8 * nbytes / (n * n_test_frames)
        rows.append({"codebooks": n, "coded_bits": round(bits, 4)})
        print(f"{n:9d}  {bits:10.3f}  {100 * (1 - bits / 10):15.1f} %")
    info = {"generator": generator.name, "step": meta.get("step"), "data": str(data), "files": len(picked),
            "train_frames": n_train, "held_out_frames": n_test_frames, "dim": dim, "steps": steps, "results": rows}
    write_weights(out, state, meta["config"], grvq, info)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    typer.run(main)
