"""Speech augmentation for training, on the device and batched (no host sync, no Python loop per sample).

The training speech has few voices (mostly female professionals), so the codec learns those
voices rather than speech. These transforms widen what it sees: speed perturbation (moves pitch
and formants together, e.g. a lower, slower voice), a formant shift at the same pitch (so pitch
and vocal-tract length vary independently, as between speakers), synthetic room reverberation,
background noise, and near-silent passages (so silence maps to cheap, stable indices). The target of every
crop is the augmented signal itself: the codec must reproduce its input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AugmentConfig:
    p_speed: float = 0.6             # share of crops speed-perturbed
    speed_range: tuple[float, float] = (0.78, 1.22)  # ratio of source samples per output sample
    speed_groups: int = 8            # distinct ratios per batch (one FFT resample each)
    p_formant: float = 0.3           # share of crops whose spectral envelope is warped at the same pitch
    formant_range: tuple[float, float] = (0.84, 1.19)  # envelope frequency scale (>1: shorter vocal tract)
    p_reverb: float = 0.15
    rt60_range: tuple[float, float] = (0.08, 0.6)  # seconds
    p_noise: float = 0.15
    snr_range: tuple[float, float] = (8.0, 40.0)   # dB against the crop's RMS
    p_quiet: float = 0.04            # crops turned into near-silence (-45..-75 dB)
    margin: int = 800                # context samples each side, trimmed after resampling/reverb

    def max_input(self, segment: int) -> int:
        """Source samples to cut per crop so that any ratio has enough input."""
        return math.ceil((segment + 2 * self.margin) * self.speed_range[1]) + 1


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.empty(n, device=device).uniform_(lo, hi, generator=g)


def speed_perturb(raw: torch.Tensor, out_len: int, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """`(B, L_max)` source windows -> `(B, out_len)` band-limited resampled windows.

    Sample b uses ratio r of group b % speed_groups: its first round(out_len * r) samples are
    resampled to out_len by zero-padding or truncating the spectrum (ideal low-pass, so a
    speed-up does not alias). A ratio of 1 is an exact copy.
    """
    B, dev = raw.shape[0], raw.device
    G = min(cfg.speed_groups, B)
    use = torch.rand(G, device=dev, generator=g) < cfg.p_speed
    lo, hi = math.log(cfg.speed_range[0]), math.log(cfg.speed_range[1])
    ratios = torch.where(use, _uniform(G, lo, hi, g, dev).exp(), torch.ones(G, device=dev)).tolist()
    out = raw[:, :out_len].clone()
    for j, r in enumerate(ratios):
        if r == 1.0:
            continue
        n_in = round(out_len * r)
        spec = torch.fft.rfft(raw[j::G, :n_in].float(), dim=-1)
        out[j::G] = torch.fft.irfft(spec, n=out_len, dim=-1) * (out_len / n_in)
    return out


def formant_shift(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator, n_fft: int = 512, lifter: int = 24) -> torch.Tensor:
    """Warp the spectral envelope of a random subset of `(B, L)` crops by a factor in `formant_range`,
    keeping the pitch: per STFT frame the cepstrally smoothed log envelope (quefrencies below `lifter`
    samples, 1.5 ms at 16 kHz: below any voice's pitch period) is replaced by the same envelope read at
    f / factor; the fine structure (harmonics) and the phase stay. Level kept."""
    B, L, dev = x.shape[0], x.shape[1], x.device
    win = torch.hann_window(n_fft, device=dev)
    spec = torch.stft(x.float(), n_fft, n_fft // 4, window=win, return_complex=True)  # (B, F, T)
    log_mag = spec.abs().clamp(min=1e-7).log()
    ceps = torch.fft.irfft(log_mag, n=n_fft, dim=1)
    keep = torch.zeros(n_fft, device=dev)
    keep[:lifter], keep[n_fft - lifter + 1 :] = 1.0, 1.0  # the cepstrum of a real log spectrum is symmetric
    env = torch.fft.rfft(ceps * keep[None, :, None], dim=1).real  # (B, F, T) smoothed log magnitude
    factor = _uniform(B, math.log(cfg.formant_range[0]), math.log(cfg.formant_range[1]), g, dev).exp()
    F = env.shape[1]
    pos = (torch.arange(F, device=dev)[None] / factor[:, None]).clamp(max=F - 1)  # (B, F): read the envelope at f / factor
    lo = pos.floor().long()
    hi, w = (lo + 1).clamp(max=F - 1), (pos - lo)[..., None]
    warped = torch.gather(env, 1, lo[..., None].expand_as(env)) * (1 - w) + torch.gather(env, 1, hi[..., None].expand_as(env)) * w
    gain = (warped - env).clamp(-2.3, 2.3).exp()  # at most +-20 dB per bin
    y = torch.istft(spec * gain, n_fft, n_fft // 4, window=win, length=L)
    y = y * (x.pow(2).mean(1, keepdim=True) / y.pow(2).mean(1, keepdim=True).clamp(min=1e-12)).sqrt()
    pick = torch.rand(B, 1, device=dev, generator=g) < cfg.p_formant
    return torch.where(pick, y.to(x.dtype), x)


def reverb(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator, sr: int) -> torch.Tensor:
    """Convolve a random subset of `(B, L)` crops with synthetic exponentially decaying RIRs."""
    B, L, dev = x.shape[0], x.shape[1], x.device
    n = int(cfg.rt60_range[1] * sr)
    t = torch.arange(n, device=dev) / sr
    rt60 = _uniform(B, *cfg.rt60_range, g, dev)
    tail = torch.randn(B, n, device=dev, generator=g) * torch.exp(-6.9 * t / rt60[:, None])
    tail[:, : int(0.002 * sr)] = 0  # early gap after the direct path
    drr = 10 ** (_uniform(B, -6.0, 12.0, g, dev) / 20)  # direct-to-reverberant ratio
    tail = tail / tail.pow(2).sum(dim=1, keepdim=True).sqrt() / drr[:, None]
    tail[:, 0] = 1.0
    size = L + n
    wet = torch.fft.irfft(torch.fft.rfft(x, size) * torch.fft.rfft(tail, size), size)[:, :L]
    wet = wet * (x.pow(2).mean(1, keepdim=True) / wet.pow(2).mean(1, keepdim=True).clamp(min=1e-12)).sqrt()
    pick = torch.rand(B, 1, device=dev, generator=g) < cfg.p_reverb
    return torch.where(pick, wet, x)


def add_noise(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Add coloured noise (spectral slope 0..-4.5 dB/octave) at a random SNR to a random subset."""
    B, L, dev = x.shape[0], x.shape[1], x.device
    f = torch.fft.rfftfreq(L, device=dev).clamp(min=1.0 / L)
    alpha = _uniform(B, 0.0, 1.5, g, dev)
    spec = torch.fft.rfft(torch.randn(B, L, device=dev, generator=g)) * f[None].pow(-alpha[:, None] / 2)
    noise = torch.fft.irfft(spec, L)
    snr = 10 ** (_uniform(B, *cfg.snr_range, g, dev) / 20)
    noise = noise * (x.pow(2).mean(1, keepdim=True).sqrt() / noise.pow(2).mean(1, keepdim=True).sqrt().clamp(min=1e-12) / snr[:, None])
    pick = torch.rand(B, 1, device=dev, generator=g) < cfg.p_noise
    return torch.where(pick, x + noise, x)


def augment(raw: torch.Tensor, segment: int, cfg: AugmentConfig, g: torch.Generator, sr: int) -> torch.Tensor:
    """`(B, max_input)` source windows -> `(B, segment)` augmented crops (before the level gain)."""
    m = cfg.margin
    x = speed_perturb(raw, segment + 2 * m, cfg, g)
    if cfg.p_formant > 0:
        x = formant_shift(x, cfg, g)
    x = reverb(x, cfg, g, sr)
    x = x[:, m : m + segment]
    return add_noise(x, cfg, g)


def level_gain(B: int, cfg: AugmentConfig, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """`(B, 1)` gains: -10..+6 dB, except near-silence (-75..-45 dB) for a share p_quiet."""
    db = _uniform(B, -10.0, 6.0, g, device)
    quiet = torch.rand(B, device=device, generator=g) < cfg.p_quiet
    db = torch.where(quiet, _uniform(B, -75.0, -45.0, g, device), db)
    return (10 ** (db / 20))[:, None]
