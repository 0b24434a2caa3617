"""Train the vqgan network: L1 + ST-LPIPS + patch-GAN (after a warm-up) + commitment, on random photo crops.

One file, top to bottom, in the manner of nanoGPT's train.py. The base run trains everything; a rung
run (`--rung S`) starts from a base checkpoint, export or assembled weights file (the installed one),
swaps in the ladder codebook of S entries that models/vqgan/ladder.py wrote, and fine-tunes only the
codebook and the two 1x1 convolutions around it (Mao et al. 2024), with `--tune-decoder` the decoder too:

    python models/vqgan/train.py --tiny --max-steps 20 --ckpt-dir .ckpt/vqgan-tiny        # CPU smoke test
    torchrun --standalone --nproc_per_node=$NGPU models/vqgan/train.py --minutes 8.5 --ckpt-dir .ckpt/vqgan \\
        --log-file $OUT/vqgan.log                                                           # base run
    python models/vqgan/train.py --ckpt-dir .ckpt/vqgan --max-steps 0 --export vqgan.safetensors   # export only
    python models/vqgan/ladder.py --network vqgan.safetensors --out ladder.safetensors
    torchrun ... models/vqgan/train.py --init .ckpt/vqgan --ladder ladder.safetensors --rung 64 \\
        --disc-start 0 --total-steps 3000 --ckpt-dir .ckpt/vqgan-r64                            # one rung

Resumes from `--ckpt-dir` whenever it holds a checkpoint (models/trainkit: sharded safetensors, no
pickle). The learning rate depends on the step only and every random draw is seeded from (seed,
step[, rank]), so with `--ckpt-optim fp32` a resumed run is bit-identical to an uninterrupted one on
the same device. Dead-code restarts draw from a generator seeded identically on every rank and use
rank 0's latents; rank 0 alone decides when to stop.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
import typer
from safetensors import safe_open
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from nmc.models.trainkit import checkpoint as ckpt_io
from nmc.models.trainkit import runtime
from nmc.models.trainkit.images import load_images, random_crops
from nmc.models.trainkit.logger import Logger
from nmc.models.trainkit.schedule import Schedule
from nmc.codec.weights import Weights, read_weights, write_weights
from nmc.models.vqgan.network import VQGAN, PatchDiscriminator, VQGANArgs, args_from_dict, base_of, export_tensors

TINY = VQGANArgs(enc_channels=(8, 8, 16, 16), enc_blocks=(0, 1, 0, 1), dec_channels=(8, 16, 16, 16), dec_blocks=(0, 1, 0, 1),
                 codebook_size=64, code_dim=4)  # fmt: skip
TINY_DISC = {"channels": 8, "layers": 2}
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def st_lpips_net(device: torch.device) -> nn.Module:
    """Frozen ST-LPIPS (AlexNet, shift-tolerant): the metric `nmc eval` reports, as a loss.

    Its weights (9.9 MB, backbone and linear heads) ship inside the stlpips_pytorch package; nothing
    is downloaded. Eval mode: the heads' dropout stays off.
    """
    from nmc.codec.metrics import _st_lpips_model  # the evaluation's own loader (stubs the package's unused imports)

    net = copy.deepcopy(_st_lpips_model("alex")).to(device).eval()
    return net.requires_grad_(False).to(memory_format=torch.channels_last)


@torch.no_grad()
def evaluate(trained: VQGAN, images: list[torch.Tensor], lpips: nn.Module, device: torch.device) -> tuple[float, float, float, float]:
    """Whole held-out images through encode/decode (fp32, eager): mean PSNR, ST-LPIPS, fixed-length bpp, codebook use."""
    net = VQGAN(trained.args).to(device).eval()
    net.load_state_dict(trained.state_dict())
    torch.backends.cudnn.benchmark = False  # every image has its own shape
    psnr, lp, bpp, used = [], [], [], torch.zeros(net.vq.size, dtype=torch.bool, device=device)
    for im in images:
        x = im[None].to(device).float() / 255
        idx = net.encode(x)
        used[idx.flatten()] = True
        y = (net.decode(idx, (x.shape[-2], x.shape[-1])) * 255).round() / 255
        psnr.append(-10 * math.log10(F.mse_loss(y, x).item() + 1e-12))
        lp.append(lpips(y, x, normalize=True).mean().item())
        bpp.append(net.bits(*x.shape[-2:]) / x[0, 0].numel())
    n = len(images)
    return sum(psnr) / n, sum(lp) / n, sum(bpp) / n, used.float().mean().item()


def load_init(path: Path, disc_args: dict) -> tuple[VQGAN, PatchDiscriminator, dict, str]:
    """Start from a checkpoint directory (generator and discriminator) or a weights file (generator): a
    base export, or an assembled file such as the installed one (its base network; the rungs come from --ladder).

    Returns the generator, the discriminator, its arguments and a line for the log."""
    loaded = ckpt_io.load(path) if path.is_dir() else None
    if loaded is not None:
        tensors, meta = loaded
        net, disc = VQGAN(args_from_dict(meta["model_args"])), PatchDiscriminator(**meta["disc_args"])
        net.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("g/")})
        disc.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("d/")})
        return net, disc, meta["disc_args"], f"generator and discriminator of {path} (step {meta['step']})"
    try:
        start = read_weights(path)
        net = VQGAN.from_state_dict(*base_of(start.state, start.args)).train()
    except (ValueError, TypeError, RuntimeError) as e:
        raise typer.BadParameter(f"--init {path}: {e}") from None
    what = "base network" if "rungs" in start.args else "generator"
    return net, PatchDiscriminator(**disc_args), disc_args, f"{what} of {path}; fresh discriminator"


def ladder_codebook(path: Path, rung: int) -> torch.Tensor:
    """The k-means codebook `[rung, d]` that ladder.py wrote for `rung` entries."""
    with safe_open(str(path), framework="pt") as f:
        key = f"rung.{rung}.codebook"
        if key not in f.keys():  # noqa: SIM118
            rungs = sorted(int(k.split(".")[1]) for k in f.keys() if k.endswith(".codebook"))  # noqa: SIM118
            raise typer.BadParameter(f"--ladder {path} has no rung {rung} (rungs: {rungs})")
        return f.get_tensor(key)


@app.command()
def main(
    data: Path = Path(".data/images"),  # training photos (decoded once into RAM); never the dev set
    ckpt_dir: Path = Path(".ckpt/vqgan"),  # resumes from here if it holds ckpt.json
    log_file: Path | None = None,  # default CKPT_DIR/train.log (not `--log`: torchrun takes it)
    export: Path | None = None,  # fp16 safetensors of the inference network, written at the end
    init: Path | None = None,  # without a checkpoint: a checkpoint dir (G + D), an export or an assembled weights file (G)
    ladder: Path | None = None,  # with --rung: the ladder file of ladder.py
    rung: int = 0,  # > 0: fine-tune the rung of this many codes (codebook + 1x1 convs); needs --init, --ladder
    tune_decoder: bool = False,  # rung runs: fine-tune g_s too
    minutes: float = 0.0,  # wall-time budget of this call (0: none); rank 0 decides, all ranks stop together
    max_steps: int = 10**9,  # stop at this total step count (resume-aware)
    total_steps: int = 40_000,  # horizon of the cosine LR decay (over all calls; resume with more to extend)
    batch: int = 16,  # crops per GPU (per process)
    crop: int = 256,  # crop size, a multiple of 16
    scale_min: float = 0.9,  # random rescale: crop s*crop pixels with s in [scale_min, scale_max], resize to crop
    scale_max: float = 1.25,
    holdout: int = 4,  # training photos kept out of training for the final evaluation
    lr: float = 2e-4,  # peak Adam learning rate (generator and discriminator)
    min_lr_frac: float = 0.1,  # final LR as a fraction of the peak
    warmup: int = 500,  # linear warm-up steps (again after a fresh optimizer)
    w_l1: float = 1.0,  # loss weights
    w_lpips: float = 1.0,
    w_commit: float = 0.25,  # |z - sg(q)|^2 on unit vectors
    w_codebook: float = 1.0,  # |sg(z) - q|^2
    w_adv: float = 0.1,  # generator hinge loss, reached `adv_ramp` steps after disc_start
    disc_start: int = 5000,  # steps without the GAN (the discriminator starts training here too)
    adv_ramp: int = 1000,  # steps over which the adversarial weight rises linearly from 0
    usage_window: int = 200,  # steps per codebook-usage count; unused codes restart after each (--restart)
    restart: bool = True,  # dead codes restart from random latents of the batch
    grad_clip: float = 1.0,
    seed: int = 0,
    save_minutes: float = 2.0,  # checkpoint interval (also saved at the end)
    ckpt_optim: str = "fp32",  # Adam moments in the checkpoint: fp32 (bit-exact resume), bf16 (half size), none
    log_every: int = 50,  # steps between log lines (each costs one device sync)
    print_every: int = 200,  # steps between stdout lines
    sync_every: int = 10,  # steps between rank-0 stop decisions
    compile: bool = False,  # torch.compile g_a, g_s, the discriminator and ST-LPIPS; eager if the first step fails
    tiny: bool = False,  # CPU smoke config: tiny network, 64x64 crops, batch 4
) -> None:
    if tiny:  # small crops and batch unless given explicitly
        crop, batch = 64 if crop == 256 else crop, 4 if batch == 16 else batch
    config = {k: str(v) if isinstance(v, Path) else v for k, v in locals().items()}
    if ckpt_optim not in ("fp32", "bf16", "none"):
        raise typer.BadParameter(f"--ckpt-optim must be fp32, bf16 or none, got {ckpt_optim!r}")
    if crop % VQGAN.stride:
        raise typer.BadParameter(f"--crop must be a multiple of {VQGAN.stride}, got {crop}")
    if rung and (init is None or ladder is None):
        raise typer.BadParameter("--rung needs --init (the base network) and --ladder (its k-means codebooks)")

    sched = Schedule(lr, warmup, total_steps, min_lr_frac, "cosine")
    t_start = time.time()
    rt = runtime.start()
    device, master = rt.device, rt.master
    log = Logger(log_file or ckpt_dir / "train.log", master, config)
    say = log.say

    # model, optimizers, resume
    ckpt = ckpt_io.load(ckpt_dir)
    torch.manual_seed(seed)  # identical init on every rank
    disc_args = TINY_DISC if tiny else {}
    if ckpt:
        tensors, meta = ckpt
        net, disc_args, trainable = VQGAN(args_from_dict(meta["model_args"])), meta["disc_args"], meta["trainable"]
        disc = PatchDiscriminator(**disc_args)
    elif init is not None:
        net, disc, disc_args, what = load_init(init, disc_args)
        say(f"initialised from the {what}")
        trainable = ("rung+decoder" if tune_decoder else "rung") if rung else "all"
        if rung:
            assert ladder is not None
            net.swap_codebook(ladder_codebook(ladder, rung))
            say(f"codebook swapped for the {rung}-entry ladder rung of {ladder}")
    else:
        net, disc, trainable = VQGAN(TINY if tiny else VQGANArgs()), PatchDiscriminator(**disc_args), "all"
    for m in (net, disc):
        m.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # the stub lacks memory_format
    params = list(net.parameters()) if trainable == "all" else net.rung_parameters(decoder=trainable == "rung+decoder")
    net.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt_g = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.9), fused=rt.cuda)
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.9), fused=rt.cuda)
    step, train_seconds, warm_from = 0, 0.0, 0
    usage = torch.zeros(net.vq.size, device=device)  # code counts of the current window (this rank)
    if ckpt:
        net.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("g/")})
        disc.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("d/")})
        if not ckpt_io.load_optimizer(opt_g, tensors, "opt_g", meta["opt_g_groups"]):
            warm_from = meta["step"]  # saved with --ckpt-optim none: fresh moments, warm up again
        ckpt_io.load_optimizer(opt_d, tensors, "opt_d", meta["opt_d_groups"])  # empty before disc_start
        step, train_seconds = meta["step"], meta["train_seconds"]
        if master:  # the window's counts summed over the ranks that wrote it; the other ranks start from zero
            usage.copy_(tensors["usage"])
        say(f"resumed from {ckpt_dir} at step {step} ({train_seconds / 60:.1f} training minutes so far; trains {trainable})")
    lpips = st_lpips_net(device)
    model = DDP(net, device_ids=[rt.local_rank] if rt.cuda else None) if rt.ddp else net
    d_model = DDP(disc, device_ids=[rt.local_rank] if rt.cuda else None) if rt.ddp else disc
    n_params = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    say(f"world {rt.world} device {device}; generator {n_params(net):.2f} M (g_a {n_params(net.g_a):.2f}, vq "
        f"{n_params(net.vq):.3f}, g_s {n_params(net.g_s):.2f}), trains {sum(p.numel() for p in params) / 1e6:.3f} M "
        f"({trainable}); discriminator {n_params(disc):.2f} M; {net.vq.size} codes, fixed-length "
        f"{math.log2(net.vq.size) / 256:.4f} bpp")  # fmt: skip

    try:
        train_imgs, held_imgs = load_images(data, holdout)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    train_imgs = [im.to(device) for im in train_imgs]
    say(f"{len(train_imgs)} training photos in memory, {len(held_imgs)} held out; start-up {time.time() - t_start:.1f} s")

    def checkpoint() -> None:
        """Every rank calls this (one all-reduce of the usage counts); rank 0 writes."""
        counts = usage.clone()
        if rt.ddp:
            dist.all_reduce(counts)
        if not master:
            return
        tensors = {**{f"g/{k}": v for k, v in net.state_dict().items()}, **{f"d/{k}": v for k, v in disc.state_dict().items()}}
        meta = {"step": step, "train_seconds": train_seconds, "model_args": asdict(net.args), "disc_args": disc_args,
                "trainable": trainable, "config": config, "ckpt_optim": ckpt_optim}  # fmt: skip
        for name, opt in (("opt_g", opt_g), ("opt_d", opt_d)):
            t, meta[f"{name}_groups"] = ckpt_io.optimizer_tensors(opt, name, ckpt_optim)
            tensors.update(t)
        tensors["usage"] = counts
        sizes = ckpt_io.save(ckpt_dir, tensors, meta)
        say(f"step {step}: checkpoint {len(sizes)} shards, {sum(sizes) / 2**20:.1f} MiB", echo=False)

    # per-pixel MACs of one step (forward ~1x, backward ~2x): G, ST-LPIPS on both images with a
    # backward through one, discriminator on real + fake and once more for the generator
    x0 = torch.zeros(1, 3, 64, 64, device=device)
    g_mac, lp_mac, d_mac = (runtime.conv_macs(*a) / 64**2 for a in ((net, x0), (lpips, x0, x0), (disc, x0)))
    say(f"kMAC per pixel: generator {g_mac / 1e3:.0f}, ST-LPIPS {lp_mac / 2e3:.0f} per image, discriminator "
        f"{d_mac / 1e3:.0f}; a step ~{(3 * g_mac + 2 * lp_mac) / 1e3:.0f} k, ~{(3 * g_mac + 2 * lp_mac + 9 * d_mac) / 1e3:.0f} k with the GAN")
    undo_compile = runtime.compile_modules([net.g_a, net.g_s, disc, lpips]) if compile else None

    def train_step(x: torch.Tensor, use_gan: bool, adv_weight: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One discriminator step (with the GAN) and one generator step.

        Returns the detached losses (no host sync) and the unit latents `[B, d, h, w]` (dead codes restart from them)."""
        with rt.autocast():
            out = model(x)
        x_hat = out.x_hat.float()
        losses = {}
        if use_gan:  # hinge loss; real and fake in one DDP forward
            with rt.autocast():
                logits = d_model(torch.cat([x, x_hat.detach()])).float()
            real, fake = logits.chunk(2)
            loss_d = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            losses["d"], losses["d_real"] = loss_d.detach(), real.detach().mean()
        losses["l1"] = (x_hat - x).abs().mean()
        with rt.autocast():
            losses["lpips"] = lpips(x_hat, x, normalize=True).float().mean()
        losses["commit"], losses["codebook"] = out.vq.commit, out.vq.codebook_loss
        loss = w_l1 * losses["l1"] + w_lpips * losses["lpips"] + w_commit * out.vq.commit + w_codebook * out.vq.codebook_loss
        if use_gan:  # D frozen and called without DDP: no D weight grads, no all-reduce
            disc.requires_grad_(False)
            with rt.autocast():
                losses["adv"] = -disc(x_hat).float().mean()
            loss = loss + adv_weight * losses["adv"]
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        disc.requires_grad_(True)
        losses["gnorm"] = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf)
        opt_g.step()
        with torch.no_grad():
            losses["psnr"] = -10 * torch.log10(F.mse_loss(x_hat.clamp(0, 1), x))
            usage.index_add_(0, out.vq.indices.flatten(), torch.ones(out.vq.indices.numel(), device=device))
        return {k: v.detach() for k, v in losses.items()}, out.vq.z.detach()

    @torch.no_grad()
    def restart_dead(z: torch.Tensor) -> tuple[float, float]:
        """End of a usage window: all ranks' counts -> share of codes used, perplexity / K; restart dead codes."""
        counts = usage.clone()
        if rt.ddp:
            dist.all_reduce(counts)
        p = counts / counts.sum().clamp_min(1)
        used, perplexity = (counts > 0).float().mean().item(), math.exp(-(p * p.clamp_min(1e-12).log()).sum().item()) / net.vq.size
        dead = (counts == 0).nonzero().flatten()
        if restart and len(dead):
            z = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float()
            gen = torch.Generator().manual_seed(seed + 1_000_003 * step)  # same draws on every rank
            pick = torch.randint(len(z), (len(dead),), generator=gen).to(device)
            new = z[pick] + 0.01 * torch.randn(len(dead), z.shape[1], generator=gen).to(device)
            if rt.ddp:
                dist.broadcast(new, src=0)  # rank 0's latents: the codebooks stay identical
            net.vq.codebook[dead] = F.normalize(new, dim=-1).to(net.vq.codebook.dtype)
        usage.zero_()
        return used, perplexity

    # training loop
    gen = torch.Generator()  # data RNG, re-seeded from (seed, rank, step) every step: a resumed run sees the same crops
    t_loop, t_saved, t_log, step_log = time.time(), time.time(), time.time(), step
    seconds0, first_step = train_seconds, step
    sums: dict[str, tuple[torch.Tensor, int]] = {}  # loss -> (sum, steps) since the last log line
    used, perplexity = float("nan"), float("nan")
    stop, diverged = step >= max_steps, False
    while not stop:
        gen.manual_seed(seed + 7919 * rt.rank + 104729 * step)
        x = random_crops(train_imgs, batch, crop, (scale_min, scale_max), gen).to(device, non_blocking=True)
        lr_now = sched(step, warm_from)
        for opt in (opt_g, opt_d):
            for g in opt.param_groups:
                g["lr"] = lr_now
        use_gan = step >= disc_start
        adv_weight = w_adv * min(1.0, (step - disc_start + 1) / max(1, adv_ramp)) if use_gan else 0.0
        try:
            losses, z = train_step(x, use_gan, adv_weight)
        except Exception as err:  # a torch.compile failure shows up at the first call: run eager instead
            if undo_compile is None or step != first_step:
                raise
            say(f"torch.compile failed ({type(err).__name__}: {str(err)[:200]}); running eager")
            undo_compile()
            undo_compile = None
            opt_g.zero_grad(set_to_none=True)
            opt_d.zero_grad(set_to_none=True)
            continue
        step += 1
        train_seconds = seconds0 + time.time() - t_loop
        for k, v in losses.items():
            total, count = sums.get(k, (torch.zeros((), device=device), 0))
            sums[k] = (total + v.float(), count + 1)
        if step % usage_window == 0:
            used, perplexity = restart_dead(z)

        if step % log_every == 0 or step >= max_steps:
            n, dt = step - step_log, time.time() - t_log
            avg = " ".join(f"{k} {(total / count).item():.4f}" for k, (total, count) in sums.items())
            mem = torch.cuda.max_memory_allocated(device) / 2**30 if rt.cuda else 0.0
            say(f"step {step} {avg} | codes used {100 * used:.1f} % perplexity/K {perplexity:.3f} | adv_w {adv_weight:.3f} "
                f"lr {lr_now:.2e} | {n / dt:.2f} steps/s {n / dt * batch * rt.world:.0f} samples/s mem {mem:.1f} GiB | "
                f"{(time.time() - t_start) / 60:.1f} min", echo=step % print_every == 0)  # fmt: skip
            sums, t_log, step_log = {}, time.time(), step
        if step % sync_every == 0 or step >= max_steps:
            over = step >= max_steps or (minutes > 0 and time.time() - t_start > 60 * minutes)
            finite = torch.stack(list(losses.values())).isfinite().all().item()
            over_all, bad, save = rt.agree(float(over), float(not finite), float(time.time() - t_saved > 60 * save_minutes))
            diverged = bool(bad)
            stop = diverged or bool(over_all)
            if diverged:
                say(f"step {step}: a loss is not finite; stopping without a checkpoint (the last one stays)")
            elif save and not stop:
                checkpoint()
                t_saved = time.time()

    say(f"ranks in sync: {rt.in_sync([net, disc])}")
    if not diverged and step > first_step:
        checkpoint()
    if master:
        say(f"stopped at step {step} after {(time.time() - t_loop) / 60:.2f} min in this call ({train_seconds / 60:.1f} min in total)")
        if held_imgs:
            psnr, lp, bpp, use = evaluate(net, held_imgs, st_lpips_net(device), device)  # eager ST-LPIPS: any size
            say(f"eval held-out ({len(held_imgs)} training photos): PSNR {psnr:.2f} dB, ST-LPIPS {lp:.4f}, "
                f"fixed-length {bpp:.4f} bpp, {100 * use:.1f} % of the codes used")
        if export:
            write_weights(export, Weights(export_tensors(net), asdict(net.args), report={"step": step, "trainable": trainable}))
            say(f"exported {export} ({export.stat().st_size / 2**20:.2f} MiB)")
    log.close()
    rt.close()


if __name__ == "__main__":
    app()
