"""Train the mcquic network (multi-codebook VQ, variable rate) on random crops of photos.

One file, top to bottom, in the manner of nanoGPT's train.py. Runs on one CPU process or on any
number of GPUs with DDP:

    python models/mcquic/train.py --tiny --max-steps 20 --ckpt-dir .ckpt/tiny          # CPU smoke test
    torchrun --standalone --nproc_per_node=4 models/mcquic/train.py --minutes 8.5 --total-steps 20000 \\
        --ckpt-dir .ckpt/mcquic --log-file $OUT/mcquic.log --export $OUT/mcquic.safetensors

Resumes from `--ckpt-dir` when it holds a checkpoint (models/trainkit: sharded safetensors, no pickle);
with `--ckpt-optim fp32` (default) a resumed run continues bit-identically on the same device.
The LR schedule is by step (linear warm-up, cosine decay to `--total-steps`): a run split over
several time-budgeted calls follows one schedule; resuming with a larger `--total-steps` extends it.
For runs of many calls, `--schedule wsd` holds the peak until the last `--decay-steps` (extend it
before the decay starts and the lr does not jump). `--arch` picks the network of a fresh run
(`network.ARCHS`, default v3); a resumed run keeps its checkpoint's, `--init` takes its file's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F
import typer
from torch.nn.parallel import DistributedDataParallel as DDP

from nmc.codec.weights import Weights, read_weights, write_weights
from nmc.models.mcquic.network import ARCHS, McQuic, McQuicArgs, MultiCodebookVQ, args_from_dict, export_tensors
from nmc.models.trainkit import checkpoint as ckpt_io
from nmc.models.trainkit import runtime
from nmc.models.trainkit.images import load_images, random_crops
from nmc.models.trainkit.logger import Logger
from nmc.models.trainkit.schedule import Schedule

TINY = McQuicArgs(channels=(8, 16, 24, 32), enc_blocks=(0, 1, 1), dec_blocks=(0, 1, 1), coarse_k=32, fine_k=32, coarse_dim=4, fine_dim=4, restart_every=10)
TINY_ARCHS = {"v1": replace(TINY, bounded=False), "v2": TINY, "v3": replace(TINY, gdn=True, dec_channels=(8, 24))}  # --tiny --arch
COMPILED = ("g_a8", "g_a16", "g_c", "g_r", "g_s")  # pure conv stacks; the VQ's Python-side state stays eager
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(trained: McQuic, images: list[torch.Tensor], device: torch.device) -> dict[int, tuple[float, float]]:
    """Full held-out images through compress/decompress (fp32): quality -> (mean PSNR on 8-bit output, bpp).

    Runs an eager copy: compiled modules would recompile for every image shape."""
    net = McQuic(trained.args).to(device)
    net.load_state_dict(trained.state_dict())
    net.eval()
    torch.backends.cudnn.benchmark = False  # every image has its own shape: no autotuning per shape
    out = {}
    for q in range(1, net.args.qualities + 1):
        psnr, bpp = [], []
        for im in images:
            x = im[None].to(device).float() / 255
            c = net.compress(x, q)
            y = (net.decompress(c.indices, q, c.shape) * 255).round() / 255
            psnr.append(-10 * math.log10(F.mse_loss(y, x).item() + 1e-12))
            bpp.append(net.bits(q, *im.shape[1:]) / (im.shape[1] * im.shape[2]))
        out[q] = (sum(psnr) / len(psnr), sum(bpp) / len(bpp))
    return out


# ----------------------------------------------------------------------------- main


@app.command()
def main(
    data: Path = Path(".data/images"),  # training images (decoded once into RAM); never the dev set
    ckpt_dir: Path = Path(".ckpt/mcquic"),  # resumes from here if it holds ckpt.json
    log_file: Path | None = None,  # default CKPT_DIR/train.log; appended by rank 0, flushed (not `--log`: torchrun takes it)
    export: Path | None = None,  # fp16 safetensors of the inference network, written at the end
    minutes: float = 0.0,  # wall-time budget of this call (0: none); rank 0 decides, all ranks stop together
    max_steps: int = 10**9,  # stop at this total step count (resume-aware)
    total_steps: int = 20000,  # end of the LR decay (over all calls; resume with more to extend)
    schedule: str = "cosine",  # cosine (over total_steps) | wsd (peak, then linear over the last decay_steps) | exp | constant
    decay_steps: int = 20000,  # wsd: length of the final decay
    arch: str = "v3",  # network of a fresh run (network.ARCHS: v1, v2, v3); ignored when resuming or with --init
    batch: int = 32,  # crops per GPU (per process); each is decoded at every quality level
    crop: int = 256,  # crop size, a multiple of 16
    scale_min: float = 0.9,  # random rescale: crop s*crop pixels with s in [scale_min, scale_max], resize to crop
    scale_max: float = 1.25,
    holdout: int = 4,  # training images kept out of training for the final evaluation
    lr: float = 4e-4,  # peak AdamW learning rate
    min_lr_frac: float = 0.1,  # final LR as a fraction of the peak
    warmup: int = 1000,  # linear warm-up steps
    weight_decay: float = 0.0,
    grad_clip: float = 1.0,
    mse_scale: float = 1000.0,  # loss = mse_scale * MSE (mean over levels) + beta * commitment (+ msssim term)
    beta: float = 0.1,  # weight of the relative commitment error, summed over stages
    msssim: float = 0.0,  # weight of (1 - MS-SSIM) (needs pytorch_msssim); 0 = pure PSNR training
    seed: int = 0,
    save_minutes: float = 2.0,  # checkpoint interval (also saved at the end)
    init: Path | None = None,  # without a checkpoint: start from these exported weights (fresh optimizer)
    ckpt_optim: str = "fp32",  # AdamW moments in the checkpoint: fp32 (bit-exact resume), bf16 (half size), none
    log_every: int = 50,  # steps between log lines (each costs one device sync)
    print_every: int = 200,  # steps between short stdout lines
    sync_every: int = 10,  # steps between rank-0 broadcasts of the stop flag (and loss checks)
    compile: bool = False,  # torch.compile the conv stacks; falls back to eager if the first step fails
    tiny: bool = False,  # CPU smoke config: tiny network, 64x64 crops, batch 4
) -> None:
    if tiny:  # small crops and batch unless given explicitly
        crop, batch, scale_max = 64 if crop == 256 else crop, 4 if batch == 32 else batch, 1.1
    config = {k: str(v) if isinstance(v, Path) else v for k, v in locals().items()}
    if ckpt_optim not in ("fp32", "bf16", "none"):
        raise typer.BadParameter(f"--ckpt-optim must be fp32, bf16 or none, got {ckpt_optim!r}")
    if msssim > 0 and crop < 176:
        raise typer.BadParameter(f"--msssim needs --crop >= 176 (5-scale MS-SSIM), got {crop}")
    if crop % McQuic.stride:
        raise typer.BadParameter(f"--crop must be a multiple of {McQuic.stride}, got {crop}")

    if arch not in ARCHS:
        raise typer.BadParameter(f"--arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    try:
        sched = Schedule(lr, warmup, total_steps, min_lr_frac, schedule, decay_steps=decay_steps)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    t_start = time.time()
    rt = runtime.start()
    ddp, cuda, rank, world, local, device, master = rt.ddp, rt.cuda, rt.rank, rt.world, rt.local_rank, rt.device, rt.master
    log = Logger(log_file or ckpt_dir / "train.log", master, config)
    say = log.say

    # model, optimizer, resume
    ckpt = ckpt_io.load(ckpt_dir)
    start = read_weights(init) if init is not None and not ckpt else None
    if ckpt or start:  # a resumed run keeps its network, a fine-tune its file's
        model_args = args_from_dict(ckpt[1]["model_args"] if ckpt else start.args)  # type: ignore[union-attr]
    else:
        model_args = TINY_ARCHS[arch] if tiny else ARCHS[arch]
    torch.manual_seed(seed)  # identical init on every rank
    net = McQuic(model_args).to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # the stub lacks memory_format
    opt = torch.optim.AdamW(net.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay, fused=cuda)
    step, train_seconds, warm_from = 0, 0.0, 0
    if ckpt:
        tensors, meta = ckpt
        net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
        if not ckpt_io.load_optimizer(opt, tensors, "optim", meta["optim_param_groups"]):
            warm_from = meta["step"]  # saved with --ckpt-optim none: fresh moments, warm up again
        step, train_seconds = meta["step"], meta["train_seconds"]
        torch.set_rng_state(tensors["rng/cpu"])
        if cuda and "rng/cuda" in tensors and master:
            torch.cuda.set_rng_state(tensors["rng/cuda"])
        say(f"resumed from {ckpt_dir} at step {step} ({train_seconds / 60:.1f} training minutes so far)")
    elif start is not None:
        net.load_state_dict(McQuic.from_state_dict(start.state, start.args).state_dict())
        for vq in (m for m in net.modules() if isinstance(m, MultiCodebookVQ)):
            vq.keep_codebook()  # the export has no EMA state: without this the first step draws new codebooks
        say(f"initialised from {init}; fresh optimizer, codebooks kept")
    start_step = step
    gen = torch.Generator()  # data RNG, re-seeded from (seed, rank, step) every step: a resumed run sees the same crops
    model = DDP(net, device_ids=[local] if cuda else None, broadcast_buffers=False) if ddp else net
    nparams = sum(p.numel() for p in net.parameters())
    bpps = ", ".join(f"q{q} {net.bpp(q):.3f}" for q in range(1, model_args.qualities + 1))
    say(f"world {world} device {device} params {nparams / 1e6:.2f} M; fixed-length bpp {bpps}")

    try:
        train_imgs, held_imgs = load_images(data, holdout)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    train_imgs = [im.to(device) for im in train_imgs]
    say(f"{len(train_imgs)} training images in memory, {len(held_imgs)} held out; load took {time.time() - t_start:.1f}s")

    ms_ssim: Callable[..., torch.Tensor] | None = None
    if msssim > 0:
        from pytorch_msssim import ms_ssim as ms_ssim_fn

        ms_ssim = ms_ssim_fn

    def checkpoint() -> None:
        tensors = {f"model/{k}": v for k, v in net.state_dict().items()}
        opt_t, groups = ckpt_io.optimizer_tensors(opt, "optim", ckpt_optim)
        tensors.update(opt_t)
        tensors["rng/cpu"] = torch.get_rng_state()
        if cuda:
            tensors["rng/cuda"] = torch.cuda.get_rng_state()
        meta = {"step": step, "train_seconds": train_seconds, "model_args": asdict(model_args), "config": config,
                "optim_param_groups": groups, "scheduler": {"kind": f"warmup+{schedule}(step)", "warmup": warmup,
                "total_steps": total_steps, "decay_steps": decay_steps, "min_lr_frac": min_lr_frac, "lr": lr}}  # fmt: skip
        sizes = ckpt_io.save(ckpt_dir, tensors, meta)
        say(f"step {step}: checkpoint {len(sizes)} shards, largest {max(sizes) / 2**20:.2f} MiB", echo=False)

    def train_step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimizer step; returns the loss, the per-level per-crop MSE `[Q, B]` and the commitment (no host sync)."""
        with rt.autocast():
            out = model(x)
        x_hat = out.x_hat.float()
        mse = (x_hat - x).pow(2).mean((2, 3, 4))
        loss = mse_scale * mse.mean() + beta * out.commit
        if ms_ssim is not None:
            loss = loss + msssim * (1 - ms_ssim(x_hat.flatten(0, 1).clamp(0, 1), x.repeat(Q, 1, 1, 1), data_range=1.0))
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach(), mse.detach(), out.commit.detach()

    Q = model_args.qualities
    pixels = batch * world * crop * crop
    train_macs = 3 * runtime.conv_macs(net, torch.zeros(1, 3, 64, 64, device=device)) / 64**2  # per pixel, fwd + bwd ~ 3x fwd; no RNG draw (exact resume)
    undo_compile = runtime.compile_modules(getattr(net, name) for name in COMPILED) if compile else None
    say(f"training: {Q} levels per crop, {train_macs / 1e3:.0f} kMAC per pixel per step (fwd + bwd), {pixels} pixels per step")

    # training loop
    t_loop, t_saved, t_log, step_log = time.time(), time.time(), time.time(), step
    seconds0, first_step = train_seconds, step
    stop, diverged = step >= max_steps, False
    while not stop:
        gen.manual_seed(seed + 7919 * rank + 104729 * step)
        x = random_crops(train_imgs, batch, crop, (scale_min, scale_max), gen).to(device, non_blocking=True)
        lr_now = sched(step, warm_from)
        for g in opt.param_groups:
            g["lr"] = lr_now
        try:
            loss, mse, commit = train_step(x)
        except Exception as err:  # a torch.compile failure shows up at the first call: run eager instead
            if not compile or step != first_step:
                raise
            say(f"torch.compile failed ({type(err).__name__}: {str(err)[:200]}); running eager")
            compile = False
            assert undo_compile is not None
            undo_compile()
            opt.zero_grad(set_to_none=True)
            continue
        step += 1
        train_seconds = seconds0 + time.time() - t_loop

        if step % log_every == 0 and master:
            dt = time.time() - t_log
            rate = (step - step_log) / dt
            psnr = (-10 * torch.log10(mse.mean(1))).tolist()
            usage, perplexity, norms = net.codebook_usage(), net.codebook_perplexity(), net.codebook_max_norm()
            say(f"step {step} loss {loss.item():.4f} mse {mse.mean().item():.3e} commit {commit.item():.3f} "
                f"psnr[q] {' '.join(f'{p:.2f}' for p in psnr)} usage[stage] min/mean "
                f"{' '.join(f'{min(u):.2f}/{sum(u) / len(u):.2f}' for u in usage)} perplexity/K[stage] "
                f"{' '.join(f'{p:.2f}' for p in perplexity)} max|code|[stage] {' '.join(f'{n:.3g}' for n in norms)} "
                f"lr {lr_now:.2e} {rate:.2f} steps/s {rate * batch * world:.0f} samples/s "
                f"{rate * pixels * train_macs * 2 / 1e12:.1f} TFLOP/s", echo=step % print_every == 0)  # fmt: skip
            t_log, step_log = time.time(), step
        if step % sync_every == 0 or step >= max_steps:
            over = step >= max_steps or (minutes > 0 and time.time() - t_start > 60 * minutes)
            over_all, bad = rt.agree(float(over), float(not torch.isfinite(loss).item()))  # rank 0 decides for all
            diverged = bool(bad)
            stop = diverged or bool(over_all)
            if diverged:
                say(f"step {step}: loss is not finite; stopping without a checkpoint (the last one stays)")
        if master and not stop and time.time() - t_saved > 60 * save_minutes:
            checkpoint()
            t_saved = time.time()

    if master and not diverged and (step > start_step or not ckpt):  # a resumed export (--max-steps 0) leaves it as it was
        checkpoint()
    if master:
        say(f"stopped at step {step} after {(time.time() - t_loop) / 60:.2f} min in this call ({train_seconds / 60:.1f} min in total)")
        if held_imgs:
            for q, (p, b) in evaluate(net, held_imgs, device).items():
                say(f"eval held-out ({len(held_imgs)} train images) q{q}: PSNR {p:.2f} dB, fixed-length bpp {b:.4f}")
        if export:
            write_weights(export, Weights(export_tensors(net), asdict(net.args), report={"step": step}))
            say(f"exported {export} ({export.stat().st_size / 2**20:.2f} MiB)")
    log.close()
    rt.close()


if __name__ == "__main__":
    app()
