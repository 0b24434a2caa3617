"""Train the HiFi-Codec generator: multi-scale mel + adversarial (MPD + STFT) + feature matching.

CPU smoke test:  python models/hificodec/train.py --tiny --max-steps 20 --ckpt-dir /tmp/hc
GPUs:            torchrun --standalone --nproc_per_node=$NGPU models/hificodec/train.py \\
                     --data .data/speech --ckpt-dir .ckpt/hificodec --minutes 8.5 \\
                     --log-file $OUT/hificodec.log --export $OUT/hificodec_16k.safetensors
Export only:     python models/hificodec/train.py --ckpt-dir .ckpt/hificodec --max-steps 0 --export W

Resumes from --ckpt-dir whenever it holds a checkpoint (sharded safetensors below 15 MiB per
file + meta.json; nothing is unpickled). Every random choice that changes which collectives
run (quantizer dropout depth, dead-code restarts) is made identically on all ranks, and rank 0
alone decides when to save and stop, so DDP ranks never wait on each other forever.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.utils import parametrize
import typer
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel as DDP

try:  # installed package (pip install -e .)
    from nmc.models.hificodec.network import CodecConfig, Discriminator, HiFiCodec, MultiScaleMelLoss, load_generator
except ImportError:  # plain checkout (the GPU machine): the script's folder is on sys.path
    from network import CodecConfig, Discriminator, HiFiCodec, MultiScaleMelLoss, load_generator  # type: ignore[no-redef]
try:
    from nmc.models.hificodec.augment import AugmentConfig, augment, level_gain
except ImportError:
    from augment import AugmentConfig, augment, level_gain  # type: ignore[no-redef]

SR = 16000
AUDIO_EXTS = (".opus", ".flac", ".wav", ".ogg")
SHARD_BYTES = 14 * 2**20  # tensor bytes per safetensors shard; header overhead keeps files < 15 MiB
TINY = dict(model=CodecConfig(enc_channels=4, dec_channels=32, latent_dim=32, enc_dilations=((1,),) * 4,
                              dec_dilations=((1,),) * 4),
            disc=dict(mpd_channels=(4, 8, 16, 16), stft_channels=4))


def read_audio(path: str) -> np.ndarray:
    """Decode one file to 16 kHz mono float32."""
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    return (soxr.resample(x, sr, SR) if sr != SR else x).astype(np.float32)


def load_corpus(data: Path, max_files: int, workers: int) -> np.ndarray:
    """All audio under `data`, decoded once and concatenated into one float32 array."""
    if "dev" in data.resolve().parts:
        raise typer.BadParameter(f"refusing to train on a dev set: {data}")
    files = sorted(str(p) for p in data.rglob("*") if p.suffix.lower() in AUDIO_EXTS)[: max_files or None]
    if not files:
        raise typer.BadParameter(f"no {'/'.join(AUDIO_EXTS)} files under {data}")
    with Pool(workers) as pool:
        return np.concatenate(pool.map(read_audio, files, chunksize=8))


# --- sharded, pickle-free checkpoints ----------------------------------------------------------

def flatten_optimizer(opt: torch.optim.Optimizer, prefix: str, dtype: torch.dtype) -> tuple[dict, list]:
    """Optimizer state as flat tensors (moments stored in `dtype`) plus its param groups (JSON)."""
    sd = opt.state_dict()
    tensors = {f"{prefix}/{i}/{k}": (v.to(dtype) if k != "step" else v)
               for i, st in sd["state"].items() for k, v in st.items()}
    return tensors, sd["param_groups"]


def unflatten_optimizer(opt: torch.optim.Optimizer, tensors: dict, prefix: str, groups: list) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "/"):
            _, i, k = key.split("/")
            state.setdefault(int(i), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": groups})  # casts moments to fp32


def save_checkpoint(ckpt_dir: Path, tensors: dict[str, torch.Tensor], meta: dict) -> int:
    """Write shards into ckpt_dir/tmp, then swap it in as ckpt_dir/latest. Returns total bytes."""
    tmp, latest, prev = ckpt_dir / "tmp", ckpt_dir / "latest", ckpt_dir / "previous"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size, splits = 0, {}
    for key, v in tensors.items():
        v = v.detach().cpu().contiguous()
        parts = {key: v}
        if v.numel() * v.element_size() > SHARD_BYTES:  # one tensor larger than a shard
            n = math.ceil(v.numel() * v.element_size() / SHARD_BYTES)
            parts = {f"{key}#{j}": c.clone() for j, c in enumerate(v.flatten().chunk(n))}
            splits[key] = [list(v.shape), len(parts)]
        for k, t in parts.items():
            nbytes = t.numel() * t.element_size()
            if size + nbytes > SHARD_BYTES and shards[-1]:
                shards.append({})
                size = 0
            shards[-1][k] = t
            size += nbytes
    for j, shard in enumerate(shards):
        save_file(shard, str(tmp / f"shard-{j:03d}.safetensors"))
    (tmp / "meta.json").write_text(json.dumps({**meta, "splits": splits, "n_shards": len(shards)}, indent=1))
    shutil.rmtree(prev, ignore_errors=True)
    if latest.exists():
        latest.rename(prev)
    tmp.rename(latest)
    shutil.rmtree(prev, ignore_errors=True)
    return sum(f.stat().st_size for f in latest.iterdir())


def load_checkpoint(ckpt_dir: Path) -> tuple[dict[str, torch.Tensor], dict] | None:
    for name in ("latest", "previous"):  # "previous" only survives a crash in the middle of a swap
        d = ckpt_dir / name
        if (d / "meta.json").exists():
            meta = json.loads((d / "meta.json").read_text())
            tensors: dict[str, torch.Tensor] = {}
            for j in range(meta["n_shards"]):
                tensors.update(load_file(str(d / f"shard-{j:03d}.safetensors")))
            for key, (shape, n) in meta["splits"].items():
                tensors[key] = torch.cat([tensors.pop(f"{key}#{j}") for j in range(n)]).view(shape)
            return tensors, meta
    return None


def init_from_export(model: HiFiCodec, path: Path) -> int:
    """Load an exported generator into the weight-normed training model; returns its step."""
    from safetensors import safe_open

    src = load_generator(path).float().state_dict()
    with torch.no_grad():
        for name, m in model.named_modules():
            if parametrize.is_parametrized(m, "weight"):
                m.weight = src.pop(f"{name}.weight").to(m.weight.device)  # right_inverse splits g and v
        missing = set(src) - set(model.state_dict())
        if missing:
            raise typer.BadParameter(f"{path}: tensors {sorted(missing)[:3]} do not fit the model")
        model.load_state_dict(src, strict=False)
    with safe_open(str(path), framework="pt") as f:
        return int((f.metadata() or {}).get("step", 0))


def export_generator(model: HiFiCodec, path: Path, step: int) -> None:
    """The shipped generator: weight norm folded, fp16, config in the safetensors metadata."""
    g = HiFiCodec(model.config)  # a fresh copy: removing weight norm from a deepcopy breaks the original
    g.load_state_dict(model.state_dict())
    g.remove_weight_norm()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in g.state_dict().items()}, str(path),
              metadata={"config": g.config.to_json(), "codec": "hificodec", "step": str(step)})


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
    log_file: Path = Path(""),           # default CKPT_DIR/train.log; flushed per line (not --log: torchrun eats it)
    export: Path = Path(""),             # write the fp16 generator here at the end
    minutes: float = 0.0,                # wall-time budget from process start (0: none)
    max_steps: int = 1_000_000,          # stop at this global step
    batch_size: int = 64,                # crops per GPU per step
    segment: int = 16000,                # crop length in samples (a multiple of 320)
    lr: float = 5e-4,                    # AdamW, generator and discriminator
    lr_decay: float = 0.99998,           # lr *= lr_decay per step (0.5x at 35k steps: made for long runs)
    warmup: int = 300,                   # linear lr warm-up steps whenever Adam starts from scratch
    disc_start: int = 1000,              # mel/VQ-only steps before the GAN losses switch on
    w_mel: float = 15.0,                 # loss weights (DAC)
    w_adv: float = 1.0,
    w_fm: float = 2.0,
    w_commit: float = 0.25,
    w_codebook: float = 1.0,
    level_probs: str = "0.15,0.45,0.15,0.25",  # P(n_levels = 1..4) per sample; 2 levels = 2 kbit/s
    restart_every: int = 200,            # steps per codebook-usage window; dead codes restart after it
    silence_db: float = -50.0,           # crops quieter than this (RMS dBFS) are replaced when possible
    augment_on: bool = typer.Option(True, "--augment/--no-augment"),  # speed, reverb, noise, near-silence (augment.py)
    w_dc: float = 50.0,                  # L1 on each crop's mean: the decoder must add no DC offset
    save_minutes: float = 2.0,           # checkpoint period
    ckpt_optim: str = "bf16",            # Adam moments in the checkpoint: fp32 | bf16 | none
    init: Path = Path(""),               # without a checkpoint: start the generator from this fp16 export
    max_files: int = 0,                  # use only the first N files (0: all)
    tiny: bool = False,                  # tiny model, batch and data: a CPU smoke test in seconds
    seed: int = 1337,
    log_every: int = 50,                 # steps per log-file line (stdout every 200 steps)
) -> None:
    t_start = time.time()
    config = {k: str(v) if isinstance(v, Path) else v for k, v in locals().items() if k != "t_start"}
    cfg = TINY["model"] if tiny else CodecConfig()
    disc_args = TINY["disc"] if tiny else {}
    if tiny:
        batch_size, segment, max_files = min(batch_size, 4), min(segment, 6400), max_files or 48
    if segment % cfg.hop_length:
        raise typer.BadParameter(f"--segment {segment} is not a multiple of {cfg.hop_length}")
    if ckpt_optim not in ("fp32", "bf16", "none"):
        raise typer.BadParameter(f"--ckpt-optim {ckpt_optim!r}: use fp32, bf16 or none")
    probs_list = [float(p) for p in level_probs.split(",")]
    if len(probs_list) != cfg.levels:
        raise typer.BadParameter(f"--level-probs {level_probs!r} needs {cfg.levels} values")
    # --- data: decoded once, before CUDA and NCCL start (the decoding pool forks) -------------
    if max_steps > 0:
        t0 = time.time()
        workers = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
        audio_np = load_corpus(data, max_files, workers)
        data_msg = f"data: {len(audio_np) / SR / 60:.1f} min from {data} in {time.time() - t0:.0f} s"

    # --- distributed setup ---------------------------------------------------------------------
    ddp = "RANK" in os.environ
    cuda = torch.cuda.is_available()
    if ddp:
        dist.init_process_group("nccl" if cuda else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ["LOCAL_RANK"])
    else:
        rank, world, local_rank = 0, 1, 0
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    master = rank == 0
    torch.manual_seed(seed + rank)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)
    log_path = log_file if str(log_file) not in ("", ".") else ckpt_dir / "train.log"
    if master:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    log_fh = open(log_path, "a") if master else None

    def say(msg: str, stdout: bool = True) -> None:
        if log_fh is not None:
            log_fh.write(msg + "\n")
            log_fh.flush()
            if stdout:
                print(msg, flush=True)

    # --- models, optimizers, resume ------------------------------------------------------------
    model, disc = HiFiCodec(cfg).to(device), Discriminator(**disc_args).to(device)
    mel_loss = MultiScaleMelLoss(SR).to(device)
    opt_g = torch.optim.AdamW(model.parameters(), lr, betas=(0.8, 0.99), weight_decay=0.0)
    opt_d = torch.optim.AdamW(disc.parameters(), lr, betas=(0.8, 0.99), weight_decay=0.0)
    # identical on every rank: quantizer-dropout depth (on the device: no host sync) and restarts
    level_rng = torch.Generator(device).manual_seed(seed)
    shared_rng = torch.Generator().manual_seed(seed)
    step, fresh_optim = 0, True
    ckpt = load_checkpoint(ckpt_dir)
    if ckpt is not None:
        tensors, meta = ckpt
        if meta["model_args"] != json.loads(cfg.to_json()):
            raise typer.BadParameter(f"{ckpt_dir}: checkpoint model_args {meta['model_args']} != {asdict(cfg)}")
        model.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("g/")})
        disc.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("d/")})
        if meta["ckpt_optim"] != "none":
            unflatten_optimizer(opt_g, tensors, "opt_g", meta["opt_g_groups"])
            unflatten_optimizer(opt_d, tensors, "opt_d", meta["opt_d_groups"])
            fresh_optim = False
        shared_rng.set_state(tensors["rng/shared"])
        if tensors["rng/levels"].numel() == level_rng.get_state().numel():  # else CPU <-> GPU resume
            level_rng.set_state(tensors["rng/levels"])
        step = meta["step"]
        say(f"resumed from {ckpt_dir} at step {step} (optimizer state: {meta['ckpt_optim']})")
    elif str(init) not in ("", "."):
        step = init_from_export(model, init)
        say(f"initialised the generator from {init} (step {step}); fresh discriminator and optimizers")
    start_step = step
    n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    say(f"world {world} on {torch.cuda.get_device_name(device) if cuda else 'cpu'}; generator "
        f"{n_params(model) / 1e6:.2f} M (g_a {n_params(model.g_a) / 1e6:.2f}, quantizer "
        f"{n_params(model.quantizer) / 1e6:.3f}, g_s {n_params(model.g_s) / 1e6:.2f}), "
        f"discriminator {n_params(disc) / 1e6:.2f} M")
    raw_model, raw_disc = model, disc
    if ddp:
        model = DDP(model, device_ids=[local_rank] if cuda else None)
        disc = DDP(disc, device_ids=[local_rank] if cuda else None)

    def checkpoint() -> None:
        """Rank 0 writes model_args, config, step, weights, optimizers and the shared RNG."""
        if not master:
            return
        tensors = {**{f"g/{k}": v for k, v in raw_model.state_dict().items()},
                   **{f"d/{k}": v for k, v in raw_disc.state_dict().items()},
                   "rng/shared": shared_rng.get_state(), "rng/levels": level_rng.get_state()}
        meta = dict(step=step, model_args=json.loads(cfg.to_json()), disc_args=disc_args, config=config,
                    ckpt_optim=ckpt_optim, world=world)
        if ckpt_optim != "none":
            dtype = torch.bfloat16 if ckpt_optim == "bf16" else torch.float32
            for name, opt in (("opt_g", opt_g), ("opt_d", opt_d)):
                t, meta[f"{name}_groups"] = flatten_optimizer(opt, name, dtype)
                tensors.update(t)
        nbytes = save_checkpoint(ckpt_dir, tensors, meta)
        say(f"step {step}: checkpoint {ckpt_dir}/latest, {nbytes / 2**20:.1f} MiB", stdout=False)

    # --- random crops from the corpus, kept on the device --------------------------------------
    if step < max_steps:
        audio = torch.from_numpy(audio_np).to(device)
        say(data_msg)
        crop_rng = torch.Generator(device).manual_seed(seed + 1000 * rank + 7919 * step)  # per rank
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
        lr_now = lr * lr_decay**step * (min(1.0, (step - start_step + 1) / warmup) if fresh_optim else 1.0)
        for opt in (opt_g, opt_d):
            for group in opt.param_groups:
                group["lr"] = lr_now
        x = get_batch()
        n_levels = torch.multinomial(probs, x.shape[0], replacement=True, generator=level_rng) + 1
        with autocast:
            out = model(x, n_levels)
        x_hat, q = out.x_hat.float(), out.quantized
        use_gan = step >= disc_start
        losses = {}
        if use_gan:  # discriminator step
            with autocast:  # real and fake in one DDP forward
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
            with autocast:
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
                if ddp:
                    dist.all_reduce(usage)
                dead = usage == 0
                usage_pct = (100 * (~dead).float().view(cfg.levels, cfg.groups, K).mean(dim=(1, 2))).tolist()
                n_dead = dead.sum(dim=1).tolist()
                for j in range(n_cb):
                    if n_dead[j] == 0:
                        continue
                    z = q.latents[:, j].transpose(1, 2).reshape(-1, cfg.code_dim).float()
                    pick = torch.randint(len(z), (n_dead[j],), generator=shared_rng).to(device)
                    new = z[pick] + 1e-3 * z.std() * torch.randn(n_dead[j], cfg.code_dim, device=device)
                    if ddp:
                        dist.broadcast(new, src=0)  # rank 0's batch vectors, so weights stay in sync
                    raw_model.quantizer.vqs[j].codebook.weight.data[dead[j]] = new
                usage.zero_()

        # logging; rank 0 decides when to save and stop, every rank follows on the same step
        if step % log_every == 0 or step == max_steps:
            n = step - step_log
            avg = {k: (v / n).item() for k, v in sums.items()}
            rate = n / (time.time() - t_log)
            mem = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else 0.0
            line = (f"step {step} lr {lr_now:.2e} " + " ".join(f"{k} {v:.4f}" for k, v in avg.items())
                    + f" | {rate:.2f} steps/s {rate * batch_size * world * segment / SR:.0f} audio-s/s"
                    + f" mem {mem:.1f} GiB | usage % " + " ".join(f"L{i + 1} {u:.1f}" for i, u in enumerate(usage_pct))
                    + f" | {(time.time() - t_start) / 60:.1f} min")
            say(line, stdout=step % 200 == 0 or step == max_steps)
            sums, t_log, step_log = {}, time.time(), step
        if step % 10 == 0:
            flags = torch.tensor([minutes > 0 and time.time() - t_start > 60 * minutes,
                                  time.time() - last_save > 60 * save_minutes], dtype=torch.float32, device=device)
            if ddp:
                dist.broadcast(flags, src=0)
            if flags[0]:
                say(f"step {step}: time budget of {minutes} min reached")
                break
            if flags[1]:
                checkpoint()
                last_save = time.time()

    if ddp:  # guard against silent divergence: every rank must hold the same weights
        param_sums = torch.stack([p.detach().float().sum() for m in (raw_model, raw_disc) for p in m.parameters()])
        lo, hi = param_sums.clone(), param_sums.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        say(f"ranks in sync: {torch.equal(lo, hi)}")
    if step > start_step:
        checkpoint()
    if master and str(export) not in ("", "."):
        export_generator(raw_model, export, step)
        say(f"exported fp16 generator to {export} ({export.stat().st_size / 2**20:.1f} MiB)")
    say(f"done at step {step} after {(time.time() - t_start) / 60:.1f} min")
    if ddp:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    typer.run(main)
