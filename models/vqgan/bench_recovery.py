"""CPU time of a vqgan decode with recovery: a photo coded, packets lost, `--recover` decode (fill + synthesis).

    python models/vqgan/bench_recovery.py --weights .data/vqgan_codec.safetensors --lost 2          # random model of the shipped size
    python models/vqgan/bench_recovery.py --weights W --recovery models/vqgan/weights/recovery.safetensors

Without `--recovery`, a random recovery model of the given size (`--dim`, `--layers`, ...) is bound to
the weights (speed does not depend on training). Times, best of `--repeats`: the whole decode of the
damaged file through the codec (entropy decoding, fill, synthesis), the loss-free decode, and the
fill alone (the codec's `conceal`: the model where it binds the codebook, else the neighbours' mean); the process runs
with `--threads` torch threads (the codec's networks and its fill run on one anyway).
"""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import typer
from PIL import Image

from nmc.codec import api
from nmc.codec import media as M
from nmc.codec.api import header_dictionary
from nmc.codec.loss import with_lost
from nmc.codec.weights import read_weights
from nmc.models.vqgan.codec import VQGANCodec
from nmc.models.vqgan.network import Ladder, base_of
from nmc.models.vqgan.recovery import IndexTransformer, RecoveryArgs, codebook_hashes, network_hash, save_recovery


def main(
    weights: Path = typer.Option(..., help="an assembled vqgan weights file (network + priors)"),
    image: Path = Path("samples/photo_aqua.png"),
    setting: str = "s64",
    recovery: Path | None = None,  # a recovery file; default: a random one of the size below
    dim: int = 128,
    layers: int = 6,
    heads: int = 4,
    embed: int = 64,
    max_side: int = 32,
    code_inputs: bool = False,  # the random model's tokens mapped from the unit codes (train_recovery.py's default kind)
    pointer: bool = False,  # the random model picks a neighbour to copy (RecoveryArgs.pointer; `steps` is then unused)
    steps: int = 2,  # rounds of the fill (the codec's FILL_STEPS)
    lost: int = 2,  # packets lost, spread evenly over the file
    threads: int = 2,
    repeats: int = 3,
) -> None:
    torch.set_num_threads(threads)
    tmp = Path(tempfile.mkdtemp())
    if recovery is None:
        w = read_weights(weights)
        args = dict(w.args)
        sizes = (*sorted(args["rungs"]), int(args["codebook_size"]))
        net = Ladder.from_state_dict(w.state, w.args)
        torch.manual_seed(0)
        model = IndexTransformer(RecoveryArgs(sizes, dim, layers, heads, embed, max_side, net.unit_codes(sizes[0]).shape[1] if code_inputs else 0, pointer))
        if code_inputs:
            model.set_codes({s: net.unit_codes(s) for s in sizes})
        recovery = tmp / "random.safetensors"
        save_recovery(recovery, model, network_hash(base_of(w.state, w.args)[0]), {"random": True},
                      codebook_hashes(net))
    codec = VQGANCodec(weights, recovery_path=recovery, fill_steps=steps)
    px = np.asarray(Image.open(image).convert("RGB"))
    buf = io.BytesIO()
    api.compress_to_file(codec, M.Image(px), buf, codec.setting(setting))
    data = buf.getvalue()
    n = api.open_file(io.BytesIO(data), codec=codec).header.packets or 0
    mask = np.zeros(n, bool)
    mask[np.linspace(0, n - 1, lost).round().astype(int)] = lost > 0  # spread over the file
    damaged = with_lost(data, mask, header_dictionary)
    api.decompress(damaged, recover=True, codec=codec)
    recovered = codec.recovered
    size = codec.setting(setting).codebook_size  # type: ignore[attr-defined]
    installed, covered = codec.recovery
    rec = installed if size in covered else None  # else --recover fills the neighbours' mean, which is what is timed
    times: dict[str, list[float]] = {"decode with recovery": [], "loss-free decode": [], "fill alone": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        api.decompress(damaged, recover=True, codec=codec)
        t1 = time.perf_counter()
        api.decompress(data, codec=codec)
        t2 = time.perf_counter()
        times["decode with recovery"].append(t1 - t0)
        times["loss-free decode"].append(t2 - t1)
    cells = (-(-px.shape[0] // 16), -(-px.shape[1] // 16))
    grid = np.zeros(cells, np.int64)
    masked = np.zeros(cells, bool)
    masked[::2, ::4] = True
    if lost > 1:
        masked[1::2, 2::4] = True
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.inference_mode():
            codec.conceal(grid, masked, codec.sizes.index(size))  # the codec's own fill, on one thread as in a decode
        times["fill alone"].append(time.perf_counter() - t0)
    how = f"recovery model {sum(p.numel() for p in rec.parameters()) / 1e6:.2f} M parameters {rec.args}, {steps} rounds" if rec else "the neighbours' mean"
    print(f"{image.name} {px.shape[1]}x{px.shape[0]} ({cells[1]}x{cells[0]} cells), {setting}, {int(mask.sum())} of {n} packets lost "
          f"({recovered}); {how}; {threads} thread(s), best of {repeats}:")  # fmt: skip
    for name, ts in times.items():
        print(f"  {name}: {min(ts):.3f} s")


if __name__ == "__main__":
    typer.run(main)
