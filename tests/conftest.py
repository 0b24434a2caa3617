"""Shared fixtures; registers the test-only toy codecs (tests/toycodec.py)."""

from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image
from hypothesis import strategies as st

# The suite runs the networks with torch (goldens, pixels); tests/test_onnx_backend.py turns the ONNX Runtime path on
# where it tests it. No test writes to the user's cache.
os.environ["NMC_BACKEND"] = "torch"
os.environ["NMC_CACHE_DIR"] = tempfile.mkdtemp(prefix="nmc-test-cache-")
sys.path.insert(0, str(Path(__file__).parent))
import toycodec  # noqa: E402,F401  (registers toy-image and toy-audio)
from damage import coded_streams, with_header, with_payloads  # noqa: E402,F401  (re-exported for the tests)
from nmc.codec import media as M  # noqa: E402
from nmc.codec.api import header_dictionary  # noqa: E402
from nmc.codec.container import Header, read_header, read_packets  # noqa: E402


def synthetic_image(h: int = 40, w: int = 56, seed: int = 0) -> M.Image:
    """Smooth gradients plus a little noise: compressible like a photo, reproducible."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (h + w)], axis=-1)
    return M.Image(np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8))


def open_stream(data: bytes) -> tuple[Header, list[bytes | None]]:
    """The header and the CRC-checked packets of a whole .nmc file."""
    fo = io.BytesIO(data)
    header = read_header(fo, header_dictionary)
    return header, list(read_packets(fo, header))


# Values a crafted header may hold: every JSON type, edge cases, small and huge numbers.
CRAFTED_VALUES = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 1, 2, 3, 4, 8, 16, 2**31, 2**64, 10**30, 0.5, 16.0, 1e308, float("nan"), "", "16", [], [4, 2], {}]),
    st.integers(-3, 70),
    st.text(max_size=4),
)


def set_field(fields: dict[str, Any], key: str, value: Any) -> None:
    """`key` is a top-level field ("packets") or "section.name" ("media.width")."""
    section, _, name = key.partition(".")
    if name:
        fields[section][name] = value
    else:
        fields[section] = value


def refused_or_decoded(data: bytes, suffix: str) -> None:
    """What `nmc decompress` and `nmc info` do with a file: succeed, or raise a user error and
    leave no output behind (never another exception)."""
    from nmc.codec.errors import NmcError
    from nmc.codec.files import decompress_path
    from nmc.codec.inspect import describe

    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "x.nmc", Path(tmp) / ("out" + suffix)
        src.write_bytes(data)
        try:
            decompress_path(src, out)
        except NmcError:
            assert sorted(p.name for p in Path(tmp).iterdir()) == ["x.nmc"]
        try:
            describe(src)
        except NmcError:
            pass


@st.composite
def damaged(draw: st.DrawFn, payload: bytes) -> bytes:
    """A payload with flipped bytes, cut short, extended, replaced, or with two words of a coded
    stream set to 0xFFFFFFFF (which puts a range decoder in an impossible state); the caller
    recomputes the CRC."""
    how = draw(st.sampled_from(["flip", "cut", "extend", "replace", "words", "words"]))
    streams = coded_streams(payload)
    if how == "words" and streams:
        start, n = draw(st.sampled_from(streams))
        at = start + 4 * draw(st.one_of(st.just(0), st.integers(0, n // 4 - 2)))
        return payload[:at] + b"\xff" * 8 + payload[at + 8 :]
    if how == "cut" or not payload:
        return payload[: draw(st.integers(0, max(0, len(payload) - 1)))]
    if how == "extend":
        return payload + draw(st.binary(min_size=1, max_size=16))
    if how == "replace":
        return draw(st.binary(min_size=0, max_size=2 * len(payload)))
    out = bytearray(payload)
    for pos, x in draw(st.lists(st.tuples(st.integers(0, len(out) - 1), st.integers(1, 255)), min_size=1, max_size=4)):
        out[pos] ^= x
    return bytes(out)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Networks on one thread: fast and steady on a loaded 2-core box."""
    from nmc.codec.threads import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture
def image() -> M.Image:
    return synthetic_image()


@pytest.fixture
def image_file(tmp_path: Path, image: M.Image) -> Path:
    path = tmp_path / "photo.png"
    M.write_image(path, image)
    return path


@pytest.fixture
def audio_file(tmp_path: Path) -> Path:
    import soundfile as sf

    path = tmp_path / "tone.wav"
    t = np.arange(12000) / 8000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 8000)
    return path


SAMPLES = Path(__file__).parent.parent / "samples"


def photo(h: int = 96, w: int = 128, y: int = 200, x: int = 300) -> np.ndarray:
    """A crop of the sample photo `(h, w, 3)` uint8 (tiled when larger than the photo)."""
    px = np.asarray(Image.open(SAMPLES / "photo_aqua.png").convert("RGB"))
    reps = (-(-(y + h) // px.shape[0]), -(-(x + w) // px.shape[1]), 1)
    return np.ascontiguousarray(np.tile(px, reps)[y : y + h, x : x + w])
