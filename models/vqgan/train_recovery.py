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
One file, top to bottom, like models/vqgan/train.py:

    python models/vqgan/train_recovery.py --tiny --max-steps 20 --maps .data/vqgan_maps.safetensors --ckpt-dir .ckpt/rec-tiny
    python models/vqgan/train_recovery.py --ckpt-dir .ckpt/recovery --max-steps 0 --export recovery.safetensors   # evaluate, export
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

import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import typer
from torch.nn.parallel import DistributedDataParallel as DDP

from nmc.models.trainkit import checkpoint as ckpt_io
from nmc.models.trainkit import runtime
from nmc.models.trainkit.logger import Logger
from nmc.models.trainkit.schedule import Schedule
from nmc.models.vqgan.index_maps import read_maps
from nmc.models.vqgan.packets import packet_cells
from nmc.models.vqgan.recovery import SLOTS, IndexTransformer, RecoveryArgs, best_slots, codes_hash, fill, fill_nearest, neighbours, save_recovery

TINY = {"dim": 32, "layers": 2, "heads": 2, "embed": 16, "max_side": 16}
LATTICES = [(2, 4), (4, 2), (2, 2), (4, 4), (1, 8), (8, 1), (3, 3)]  # packets of a tile: (rows, columns)
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def masks(b: int, h: int, w: int, lo: float, hi: float, gen: torch.Generator, focus: float = 0.0, focus_hi: float = 0.5) -> torch.Tensor:
    """`[b, h, w]` bool: per crop a share masked, as lost packets of a lattice (half) or single cells; the share
    is uniform in [lo, focus_hi] for a `focus` share of the crops (the losses decoding meets), else in [lo, hi]."""
    top = torch.where(torch.rand(b, 1, 1, generator=gen) < focus, min(focus_hi, hi), hi)
    ratio = lo + (top - lo) * torch.rand(b, 1, 1, generator=gen)
    cells = torch.rand(b, h, w, generator=gen) < ratio
    a, c = LATTICES[int(torch.randint(len(LATTICES), (), generator=gen))]
    y, x = torch.arange(h)[:, None], torch.arange(w)[None]
    phase = torch.randint(a * c, (b, 2), generator=gen)
    klass = ((y + phase[:, :1, None]) % a) * c + (x + phase[:, 1:, None]) % c  # packet of each cell
    lost = torch.rand(b, a * c, generator=gen) < ratio[:, 0]
    packets = torch.gather(lost, 1, klass.reshape(b, -1)).reshape(b, h, w)
    out = torch.where((torch.rand(b, 1, 1, generator=gen) < 0.5), packets, cells)
    empty = ~out.flatten(1).any(1)  # at least one masked cell per crop
    out.view(b, -1)[empty, torch.randint(h * w, (int(empty.sum()),), generator=gen)] = True
    return out


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
                masked = np.zeros(grid.shape, bool)
                for j in lost:
                    masked[packet_cells((grid.shape[0], grid.shape[1]), (2, 4))[j]] = True
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


@app.command()
def main(
    maps: list[Path] = typer.Option([Path(".data/vqgan_maps.safetensors")], help="index_maps.py's files (training photos only; "
                                    "several: their maps together, the first one's held-out maps evaluate)"),  # fmt: skip
    ckpt_dir: Path = Path(".ckpt/recovery"),  # resumes from here if it holds ckpt.json
    log_file: Path | None = None,  # default CKPT_DIR/train.log
    export: Path | None = None,  # the shipped recovery file (fp16), written at the end
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
    tiny: bool = False,  # CPU smoke config: a tiny transformer, 16-cell windows, batch 8
) -> None:
    if tiny:
        dim, layers, heads, embed, max_side = (TINY[k] for k in ("dim", "layers", "heads", "embed", "max_side"))
        batch, min_side = 8 if batch == 64 else batch, min(min_side, 8)
    config = {k: str(v) if isinstance(v, Path) else [str(p) for p in v] if isinstance(v, list) else v for k, v in locals().items()}
    sched = Schedule(lr, warmup, total_steps, min_lr_frac, "cosine")
    t_start = time.time()
    rt = runtime.start()
    device, master = rt.device, rt.master
    if not rt.cuda:
        torch.set_num_threads(threads)
    log = Logger(log_file or ckpt_dir / "train.log", master, config)
    say = log.say

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
    args = RecoveryArgs(tuple(sizes), dim, layers, heads, embed, max_side, codebooks[sizes[0]].shape[1] if code_inputs else 0, pointer)
    if ckpt:
        tensors, cmeta = ckpt
        a = cmeta["model_args"]
        args = RecoveryArgs(**{**a, "sizes": tuple(a["sizes"])})
        if list(args.sizes) != sizes or cmeta["network"] != meta["network"]:
            raise typer.BadParameter(f"{ckpt_dir}: trained on other maps ({cmeta['network']}, sizes {list(args.sizes)})")
    net = IndexTransformer(args)
    if not ckpt and not args.code_dim:  # token embeddings start from the unit codes: neighbouring codes, neighbouring tokens
        with torch.no_grad():
            for k, size in enumerate(sizes):
                d = min(codebooks[size].shape[1], embed)
                net.tokens.weight[net.offsets[k] : net.offsets[k + 1], :d] = code_scale * codebooks[size][:, :d]
        say(f"token embeddings start from the unit codes (x {code_scale})")
    net.to(device)
    decayed = ("blocks", "inp", "out", "ptr_")
    decay = [p for n, p in net.named_parameters() if p.ndim == 2 and n.startswith(decayed)]
    other = [p for n, p in net.named_parameters() if not (p.ndim == 2 and n.startswith(decayed))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95), fused=rt.cuda)  # fmt: skip
    step, train_seconds, warm_from = 0, 0.0, 0
    if ckpt:
        net.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("m/")})
        if not ckpt_io.load_optimizer(opt, tensors, "opt", cmeta["opt_groups"]):
            warm_from = cmeta["step"]  # a moment-free checkpoint: fresh moments, warm up again
        step, train_seconds = cmeta["step"], cmeta["train_seconds"]
        say(f"resumed from {ckpt_dir} at step {step}")
    if args.code_dim:  # fixed, always from the maps (a --half checkpoint holds them rounded to fp16)
        net.set_codes(codebooks)
        say(f"tokens mapped from the unit codes ({args.code_dim} dims)")
    model = DDP(net, device_ids=[rt.local_rank] if rt.cuda else None) if rt.ddp else net
    say(f"world {rt.world} device {device}; {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters {asdict(args)}")

    def checkpoint() -> None:
        if not master:
            return
        t, groups = ckpt_io.optimizer_tensors(opt, "opt", "fp32")
        ckpt_io.save(ckpt_dir, {**{f"m/{k}": v for k, v in net.state_dict().items()}, **t},
                     {"step": step, "train_seconds": train_seconds, "model_args": asdict(args), "network": meta["network"],
                      "opt_groups": groups, "config": config})  # fmt: skip

    unit = {k: codebooks[s].float().to(device) for k, s in enumerate(sizes)}  # the pointer's targets
    gen = torch.Generator()
    t_loop, t_saved, t_log, step_log, seconds0 = time.time(), time.time(), time.time(), step, train_seconds
    sums: dict[str, float] = {}
    stop, diverged, first_step = step >= max_steps, False, step
    while not stop:
        gen.manual_seed(seed + 7919 * rt.rank + 104729 * step)
        k = int(torch.randint(len(sizes), (), generator=gen))
        x, origin = batch_of(train[sizes[k]], batch, args.max_side, min(min_side, args.max_side), gen)  # args: the checkpoint's on resume
        m = masks(x.shape[0], x.shape[1], x.shape[2], mask_min, mask_max, gen, mask_focus).to(device)
        for g in opt.param_groups:
            g["lr"] = sched(step, warm_from)
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
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        opt.step()
        step += 1
        train_seconds = seconds0 + time.time() - t_loop
        for name, v in (("ce", loss), ("acc", acc), ("gnorm", gnorm)):
            sums[name] = sums.get(name, 0.0) + float(v.detach())
        if step % log_every == 0 or step >= max_steps:
            n, dt = step - step_log, time.time() - t_log
            say(f"step {step} " + " ".join(f"{k_} {v / n:.4f}" for k_, v in sums.items()) + f" | lr {sched(step, warm_from):.2e} | {n / dt:.2f} steps/s | "
                f"{(time.time() - t_start) / 60:.1f} min")  # fmt: skip
            sums, t_log, step_log = {}, time.time(), step
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
            save_recovery(export, net, meta["network"], {"step": step, "maps": [str(p) for p in maps], "variants": variants, "train_minutes": round(train_seconds / 60, 2)},
                          {s: codes_hash(codebooks[s]) for s in sizes})  # fmt: skip
            say(f"exported {export} ({export.stat().st_size / 2**20:.2f} MiB)")
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
