"""A round trip through every anchor: sizes and shapes survive, rate grows with the setting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_image
from nmc.codec import anchors as A
from nmc.codec import media as M
from nmc.codec import metrics as Q
from nmc.codec.media import Audio, Image

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
IMAGE_ANCHORS = ["jpeg", "webp", "avif", "jpeg2000", "jxl", "hevc", "vvc"]
AUDIO_ANCHORS = ["opus", "codec2"]
SCENE_ANCHORS = ["ply", "spz", "quant"]  # Gaussian sequences: tests/test_scene_eval.py


def speechlike(seconds: float = 1.0, rate: int = 16000) -> Audio:
    """A 150 Hz harmonic voice with a syllable-rate envelope: something vocoders can code."""
    t = np.arange(int(seconds * rate)) / rate
    voice = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 12))
    return Audio.from_array(0.2 * voice * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)), rate)


class TestRegistry:
    def test_all_anchors_known(self) -> None:
        assert set(A.ANCHORS) == set(IMAGE_ANCHORS + AUDIO_ANCHORS + SCENE_ANCHORS)
        for name in A.ANCHORS:
            anchor = A.get_anchor(name)
            assert anchor.settings() and anchor.version() != "unknown"

    def test_unknown_anchor_and_setting(self) -> None:
        with pytest.raises(LookupError, match="unknown anchor"):
            A.get_anchor("mp3")
        with pytest.raises(ValueError, match="'x5'"):
            A.get_anchor("jpeg").encode(synthetic_image(), "x5")


class TestImageAnchors:
    @pytest.mark.parametrize("name", IMAGE_ANCHORS)
    @pytest.mark.parametrize("size", [(64, 96), (47, 63)])
    def test_round_trip(self, name: str, size: tuple[int, int]) -> None:
        anchor = A.get_anchor(name)
        image = synthetic_image(*size)
        low, high = anchor.settings()[1], anchor.settings()[-1]
        small, large = anchor.encode(image, low), anchor.encode(image, high)
        assert len(small) < len(large)
        decoded = anchor.decode(large)
        assert isinstance(decoded, Image) and decoded.pixels.shape == (*size, 3)
        assert Q.psnr(image.pixels, decoded.pixels) > 30


class TestLowRates:
    """The settings added for extreme-rate codecs reach below the older lowest ones, and still decode."""

    @pytest.mark.parametrize(("name", "lowest", "old_lowest"), [("avif", "q0-s0-dq0", "q0"), ("vvc", "qp63", "qp57")])
    def test_lower_than_before(self, name: str, lowest: str, old_lowest: str) -> None:
        from PIL import Image as PILImage

        px = np.ascontiguousarray(np.asarray(PILImage.open(SAMPLES / "photo_aqua.png").convert("RGB"))[:256, :384])
        anchor = A.get_anchor(name)
        assert anchor.settings()[0] == lowest and old_lowest in anchor.settings()
        small, old = anchor.encode(Image(px), lowest), anchor.encode(Image(px), old_lowest)
        assert len(small) < len(old)  # VVC's parameter sets take ~200 of these bytes
        assert Q.psnr(px, anchor.decode(small).pixels) > 20

    def test_bad_low_setting(self) -> None:
        with pytest.raises(ValueError, match="'q3-s0'"):
            A.get_anchor("avif").encode(synthetic_image(), "q3-s0")


class TestAudioAnchors:
    @pytest.mark.parametrize("rate", [16000, 44100])
    def test_opus(self, rate: int) -> None:
        opus = A.get_anchor("opus")
        audio = speechlike(1.0, rate)
        rates = [M.real_rate(len(opus.encode(audio, s)), M.metadata(audio))[0] for s in opus.settings()]
        assert rates == sorted(rates) and rates[0] < 6 and rates[-1] < 20
        decoded = opus.decode(opus.encode(audio, "16k"))
        assert decoded.sample_rate == (rate if rate == 16000 else 48000)
        assert decoded.frames * rate == pytest.approx(audio.frames * decoded.sample_rate, rel=1e-3)
        assert Q.si_sdr(audio.to_array(), rate, decoded.to_array(), decoded.sample_rate) > 5  # aligned

    def test_codec2(self) -> None:
        codec2 = A.get_anchor("codec2")
        audio = speechlike(2.0)
        for setting in ("1600", "2400", "3200"):
            data = codec2.encode(audio, setting)
            assert data[:3] == b"\xc0\xde\xc2"
            assert M.real_rate(len(data), M.metadata(audio))[0] == pytest.approx(int(setting) / 1000, rel=0.05)
            decoded = codec2.decode(data)
            assert decoded.sample_rate == 8000 and abs(decoded.frames / 8000 - 2.0) < 0.05
            assert np.abs(decoded.to_array()).max() > 0.05

    def test_codec2_decodes_the_same_samples_every_time(self) -> None:
        """libcodec2's random phases are process-wide state: decodes in one process must not see each other."""
        codec2 = A.get_anchor("codec2")
        data = codec2.encode(speechlike(2.0), "1200")
        first = codec2.decode(data).to_array()
        codec2.decode(codec2.encode(speechlike(1.0), "3200"))  # another file in between
        assert np.array_equal(codec2.decode(data).to_array(), first)

    def test_codec2_rejects_foreign_files(self) -> None:
        with pytest.raises(ValueError, match="not a .c2 file"):
            A.get_anchor("codec2").decode(b"RIFF....")
