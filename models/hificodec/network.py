"""HiFi-Codec network: SEANet-style encoder, group-residual VQ, HiFi-GAN-style decoder.

Yang et al., "HiFi-Codec: Group-residual Vector quantization for High Fidelity Audio Codec",
arXiv:2305.02765. The codebooks are factorized and l2-normalised as in DAC (Kumar et al.,
"High-Fidelity Audio Compression with Improved RVQGAN", arXiv:2306.06546), which keeps
codebook usage high without k-means or EMA updates.

::

    x (B,1,T) --g_a--> y (B,D,F) --GRVQ--> y_hat (B,D,F) --g_s--> x_hat (B,1,T)
                        |                 ^
                        +--> indices (B, groups*levels, F) --+   F = T / 320 (50 frames/s)

This file also holds the training-only parts that the evaluation shares or that belong to
the network (mel spectrogram loss, discriminators), so that inference needs only torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

__all__ = [
    "CodecConfig", "CodecOutput", "QuantizedResult", "HiFiCodec", "GroupResidualVQ",
    "MultiScaleMelLoss", "Discriminator", "mel_filterbank",
]


# --- helpers -------------------------------------------------------------------------------

def _conv(wn: bool, *args, **kwargs) -> nn.Module:
    conv = nn.Conv1d(*args, **kwargs)
    return weight_norm(conv) if wn else conv


def _tconv(wn: bool, *args, **kwargs) -> nn.Module:
    conv = nn.ConvTranspose1d(*args, **kwargs)
    return weight_norm(conv) if wn else conv


class Snake1d(nn.Module):
    """Snake activation x + sin^2(a x) / a with a learned per-channel a (Ziyin et al. 2020)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        inv_alpha = (self.alpha + 1e-9).reciprocal()
        if torch.is_grad_enabled():
            return x + inv_alpha * torch.sin(self.alpha * x).pow(2)
        return torch.mul(x, self.alpha).sin_().square_().mul_(inv_alpha).add_(x)  # in place: CPU speed


class ResidualUnit(nn.Module):
    """Snake -> dilated conv(k=7) -> Snake -> conv(k=1), plus the skip connection."""

    def __init__(self, channels: int, dilation: int, wn: bool):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(channels), _conv(wn, channels, channels, 7, dilation=dilation, padding=3 * dilation),
            Snake1d(channels), _conv(wn, channels, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class EncoderBlock(nn.Sequential):
    """Residual units at the input rate, then a strided conv that divides the rate by `stride`."""

    def __init__(self, c_in: int, c_out: int, stride: int, dilations: tuple[int, ...], wn: bool):
        super().__init__(
            *[ResidualUnit(c_in, d, wn) for d in dilations], Snake1d(c_in),
            _conv(wn, c_in, c_out, 2 * stride, stride=stride, padding=math.ceil(stride / 2)),
        )


class DecoderBlock(nn.Sequential):
    """A transposed conv that multiplies the rate by `stride`, then residual units."""

    def __init__(self, c_in: int, c_out: int, stride: int, dilations: tuple[int, ...], wn: bool):
        super().__init__(
            Snake1d(c_in),
            _tconv(wn, c_in, c_out, 2 * stride, stride=stride, padding=math.ceil(stride / 2),
                   output_padding=stride % 2),
            *[ResidualUnit(c_out, d, wn) for d in dilations],
        )


# --- analysis / synthesis transforms ---------------------------------------------------------

class Encoder(nn.Module):
    """g_a: `(B, 1, T)` waveform -> `(B, D, T / prod(strides))` latent y."""

    def __init__(self, channels: int, strides: tuple[int, ...], latent_dim: int,
                 dilations: tuple[tuple[int, ...], ...], wn: bool):
        super().__init__()
        layers: list[nn.Module] = [_conv(wn, 1, channels, 7, padding=3)]
        c = channels
        for s, d in zip(strides, dilations, strict=True):
            layers.append(EncoderBlock(c, 2 * c, s, d, wn))
            c *= 2
        layers += [Snake1d(c), _conv(wn, c, latent_dim, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """g_s: `(B, D, F)` latent y_hat -> `(B, 1, F * prod(strides))` waveform in [-1, 1]."""

    def __init__(self, channels: int, strides: tuple[int, ...], latent_dim: int,
                 dilations: tuple[tuple[int, ...], ...], wn: bool):
        super().__init__()
        layers: list[nn.Module] = [_conv(wn, latent_dim, channels, 7, padding=3)]
        c = channels
        for s, d in zip(strides, dilations, strict=True):
            layers.append(DecoderBlock(c, c // 2, s, d, wn))
            c //= 2
        self.net = nn.Sequential(*layers, Snake1d(c))
        self.post = _conv(wn, c, 1, 7, padding=3)

    def forward(self, y_hat: Tensor) -> Tensor:
        h = self.net(y_hat)
        with torch.autocast(device_type=h.device.type, enabled=False):  # fp32 waveform, no bf16 noise floor
            return torch.tanh(self.post(h.float()))


# --- group-residual vector quantization ------------------------------------------------------

@dataclass
class QuantizedResult:
    """What the quantizer returns in training (EnCodec's `QuantizedResult` idea).

    Attributes:
        y_hat (Tensor): `(B, D, F)` quantized latent, straight-through gradient to y.
        indices (Tensor): `(B, n_codebooks, F)` code indices, level-major
            (codebook k = level * groups + group), all levels even where dropped.
        commitment_loss (Tensor): scalar, ||z_e - sg(z_q)||^2 over the kept levels.
        codebook_loss (Tensor): scalar, ||sg(z_e) - z_q||^2 over the kept levels.
        latents (Tensor): `(B, n_codebooks, code_dim, F)` low-dim z_e per codebook, the
            vectors that dead codes are restarted from.
    """

    y_hat: Tensor
    indices: Tensor
    commitment_loss: Tensor
    codebook_loss: Tensor
    latents: Tensor


class FactorizedVQ(nn.Module):
    """One codebook: project to `code_dim`, nearest l2-normalised code, project back (DAC)."""

    def __init__(self, dim: int, codebook_size: int, code_dim: int, wn: bool):
        super().__init__()
        self.in_proj = _conv(wn, dim, code_dim, 1)
        self.out_proj = _conv(wn, code_dim, dim, 1)
        self.codebook = nn.Embedding(codebook_size, code_dim)

    def codes_to_indices(self, z_e: Tensor) -> Tensor:
        """`(B, code_dim, F)` -> `(B, F)` index of the code with the highest cosine similarity."""
        e = F.normalize(z_e.transpose(1, 2), dim=-1)                   # b d f -> b f d
        c = F.normalize(self.codebook.weight, dim=-1)
        return (e @ c.t()).argmax(dim=-1)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """`(B, F)` -> `(B, dim, F)` contribution of this codebook to y_hat."""
        return self.out_proj(self.codebook(indices).transpose(1, 2))

    def forward(self, r: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        z_e = self.in_proj(r)
        indices = self.codes_to_indices(z_e)
        z_q = self.codebook(indices).transpose(1, 2)
        commitment = F.mse_loss(z_e, z_q.detach(), reduction="none").mean(dim=(1, 2))
        codebook = F.mse_loss(z_q, z_e.detach(), reduction="none").mean(dim=(1, 2))
        z_q = z_e + (z_q - z_e).detach()                               # straight-through
        return self.out_proj(z_q), indices, commitment, codebook, z_e


class GroupResidualVQ(nn.Module):
    """GRVQ: split y into `groups` channel groups; each is coded by a residual VQ of `levels`.

    Quantizer dropout is per sample (DAC): `n_levels` `(B,)` keeps the first n levels of every
    group for each sample. All levels are always computed, so every parameter gets a gradient
    and DDP needs no `find_unused_parameters`.
    """

    def __init__(self, dim: int, groups: int, levels: int, codebook_size: int, code_dim: int,
                 wn: bool):
        super().__init__()
        if dim % groups:
            raise ValueError(f"latent dim {dim} is not divisible by groups={groups}")
        self.groups, self.levels, self.codebook_size = groups, levels, codebook_size
        self.vqs = nn.ModuleList(FactorizedVQ(dim // groups, codebook_size, code_dim, wn)
                                 for _ in range(groups * levels))     # index level * groups + g

    def forward(self, y: Tensor, n_levels: Tensor) -> QuantizedResult:
        with torch.autocast(device_type=y.device.type, enabled=False):
            y = y.float()
            n_cb = self.groups * self.levels
            out = []
            indices: list[Tensor] = [y] * n_cb                         # placeholders, all set below
            latents: list[Tensor] = [y] * n_cb
            commit = codebook = y.new_zeros(())
            for g, r in enumerate(y.chunk(self.groups, dim=1)):
                y_hat_g = torch.zeros_like(r)
                for level in range(self.levels):
                    k = level * self.groups + g
                    q, indices[k], c_loss, cb_loss, latents[k] = self.vqs[k](r)
                    keep = (level < n_levels).to(y.dtype)              # (B,)
                    y_hat_g = y_hat_g + q * keep[:, None, None]
                    r = r - q
                    commit = commit + (c_loss * keep).mean()
                    codebook = codebook + (cb_loss * keep).mean()
                out.append(y_hat_g)
            result = QuantizedResult(torch.cat(out, dim=1), torch.stack(indices, dim=1), commit,
                                     codebook, torch.stack(latents, dim=1))
        return result

    def codes_to_indices(self, y: Tensor, n_levels: int) -> Tensor:
        """`(B, D, F)` latent -> `(B, groups * n_levels, F)` indices, level-major."""
        self._check_levels(n_levels)
        with torch.autocast(device_type=y.device.type, enabled=False):
            res = list(y.float().chunk(self.groups, dim=1))
            indices = []
            for level in range(n_levels):
                for g in range(self.groups):
                    vq = self.vq(level * self.groups + g)
                    i = vq.codes_to_indices(vq.in_proj(res[g]))
                    res[g] = res[g] - vq.indices_to_codes(i)
                    indices.append(i)
        return torch.stack(indices, dim=1)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """`(B, groups * n_levels, F)` indices -> `(B, D, F)` quantized latent y_hat."""
        n_cb = indices.shape[1]
        if n_cb % self.groups:
            raise ValueError(f"{n_cb} codebooks is not a multiple of groups={self.groups}")
        self._check_levels(n_cb // self.groups)
        if indices.min() < 0 or indices.max() >= self.codebook_size:
            raise ValueError(f"indices outside [0, {self.codebook_size}): "
                             f"min {int(indices.min())}, max {int(indices.max())}")
        return torch.cat([torch.stack([self.vq(k).indices_to_codes(indices[:, k])
                                       for k in range(g, n_cb, self.groups)]).sum(dim=0)
                          for g in range(self.groups)], dim=1)

    def vq(self, k: int) -> FactorizedVQ:
        return cast(FactorizedVQ, self.vqs[k])

    def _check_levels(self, n_levels: int) -> None:
        if not 1 <= n_levels <= self.levels:
            raise ValueError(f"n_levels={n_levels} outside [1, {self.levels}]")


# --- the codec -------------------------------------------------------------------------------

@dataclass
class CodecConfig:
    """Everything needed to rebuild the generator; stored in checkpoints and weight files."""

    sample_rate: int = 16000
    strides: tuple[int, ...] = (2, 4, 5, 8)                # encoder; decoder uses the reverse
    enc_channels: int = 16                                 # doubles at every encoder block
    dec_channels: int = 320                                # halves at every decoder block
    # residual-unit dilations per block; fewer units at the high sample rates (CPU speed)
    enc_dilations: tuple[tuple[int, ...], ...] = ((1,), (1, 3), (1, 3, 9), (1, 3, 9))
    dec_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 9), (1, 3, 9), (1, 3, 9), (1,))
    latent_dim: int = 256
    groups: int = 2
    levels: int = 4
    codebook_size: int = 1024
    code_dim: int = 8

    @property
    def hop_length(self) -> int:
        return math.prod(self.strides)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CodecConfig:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, d: dict) -> CodecConfig:
        """From `asdict` form (JSON lists back to tuples)."""
        d = {**d, "strides": tuple(d["strides"])}
        for k in ("enc_dilations", "dec_dilations"):
            d[k] = tuple(tuple(x) for x in d[k])
        return cls(**d)


@dataclass
class CodecOutput:
    """Training forward result: reconstruction `x_hat` `(B, 1, T)` and the quantizer result."""

    x_hat: Tensor
    quantized: QuantizedResult


class HiFiCodec(nn.Module):
    """HiFi-Codec generator: g_a, GRVQ (groups x residual levels of 1024 codes), g_s.

    One model serves 1..`levels` residual levels: at 50 frames/s and 10 bit per index, each
    level of both groups adds 2 x 500 bit/s (nominal 1, 2, 3, 4 kbit/s).
    """

    def __init__(self, config: CodecConfig | None = None, weight_norm: bool = True):
        super().__init__()
        self.config = cfg = config or CodecConfig()
        self.g_a = Encoder(cfg.enc_channels, cfg.strides, cfg.latent_dim, cfg.enc_dilations,
                           weight_norm)
        self.quantizer = GroupResidualVQ(cfg.latent_dim, cfg.groups, cfg.levels, cfg.codebook_size,
                                         cfg.code_dim, weight_norm)
        self.g_s = Decoder(cfg.dec_channels, tuple(reversed(cfg.strides)), cfg.latent_dim,
                           cfg.dec_dilations, weight_norm)

    def forward(self, x: Tensor, n_levels: Tensor) -> CodecOutput:
        """Training pass. `x` `(B, 1, T)` with T a multiple of the hop; `n_levels` `(B,)`."""
        q = self.quantizer(self.g_a(x), n_levels)
        return CodecOutput(self.g_s(q.y_hat.to(x.dtype)), q)

    @torch.no_grad()
    def encode(self, x: Tensor, n_levels: int) -> Tensor:
        """`(B, 1, T)` audio at `sample_rate` -> `(B, groups * n_levels, ceil(T / hop))` indices."""
        pad = -x.shape[-1] % self.config.hop_length
        return self.quantizer.codes_to_indices(self.g_a(F.pad(x, (0, pad))), n_levels)

    @torch.no_grad()
    def decode(self, indices: Tensor) -> Tensor:
        """`(B, n_codebooks, F)` indices -> `(B, 1, F * hop)` audio in [-1, 1]."""
        return self.g_s(self.quantizer.indices_to_codes(indices))

    def remove_weight_norm(self) -> HiFiCodec:
        """Fold the weight-norm parametrizations into plain weights (for export/inference)."""
        for m in self.modules():
            if parametrize.is_parametrized(m, "weight"):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
        return self

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, Tensor], config: CodecConfig) -> HiFiCodec:
        """Build an inference model (no weight norm, fp32) from exported weights."""
        model = cls(config, weight_norm=False)
        model.load_state_dict({k: v.float() for k, v in state_dict.items()})
        return model.eval()


# --- mel spectrogram loss (shared with the evaluation's mel distance) -----------------------

def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> Tensor:
    """Triangular HTK-mel filters, `(n_mels, n_fft // 2 + 1)`, unnormalised."""
    f_max = sample_rate / 2 if f_max is None else f_max
    m_min, m_max = (2595.0 * math.log10(1.0 + f / 700.0) for f in (f_min, f_max))
    hz = 700.0 * (10.0 ** (torch.linspace(m_min, m_max, n_mels + 2, dtype=torch.float64) / 2595.0) - 1.0)
    freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lo, mid, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (freqs - lo) / (mid - lo)
    down = (hi - freqs) / (hi - mid)
    return torch.clamp(torch.minimum(up, down), min=0.0).float()


class MelSpectrogram(nn.Module):
    """log10 mel magnitude spectrogram `(B, 1, T)` -> `(B, n_mels, frames)`, computed in fp32."""

    window: Tensor
    fb: Tensor

    def __init__(self, sample_rate: int, n_fft: int, n_mels: int, hop_length: int | None = None):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop_length or n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("fb", mel_filterbank(sample_rate, n_fft, n_mels), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            spec = torch.stft(x.float().flatten(0, 1), self.n_fft, self.hop, window=self.window,
                              return_complex=True).abs()
            return torch.log10(torch.clamp(self.fb @ spec, min=1e-5))


class MultiScaleMelLoss(nn.Module):
    """Sum over window sizes of L1 between log mel spectrograms (DAC's multi-scale mel loss)."""

    def __init__(self, sample_rate: int = 16000,
                 windows: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048),
                 n_mels: tuple[int, ...] = (5, 10, 20, 40, 80, 160, 320)):
        super().__init__()
        self.specs = nn.ModuleList(MelSpectrogram(sample_rate, w, m) for w, m in zip(windows, n_mels))

    def forward(self, x_hat: Tensor, x: Tensor) -> Tensor:
        return sum((F.l1_loss(s(x_hat), s(x)) for s in self.specs), x.new_zeros(()).float())


# --- discriminators (training only) ----------------------------------------------------------

def _conv2d(*args, **kwargs) -> nn.Module:
    return weight_norm(nn.Conv2d(*args, **kwargs))


class PeriodDiscriminator(nn.Module):
    """HiFi-GAN MPD branch: fold the waveform by `period` and run 2-D convs along time."""

    def __init__(self, period: int, channels: tuple[int, ...] = (32, 64, 128, 192)):
        super().__init__()
        self.period = period
        chans = (1, *channels)
        self.convs = nn.ModuleList(
            [_conv2d(a, b, (5, 1), (3, 1), padding=(2, 0)) for a, b in zip(chans[:-1], chans[1:])]
            + [_conv2d(chans[-1], chans[-1], (5, 1), 1, padding=(2, 0))])
        self.post = _conv2d(chans[-1], 1, (3, 1), 1, padding=(1, 0))

    def forward(self, x: Tensor) -> list[Tensor]:
        x = F.pad(x, (0, -x.shape[-1] % self.period), mode="reflect")
        x = x.view(x.shape[0], 1, -1, self.period)                    # b 1 (t p) -> b 1 t p
        return _feature_maps(self.convs, self.post, x)


def _feature_maps(convs: nn.ModuleList, post: nn.Module, x: Tensor) -> list[Tensor]:
    """Every layer's output (for feature matching), the last one being the logits."""
    feats = []
    for conv in convs:
        x = F.leaky_relu(conv(x), 0.1)
        feats.append(x)
    feats.append(post(x))
    return feats


class STFTDiscriminator(nn.Module):
    """Complex-STFT discriminator at one resolution (real and imaginary parts as 2 channels)."""

    window: Tensor

    def __init__(self, n_fft: int, channels: int = 32):
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        c = channels
        self.convs = nn.ModuleList([
            _conv2d(2, c, (3, 9), padding=(1, 4)),
            _conv2d(c, c, (3, 9), (1, 2), padding=(1, 4)),
            _conv2d(c, c, (3, 9), (1, 2), padding=(1, 4)),
            _conv2d(c, c, (3, 9), (1, 2), padding=(1, 4)),
            _conv2d(c, c, (3, 3), padding=(1, 1)),
        ])
        self.post = _conv2d(c, 1, (3, 3), padding=(1, 1))

    def forward(self, x: Tensor) -> list[Tensor]:
        with torch.autocast(device_type=x.device.type, enabled=False):
            s = torch.stft(x.float().squeeze(1), self.n_fft, self.n_fft // 4, window=self.window,
                           return_complex=True)
        x = torch.view_as_real(s).permute(0, 3, 2, 1)                 # b f t 2 -> b 2 t f
        return _feature_maps(self.convs, self.post, x)


class Discriminator(nn.Module):
    """Multi-period (2, 3, 5, 7, 11) plus multi-resolution STFT discriminators.

    Returns one feature list per sub-discriminator; the last entry of each is its logit map.
    """

    def __init__(self, periods: tuple[int, ...] = (2, 3, 5, 7, 11),
                 ffts: tuple[int, ...] = (1024, 512, 256), mpd_channels: tuple[int, ...] = (32, 64, 128, 192),
                 stft_channels: int = 32):
        super().__init__()
        self.discs = nn.ModuleList([PeriodDiscriminator(p, mpd_channels) for p in periods]
                                   + [STFTDiscriminator(n, stft_channels) for n in ffts])

    def forward(self, x: Tensor) -> list[list[Tensor]]:
        return [d(x) for d in self.discs]
