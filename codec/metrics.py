"""Quality metrics, rates and Bjøntegaard deltas: the numbers `nmc eval` reports.

Images are compared as 8-bit RGB arrays `(H, W, 3)`. Audio metrics take float arrays
`(frames,)` or `(frames, channels)` with their sample rates; both signals are mixed to
mono, resampled with soxr to the rate the metric is defined at, and the decoded signal is
cut or zero-padded to the reference's length (codecs may pad the end).

PESQ, STOI and ViSQOL normalise levels, so on a (near-)silent reference they score the
noise floor; they return NaN when the reference is below -60 dBFS RMS, and means skip NaN.

Gaussian scenes are compared through renders: each metric takes the lists of float `(H, W, 3)`
views (linear RGB, every held-out camera of every frame, `splatting.render_views`) of the
original and of the decoded sequence, clamps them to [0, 1] as a display would, and pools.

Each metric is registered in `METRICS` with its media kind and direction, so reports,
plots and BD-rate never hard-code a metric list.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import sys
import types
import warnings
from dataclasses import dataclass
from functools import cache
from typing import Callable, Iterator, Mapping

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]
PESQ_RATE = 16_000
STOI_RATE = 10_000  # STOI is defined on 10 kHz signals
STOI_TOO_SHORT = 1e-5  # what pystoi returns when too little of the reference is speech
VISQOL_SPEECH_RATE = 16_000
VISQOL_AUDIO_RATE = 48_000
SILENCE_RMS = 1e-3  # -60 dBFS


# ---------------------------------------------------------------- images

_device = "cpu"  # where the MS-SSIM and ST-LPIPS networks run (`use_device`)


def use_device(device: str) -> None:
    """Run the image metrics' networks on `device` (a resolved `--device`)."""
    global _device
    _device = device


def psnr(ref: npt.NDArray[np.uint8], dec: npt.NDArray[np.uint8]) -> float:
    """PSNR in dB over all RGB samples at peak 255; `inf` for identical images."""
    _check_same_shape(ref, dec)
    mse = float(np.mean((ref.astype(np.float64) - dec.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def ms_ssim(ref: npt.NDArray[np.uint8], dec: npt.NDArray[np.uint8]) -> float:
    """MS-SSIM (Wang 2003: 5 scales, 11x11 Gaussian window) as `pytorch-msssim` computes it, 0..1.

    NaN for images whose shorter side is 160 pixels or less (too small for 5 scales). Many
    decoded versions of one original: `ImageReference` (the original's half is done once).
    """
    from .reference import ImageReference

    return ImageReference(ref, _device).ms_ssim([dec])[0]


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on a dB scale, -10 log10(1 - MS-SSIM), as RD plots and BD-rate use it."""
    return math.inf if value >= 1 else -10 * math.log10(1 - value)


def st_lpips(ref: npt.NDArray[np.uint8], dec: npt.NDArray[np.uint8], net: str = "alex") -> float:
    """Shift-tolerant LPIPS (Ghildyal & Liu 2022), alex backbone; lower is closer. Not paper LPIPS."""
    from .reference import ImageReference

    if net != "alex":
        raise ValueError(f"ST-LPIPS backbone {net!r}: only 'alex' ships here")
    return ImageReference(ref, _device).st_lpips([dec])[0]


# stlpips_pytorch imports these at module level but its shift-tolerant networks never use
# them (torchvision only builds the non-shift-tolerant "vanilla" backbones).
_STLPIPS_UNUSED_IMPORTS = {"torchvision": ("models",), "IPython": ("embed",), "torchsummary": ("summary",)}


@contextlib.contextmanager
def _stub_missing_modules(names: Mapping[str, tuple[str, ...]]) -> Iterator[None]:
    """Insert empty stand-ins for modules that are not installed, only while importing."""
    added = [n for n in names if n not in sys.modules and importlib.util.find_spec(n) is None]
    for name in added:
        stub = types.ModuleType(name, "stand-in for an unused import of stlpips_pytorch")
        for attr in names[name]:
            setattr(stub, attr, None)
        sys.modules[name] = stub
    try:
        yield
    finally:
        for name in added:
            del sys.modules[name]


@cache
def _st_lpips_model(net: str) -> "torch.nn.Module":  # type: ignore[name-defined]  # noqa: F821
    import torch

    with _stub_missing_modules(_STLPIPS_UNUSED_IMPORTS):
        from stlpips_pytorch import stlpips
    # The weights ship inside the package (a plain state dict; torch.load is weights-only).
    model = stlpips.LPIPS(net=net, variant="shift_tolerant", verbose=False).eval()
    return model.to(memory_format=torch.channels_last)  # oneDNN's fast layout (a third less time)


def _check_same_shape(ref: np.ndarray, dec: np.ndarray) -> None:
    if ref.shape != dec.shape:
        raise ValueError(f"decoded shape {dec.shape} differs from the reference {ref.shape}")


# ---------------------------------------------------------------- Gaussian scenes (renders)


Views = list[npt.NDArray[np.float32]]  # (H, W, 3) float renders, one per camera and frame


def view_psnr(ref: Views, dec: Views) -> float:
    """PSNR in dB (peak 1) of the mean squared error over all views; `inf` when identical.

    Pooled, not a mean of per-view dB: one perfect view (infinite dB) cannot hide the others."""
    _check_views(ref, dec)
    mse = float(np.mean([np.mean((_clamp(a) - _clamp(b)) ** 2) for a, b in zip(ref, dec)]))
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def view_ssim(ref: Views, dec: Views) -> float:
    """Mean single-scale SSIM (11x11 Gaussian window, `pytorch-msssim`) over the views, 0..1."""
    import torch
    from pytorch_msssim import ssim

    _check_views(ref, dec)
    with torch.no_grad():
        a, b = (torch.from_numpy(np.stack([_clamp(v) for v in x])).permute(0, 3, 1, 2) for x in (ref, dec))
        return float(ssim(a, b, data_range=1.0, size_average=True))


def view_st_lpips(ref: Views, dec: Views) -> float:
    """Mean ST-LPIPS over the views (8-bit, as a display shows them); lower is closer."""
    _check_views(ref, dec)
    return float(np.mean([st_lpips(_to_uint8(a), _to_uint8(b)) for a, b in zip(ref, dec)]))


def _clamp(v: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(v, np.float32), 0, 1)


def _to_uint8(v: np.ndarray) -> npt.NDArray[np.uint8]:
    return np.round(_clamp(v) * 255).astype(np.uint8)


def _check_views(ref: Views, dec: Views) -> None:
    if len(ref) != len(dec) or not ref:
        raise ValueError(f"{len(dec)} decoded views for {len(ref)} reference views")
    for a, b in zip(ref, dec):
        _check_same_shape(a, b)


# ---------------------------------------------------------------- audio


def prepare_audio(ref: FloatArray, ref_rate: int, dec: FloatArray, dec_rate: int, rate: int) -> tuple[FloatArray, FloatArray]:
    """Mono float64 at `rate`, the decoded signal cut or zero-padded to the reference length."""
    import soxr

    def mono(x: FloatArray, sr: int) -> FloatArray:
        x = np.asarray(x, dtype=np.float64)
        x = x.mean(axis=1) if x.ndim == 2 else x
        return soxr.resample(x, sr, rate, quality="HQ") if sr != rate else x

    r, d = mono(ref, ref_rate), mono(dec, dec_rate)
    d = d[: len(r)] if len(d) >= len(r) else np.pad(d, (0, len(r) - len(d)))
    return r, d


def pesq_wb(ref: FloatArray, ref_rate: int, dec: FloatArray, dec_rate: int) -> float:
    """PESQ wideband (ITU-T P.862.2) MOS-LQO at 16 kHz; NaN where PESQ finds no speech."""
    from pesq import pesq
    from pesq.cypesq import PesqError

    r, d = prepare_audio(ref, ref_rate, dec, dec_rate, PESQ_RATE)
    if _silent(r) or not d.any():
        return math.nan
    try:
        return float(pesq(PESQ_RATE, r, d, "wb"))
    except PesqError:
        return math.nan


def stoi(ref: FloatArray, ref_rate: int, dec: FloatArray, dec_rate: int) -> float:
    """Short-time objective intelligibility (Taal 2011), 0..1, computed at 10 kHz."""
    from pystoi import stoi as _stoi

    r, d = prepare_audio(ref, ref_rate, dec, dec_rate, STOI_RATE)
    if _silent(r):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = float(_stoi(r, d, STOI_RATE, extended=False))
    # pystoi returns exactly 1e-5 (with a warning) when fewer than 30 frames (0.38 s) of the reference are speech
    # after it drops the silent ones: no score, like PESQ without speech, rather than a zero dragging a mean down.
    return math.nan if value == STOI_TOO_SHORT else value


def visqol_speech(ref: FloatArray, ref_rate: int, dec: FloatArray, dec_rate: int) -> float:
    """ViSQOL v3 speech mode MOS-LQO (1..~4.75) at 16 kHz, lattice mapping as in the C++ tool."""
    r, d = prepare_audio(ref, ref_rate, dec, dec_rate, VISQOL_SPEECH_RATE)
    return _visqol_moslqo("speech", r, d, VISQOL_SPEECH_RATE)


def visqol_audio(ref: FloatArray, ref_rate: int, dec: FloatArray, dec_rate: int) -> float:
    """ViSQOL v3 audio mode MOS-LQO (1..~4.7) at 48 kHz, for music."""
    r, d = prepare_audio(ref, ref_rate, dec, dec_rate, VISQOL_AUDIO_RATE)
    return _visqol_moslqo("audio", r, d, VISQOL_AUDIO_RATE)


def _visqol_moslqo(mode: str, ref: FloatArray, dec: FloatArray, rate: int) -> float:
    """NaN for silence, and for clips too short to form one ViSQOL patch (the library
    then fails with an IndexError; e.g. a 0.57 s syllable in speech mode)."""
    if _silent(ref):
        return math.nan
    try:
        return float(_visqol(mode).measure_from_arrays(ref, dec, rate).moslqo)
    except IndexError:
        return math.nan


def _silent(x: FloatArray) -> bool:
    return float(np.sqrt(np.mean(x**2))) < SILENCE_RMS


@cache
def _visqol(mode: str) -> "visqol.VisqolApi":  # type: ignore[name-defined]  # noqa: F821
    from visqol import VisqolApi

    api = VisqolApi()
    api.create(mode=mode, use_lattice_model=True if mode == "speech" else None)
    return api


def si_sdr(ref: FloatArray, ref_rate: int, dec: FloatArray, dec_rate: int) -> float:
    """Scale-invariant SDR in dB (Le Roux 2019) at the reference's rate; `inf` if exact."""
    r, d = prepare_audio(ref, ref_rate, dec, dec_rate, ref_rate)
    r, d = r - r.mean(), d - d.mean()
    energy = float(np.dot(r, r))
    if energy == 0:
        return math.nan
    target = np.dot(d, r) / energy * r
    noise = float(np.sum((d - target) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(float(np.sum(target**2)) / noise)


def mel_distance(ref: FloatArray, ref_rate: int, dec: FloatArray, dec_rate: int, n_mels: int = 80) -> float:
    """Mean absolute difference of log10 mel magnitudes (64 ms Hann frames, hop 16 ms, 80 bands)."""
    r, d = prepare_audio(ref, ref_rate, dec, dec_rate, ref_rate)
    n_fft = 1 << math.ceil(math.log2(0.064 * ref_rate))
    fb = _mel_filterbank(ref_rate, n_fft, n_mels)
    mr, md = (np.log10(np.maximum(_stft_magnitude(x, n_fft) @ fb.T, 1e-5)) for x in (r, d))
    return float(np.mean(np.abs(mr - md)))


def _stft_magnitude(x: FloatArray, n_fft: int) -> FloatArray:
    hop = n_fft // 4
    x = np.pad(x, (n_fft // 2, n_fft // 2 + (-len(x)) % hop))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    return np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1))


@cache
def _mel_filterbank(rate: int, n_fft: int, n_mels: int) -> FloatArray:
    """Triangular filters evenly spaced on the HTK mel scale from 0 Hz to Nyquist."""
    hz = np.fft.rfftfreq(n_fft, 1 / rate)
    top = 2595 * np.log10(1 + rate / 2 / 700)  # Nyquist in mel
    edges = 700 * (10 ** (np.linspace(0, top, n_mels + 2) / 2595) - 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0, np.minimum((hz - lo) / (mid - lo), (hi - hz) / (hi - mid)))


# ---------------------------------------------------------------- registry


@dataclass(frozen=True)
class Metric:
    name: str
    media: str  # "image", "audio" or "gaussians"
    fn: Callable[..., float]
    higher_is_better: bool
    label: str  # axis label in plots
    revision: int = 1  # raised when the definition changes, so cached scores (evaluate.PointCache) are recomputed


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("psnr", "image", psnr, True, "PSNR (dB)"),
        Metric("ms_ssim", "image", ms_ssim, True, "MS-SSIM"),
        Metric("st_lpips", "image", st_lpips, False, "ST-LPIPS (alex)"),
        Metric("view_psnr", "gaussians", view_psnr, True, "render PSNR (dB)"),
        Metric("view_ssim", "gaussians", view_ssim, True, "render SSIM"),
        Metric("view_st_lpips", "gaussians", view_st_lpips, False, "render ST-LPIPS (alex)"),
        Metric("pesq", "audio", pesq_wb, True, "PESQ-WB"),
        Metric("stoi", "audio", stoi, True, "STOI", revision=2),  # 2: NaN instead of pystoi's 1e-5 for too little speech
        Metric("visqol_speech", "audio", visqol_speech, True, "ViSQOL speech (16 kHz)"),
        Metric("visqol_audio", "audio", visqol_audio, True, "ViSQOL audio (48 kHz)"),
        Metric("si_sdr", "audio", si_sdr, True, "SI-SDR (dB)"),
        Metric("mel_distance", "audio", mel_distance, False, "log-mel distance"),
    )
}
DEFAULT_METRICS = {
    "image": ["psnr", "ms_ssim", "st_lpips"],
    "audio": ["pesq", "stoi", "visqol_speech", "si_sdr", "mel_distance"],
    "gaussians": ["view_psnr", "view_ssim", "view_st_lpips"],
}
BD_METRICS = {"image": ["psnr", "ms_ssim"], "audio": ["pesq"], "gaussians": ["view_psnr"]}


# ---------------------------------------------------------------- Bjøntegaard delta rate


def bd_rate(rate_a: npt.ArrayLike, quality_a: npt.ArrayLike, rate_b: npt.ArrayLike, quality_b: npt.ArrayLike) -> float:
    """Average rate difference of curve B against anchor A at equal quality, in percent.

    Bjøntegaard (VCEG-M33) with piecewise-cubic (PCHIP) interpolation of log-rate over
    quality, integrated over the quality range both curves cover (as in VCEG-AL22 / JVET
    CTC tools). Negative means B needs fewer bits. NaN if the curves have no overlap or
    fewer than two distinct points each.
    """
    from scipy.interpolate import PchipInterpolator

    curves = []
    for rate, quality in ((rate_a, quality_a), (rate_b, quality_b)):
        r, q = np.asarray(rate, np.float64), np.asarray(quality, np.float64)
        keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
        q, log_r = q[keep], np.log(r[keep])
        order = np.argsort(q)
        q, log_r = q[order], log_r[order]
        q, first = np.unique(q, return_index=True)  # PCHIP needs strictly increasing x
        if len(q) < 2:
            return math.nan
        curves.append((q, log_r[first]))
    lo = max(curves[0][0][0], curves[1][0][0])
    hi = min(curves[0][0][-1], curves[1][0][-1])
    if hi <= lo:
        return math.nan
    area = [PchipInterpolator(q, lr).integrate(lo, hi) for q, lr in curves]
    return float((math.exp((area[1] - area[0]) / (hi - lo)) - 1) * 100)
