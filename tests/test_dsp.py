"""codec.dsp: streaming DC removal."""

import numpy as np
import pytest

from nmc.codec.dsp import DCBlocker

FS = 16000


def test_removes_dc_and_keeps_speech_band() -> None:
    t = np.arange(3 * FS) / FS
    tone = 0.5 * np.sin(2 * np.pi * 200 * t)
    y = DCBlocker(1, FS // 2)((tone + 0.01)[:, None].astype(np.float32))[:, 0]
    assert abs(y[FS:].mean()) < 1e-5  # -100 dBFS once the window is full
    assert np.abs(y[FS:] - tone[FS:]).max() < 0.01  # the 200 Hz tone itself is left alone


def test_output_independent_of_where_the_stream_is_cut() -> None:
    x = np.random.default_rng(0).normal(0.02, 0.3, (20000, 2)).astype(np.float32)
    whole = DCBlocker(2, 4000)(x)
    blocker = DCBlocker(2, 4000)
    parts = np.concatenate([blocker(x[a:b]) for a, b in ((0, 7), (7, 7), (7, 4100), (4100, 20000))])
    np.testing.assert_allclose(parts, whole, rtol=0, atol=1e-7)


def test_bad_length() -> None:
    with pytest.raises(ValueError, match="0"):
        DCBlocker(1, 0)
