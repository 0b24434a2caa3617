"""Fit the hificodec index priors on training speech and write the shipped weights file.

    python models/hificodec/fit_prior.py --generator .ckpt/out/hificodec_16k.safetensors \\
        --out models/hificodec/weights/hificodec_16k.safetensors

Encodes training speech with the exported generator on the CPU (all levels, in packets of
`CHUNK_FRAMES` frames like the codec) and hands the packets to the prior-fitting driver
(`models/trainkit/priors.py`): one `ContextPrior` per codebook on the contexts of
`index_coding.contexts` plus a unigram table, bits per index on held-out training files, and one
safetensors file with the fp16 generator and the integer priors (so the header's weights hash
covers both). Never point it at the dev set.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
import typer

from nmc.codec import entropy as E
from nmc.codec.prior import PriorSet
from nmc.codec.threads import torch_threads
from nmc.codec.weights import read_weights
from nmc.models.hificodec.codec import CHUNK_FRAMES, GROUPS, SAMPLE_RATE, SETTINGS, HiFiCodecCodec, Rate, silence_of, silent_frames
from nmc.models.hificodec.index_coding import context_sizes, contexts, encode_indices
from nmc.models.hificodec.network import HiFiCodec
from nmc.models.trainkit.priors import FitConfig, IndexSource, Packet, cached_packets, fit_priors, split_files, write

AUDIO_EXTS = (".opus", ".flac", ".wav", ".ogg")


def read_mono(path: Path) -> np.ndarray:
    """One file as 16 kHz mono float32 (channel mean)."""
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    return (soxr.resample(x, sr, SAMPLE_RATE) if sr != SAMPLE_RATE else x).astype(np.float32)


def packet_indices(net: HiFiCodec, files: list[Path], device: str = "cpu") -> list[Packet]:
    """Indices of every packet of every file: per codebook `(T <= CHUNK_FRAMES,)`, all levels, near-silent
    frames replaced by the indices of digital silence as the codec's encoder does (`silent_frames`)."""
    out = []
    with torch.inference_mode():
        silence = silence_of(lambda z: net.encode(torch.from_numpy(z).to(device), net.config.levels).cpu().numpy())
        for path in files:
            x = read_mono(path)
            x = x / max(1.0, float(np.abs(x).max(initial=0.0)))  # the codec's gain policy
            idx = net.encode(torch.from_numpy(x)[None, None].to(device), net.config.levels)[0].cpu().numpy()
            idx[:, silent_frames(x, 0, idx.shape[1])] = silence[:, None]
            out += [list(idx[:, i : i + CHUNK_FRAMES].astype(np.int64)) for i in range(0, idx.shape[1], CHUNK_FRAMES)]
    return out


def index_source(net: HiFiCodec, device: str) -> IndexSource:
    """The codec's indices, contexts and coding, for the prior-fitting driver."""

    def code(prior: PriorSet, packet: Packet, ks: list[int]) -> bytes:
        enc = E.Encoder()
        encode_indices(enc, prior, np.stack([packet[k] for k in ks]), GROUPS)  # ks: the first codebooks
        return enc.to_bytes()

    n, K = GROUPS * net.config.levels, net.config.codebook_size
    return IndexSource(
        alphabets=[K] * n,
        packets=lambda files: packet_indices(net, files, device),
        contexts=lambda packet, k: contexts(np.stack(packet), k, GROUPS, K),
        sizes=lambda k: context_sizes(n, GROUPS, K)[k],
        code=code,
        settings={s.name: list(range(s.codebooks)) for s in SETTINGS if isinstance(s, Rate)},
    )


def main(
    generator: Path = Path(".ckpt/out/hificodec_16k.safetensors"),  # export of train.py (fp16, no priors)
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
    torch.manual_seed(seed)
    try:
        train_files, test_files = split_files(data, AUDIO_EXTS, held_out, seed, lambda f: sf.info(str(f)).duration, minutes * 60)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    export = read_weights(generator)
    with torch_threads(threads):
        net = HiFiCodecCodec().build_net(export.state, export.args).to(device)
        src = index_source(net, device)
        train, test = cached_packets(cache if str(cache) not in ("", ".") else None, lambda: (src.packets(train_files), src.packets(test_files)))
        print(f"{len(train_files) + len(test_files)} files from {data}: {sum(p[0].size for p in train)} train / "
              f"{sum(p[0].size for p in test)} held-out frames ({time.time() - t0:.0f} s)", flush=True)
        prior, rows = fit_priors(src, train, test, FitConfig(dim, steps, batch, seed=seed, device=device))
    report = {"data": str(data), "files": len(train_files) + len(test_files), "held_out_files": len(test_files), "dim": dim, "steps": steps, "results": rows}
    write(out, export, prior, report)
    print(f"done in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    typer.run(main)
