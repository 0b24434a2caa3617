"""Assemble the vqgan weights file: the base network, every ladder rung, and every rung's index prior.

    python models/vqgan/fit_prior.py --network vqgan.safetensors --ladder ladder.safetensors \\
        --rung r16.safetensors --rung r64.safetensors --out models/vqgan/weights/vqgan.safetensors

`--network` is the base export (`train.py --export`), or an assembled file (its rungs stay unless
replaced). Every rung of `--ladder` (ladder.py) enters
with its k-means codebook and the base's 1x1 convolutions; a `--rung` export (a `train.py --rung S`
fine-tune) replaces that rung with its fine-tuned codebook and convolutions, and its decoder when it
was fine-tuned too (its g_s differs from the base's). `--assemble-only` writes that network without
priors and stops (the GPU machine does this after the rung fine-tunes; the priors are fitted here). The training photos are encoded on the CPU in
tiles like the codec, each tile's index map cut into the sub-grids of `--packets` interleaved
packets, and the prior-fitting driver (`models/trainkit/priors.py`) fits one `ContextPrior` per
codebook size (`packets.contexts`) and a unigram table, reports bits per index on held-out photos,
and writes one safetensors file (network + priors: the header's weights hash covers both). Then the
held-out photos go through the codec itself: real bpp (header included) at every setting with
`--packets` packets per tile and with one. Never point it at the dev set.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import torch
import typer

from nmc.codec import api
from nmc.codec import media as M
from nmc.codec.prior import PriorSet
from nmc.codec.threads import torch_threads
from nmc.codec.tiling import tiles
from nmc.codec.weights import Weights, read_weights, write_weights
from nmc.models.trainkit.priors import FitConfig, IndexSource, Packet, cached_packets, fit_priors, split_files, write
from nmc.models.vqgan.codec import ENC_MARGIN, PACKETS, TILE, VQGANCodec
from nmc.models.vqgan.network import VQGAN, Ladder, base_of, export_tensors
from nmc.models.vqgan.packets import contexts, encode_cells, interleave, packet_cells
from nmc.models.vqgan.tiling import STRIDE, local, tile_indices

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")


def assemble(network: Path, ladder: Path | None, rungs: list[Path]) -> Weights:
    """The codec's network (fp16 convolutions, fp32 codebooks) from the base export, a ladder file and rung exports."""
    from safetensors.torch import load_file

    base = read_weights(network)
    parts: dict[int, dict[str, torch.Tensor]] = {}  # codebook size -> the rung's tensors (names below `rungs.S.`)
    if "rungs" in base.args:  # an assembled file (--assemble-only, or the codec's): its rungs, then the changes
        whole = Ladder.from_state_dict(base.state, base.args)
        for s in map(int, whole.rungs):  # the base's own decoder (`rungs.{base}.g_s`) too, not only the rungs'
            parts[s] = {k[len(f"rungs.{s}.") :]: v for k, v in whole.state_dict().items() if k.startswith(f"rungs.{s}.")}
        base.state, base.args = base_of(base.state, base.args)
    net = VQGAN.from_state_dict(base.state, base.args)
    if ladder is not None:
        for key, t in load_file(str(ladder)).items():
            if key.endswith(".codebook"):
                size = int(key.split(".")[1])
                parts[size] = {"vq.codebook": t} | {f"vq.{k}": v for k, v in net.vq.state_dict().items() if k != "codebook"}
    for path in rungs:
        w = read_weights(path)
        tuned = VQGAN.from_state_dict(w.state, w.args)
        if any(not torch.equal(a, b) for a, b in zip(tuned.g_a.state_dict().values(), net.g_a.state_dict().values())):
            raise typer.BadParameter(f"--rung {path}: its encoder is not the base network's (not a rung fine-tune of {network})")
        decoder_tuned = any(not torch.equal(a, b) for a, b in zip(tuned.g_s.state_dict().values(), net.g_s.state_dict().values()))
        parts[tuned.vq.size] = {f"vq.{k}": v for k, v in tuned.vq.state_dict().items()}
        parts[tuned.vq.size] |= {f"g_s.{k}": v for k, v in tuned.g_s.state_dict().items()} if decoder_tuned else {}
    if not parts:
        raise typer.BadParameter("no rungs: give --ladder and/or --rung")
    out = Ladder(net.args, {s: any(k.startswith("g_s.") for k in p) for s, p in parts.items()})
    state = net.state_dict() | {f"rungs.{s}.{k}": v for s, p in parts.items() for k, v in p.items()}
    out.load_state_dict(state)
    return Weights(export_tensors(out), out.model_args(), report={"network": base.report, "rungs": [str(p) for p in rungs]})


def tile_packets(net: Ladder, files: list[Path], lattice: tuple[int, int], device: str = "cpu") -> list[Packet]:
    """Per tile of every file, the sub-grid of each interleaved packet at every codebook size (the
    network on `device`: on a GPU a rare index may differ from the CPU's, which only the statistics see)."""
    out, run = [], local(net, device)
    for path in files:
        rgb, _ = M.to_rgb8(M.read_image(path))
        for box in tiles(rgb.shape[0], rgb.shape[1], TILE, STRIDE):
            grids = tile_indices(run, rgb, box, net.sizes, ENC_MARGIN)
            out += [[g[cells] for g in grids] for cells in packet_cells(grids[0].shape, lattice)]
    return out


def index_source(net: Ladder, lattice: tuple[int, int], device: str = "cpu", code_tables: bool = True) -> IndexSource:
    """The codec's indices, contexts and coding, for the prior-fitting driver: codebook k is size `net.sizes[k]`;
    with `code_tables` each prior's tables are fitted as functions of the codebook's unit codes."""

    def code(prior: PriorSet, packet: Packet, ks: list[int]) -> bytes:
        return b"".join(encode_cells(prior, k, packet[k]) for k in ks)

    return IndexSource(
        alphabets=net.sizes,
        packets=lambda files: tile_packets(net, files, lattice, device),
        contexts=lambda packet, k: contexts(packet[k], net.sizes[k]),
        sizes=lambda k: [net.sizes[k]] * 3,
        code=code,
        settings={f"s{s}": [k] for k, s in enumerate(net.sizes)},
        codes=(lambda k: net.unit_codes(net.sizes[k]).cpu().numpy()) if code_tables else None,
    )


def held_out_rates(weights: Path, files: list[Path], packets: list[int]) -> list[dict]:
    """Mean real bpp (header included) of `files` through the codec at every setting, for each packets-per-tile count."""
    rows = []
    for p in packets:
        codec = VQGANCodec(weights, packets=p)
        images = [M.read_image(f) for f in files]
        for s in codec.settings():
            bpp = []
            for image in images:
                buf = io.BytesIO()
                api.compress_to_file(codec, image, buf, s)
                bpp.append(M.real_rate(buf.tell(), M.metadata(image))[0])
            rows.append({"packets": p, "setting": s.name, "nominal_bpp": round(s.rate, 5), "real_bpp": round(float(np.mean(bpp)), 5)})
    return rows


def main(
    network: Path = typer.Option(..., help="base export (train.py --export)"),
    out: Path = Path("models/vqgan/weights/vqgan.safetensors"),  # combined weights file
    ladder: Path | None = None,  # ladder.py's file: every rung with its k-means codebook and the base's 1x1 convs
    rung: list[Path] = typer.Option([], help="rung fine-tune exports (train.py --rung S --export), replacing the ladder's"),
    data: Path = Path("../shared/data/train/images"),  # training photos (never dev)
    packets: int = PACKETS,  # packets per tile the priors are fitted for (the codec's default)
    held_out: float = 0.1,  # fraction of the photos kept for the report
    dim: int = 32,  # ContextPrior embedding size
    steps: int = 400,  # Adam steps per codebook (400 x 2048 with code tables: the measured setting, CARD)
    batch: int = 2048,
    seed: int = 0,
    threads: int = 1,  # torch threads (more threads stall on a loaded box)
    device: str = "cpu",  # where the training photos' indices are computed and the priors fitted
    cache: Path = Path(""),  # .npz of the encoded indices: reused if it exists, else written
    assemble_only: bool = False,  # write base + rungs without priors (a new --network) and stop
    real_rates: bool = typer.Option(True, help="code the held-out photos at every setting (minutes on the CPU)"),
    code_tables: bool = True,  # fit each prior's tables as functions of the unit codes (generalises for large codebooks)
) -> None:
    t0 = time.time()
    torch.manual_seed(seed)
    if assemble_only:
        write_weights(out, assemble(network, ladder, rung))
        print(f"wrote {out} ({out.stat().st_size / 2**20:.2f} MiB): network only, no priors")
        return
    try:
        train_files, test_files = split_files(data, IMAGE_EXTS, held_out, seed)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    export = assemble(network, ladder, rung)
    lattice = interleave(packets)
    with torch_threads(threads):
        net = Ladder.from_state_dict(export.state, export.args).to(device)  # the fp16-rounded network the codec runs
        src = index_source(net, lattice, device, code_tables)
        train, test = cached_packets(cache if str(cache) not in ("", ".") else None, lambda: (src.packets(train_files), src.packets(test_files)))
        print(f"{len(train_files) + len(test_files)} photos from {data}: {len(train)} train / {len(test)} held-out packets, "
              f"codebooks {net.sizes} ({time.time() - t0:.0f} s)", flush=True)  # fmt: skip
        prior, rows = fit_priors(src, train, test, FitConfig(dim, steps, batch, seed=seed, device=device))
        report = {"data": str(data), "photos": len(train_files) + len(test_files), "held_out_photos": len(test_files), "dim": dim,
                  "steps": steps, "batch": batch, "code_tables": code_tables, "packets": packets, "results": rows}  # fmt: skip
        write(out, export, prior, report)
        if not real_rates:
            return
        rates = held_out_rates(out, test_files, sorted({1, packets}))
    print("packets  setting  nominal bpp  real bpp (held-out photos, header included)")
    for r in rates:
        print(f"{r['packets']:7d}  {r['setting']:7s}  {r['nominal_bpp']:11.4f}  {r['real_bpp']:.4f}  ({100 * (1 - r['real_bpp'] / r['nominal_bpp']):.1f} % below)")
    write(out, export, prior, {**report, "real_rates": rates})
    print(f"done in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    typer.run(main)
