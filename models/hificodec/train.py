"""Train the HiFi-Codec generator: multi-scale mel + adversarial (MPD + STFT) + feature matching.

CPU smoke test:  python models/hificodec/train.py --tiny --max-steps 20 --ckpt-dir /tmp/hc
GPUs:            torchrun --standalone --nproc_per_node=$NGPU models/hificodec/train.py \\
                     --data .data/speech --ckpt-dir .ckpt/hificodec --minutes 8.5 \\
                     --log-file $OUT/hificodec.log --export $OUT/hificodec_16k.safetensors
Export only:     python models/hificodec/train.py --ckpt-dir .ckpt/hificodec --max-steps 0 --export W

Resumes from --ckpt-dir whenever it holds a checkpoint (models/trainkit: sharded safetensors, no
pickle). The learning rate depends on the step only, and every random draw is seeded from
(seed, step[, rank]), so a resumed run takes the same steps as an uninterrupted one (bit-exact on
the CPU with --ckpt-optim fp32). Draws that change which collectives run (quantizer-dropout depth,
dead-code restarts) are identical on all ranks, and rank 0 alone decides when to save and stop.
"""

from __future__ import annotations

import json
import os
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch
import torch.nn.functional as F
import typer
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.nn.utils import parametrize

from nmc.models.hificodec.augment import AugmentConfig, augment, level_gain
from nmc.codec.weights import Weights, read_weights, write_weights
from nmc.models.hificodec.network import CodecConfig, Discriminator, HiFiCodec, MultiScaleMelLoss
from nmc.models.trainkit import checkpoint as ckpt_io
from nmc.models.trainkit import runtime
from nmc.models.trainkit.corpus import training_files
from nmc.models.trainkit.logger import Logger
from nmc.models.trainkit.schedule import Schedule

SR = 16000
AUDIO_EXTS = (".opus", ".flac", ".wav", ".ogg")
TINY: dict[str, Any] = dict(model=CodecConfig(enc_channels=4, dec_channels=32, latent_dim=32, enc_dilations=((1,),) * 4,
                              dec_dilations=((1,),) * 4),
            disc=dict(mpd_channels=(4, 8, 16, 16), stft_channels=4))


def read_audio(path: str) -> np.ndarray:
    """Decode one file to 16 kHz mono float32."""
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    return (soxr.resample(x, sr, SR) if sr != SR else x).astype(np.float32)


def load_corpus(data: Path, max_files: int, workers: int) -> np.ndarray:
    """All audio under `data`, decoded once and concatenated into one float32 array."""
    try:
        files = [str(p) for p in training_files(data, AUDIO_EXTS, max_files)]
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    with Pool(workers) as pool:
        return np.concatenate(pool.map(read_audio, files, chunksize=8))


def init_from_export(model: HiFiCodec, path: Path) -> int:
    """Load an exported generator into the weight-normed training model; returns its step."""
    export = read_weights(path)
    src = HiFiCodec.from_state_dict(export.state, CodecConfig.from_dict(export.args)).state_dict()
    with torch.no_grad():
        for name, m in model.named_modules():
            if parametrize.is_parametrized(m, "weight"):
                m.weight = src.pop(f"{name}.weight").to(m.weight.device)  # right_inverse splits g and v
        missing = set(src) - set(model.state_dict())
        if missing:
            raise typer.BadParameter(f"{path}: tensors {sorted(missing)[:3]} do not fit the model")
        model.load_state_dict(src, strict=False)
    return int(export.report.get("step", export.report.get("network", {}).get("step", 0)))


def export_generator(model: HiFiCodec, path: Path, step: int) -> None:
    """The generator for fit_prior.py: weight norm folded, fp16 (`codec/weights.py` layout, no priors)."""
    g = HiFiCodec(model.config)  # a fresh copy: removing weight norm from a deepcopy breaks the original
    g.load_state_dict(model.state_dict())
    g.remove_weight_norm()
    write_weights(path, Weights({k: v.half() for k, v in g.state_dict().items()}, json.loads(g.config.to_json()), report={"step": step}))


# --- losses ----------------------------------------------------------------------------------

def d_loss(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """LSGAN discriminator loss."""
    return torch.stack([torch.mean((1 - r[-1].float()) ** 2) + torch.mean(f[-1].float() ** 2) for r, f in zip(real, fake)]).sum()


def g_losses(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """LSGAN generator loss and feature matching (L1 over all but the logit layer)."""
    adv = torch.stack([torch.mean((1 - f[-1].float()) ** 2) for f in fake]).sum()
    fm = torch.stack([F.l1_loss(ff.float(), rr.float()) for r, f in zip(real, fake) for rr, ff in zip(r[:-1], f[:-1])]).sum()
    return adv, fm



def main(
    data: Path = Path(".data/speech"),   # folder searched recursively for *.opus/*.flac/*.wav/*.ogg
    ckpt_dir: Path = Path(".ckpt/hificodec"),  # resume from / save to (sharded, < 15 MiB per file)
    log_file: Path = Path(""),           # default CKPT_DIR/train.log (not --log: torchrun eats it)
    export: Path = Path(""),             # write the fp16 generator here at the end
    minutes: float = 0.0,                # wall-time budget of this call (0: none); rank 0 decides
    max_steps: int = 1_000_000,          # stop at this global step
    batch_size: int = 64,                # crops per GPU per step
    segment: int = 16000,                # crop length in samples (a multiple of 320)
    lr: float = 5e-4,                    # peak AdamW lr, generator and discriminator
    schedule: str = "exp",               # exp (halves every --half-life steps) | cosine (to --total-steps) | wsd | constant
    half_life: int = 35_000,             # exp: steps per halving of the lr
    total_steps: int = 100_000,          # cosine, wsd: end of the decay
    decay_steps: int = 20_000,           # wsd: the lr falls linearly to the floor over the last decay_steps
    min_lr_frac: float = 0.05,           # the lr never falls below this share of the peak
    warmup: int = 300,                   # linear lr warm-up steps whenever Adam starts from scratch
    disc_start: int = 1000,              # mel/VQ-only steps before the GAN losses switch on
    w_mel: float = 15.0,                 # loss weights (DAC)
    w_adv: float = 1.0,
    w_fm: float = 2.0,
    w_commit: float = 0.25,
    w_codebook: float = 1.0,
    w_dc: float = 50.0,                  # L1 on each crop's mean: the decoder must add no DC offset
    level_probs: str = "0.15,0.45,0.15,0.25",  # P(n_levels = 1..4) per sample; 2 levels = 2 kbit/s
    restart_every: int = 200,            # steps per codebook-usage window; dead codes restart after it
    silence_db: float = -50.0,           # crops quieter than this (RMS dBFS) are replaced when possible
    augment_on: bool = typer.Option(True, "--augment/--no-augment"),  # speed, reverb, noise, near-silence
    save_minutes: float = 2.0,           # checkpoint period
    ckpt_optim: str = "bf16",            # Adam moments in the checkpoint: fp32 (bit-exact) | bf16 | none
    init: Path = Path(""),               # without a checkpoint: start the generator from this fp16 export
    max_files: int = 0,                  # use only the first N files (0: all)
    tiny: bool = False,                  # tiny model, batch and data: a CPU smoke test in seconds
    seed: int = 1337,
    log_every: int = 50,                 # steps per log-file line (stdout every 200 steps)
    compile: bool = False,               # torch.compile g_a, g_s and the discriminators (eager if it fails)
) -> None:
    t_start = time.time()
    cfg = TINY["model"] if tiny else CodecConfig()
    disc_args = TINY["disc"] if tiny else {}
    if tiny:
        batch_size, segment, max_files = min(batch_size, 4), min(segment, 6400), max_files or 48
    config = {k: str(v) if isinstance(v, Path) else v for k, v in locals().items()
              if k not in ("t_start", "cfg", "disc_args")}
    if segment % cfg.hop_length:
        raise typer.BadParameter(f"--segment {segment} is not a multiple of {cfg.hop_length}")
    if ckpt_optim not in ("fp32", "bf16", "none"):
        raise typer.BadParameter(f"--ckpt-optim {ckpt_optim!r}: use fp32, bf16 or none")
    probs_list = [float(p) for p in level_probs.split(",")]
    if len(probs_list) != cfg.levels:
        raise typer.BadParameter(f"--level-probs {level_probs!r} needs {cfg.levels} values")
    try:
        sched = Schedule(lr, warmup, total_steps, min_lr_frac, schedule, half_life, decay_steps)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    # --- data: decoded once, before CUDA and NCCL start (the decoding pool forks) -------------
    if max_steps > 0:
        t0 = time.time()
        workers = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
        audio_np = load_corpus(data, max_files, workers)
        data_msg = f"data: {len(audio_np) / SR / 60:.1f} min from {data} in {time.time() - t0:.0f} s"

    rt = runtime.start()
    device = rt.device
    log = Logger(log_file if str(log_file) not in ("", ".") else ckpt_dir / "train.log", rt.master, config)
    say = log.say

    # --- models, optimizers, resume ------------------------------------------------------------
    torch.manual_seed(seed)  # identical initial weights on every rank
    model, disc = HiFiCodec(cfg).to(device), Discriminator(**disc_args).to(device)
    mel_loss = MultiScaleMelLoss(SR).to(device)
    opt_g = torch.optim.AdamW(model.parameters(), lr, betas=(0.8, 0.99), weight_decay=0.0)
    opt_d = torch.optim.AdamW(disc.parameters(), lr, betas=(0.8, 0.99), weight_decay=0.0)
    step, warm_from = 0, 0
    ckpt = ckpt_io.load(ckpt_dir)
    if ckpt is not None:
        tensors, meta = ckpt
        if meta["model_args"] != json.loads(cfg.to_json()):
            raise typer.BadParameter(f"{ckpt_dir}: checkpoint model_args {meta['model_args']} != {cfg.to_json()}")
        model.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("g/")})
        disc.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("d/")})
        step = meta["step"]
        ckpt_io.load_optimizer(opt_d, tensors, "opt_d", meta["opt_d_groups"])  # empty before disc_start
        warm_from = 0 if ckpt_io.load_optimizer(opt_g, tensors, "opt_g", meta["opt_g_groups"]) else step
        say(f"resumed from {ckpt_dir} at step {step} (optimizer moments: {meta['ckpt_optim']})")
    elif str(init) not in ("", "."):
        step = warm_from = init_from_export(model, init)
        say(f"initialised the generator from {init} (step {step}); fresh discriminator and optimizers")
    start_step = step
    n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    say(f"world {rt.world} on {torch.cuda.get_device_name(device) if rt.cuda else 'cpu'}; generator "
        f"{n_params(model) / 1e6:.2f} M (g_a {n_params(model.g_a) / 1e6:.2f}, quantizer "
        f"{n_params(model.quantizer) / 1e6:.3f}, g_s {n_params(model.g_s) / 1e6:.2f}), "
        f"discriminator {n_params(disc) / 1e6:.2f} M")
    raw_model, raw_disc = model, disc
    if compile and max_steps > step:
        t0 = time.time()
        undo = runtime.compile_modules([model.g_a, model.g_s, *disc.discs])
        try:  # a compile failure only shows at the first call: one forward and backward now, no update
            g = torch.Generator(device).manual_seed(0)
            x0 = 0.1 * torch.randn(batch_size, 1, segment, device=device, generator=g)
            with rt.autocast():
                x0_hat = model(x0, torch.full((batch_size,), cfg.levels, device=device)).x_hat
                probe = x0_hat.float().square().mean() + sum(f[-1].float().mean() for f in disc(x0_hat))
            probe.backward()
            say(f"torch.compile of g_a, g_s and the discriminators took {time.time() - t0:.0f} s")
        except Exception as err:  # noqa: BLE001 (any compiler failure: train eager instead)
            undo()
            say(f"torch.compile failed ({type(err).__name__}: {str(err)[:200]}); running eager")
        model.zero_grad(set_to_none=True)
        disc.zero_grad(set_to_none=True)
    if rt.ddp:
        model = DDP(model, device_ids=[rt.local_rank] if rt.cuda else None)  # type: ignore[assignment]  # forwards to the module
        disc = DDP(disc, device_ids=[rt.local_rank] if rt.cuda else None)  # type: ignore[assignment]

    def checkpoint() -> None:
        """Rank 0 writes model_args, config, step, weights and optimizers."""
        if not rt.master:
            return
        tensors = {**{f"g/{k}": v for k, v in raw_model.state_dict().items()},
                   **{f"d/{k}": v for k, v in raw_disc.state_dict().items()}}
        meta = dict(step=step, model_args=json.loads(cfg.to_json()), disc_args=disc_args, config=config,
                    ckpt_optim=ckpt_optim, world=rt.world)
        for name, opt in (("opt_g", opt_g), ("opt_d", opt_d)):
            t, meta[f"{name}_groups"] = ckpt_io.optimizer_tensors(opt, name, ckpt_optim)
            tensors.update(t)
        sizes = ckpt_io.save(ckpt_dir, tensors, meta)
        say(f"step {step}: checkpoint {ckpt_dir}, {sum(sizes) / 2**20:.1f} MiB in {len(sizes)} shards", echo=False)

    # --- random crops from the corpus, kept on the device; every draw seeded from the step -----
    crop_rng = torch.Generator(device)   # per rank: which crops, augmentation
    level_rng = torch.Generator(device)  # same on every rank: quantizer-dropout depth
    shared_rng = torch.Generator()       # same on every rank: dead-code restarts
    if step < max_steps:
        audio = torch.from_numpy(audio_np).to(device)
        say(data_msg)
        aug_cfg = AugmentConfig() if augment_on else None
        window = aug_cfg.max_input(segment) if aug_cfg else segment
        offsets = torch.arange(window, device=device)
        silence = 10 ** (silence_db / 20)

    def get_batch() -> torch.Tensor:
        """`(B, 1, segment)` random crops (loud ones first), augmented, with a random gain."""
        starts = torch.randint(0, len(audio) - window, (2 * batch_size,), device=device, generator=crop_rng)
        x = audio[starts[:, None] + offsets]
        quiet = (x[:, :segment].pow(2).mean(dim=1).sqrt() < silence).to(torch.uint8)
        x = x[torch.sort(quiet, stable=True).indices[:batch_size]]
        if aug_cfg is not None:
            x = augment(x, segment, aug_cfg, crop_rng, SR)
            gain = level_gain(batch_size, aug_cfg, crop_rng, device)
        else:
            gain = 10 ** (torch.empty(batch_size, 1, device=device).uniform_(-10, 6, generator=crop_rng) / 20)
        x = x * gain
        x = x * torch.clamp(0.99 / x.abs().amax(dim=1, keepdim=True).clamp(min=1e-5), max=1.0)
        return x[:, None]

    # --- training loop -------------------------------------------------------------------------
    n_cb, K = cfg.groups * cfg.levels, cfg.codebook_size
    usage = torch.zeros(n_cb, K, device=device)
    probs = torch.tensor(probs_list, device=device)
    usage_pct = [float("nan")] * cfg.levels
    sums: dict[str, torch.Tensor] = {}
    t_log, step_log, last_save = time.time(), step, time.time()
    while step < max_steps:
        lr_now = sched(step, warm_from)
        for opt in (opt_g, opt_d):
            for group in opt.param_groups:
                group["lr"] = lr_now
        crop_rng.manual_seed(seed + 1_000_003 * (rt.rank + 1) + step)
        level_rng.manual_seed(seed + step)
        x = get_batch()
        n_levels = torch.multinomial(probs, x.shape[0], replacement=True, generator=level_rng) + 1
        with rt.autocast():
            out = model(x, n_levels)
        x_hat, q = out.x_hat.float(), out.quantized
        use_gan = step >= disc_start
        losses = {}
        if use_gan:  # discriminator step
            with rt.autocast():  # real and fake in one DDP forward
                feats = disc(torch.cat([x, x_hat.detach()]))
                B = x.shape[0]
                loss_d = d_loss([[f[:B] for f in fs] for fs in feats], [[f[B:] for f in fs] for fs in feats])
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            torch.nn.utils.clip_grad_norm_(raw_disc.parameters(), 10.0)
            opt_d.step()
            losses["d"] = loss_d.detach()
        # generator step
        losses["mel"] = mel_loss(x_hat, x)
        losses["commit"], losses["codebook"] = q.commitment_loss, q.codebook_loss
        losses["dc"] = (x_hat.mean(dim=-1) - x.mean(dim=-1)).abs().mean()
        loss_g = (w_mel * losses["mel"] + w_commit * q.commitment_loss + w_codebook * q.codebook_loss
                  + w_dc * losses["dc"])
        if use_gan:  # D is frozen and bypasses DDP here: no D weight grads, no all-reduce
            raw_disc.requires_grad_(False)
            with rt.autocast():
                with torch.no_grad():
                    real = raw_disc(x)
                losses["adv"], losses["fm"] = g_losses(real, raw_disc(x_hat))
            loss_g = loss_g + w_adv * losses["adv"] + w_fm * losses["fm"]
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        if use_gan:
            raw_disc.requires_grad_(True)
        gnorm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), 1000.0)
        opt_g.step()
        step += 1
        losses["gnorm"] = gnorm.detach()
        for k, v in losses.items():
            sums[k] = sums.get(k, 0) + v.detach().float()

        # codebook usage over a window of steps (kept samples only); restart dead codes from batch
        with torch.no_grad():
            cb = torch.arange(n_cb, device=device)[None, :, None]           # no boolean indexing: no sync
            kept = (cb // cfg.groups < n_levels[:, None, None]).expand_as(q.indices)
            usage.view(-1).index_add_(0, (q.indices + cb * K).flatten(), kept.flatten().float())
            if step % restart_every == 0:
                if rt.ddp:
                    torch.distributed.all_reduce(usage)
                dead = usage == 0
                usage_pct = (100 * (~dead).float().view(cfg.levels, cfg.groups, K).mean(dim=(1, 2))).tolist()
                n_dead = dead.sum(dim=1).tolist()
                shared_rng.manual_seed(seed + step)
                for j in range(n_cb):
                    if n_dead[j] == 0:
                        continue
                    z = q.latents[:, j].transpose(1, 2).reshape(-1, cfg.code_dim).float()
                    pick = torch.randint(len(z), (n_dead[j],), generator=shared_rng).to(device)
                    noise = torch.randn(n_dead[j], cfg.code_dim, generator=shared_rng).to(device)
                    new = z[pick] + 1e-3 * z.std() * noise
                    if rt.ddp:
                        torch.distributed.broadcast(new, src=0)  # rank 0's batch vectors: weights stay in sync
                    raw_model.quantizer.vq(j).codebook.weight.data[dead[j]] = new
                usage.zero_()

        # logging; rank 0 decides when to save and stop, every rank follows on the same step
        if step % log_every == 0 or step == max_steps:
            n = step - step_log
            avg = {k: (v / n).item() for k, v in sums.items()}
            rate = n / (time.time() - t_log)
            mem = torch.cuda.max_memory_allocated(device) / 2**30 if rt.cuda else 0.0
            line = (f"step {step} lr {lr_now:.2e} " + " ".join(f"{k} {v:.4f}" for k, v in avg.items())
                    + f" | {rate:.2f} steps/s {rate * batch_size * rt.world * segment / SR:.0f} audio-s/s"
                    + f" mem {mem:.1f} GiB | usage % " + " ".join(f"L{i + 1} {u:.1f}" for i, u in enumerate(usage_pct))
                    + f" | {(time.time() - t_start) / 60:.1f} min")
            say(line, echo=step % 200 == 0 or step == max_steps)
            sums, t_log, step_log = {}, time.time(), step
        if step % 10 == 0:
            stop, save = rt.agree(minutes > 0 and time.time() - t_start > 60 * minutes,
                                  time.time() - last_save > 60 * save_minutes)
            if stop:
                say(f"step {step}: time budget of {minutes} min reached")
                break
            if save:
                checkpoint()
                last_save = time.time()

    say(f"ranks in sync: {rt.in_sync([raw_model, raw_disc])}")
    if step > start_step:
        checkpoint()
    if rt.master and str(export) not in ("", "."):
        export_generator(raw_model, export, step)
        say(f"exported fp16 generator to {export} ({export.stat().st_size / 2**20:.1f} MiB)")
    say(f"done at step {step} after {(time.time() - t_start) / 60:.1f} min")
    log.close()
    rt.close()


if __name__ == "__main__":
    typer.run(main)
