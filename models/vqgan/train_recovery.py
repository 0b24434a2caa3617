"""Train the recovery transformer (`recovery.py`) on index maps of the training photos (`index_maps.py`).

Masked modelling as MaskGIT: a random crop of an index map at a random codebook size, a random share
of its cells masked (5-99 %; half the crops as whole packets of a random interleave lattice, the
pattern lost packets leave, half as independent cells, the pattern after some fill rounds), cross-
entropy on the masked cells. A fresh model's tokens (tied with its output) are a learned map of the
codes' fixed unit codes (`--code-inputs`, the default; `RecoveryArgs.code_dim`), or with
`--no-code-inputs` a learned table (sessions 3-5: worse than copying the nearest cell); a resumed
model keeps its own kind. With `--pointer` (`RecoveryArgs.pointer`) the model instead picks one of the 8
neighbours of each masked cell to copy: the target is the received neighbour whose unit code is nearest the
cell's true one (all of them on a tie: the loss is -log of their total probability), on the masked cells
with at least one received neighbour.

With `--decoded-loss` the pointer learns what the decoded image needs instead: each step takes photo crops
(`--data`, the training photos), encodes them with the frozen vqgan network (`--network`, the codec's file) at a
codebook size of `--train-sizes`, loses packets of the codec's 2x4 interleave lattice (each with a probability in
[`--mask-min`, `--loss-max`]), fills every lost cell by one received neighbour (straight-through Gumbel-softmax:
forward one neighbour's code, as `fill_pointer` copies one; backward the mixture of the candidates' codes), decodes
the map with that operating point's decoder (`Ladder.synthesize`) and takes L1 + ST-LPIPS against the loss-free
decode of the same indices (`--target decode`) or the photo, plus `--w-ce` times the cross-entropy above. Its
held-out evaluation decodes the held-out photos: ST-LPIPS of the pointer's fill against the nearest copy's.
`--init` starts a fresh run from a recovery file (an export, e.g. the GPU-trained pointer).

With `--continuous` (implies `--decoded-loss`; RecoveryArgs.continuous) the model picks nothing: it regresses a
code vector per lost cell, added to the mean of its received neighbours' unit codes (`recovery.continuous_codes`;
the head starts at zero, so step 0 fills that mean), with the same crops, losses and decoder but a direct gradient
(no Gumbel); received cells keep their codes. `--init` may then be a pointer or code-input export: its transformer
is kept, the code head starts at zero (a continuous export keeps its head, unless `--fresh-head`). The held-out check
adds the neighbours' mean (the untrained fill).

With `--tune-decoder S` (`--continuous`, S one of the sizes trained) a copy of S's decoder trains beside the model, at
`--decoder-lr` times its learning rate, on the steps at S: a concealing decoder, which sees every lost cell's received
neighbourhood through its receptive field (LossResilientLIC trains its decoder so). The export carries it
(`decoder.S.*`); the codec decodes a window with lost cells through it, any other window with the network's own
decoder. Keep other sizes in `--train-sizes` (e.g. 256,1024): the transformer serves every size, and one trained at
S alone drifts at the others (session 11: s256 0.1080 -> 0.1114 after 600 CPU steps at s1024 only).
One file, top to bottom, like models/vqgan/train.py:

    python models/vqgan/train_recovery.py --tiny --max-steps 20 --maps .data/vqgan_maps.safetensors --ckpt-dir .ckpt/rec-tiny
    python models/vqgan/train_recovery.py --ckpt-dir .ckpt/recovery --max-steps 0 --export recovery.safetensors   # evaluate, export
    python models/vqgan/train_recovery.py --decoded-loss --init POINTER.safetensors --ckpt-dir .ckpt/rec-decoded --batch 4 --crop 128
    python models/vqgan/train_recovery.py --continuous --tiny --max-steps 20 --ckpt-dir .ckpt/rec-cont-tiny --holdout 2
    python models/vqgan/train_recovery.py --continuous --tune-decoder 1024 --train-sizes 256,1024 --init models/vqgan/weights/recovery.safetensors \
        --target photo --ckpt-dir .ckpt/rec-conceal --batch 4 --crop 128                        # a concealing decoder
    torchrun --standalone --nproc_per_node=$NGPU models/vqgan/train_recovery.py --minutes 7 --ckpt-dir .ckpt/recovery \\
        --log-file $OUT/recovery.log --export $OUT/recovery.safetensors

Resumes from `--ckpt-dir` (models/trainkit checkpoints); the learning rate depends on the step only and
every draw comes from (seed, rank, step); rank 0 decides when to stop. The held-out photos' maps
measure the end (`evaluate`): with one or two of 8 packets lost, the accuracy and the mean cosine between
the filled and the true unit code of the argmax fill, the expected-code fill and the nearest-cell copy,
and the one-shot cross-entropy; for a pointer model, of its fill, the nearest-cell copy and the best
received neighbour (what a perfect pointer gets in its first round).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import typer
from torch.nn.parallel import DistributedDataParallel as DDP

from nmc.models.trainkit import checkpoint as ckpt_io
from nmc.models.trainkit import runtime
from nmc.models.trainkit.images import random_crops, read_image, source_weights, split_photos
from nmc.models.trainkit.logger import Logger
from nmc.models.trainkit.schedule import Schedule
from nmc.models.vqgan.index_maps import load_network, read_maps
from nmc.models.vqgan.network import Ladder, PatchDiscriminator
from nmc.models.vqgan.packets import packet_cells
from nmc.models.vqgan.recovery import (SLOTS, IndexTransformer, RecoveryArgs, best_slots, codes_hash, continuous_codes, decoder_hashes, fill, fill_codes,
                                       fill_mean, fill_nearest, load_recovery, nearest_codes, neighbours, save_recovery)  # fmt: skip
from nmc.models.vqgan.train import TINY_DISC, st_lpips_net

TINY = {"dim": 32, "layers": 2, "heads": 2, "embed": 16, "max_side": 16}
LATTICES = [(2, 4), (4, 2), (2, 2), (4, 4), (1, 8), (8, 1), (3, 3)]  # packets of a tile: (rows, columns)
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def masks(b: int, h: int, w: int, lo: float, hi: float, gen: torch.Generator, focus: float = 0.0, focus_hi: float = 0.5) -> torch.Tensor:
    """`[b, h, w]` bool: per crop a share masked, as lost packets of a lattice (half) or single cells; the share
    is uniform in [lo, focus_hi] for a `focus` share of the crops (the losses decoding meets), else in [lo, hi]."""
    top = torch.where(torch.rand(b, 1, 1, generator=gen) < focus, min(focus_hi, hi), hi)
    ratio = lo + (top - lo) * torch.rand(b, 1, 1, generator=gen)
    cells = torch.rand(b, h, w, generator=gen) < ratio
    packets = packet_masks(b, h, w, LATTICES[int(torch.randint(len(LATTICES), (), generator=gen))], ratio[:, 0, 0], gen)
    out = torch.where((torch.rand(b, 1, 1, generator=gen) < 0.5), packets, cells)
    empty = ~out.flatten(1).any(1)  # at least one masked cell per crop
    out.view(b, -1)[empty, torch.randint(h * w, (int(empty.sum()),), generator=gen)] = True
    return out


def packet_masks(b: int, h: int, w: int, lattice: tuple[int, int], rate: torch.Tensor, gen: torch.Generator, at_least_one: bool = False) -> torch.Tensor:
    """`[b, h, w]` bool: the cells of the lost packets of an interleave `lattice` (a, c) at a random phase per crop,
    each packet lost with probability `rate` `[b]` (the codec's packets: `packets.packet_cells`); with `at_least_one`,
    a crop that lost none loses one packet at random."""
    a, c = lattice
    y, x = torch.arange(h)[:, None], torch.arange(w)[None]
    phase = torch.randint(a * c, (b, 2), generator=gen)
    klass = ((y + phase[:, :1, None]) % a) * c + (x + phase[:, 1:, None]) % c  # packet of each cell
    lost = torch.rand(b, a * c, generator=gen) < rate[:, None]
    if at_least_one:
        one = F.one_hot(torch.randint(a * c, (b,), generator=gen), a * c).bool()
        lost |= one & ~lost.any(1, keepdim=True)
    return torch.gather(lost, 1, klass.reshape(b, -1)).reshape(b, h, w)


def batch_of(maps: list[torch.Tensor], n: int, max_side: int, min_side: int, gen: torch.Generator) -> tuple[torch.Tensor, tuple[int, int]]:
    """`n` random crops `[n, h, w]` (one shape per batch, at most the smallest chosen map) and a random origin."""
    ids = torch.randint(len(maps), (n,), generator=gen).tolist()
    h, w = (int(torch.randint(min_side, max_side + 1, (), generator=gen)) for _ in range(2))
    h, w = min(h, *(maps[i].shape[0] for i in ids)), min(w, *(maps[i].shape[1] for i in ids))
    crops = []
    for i in ids:
        m = maps[i]  # no flips here: a flipped index map is not the flipped photo's map (the maps hold those)
        top, left = (int(torch.randint(d - s + 1, (), generator=gen)) for d, s in zip(m.shape, (h, w)))
        crops.append(m[top : top + h, left : left + w])
    origin = (int(torch.randint(max_side - h + 1, (), generator=gen)), int(torch.randint(max_side - w + 1, (), generator=gen)))
    return torch.stack(crops), origin


def lost_cells(shape: tuple[int, ...], lost: Sequence[int] | np.ndarray) -> np.ndarray:
    """`shape` bool: the cells of the packets `lost` (their numbers) of a map in the codec's 2x4 interleave (phase 0)."""
    masked = np.zeros(shape, bool)
    cells = packet_cells((shape[0], shape[1]), (2, 4))
    for j in lost:
        masked[cells[j]] = True
    return masked


RULES = ("argmax", "expected", "nearest")  # the transformer's two decisions (`fill`), and copying the nearest received cell
POINTER_RULES = ("pointer", "nearest", "best")  # a pointer model's fill, the nearest copy, the best received neighbour (a ceiling)


def pointer_loss(scores: torch.Tensor, x: torch.Tensor, m: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores `[B, h, w, 8]` (`pointer_logits`), true indices `x` and mask `m` `[B, h, w]`, unit codes `[S, d]` ->
    (the mean of -log P(a best slot) over the masked cells with a received neighbour, the share of them whose
    top slot holds the true index)."""
    best = best_slots(x, m, codes)
    use = m & best.any(-1)
    s, b = scores[use], best[use]
    nll = torch.logsumexp(s, -1) - torch.logsumexp(s.masked_fill(~b, -math.inf), -1)
    picked = neighbours(x, 0)[use].gather(1, s.argmax(-1, keepdim=True))[:, 0]
    return nll.sum() / max(int(use.sum()), 1), (picked == x[use]).float().mean()


@torch.no_grad()
def evaluate(model: IndexTransformer, held: dict[int, list[torch.Tensor]], codebooks: dict[int, torch.Tensor], steps: int) -> dict[int, dict[str, float]]:
    """Per codebook size, on the held-out maps with packets (0, 0) and (0, 0) + (1, 2) of a 2x4 lattice lost:
    for each of `RULES` the share of lost cells filled with the true index (`acc_*`) and the mean cosine
    between the filled and the true unit code (`cos_*`: a near code decodes to near pixels), the lost
    cells (`cells`), and the one-shot cross-entropy (`bits` per lost cell, in each map's top-left window).
    On the model's device (a GPU after training there: minutes less than the CPU), fp32."""
    out = {}
    rules = POINTER_RULES if model.args.pointer else RULES
    for k, size in enumerate(model.args.sizes):
        codes = codebooks[size].float()
        hits, cos = dict.fromkeys(rules, 0), dict.fromkeys(rules, 0.0)
        bits, n, n_ce = 0.0, 0, 0
        for held_map in held[size]:
            grid = held_map.numpy()
            for lost in ([0], [0, 6]):
                masked = lost_cells(grid.shape, lost)
                true = torch.from_numpy(grid[masked])
                if model.args.pointer:
                    fills = {"pointer": fill(model, grid, masked, k), "nearest": fill_nearest(grid, masked), "best": best_fill(grid, masked, codes)}
                else:
                    fills = {"argmax": fill(model, grid, masked, k, steps), "expected": fill(model, grid, masked, k, steps, codes),
                             "nearest": fill_nearest(grid, masked)}  # fmt: skip
                for rule, filled in fills.items():
                    got = torch.from_numpy(filled[masked])
                    hits[rule] += int((got == true).sum())
                    cos[rule] += float((codes[got] * codes[true]).sum())
                n += int(masked.sum())
                if model.args.pointer:
                    continue
                s, dev = model.args.max_side, model.mask_token.device  # cross-entropy: the top-left window
                g, mk = torch.from_numpy(grid[:s, :s]).to(dev), torch.from_numpy(masked[:s, :s]).to(dev)
                logp = model.logits(model.features(g[None], mk[None], k)[0][mk], k).log_softmax(-1)
                bits -= float(logp.gather(1, g[mk][:, None]).sum()) / math.log(2)
                n_ce += int(mk.sum())
        out[size] = {"cells": n, "bits": bits / max(n_ce, 1), **{f"acc_{r}": hits[r] / max(n, 1) for r in rules},
                     **{f"cos_{r}": cos[r] / max(n, 1) for r in rules}}  # fmt: skip
    return out


def best_fill(grid: np.ndarray, masked: np.ndarray, codes: torch.Tensor) -> np.ndarray:
    """Each masked cell with a received neighbour copies the one whose code is nearest its true code (the pointer's
    target, first slot on a tie); the others keep the true index (so this is a ceiling only where it copies)."""
    x, m = torch.from_numpy(grid)[None], torch.from_numpy(masked)[None]
    best = best_slots(x, m, codes)[0]
    ys, xs = np.nonzero((masked & best.any(-1).numpy()))
    dy, dx = np.array(SLOTS)[best[ys, xs].float().argmax(-1).numpy()].T
    out = grid.copy()
    out[ys, xs] = grid[ys + dy, xs + dx]
    return out


# ---------------------------------------------------------------- the pointer trained on the decoded image (--decoded-loss)


def pointer_codes(scores: torch.Tensor, indices: torch.Tensor, masked: torch.Tensor, codes: torch.Tensor, tau: float, gen: torch.Generator) -> torch.Tensor:
    """The map's unit codes `[B, d, h, w]` with each masked cell filled by one neighbour of its pointer scores
    `[B, h, w, 8]` (straight-through Gumbel-softmax: forward the code of one neighbour, the argmax of scores +
    Gumbel noise, the kind of choice `fill_pointer` makes; backward the softmax(./`tau`) mixture of the candidates'
    codes). `indices` `[B, h, w]` are true everywhere (a masked cell's own code is never a candidate: its score is
    -inf); a masked cell without a received neighbour takes the nearest received cell's code (no gradient)."""
    noise = -torch.log(-torch.log(torch.rand(scores.shape, generator=gen).clamp_(1e-9, 1 - 1e-9))).to(scores.device)
    ready = torch.isfinite(scores).any(-1)
    soft = ((scores + noise).masked_fill(~ready[..., None], 0.0) / tau).softmax(-1)
    choice = F.one_hot(soft.argmax(-1), len(SLOTS)).to(soft) - soft.detach() + soft
    mixed = (choice[..., None] * neighbours(codes[indices], 0.0)).sum(-2)
    return torch.where((masked & ready)[..., None], mixed, nearest_codes(indices, masked, codes)).permute(0, 3, 1, 2)


def decoded_loss_of(net: IndexTransformer, model: torch.nn.Module, frozen: Ladder, lpips: torch.nn.Module, x: torch.Tensor, k: int, masked: torch.Tensor,
                 origin: tuple[int, int], codes: torch.Tensor, tau: float, target: str, gen: torch.Generator, autocast: Callable[[], Any],
                 decoder: torch.nn.Module | None = None, mean: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:  # fmt: skip
    """Photo crops `x` `[B, 3, H, W]` -> their indices at operating point `k` (the frozen network), the `masked` cells
    filled by the pointer (`pointer_codes`) or a continuous model (`continuous_codes`), decoded by that point's decoder:
    L1 and ST-LPIPS against the loss-free decode of the same indices (`target` "decode") or the photo ("photo"); a
    pointer's cross-entropy (an auxiliary term) and accuracy, a continuous fill's mean cosine with the lost cells' true
    codes (`cos`, and `cos0` of the neighbours' mean it starts from). Cells far from every lost one decode as in the
    target, so the loss sits around the lost cells. `decoder` (`--tune-decoder`): the trained copy of that point's `g_s`
    decodes instead of the frozen one. `mean` (`--mean-sizes`): the lost cells take the received neighbours' mean (the
    transformer is not run; only the concealing decoder learns). Returns the stats, the decode and its target."""
    size = frozen.sizes[k]
    with torch.no_grad():
        indices = frozen.quantize(frozen.features(x), size)
        ref = frozen.decode_at(indices, size) if target == "decode" else x
    with autocast():
        if net.args.continuous:
            own, near = codes[indices], nearest_codes(indices, masked, codes)
            delta = torch.zeros_like(own) if mean else net.code_delta(model(indices, masked, k, origin))  # model: through DDP, its hooks
            filled = continuous_codes(delta, own, masked, near)
            code_map = filled.permute(0, 3, 1, 2)
        else:
            scores = net.pointer_logits(model(indices, masked, k, origin), masked)
            code_map = pointer_codes(scores, indices, masked, codes, tau, gen)
        x_hat = frozen.synthesize(code_map, size, decoder).float()
        lp = lpips(x_hat, ref, normalize=True).float().mean()
    stats = {"l1": (x_hat - ref).abs().mean(), "lpips": lp}
    if net.args.continuous:
        if masked.any():  # not on intact maps (--loss-max 0)
            with torch.no_grad():
                start = continuous_codes(torch.zeros_like(own), own, masked, near)
                stats["cos"], stats["cos0"] = (F.cosine_similarity(f[masked].float(), own[masked], dim=-1).mean() for f in (filled, start))
        return stats, x_hat, ref
    ce, acc = pointer_loss(scores, indices, masked, codes)
    return {**stats, "ce": ce, "acc": acc}, x_hat, ref


@torch.no_grad()
def evaluate_decoded(model: IndexTransformer, frozen: Ladder, photos: list[torch.Tensor], lpips: torch.nn.Module, sizes: list[int],
                     rate: float = 0.2, draws: int = 2, side: int = 512) -> dict[int, dict[str, float]]:  # fmt: skip
    """Per codebook size, mean ST-LPIPS against the photo of the loss-free decode, the nearest-cell copy and the
    model's fill (`pointer`: `fill`; `continuous`: `fill_codes`, and `mean`, the received neighbours' mean it starts
    from; at a size with a concealing decoder (`Ladder.set_concealer`) also `concealed` and `mean_concealed`, those fills
    through it, and `lossfree_concealed`, the intact map through it), on the held-out photos (uint8 `[3, H, W]`, the top-left `side` x 1.5 `side` pixels, a multiple of 16)
    with the packets of a 2x4 lattice (`packet_cells`, phase 0 as the codec's tiles) lost at `rate`, `draws` seeded
    draws per photo (at least one packet lost). On the model's device."""
    dev, continuous = model.mask_token.device, model.args.continuous
    out: dict[int, dict[str, float]] = {}
    for size in sizes:
        k, unit = model.args.sizes.index(size), frozen.unit_codes(size)
        conceals = continuous and size in frozen.concealers
        sums = dict.fromkeys(("lossfree", "nearest", *(("mean", "continuous") if continuous else ("pointer",)),
                              *(("concealed", "mean_concealed", "lossfree_concealed") if conceals else ()), "lost"), 0.0)  # fmt: skip
        for p, im in enumerate(photos):
            h, w = (min(d, lim) // 16 * 16 for d, lim in zip(im.shape[1:], (side, side * 3 // 2)))
            x = im[:, :h, :w].float().div(255)[None].to(dev)
            grid = frozen.quantize(frozen.features(x), size)[0].cpu().numpy()
            codes_of = lambda g: unit[torch.from_numpy(g).to(dev)]  # noqa: E731  # (h, w, d), as decode_at gathers them
            score = lambda c, dec=None: float(lpips(frozen.synthesize(c.to(dev).permute(2, 0, 1)[None], size, dec), x, normalize=True).mean())  # noqa: E731
            sums["lossfree"] += draws * score(codes_of(grid))
            if conceals:
                sums["lossfree_concealed"] += draws * score(codes_of(grid), frozen.concealers[size])
            for d in range(draws):
                lost = np.random.default_rng([p, d, size]).random(8) < rate
                lost[np.random.default_rng([p, d, size, 1]).integers(8)] |= not lost.any()
                masked = lost_cells(grid.shape, np.flatnonzero(lost))
                sums["nearest"] += score(codes_of(fill_nearest(grid, masked)))
                if continuous:
                    mean = torch.from_numpy(fill_mean(grid, masked, unit))
                    sums["mean"] += score(mean)
                    filled = torch.from_numpy(fill_codes(model, grid, masked, k, unit))
                    sums["continuous"] += score(filled)
                    if conceals:
                        sums["concealed"] += score(filled, frozen.concealers[size])
                        sums["mean_concealed"] += score(mean, frozen.concealers[size])
                else:
                    sums["pointer"] += score(codes_of(fill(model, grid, masked, k)))
                sums["lost"] += float(lost.mean())
        out[size] = {key: v / max(1, draws * len(photos)) for key, v in sums.items()}
    return out


@app.command()
def main(
    maps: list[Path] = typer.Option([Path(".data/vqgan_maps.safetensors")], help="index_maps.py's files (training photos only; "
                                    "several: their maps together, the first one's held-out maps evaluate)"),  # fmt: skip
    ckpt_dir: Path = Path(".ckpt/recovery"),  # resumes from here if it holds ckpt.json
    log_file: Path | None = None,  # default CKPT_DIR/train.log
    export: Path | None = None,  # the shipped recovery file (fp16), written at the end
    export_every: int = 0,  # > 0: also export every this many steps, as EXPORT's name with -sSTEP (checkpoints to judge on dev)
    init: Path | None = None,  # a fresh run starts from this recovery file (an export: its kind and size; a checkpoint in --ckpt-dir wins)
    minutes: float = 0.0,  # wall-time budget of this call (0: none); rank 0 decides
    max_steps: int = 10**9,  # stop at this total step count (resume-aware)
    total_steps: int = 12_000,  # horizon of the cosine LR decay
    batch: int = 64,  # crops per GPU (per process)
    min_side: int = 12,  # crop sides in cells: uniform in [min_side, max_side]
    dim: int = 128,  # transformer width (192 fills a 768x512 map 2x slower on the CPU)
    layers: int = 6,
    heads: int = 4,
    embed: int = 64,  # token width (tied output)
    max_side: int = 32,  # cells per window side
    code_inputs: bool = True,  # a fresh model's tokens: a learned map of the fixed unit codes (RecoveryArgs.code_dim); off: a learned token table
    pointer: bool = False,  # a fresh model picks a neighbour to copy (RecoveryArgs.pointer) instead of a code; a resumed one keeps its kind
    code_scale: float = 0.5,  # without --code-inputs, a fresh model's tokens: this times the unit codes (first code_dim dims)
    mask_min: float = 0.05,  # share of masked cells per crop: uniform in [mask_min, mask_max]
    mask_max: float = 0.99,
    mask_focus: float = 0.7,  # share of crops whose masked share is drawn from [mask_min, 0.5] instead
    holdout: int = 6,  # photos (evenly spaced) whose maps are kept for the final evaluation
    lr: float = 5e-4,  # peak AdamW learning rate
    min_lr_frac: float = 0.05,
    warmup: int = 500,
    weight_decay: float = 0.05,
    grad_clip: float = 1.0,
    fill_steps: int = 2,  # rounds of the iterative fill in the evaluation (the codec's default)
    seed: int = 0,
    threads: int = 1,  # torch threads on the CPU (two on a loaded 2-core box ran 7x slower than one)
    save_minutes: float = 2.0,  # checkpoint interval (also saved at the end)
    log_every: int = 100,
    sync_every: int = 10,
    tiny: bool = False,  # CPU smoke config: a tiny transformer, 16-cell windows, batch 8 (--decoded-loss: 2 crops of 64 pixels)
    decoded_loss: bool = False,  # train a pointer on the decoded image: photo crops encoded by --network, no --maps
    continuous: bool = False,  # --decoded-loss, but a code vector per lost cell (RecoveryArgs.continuous) instead of a pointer
    network: Path = Path("models/vqgan/weights/vqgan.safetensors"),  # --decoded-loss: the frozen vqgan (the codec's file)
    data: Path = Path(".data/images"),  # --decoded-loss: training photos (never dev); --holdout of them evaluate
    crop: int = 256,  # --decoded-loss: crop side in pixels (a multiple of 16, at most --max-side cells)
    balance: float = 0.0,  # --decoded-loss: temper the photo sources (trainkit.images.source_weights: 0 every photo alike, 1 every package)
    train_sizes: str = "",  # --decoded-loss: codebook sizes to train on, e.g. "256,1024" (default: all, the codec fills every one)
    loss_max: float = 0.4,  # --decoded-loss: each of the 8 packets (2x4 lattice) lost with a probability in [mask_min, loss_max];
    # 0: nothing lost (with --mean-sizes S: S's decoder trains on intact maps, the control for a concealing decoder)
    tau: float = 1.0,  # --decoded-loss: Gumbel-softmax temperature of the backward mixture
    target: str = "decode",  # --decoded-loss: the loss-free decode of the same indices ("decode") or the photo ("photo")
    w_l1: float = 1.0,  # --decoded-loss weights: L1, ST-LPIPS, the pointer's cross-entropy (auxiliary)
    w_lpips: float = 1.0,
    w_ce: float = 0.0,
    eval_sizes: str = "256,1024",  # --decoded-loss: sizes of the held-out decoded evaluation ("": none)
    tune_decoder: int = 0,  # --continuous: a codebook size whose decoder a trained copy conceals lost cells (exported beside the model); 0: none
    decoder_lr: float = 0.2,  # --tune-decoder: the decoder's learning rate as a fraction of --lr
    fresh_head: bool = False,  # --continuous --init FILE, a continuous model: its code head starts at zero too (step 0 fills the mean)
    w_adv: float = 0.0,  # --tune-decoder: weight of a PatchGAN hinge loss on the concealing decoder's output (0: no GAN)
    adv_ramp: int = 500,  # --w-adv: steps over which its weight rises linearly from 0 (the discriminator trains from the start)
    mean_sizes: str = "",  # --tune-decoder: sizes whose lost cells the codec fills with the received neighbours' mean (the
    # concealing decoder learns to draw from it; the transformer is not run there), recorded in the exported file
) -> None:
    decoded_loss = decoded_loss or continuous
    if continuous and not code_inputs:
        raise typer.BadParameter("--continuous needs code inputs (leave out --no-code-inputs)")
    if tiny:
        dim, layers, heads, embed, max_side = (TINY[k] for k in ("dim", "layers", "heads", "embed", "max_side"))
        batch, min_side = (2 if decoded_loss else 8) if batch == 64 else batch, min(min_side, 8)
        crop = 64 if decoded_loss and crop == 256 else crop
    if tune_decoder and (not continuous or (train_sizes and str(tune_decoder) not in train_sizes.split(","))):
        raise typer.BadParameter(f"--tune-decoder {tune_decoder} needs --continuous and the size among --train-sizes ({train_sizes})")
    if decoded_loss and (crop % 16 or target not in ("decode", "photo")):
        raise typer.BadParameter(f"--crop {crop} must be a multiple of 16 and --target {target!r} 'decode' or 'photo'")
    pointer = (pointer or decoded_loss) and not continuous
    config = {k: str(v) if isinstance(v, Path) else [str(p) for p in v] if isinstance(v, list) else v for k, v in locals().items()}
    mean_set = {int(v) for v in mean_sizes.split(",") if v}
    if mean_set and mean_set != {tune_decoder}:
        raise typer.BadParameter(f"--mean-sizes {mean_sizes}: only the --tune-decoder size ({tune_decoder}) can learn from the mean")
    if w_adv and not tune_decoder:
        raise typer.BadParameter("--w-adv trains a concealing decoder adversarially: give --tune-decoder S")
    if decoded_loss and loss_max <= 0 and (not mean_set or train_sizes != str(tune_decoder)):
        raise typer.BadParameter("--loss-max 0 (intact maps) trains a decoder alone: give --tune-decoder S --train-sizes S --mean-sizes S")
    sched = Schedule(lr, warmup, total_steps, min_lr_frac, "cosine")
    t_start = time.time()
    rt = runtime.start()
    device, master = rt.device, rt.master
    if not rt.cuda:
        torch.set_num_threads(threads)
    log = Logger(log_file or ckpt_dir / "train.log", master, config)
    say = log.say

    if decoded_loss:  # photos and the frozen network instead of maps (the same held-out photos as the maps')
        frozen, _, codebooks, net_hash = load_network(network, None)
        frozen.requires_grad_(False).to(device)
        sizes, meta = frozen.sizes, {"network": net_hash}
        ks = [sizes.index(int(v)) for v in train_sizes.split(",")] if train_sizes else list(range(len(sizes)))
        try:
            train_files, held_files = split_photos(data, holdout)
        except ValueError as e:
            raise typer.BadParameter(f"--data {data}: {e}") from None
        train_imgs, held_imgs = [read_image(p).to(device) for p in train_files], [read_image(p) for p in held_files]
        crop_weights = source_weights(train_files, balance) if balance else None
        lpips = st_lpips_net(device)
        variants: list[Any] = [{"decoded_loss": str(data), "network": str(network), "target": target, "sizes": [sizes[k] for k in ks], "continuous": continuous}]
        held: dict[int, list[torch.Tensor]] = {sizes[0]: []}
        say(f"{len(train_imgs)} training photos, {len(held_imgs)} held out; the frozen network {network} ({net_hash}); trains sizes {variants[0]['sizes']}")
    else:
        files = []
        for path in maps:
            try:
                files.append(read_maps(path))
            except (ValueError, OSError) as e:
                raise typer.BadParameter(f"--maps {path}: {e}") from None
        _, photos, meta, codebooks = files[0]
        sizes = sorted(files[0][0])
        if any(sorted(f[0]) != sizes or f[2]["network"] != meta["network"] for f in files):
            raise typer.BadParameter(f"--maps {[str(p) for p in maps]}: made with different networks or codebook sizes")
        if sorted(codebooks) != sizes:
            raise typer.BadParameter(f"--maps {maps[0]}: no unit codes stored for sizes {sorted(set(sizes) - set(codebooks))} (an old file: extract it again)")
        held_photos = set(sorted(set(photos))[:: max(1, len(set(photos)) // holdout)][:holdout]) if holdout else set()
        train = {s: [m.to(device) for f in files for m, p in zip(f[0][s], f[1]) if p not in held_photos] for s in sizes}
        held = {s: [m for m, p in zip(files[0][0][s], photos) if p in held_photos] for s in sizes}
        variants = [f[2].get("variants") for f in files]
        say(f"{len(train[sizes[0]])} training maps from {len(files)} file(s), {len(held[sizes[0]])} held out ({len(held_photos)} photos); "
            f"sizes {sizes}; network {meta['network']}; variants {variants}")  # fmt: skip

    ckpt = ckpt_io.load(ckpt_dir)
    torch.manual_seed(seed)
    args = RecoveryArgs(tuple(sizes), dim, layers, heads, embed, max_side, codebooks[sizes[0]].shape[1] if code_inputs else 0, pointer, continuous)
    if ckpt:
        tensors, cmeta = ckpt
        a = cmeta["model_args"]
        args = RecoveryArgs(**{**a, "sizes": tuple(a["sizes"])})
        if list(args.sizes) != sizes or cmeta["network"] != meta["network"]:
            raise typer.BadParameter(f"{ckpt_dir}: trained on other maps ({cmeta['network']}, sizes {list(args.sizes)})")
    elif init is not None:
        start, init_net, _ = load_recovery(init)
        was = start.args  # --continuous keeps any code-input model's transformer (its code head starts at zero)
        args = replace(was, pointer=False, continuous=True) if continuous else was
        fits = was.code_dim > 0 if continuous else was.pointer or not decoded_loss
        if list(args.sizes) != sizes or init_net != meta["network"] or not fits:
            raise typer.BadParameter(f"--init {init}: a model for network {init_net}, sizes {list(args.sizes)}, pointer {was.pointer}, code inputs {was.code_dim}; "
                                     f"this run: network {meta['network']}, sizes {sizes}" + (", a pointer" if pointer else ", code inputs" if continuous else ""))  # fmt: skip
    if decoded_loss and crop // 16 > args.max_side:
        raise typer.BadParameter(f"--crop {crop}: {crop // 16} cells a side, more than the model's windows ({args.max_side})")
    net = IndexTransformer(args)
    if not ckpt and init is not None:
        fresh, _ = net.load_state_dict(start.state_dict(), strict=not continuous)  # strict: the same kind; else the head is new
        if fresh_head and continuous:  # e.g. a head learnt through other decoders: start from the plain mean again
            torch.nn.init.zeros_(net.code_out.weight)
            torch.nn.init.zeros_(net.code_out.bias)
            fresh = sorted({*fresh, "code_out.weight", "code_out.bias"})
        say(f"starts from {init}" + (f" (fresh: {', '.join(fresh)})" if fresh else ""))
    elif not ckpt and not args.code_dim:  # token embeddings start from the unit codes: neighbouring codes, neighbouring tokens
        with torch.no_grad():
            for k, size in enumerate(sizes):
                d = min(codebooks[size].shape[1], embed)
                net.tokens.weight[net.offsets[k] : net.offsets[k + 1], :d] = code_scale * codebooks[size][:, :d]
        say(f"token embeddings start from the unit codes (x {code_scale})")
    net.to(device)
    decoder, dec_size = None, tune_decoder
    if dec_size and dec_size not in sizes:
        raise typer.BadParameter(f"--tune-decoder {dec_size}: the network has no codebook of that size (sizes {sizes})")
    if dec_size:  # a trainable copy of the operating point's decoder: from the checkpoint, the --init file or the network
        decoder = copy.deepcopy(frozen.parts(dec_size)[1]).float().requires_grad_(True)
        if not ckpt and init is not None and dec_size in start.decoder_states:
            decoder.load_state_dict({k_: v.float() for k_, v in start.decoder_states[dec_size].items()})
            say(f"the s{dec_size} decoder starts from {init}'s concealing decoder")
        decoder.to(device)
    if ckpt and cmeta.get("decoder_size", 0) != dec_size:
        raise typer.BadParameter(f"{ckpt_dir}: a checkpoint {'with the s' + str(cmeta['decoder_size']) + ' decoder' if cmeta.get('decoder_size') else 'without a decoder'}; "
                                 f"this run {'tunes the s' + str(dec_size) + ' decoder' if dec_size else 'tunes no decoder'}")  # fmt: skip
    decayed = ("blocks", "inp", "out", "ptr_")
    decay = [p for n, p in net.named_parameters() if p.ndim == 2 and n.startswith(decayed)]
    other = [p for n, p in net.named_parameters() if not (p.ndim == 2 and n.startswith(decayed))]
    groups: list[dict[str, Any]] = [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]
    trained = [*decay, *other]
    if decoder is not None:
        trained += list(decoder.parameters())
        groups.append({"params": list(decoder.parameters()), "weight_decay": 0.0, "lr_scale": decoder_lr})
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=rt.cuda)
    disc = PatchDiscriminator(**(TINY_DISC if tiny else {})).to(device) if w_adv else None  # training only: never exported
    opt_d = torch.optim.Adam([{"params": list(disc.parameters()), "lr_scale": decoder_lr}], lr=lr, betas=(0.5, 0.9), fused=rt.cuda) if disc else None
    if ckpt and cmeta.get("adversarial", False) != bool(disc):
        raise typer.BadParameter(f"{ckpt_dir}: a checkpoint {'with' if cmeta.get('adversarial') else 'without'} a discriminator; this run "
                                 f"{'trains one (--w-adv)' if disc else 'trains none'}")  # fmt: skip
    step, train_seconds, warm_from = 0, 0.0, 0
    if ckpt:
        net.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("m/")})
        if decoder is not None:
            decoder.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("g/")})
        if disc is not None and opt_d is not None:
            disc.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("d/")})
            ckpt_io.load_optimizer(opt_d, tensors, "opt_d", cmeta["opt_d_groups"])  # without moments: fresh, warmed up with opt's
        if not ckpt_io.load_optimizer(opt, tensors, "opt", cmeta["opt_groups"]):
            warm_from = cmeta["step"]  # a moment-free checkpoint: fresh moments, warm up again
        step, train_seconds = cmeta["step"], cmeta["train_seconds"]
        say(f"resumed from {ckpt_dir} at step {step}")
    if args.code_dim:  # fixed, always from the maps (a --half checkpoint holds them rounded to fp16)
        net.set_codes(codebooks)
        say(f"tokens mapped from the unit codes ({args.code_dim} dims)")
    model = DDP(net, device_ids=[rt.local_rank] if rt.cuda else None) if rt.ddp else net
    dec_model = DDP(decoder, device_ids=[rt.local_rank] if rt.cuda else None) if rt.ddp and decoder is not None else decoder
    d_model = DDP(disc, device_ids=[rt.local_rank] if rt.cuda else None) if rt.ddp and disc is not None else disc
    say(f"world {rt.world} device {device}; {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters {asdict(args)}")

    def write_export(path: Path) -> None:
        save_recovery(path, net, meta["network"], {"step": step, "maps": [] if decoded_loss else [str(p) for p in maps], "variants": variants, "train_minutes": round(train_seconds / 60, 2)},
                      decoder_hashes(frozen) if args.continuous else {s: codes_hash(codebooks[s]) for s in sizes},
                      {dec_size: decoder.state_dict()} if decoder is not None else None, sorted(mean_set))  # fmt: skip
        say(f"exported {path} ({path.stat().st_size / 2**20:.2f} MiB)")

    def checkpoint() -> None:
        if not master:
            return
        t, groups = ckpt_io.optimizer_tensors(opt, "opt", "fp32")
        dec_t = {f"g/{k}": v for k, v in decoder.state_dict().items()} if decoder is not None else {}
        d_t, d_groups = ckpt_io.optimizer_tensors(opt_d, "opt_d", "fp32") if opt_d is not None else ({}, [])
        if disc is not None:
            d_t.update({f"d/{k}": v for k, v in disc.state_dict().items()})
        ckpt_io.save(ckpt_dir, {**{f"m/{k}": v for k, v in net.state_dict().items()}, **dec_t, **d_t, **t},
                     {"step": step, "train_seconds": train_seconds, "model_args": asdict(args), "network": meta["network"],
                      "opt_groups": groups, "opt_d_groups": d_groups, "config": config, "decoder_size": dec_size,
                      "adversarial": disc is not None})  # fmt: skip

    unit = {k: codebooks[s].float().to(device) for k, s in enumerate(sizes)}  # the pointer's targets
    gen = torch.Generator()
    t_loop, t_saved, t_log, step_log, seconds0 = time.time(), time.time(), time.time(), step, train_seconds
    sums: dict[str, float] = {}
    stop, diverged, first_step = step >= max_steps, False, step
    while not stop:
        gen.manual_seed(seed + 7919 * rt.rank + 104729 * step)
        for g in [*opt.param_groups, *(opt_d.param_groups if opt_d else [])]:
            g["lr"] = sched(step, warm_from) * g.get("lr_scale", 1.0)
        if decoded_loss:
            # with a concealing decoder every rank takes the same size (its DDP copy joins only the steps at its size)
            k = ks[int(torch.randint(len(ks), (), generator=torch.Generator().manual_seed(seed + 104729 * step) if dec_size else gen))]
            photo, side = random_crops(train_imgs, batch, crop, (0.5, 1.0), gen, crop_weights), crop // 16
            rate = mask_min + (loss_max - mask_min) * torch.rand(batch, generator=gen)
            m = packet_masks(batch, side, side, (2, 4), rate, gen, at_least_one=True).to(device)
            if loss_max <= 0:  # intact maps (the control)
                m = torch.zeros_like(m)
            origin = (int(torch.randint(args.max_side - side + 1, (), generator=gen)), int(torch.randint(args.max_side - side + 1, (), generator=gen)))
            stats, x_hat, ref = decoded_loss_of(net, model, frozen, lpips, photo, k, m, origin, unit[k], tau, target, gen, rt.autocast,
                                                dec_model if sizes[k] == dec_size else None, sizes[k] in mean_set)  # fmt: skip
            loss = w_l1 * stats["l1"] + w_lpips * stats["lpips"] + (w_ce * stats["ce"] if "ce" in stats else 0.0)
            if disc is not None and d_model is not None and opt_d is not None and sizes[k] == dec_size:  # hinge GAN, as train.py
                with rt.autocast():
                    real, fake = d_model(torch.cat([ref, x_hat.detach()])).float().chunk(2)  # one DDP forward
                loss_d = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                disc.requires_grad_(False)  # the generator's term: D frozen and called without DDP
                with rt.autocast():
                    adv = -disc(x_hat).float().mean()
                loss = loss + w_adv * min(1.0, (step + 1) / max(1, adv_ramp)) * adv
                stats.update(d=loss_d.detach(), adv=adv.detach())
            stats = {"loss": loss, **stats}
        else:
            k = int(torch.randint(len(sizes), (), generator=gen))
            x, origin = batch_of(train[sizes[k]], batch, args.max_side, min(min_side, args.max_side), gen)  # args: the checkpoint's on resume
            m = masks(x.shape[0], x.shape[1], x.shape[2], mask_min, mask_max, gen, mask_focus).to(device)
            with rt.autocast():
                feats = model(x, m, k, origin)  # through DDP: its gradient hooks
                if args.pointer:
                    loss, acc = pointer_loss(net.pointer_logits(feats, m), x, m, unit[k])
                else:
                    logits = net.logits(feats[m], k).float()
            if not args.pointer:
                loss = F.cross_entropy(logits, x[m])
                with torch.no_grad():
                    acc = (logits.argmax(-1) == x[m]).float().mean()
            stats = {"ce": loss, "acc": acc}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if disc is not None:
            disc.requires_grad_(True)
        gnorm = torch.nn.utils.clip_grad_norm_(trained, grad_clip)
        opt.step()
        step += 1
        train_seconds = seconds0 + time.time() - t_loop
        for name, v in (*stats.items(), ("gnorm", gnorm)):
            sums[name] = sums.get(name, 0.0) + float(v.detach())
        if step % log_every == 0 or step >= max_steps:
            n, dt = step - step_log, time.time() - t_log
            say(f"step {step} " + " ".join(f"{k_} {v / n:.4f}" for k_, v in sums.items()) + f" | lr {sched(step, warm_from):.2e} | {n / dt:.2f} steps/s | "
                f"{(time.time() - t_start) / 60:.1f} min")  # fmt: skip
            sums, t_log, step_log = {}, time.time(), step
        if master and export and export_every and step % export_every == 0 and step < max_steps:
            write_export(export.with_name(f"{export.stem}-s{step}{export.suffix}"))
        if step % sync_every == 0 or step >= max_steps:
            over = step >= max_steps or (minutes > 0 and time.time() - t_start > 60 * minutes)
            over_all, bad, save = rt.agree(float(over), float(not math.isfinite(loss.item())), float(time.time() - t_saved > 60 * save_minutes))
            stop, diverged = bool(over_all or bad), bool(bad)
            if bad:
                say(f"step {step}: loss is not finite; stopping without a checkpoint")
            elif save and not stop:
                checkpoint()
                t_saved = time.time()
    if not diverged and step > first_step:
        checkpoint()
    if master:
        say(f"stopped at step {step} ({train_seconds / 60:.1f} training minutes in all)")
        net.eval().float()
        if export:  # first: the evaluation takes minutes
            write_export(export)
        if decoded_loss and held_imgs and eval_sizes:
            t0 = time.time()
            if decoder is not None:
                frozen.set_concealer(dec_size, decoder)
            for size, r in evaluate_decoded(net.to(device), frozen, held_imgs, lpips, [int(v) for v in eval_sizes.split(",")]).items():
                fills = f"neighbours' mean {r['mean']:.4f}, continuous {r['continuous']:.4f}" if args.continuous else f"pointer {r['pointer']:.4f}"
                fills += (f"; through the concealing decoder: continuous {r['concealed']:.4f}, neighbours' mean {r['mean_concealed']:.4f}, "
                          f"loss-free {r['lossfree_concealed']:.4f}") if "concealed" in r else ""  # fmt: skip
                say(f"eval held-out s{size}: {len(held_imgs)} photos x 2 draws, {r['lost']:.3f} of the packets lost; ST-LPIPS loss-free {r['lossfree']:.4f}, "
                    f"nearest cell {r['nearest']:.4f}, {fills}")  # fmt: skip
            say(f"eval took {time.time() - t0:.1f} s")
        if held[sizes[0]]:
            t0 = time.time()
            for size, r in evaluate(net, held, codebooks, fill_steps).items():
                if args.pointer:
                    say(f"eval held-out s{size}: {r['cells']} lost cells; accuracy / code cosine: pointer {r['acc_pointer']:.4f} / {r['cos_pointer']:.4f}, "
                        f"nearest cell {r['acc_nearest']:.4f} / {r['cos_nearest']:.4f}, best received neighbour {r['acc_best']:.4f} / {r['cos_best']:.4f}")  # fmt: skip
                    continue
                say(f"eval held-out s{size}: {r['cells']} lost cells; accuracy / code cosine: argmax {r['acc_argmax']:.4f} / {r['cos_argmax']:.4f}, "
                    f"expected code {r['acc_expected']:.4f} / {r['cos_expected']:.4f}, nearest cell {r['acc_nearest']:.4f} / {r['cos_nearest']:.4f}; "
                    f"one-shot {r['bits']:.3f} bits per lost cell")  # fmt: skip
            say(f"eval took {time.time() - t0:.1f} s")
    log.close()
    rt.close()


if __name__ == "__main__":
    app()
