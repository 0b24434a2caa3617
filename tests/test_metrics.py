"""Metrics on cases with known answers, rates, and BD-rate against hand-computed values."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from nmc.codec import metrics as Q
from nmc.codec.media import read_audio

SPEECH = Path(__file__).resolve().parents[1] / "samples" / "speech_es.flac"


def photo(h: int = 192, w: int = 176, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 100 * np.sin(x / 9), 128 + 90 * np.cos(y / 13), (x * 255 / w)], axis=-1)
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def noisy(a: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    return np.clip(a + np.random.default_rng(seed).normal(0, sigma, a.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, int]:
    audio = read_audio(SPEECH)
    x = audio.to_array()[:, 0]
    return x[: 3 * audio.sample_rate], audio.sample_rate


class TestRates:
    def test_bpp_and_kbps(self) -> None:
        from nmc.codec.media import real_rate

        assert real_rate(1000, {"kind": "image", "width": 80, "height": 100}) == (1.0, "bpp")
        assert real_rate(2000, {"kind": "audio", "frames": 32000, "sample_rate": 16000}) == (8.0, "kbps")


class TestImageMetrics:
    def test_psnr_known_offset(self) -> None:
        a = np.full((8, 8, 3), 100, np.uint8)
        assert Q.psnr(a, a) == math.inf
        assert Q.psnr(a, a + 5) == pytest.approx(10 * math.log10(255**2 / 25))

    def test_shape_mismatch_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="differs"):
            Q.psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))

    def test_ms_ssim(self) -> None:
        a = photo()
        assert Q.ms_ssim(a, a) == pytest.approx(1.0, abs=1e-6)
        assert 1 > Q.ms_ssim(a, noisy(a, 4)) > Q.ms_ssim(a, noisy(a, 20)) > 0
        assert math.isnan(Q.ms_ssim(a[:64, :64], a[:64, :64]))  # too small for 5 scales
        assert Q.ms_ssim_db(0.99) == pytest.approx(20.0)

    def test_st_lpips(self) -> None:
        a = photo(64, 64)
        assert Q.st_lpips(a, a) == pytest.approx(0.0, abs=1e-6)
        assert 0 < Q.st_lpips(a, noisy(a, 5)) < Q.st_lpips(a, noisy(a, 40))
        assert math.isnan(Q.st_lpips(a[:20, :64], a[:20, :64])) and Q.st_lpips(a[:21, :64], a[:21, :64]) == 0  # too small for its network

    def test_reference_matches_the_libraries(self) -> None:
        """`ImageReference` (original's work done once, a batch of decoded images) gives the
        numbers of pytorch_msssim and of stlpips_pytorch's own forward."""
        import torch
        from pytorch_msssim import ms_ssim
        from nmc.codec.reference import ImageReference

        a = photo(176, 200)
        decoded = [noisy(a, 3), noisy(a, 25, seed=2), a]
        ref = ImageReference(a)

        def t(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(x.astype(np.float32)).permute(2, 0, 1)[None]

        with torch.no_grad():
            want_ssim = [float(ms_ssim(t(a), t(d), data_range=255)) for d in decoded]
            model = Q._st_lpips_model("alex")
            want_lpips = [float(model(t(a) / 255, t(d) / 255, normalize=True).mean()) for d in decoded]
        assert ref.ms_ssim(decoded) == pytest.approx(want_ssim, abs=1e-6)
        assert ref.st_lpips(decoded) == pytest.approx(want_lpips, abs=1e-6)
        assert ref.st_lpips(decoded[:1]) == pytest.approx(want_lpips[:1], abs=1e-6)  # features kept from the first call
        with pytest.raises(ValueError, match="differs from the reference"):
            ref.ms_ssim([a[:100]])

    def test_st_lpips_maps_locate_the_difference(self) -> None:
        """`ImageReference.st_lpips_maps`: a map's mean is about ST-LPIPS, and it is larger where the image was changed."""
        from nmc.codec.reference import ImageReference

        a = photo()
        b = a.copy()
        b[:, : a.shape[1] // 2] = noisy(a, 30)[:, : a.shape[1] // 2]  # the left half damaged
        ref = ImageReference(a)
        (m,) = ref.st_lpips_maps([b])
        assert m.shape == a.shape[:2] and m.mean() == pytest.approx(ref.st_lpips([b])[0], rel=0.1)
        assert m[:, : a.shape[1] // 2 - 16].mean() > 5 * m[:, a.shape[1] // 2 + 16 :].mean()
        assert not ref.st_lpips_maps([a]).any() and np.isnan(ImageReference(a[:20]).st_lpips_maps([a[:20]])).all()

    def test_st_lpips_import_leaves_no_stubs(self) -> None:
        Q._st_lpips_model("alex")
        for name in Q._STLPIPS_UNUSED_IMPORTS:
            module = sys.modules.get(name)
            assert module is None or getattr(module, "__file__", None) is not None


class TestAudioMetrics:
    def test_prepare_mixes_resamples_and_aligns(self) -> None:
        stereo = np.stack([np.ones(800), np.zeros(800)], axis=1)
        r, d = Q.prepare_audio(stereo, 8000, np.ones(500), 8000, 8000)
        assert r.shape == d.shape == (800,) and r[0] == 0.5 and d[600] == 0
        r, d = Q.prepare_audio(np.zeros(8000), 8000, np.zeros(48000), 48000, 16000)
        assert len(r) == len(d) == 16000

    def test_si_sdr_known_noise(self) -> None:
        rng = np.random.default_rng(0)
        ref = rng.normal(size=4000)
        ref -= ref.mean()
        noise = rng.normal(size=4000)
        noise -= noise.mean()
        noise -= noise @ ref / (ref @ ref) * ref  # orthogonal to the reference
        noise *= np.linalg.norm(ref) / np.linalg.norm(noise) / 10  # 20 dB below
        assert Q.si_sdr(ref, 8000, ref + noise, 8000) == pytest.approx(20.0, abs=1e-6)
        assert Q.si_sdr(ref, 8000, 3 * ref, 8000) > 200  # scale-invariant (float rounding only)

    def test_pesq_stoi_mel_order_with_noise(self, speech: tuple[np.ndarray, int]) -> None:
        x, sr = speech
        rng = np.random.default_rng(0)
        light, heavy = x + rng.normal(0, 0.003, x.shape), x + rng.normal(0, 0.05, x.shape)
        assert Q.pesq_wb(x, sr, x, sr) > 4.5
        assert Q.pesq_wb(x, sr, light, sr) > Q.pesq_wb(x, sr, heavy, sr)
        assert Q.stoi(x, sr, x, sr) == pytest.approx(1.0, abs=1e-6)
        assert Q.stoi(x, sr, light, sr) > Q.stoi(x, sr, heavy, sr)
        assert Q.mel_distance(x, sr, x, sr) == 0.0
        assert 0 < Q.mel_distance(x, sr, light, sr) < Q.mel_distance(x, sr, heavy, sr)

    def test_perceptual_metrics_are_nan_on_silence(self, speech: tuple[np.ndarray, int]) -> None:
        x, sr = speech
        quiet = x * 1e-4  # about -80 dBFS, like a broken recording
        for metric in (Q.pesq_wb, Q.stoi, Q.visqol_speech):
            assert math.isnan(metric(quiet, sr, quiet, sr))
        assert math.isnan(Q.pesq_wb(np.zeros(16000), 16000, np.zeros(16000), 16000))
        assert Q.si_sdr(quiet, sr, quiet, sr) > 100  # still defined

    def test_stoi_is_nan_when_too_little_is_speech(self, speech: tuple[np.ndarray, int]) -> None:
        """pystoi scores fewer than 30 speech frames (0.38 s) as 1e-5; that is no score, not a bad one."""
        x, sr = speech
        burst = np.zeros(sr)
        burst[: int(0.25 * sr)] = x[: int(0.25 * sr)] / max(1e-9, float(np.abs(x[: int(0.25 * sr)]).max()))
        assert math.isnan(Q.stoi(burst, sr, burst, sr))
        assert Q.stoi(x, sr, x, sr) == pytest.approx(1.0, abs=1e-6)  # long enough: scored as before

    def test_metrics_accept_another_decoded_rate(self, speech: tuple[np.ndarray, int]) -> None:
        import soxr

        x, sr = speech
        up = soxr.resample(x, sr, 48000)
        assert Q.pesq_wb(x, sr, up, 48000) > 4.3
        assert Q.mel_distance(x, sr, up, 48000) < 0.1

    def test_visqol_speech(self, speech: tuple[np.ndarray, int]) -> None:
        x, sr = speech
        heavy = x + np.random.default_rng(0).normal(0, 0.05, x.shape)
        assert Q.visqol_speech(x, sr, x, sr) > 4.5
        assert Q.visqol_speech(x, sr, heavy, sr) < 3.0
        assert math.isnan(Q.visqol_speech(x[: sr // 4], sr, x[: sr // 4], sr))  # shorter than a patch


class TestBDRate:
    def test_constant_ratio(self) -> None:
        q = [30, 33, 36, 39]
        rate = [0.1, 0.2, 0.45, 1.0]
        assert Q.bd_rate(rate, q, [0.8 * r for r in rate], q) == pytest.approx(-20.0)

    def test_hand_computed_two_point_case(self) -> None:
        # Two points each: PCHIP is linear. log R_A runs 0 -> 1 and log R_B runs -1 -> 1 over
        # q = 30..40, so the mean log difference is -0.5 and BD-rate = exp(-0.5) - 1.
        bd = Q.bd_rate([1, math.e], [30, 40], [math.exp(-1), math.e], [30, 40])
        assert bd == pytest.approx((math.exp(-0.5) - 1) * 100)

    def test_only_the_overlap_counts(self) -> None:
        # A is log-linear in q except an outlier at q=26, outside B's range (its influence on
        # PCHIP ends at q=30); B (two points, so linear) is half of A on 32..36.
        qa, qb = [26, 28, 30, 32, 34, 36], [32, 36]
        ra = [50.0] + [math.exp((q - 30) / 4) for q in qa[1:]]
        rb = [0.5 * math.exp((q - 30) / 4) for q in qb]
        assert Q.bd_rate(ra, qa, rb, qb) == pytest.approx(-50.0)

    def test_no_overlap_or_too_few_points(self) -> None:
        assert math.isnan(Q.bd_rate([1, 2], [30, 31], [1, 2], [35, 36]))
        assert math.isnan(Q.bd_rate([1], [30], [1, 2], [30, 31]))
        assert math.isnan(Q.bd_rate([1, 2], [30, math.nan], [1, 2], [30, 31]))
