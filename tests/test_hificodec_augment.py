"""Training augmentation of hificodec: shapes, identity when off, and what a speed change does."""

import math

import torch

from nmc.models.hificodec.augment import AugmentConfig, augment, formant_shift, level_gain, speed_perturb

SR = 16000


def _sine(freq: float, n: int, batch: int = 4) -> torch.Tensor:
    t = torch.arange(n) / SR
    return torch.sin(2 * math.pi * freq * t).repeat(batch, 1)


def _peak_hz(x: torch.Tensor) -> float:
    spec = torch.fft.rfft(x * torch.hann_window(len(x))).abs()
    return float(spec.argmax()) * SR / len(x)


def test_off_is_identity() -> None:
    cfg = AugmentConfig(p_speed=0, p_formant=0, p_reverb=0, p_noise=0)
    raw = torch.randn(6, cfg.max_input(3200))
    out = augment(raw, 3200, cfg, torch.Generator().manual_seed(0), SR)
    assert torch.equal(out, raw[:, cfg.margin : cfg.margin + 3200])


def test_speed_moves_frequency_by_the_ratio() -> None:
    cfg = AugmentConfig(p_speed=1.0, speed_range=(1.2, 1.2 + 1e-9), speed_groups=2)
    raw = _sine(1000.0, cfg.max_input(8000))
    out = speed_perturb(raw, 8000, cfg, torch.Generator().manual_seed(0))
    assert out.shape == (4, 8000)
    assert abs(_peak_hz(out[0]) - 1200.0) < 10
    assert abs(out[0].pow(2).mean().item() - 0.5) < 0.05  # level kept


def test_speed_up_does_not_alias() -> None:
    # 7 kHz sped up by 1.2 lies above Nyquist: it must vanish, not fold back to 6.8 kHz
    cfg = AugmentConfig(p_speed=1.0, speed_range=(1.2, 1.2 + 1e-9), speed_groups=1)
    out = speed_perturb(_sine(7000.0, cfg.max_input(8000)), 8000, cfg, torch.Generator().manual_seed(0))
    assert out[0, 1000:-1000].abs().max() < 0.05


def test_all_on_keeps_shape_and_is_finite() -> None:
    cfg = AugmentConfig(p_speed=1, p_formant=1, p_reverb=1, p_noise=1)
    raw = torch.randn(8, cfg.max_input(6400)) * 0.1
    out = augment(raw, 6400, cfg, torch.Generator().manual_seed(1), SR)
    assert out.shape == (8, 6400) and torch.isfinite(out).all()
    assert not torch.allclose(out, raw[:, cfg.margin : cfg.margin + 6400])


def test_quiet_gains() -> None:
    g = level_gain(2000, AugmentConfig(p_quiet=0.5), torch.Generator().manual_seed(0), torch.device("cpu"))
    db = 20 * torch.log10(g)
    assert ((db < -44) | ((db > -10.01) & (db < 6.01))).all()
    assert 0.4 < (db < -44).float().mean() < 0.6


def _vowel(f0: float, formant: float, n: int) -> torch.Tensor:
    """Harmonics of f0 under a resonance at `formant` Hz (a crude vowel)."""
    t = torch.arange(n) / SR
    harmonics = torch.arange(1, int(7000 / f0))
    amp = 1 / (1 + ((harmonics * f0 - formant) / 150.0) ** 2)
    return (amp[:, None] * torch.sin(2 * math.pi * f0 * harmonics[:, None] * t)).sum(0)


def test_formant_shift_moves_the_envelope_not_the_pitch() -> None:
    x = _vowel(150.0, 1050.0, 16000)[None].repeat(2, 1)
    cfg = AugmentConfig(p_formant=1.0, formant_range=(1.2, 1.2 + 1e-9))
    y = formant_shift(x, cfg, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert abs(y[0].pow(2).mean().item() / x[0].pow(2).mean().item() - 1) < 1e-3  # level kept
    hz = torch.fft.rfftfreq(12000, 1 / SR)
    band = (hz > 200) & (hz < 4000)

    def centroid(s: torch.Tensor) -> float:
        power = torch.fft.rfft(s[2000:-2000] * torch.hann_window(12000)).abs()[band] ** 2
        return float((power * hz[band]).sum() / power.sum())

    assert 1.1 < centroid(y[0]) / centroid(x[0]) < 1.35  # the resonance moved up (by 1.30 here) ...
    peak_y = _peak_hz(y[0, 2000:-2000])
    assert abs(peak_y / 150 - round(peak_y / 150)) < 0.05  # ... and the strongest partial is a harmonic of the same pitch
    spec = torch.fft.rfft(y[0, 2000:-2000] * torch.hann_window(12000)).abs()
    off_grid = (hz / 150 - (hz / 150).round()).abs() > 0.2
    assert spec[off_grid & (hz > 100) & (hz < 4000)].max() < 0.1 * spec.max()  # no energy between the harmonics


def test_formant_shift_off_is_identity() -> None:
    x = torch.randn(3, 4000)
    assert torch.equal(formant_shift(x, AugmentConfig(p_formant=0.0), torch.Generator().manual_seed(0)), x)
