"""Media I/O policies: image modes, EXIF orientation, audio formats and resampling, .ply scenes."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image as PILImage

from nmc.codec import media as M
from nmc.codec.errors import MediaError


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def write_png_header(path: Path, width: int, height: int) -> None:
    """A PNG that claims a size and holds (almost) no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 100)) + _chunk(b"IEND", b""))


def write_png16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit PNG (Pillow cannot write colour ones) using every scanline filter in turn."""
    h, w, c = pixels.shape
    x = pixels.astype(">u2").view(np.uint8).reshape(h, w, 2 * c).astype(np.int32)
    a = np.pad(x, ((0, 0), (1, 0), (0, 0)))[:, :-1]  # the pixel to the left, 0 at the border
    b = np.pad(x, ((1, 0), (0, 0), (0, 0)))[:-1]  # the pixel above
    cc = np.pad(x, ((1, 0), (1, 0), (0, 0)))[:-1, :-1]
    pa, pb, pc = np.abs(b - cc), np.abs(a - cc), np.abs(a + b - 2 * cc)
    paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, cc))
    predictions = [np.zeros_like(x), a, b, (a + b) >> 1, paeth]
    rows = b"".join(bytes([y % 5]) + ((x[y] - predictions[y % 5][y]) & 0xFF).astype(np.uint8).tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, {2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))


class TestImages:
    @pytest.mark.parametrize(
        ("mode", "channels", "dtype"),
        [("RGB", 3, np.uint8), ("RGBA", 4, np.uint8), ("L", 1, np.uint8), ("LA", 2, np.uint8), ("CMYK", 3, np.uint8), ("1", 1, np.uint8), ("I;16", 1, np.uint16)],
    )
    def test_modes(self, tmp_path: Path, mode: str, channels: int, dtype: type) -> None:
        path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
        PILImage.new(mode, (5, 3)).save(path)
        im = M.read_image(path)
        assert im.pixels.shape == (3, 5, channels) and im.pixels.dtype == dtype

    def test_palette_with_transparency_becomes_rgba(self, tmp_path: Path) -> None:
        im = PILImage.new("P", (4, 4))
        im.info["transparency"] = 0
        im.save(tmp_path / "p.png", transparency=0)
        assert M.read_image(tmp_path / "p.png").channels == 4

    def test_exif_orientation_is_applied(self, tmp_path: Path) -> None:
        im = PILImage.new("RGB", (6, 2))
        exif = im.getexif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise on display
        im.save(tmp_path / "o.jpg", exif=exif)
        assert M.read_image(tmp_path / "o.jpg").pixels.shape[:2] == (6, 2)

    def test_to_rgb8(self) -> None:
        gray16 = M.Image(np.full((2, 2, 1), 65535, np.uint16))
        rgb, alpha = M.to_rgb8(gray16)
        assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8 and rgb.max() == 255 and alpha is None
        rgba = M.Image(np.dstack([np.zeros((2, 2, 3), np.uint8), np.array([[255, 0], [255, 255]], np.uint8)]))
        assert M.to_rgb8(rgba)[1] is not None

    def test_16_bit_gray_round_trip(self, tmp_path: Path) -> None:
        im = M.Image(np.arange(12, dtype=np.uint16).reshape(3, 4, 1) * 5000)
        M.write_image(tmp_path / "g.png", im)
        assert np.array_equal(M.read_image(tmp_path / "g.png").pixels, im.pixels)

    @pytest.mark.parametrize("channels", [2, 3, 4])
    def test_16_bit_colour_png_keeps_its_low_bytes(self, tmp_path: Path, channels: int) -> None:
        rng = np.random.default_rng(channels)
        pixels = rng.integers(0, 65536, (9, 13, channels)).astype(np.uint16)
        write_png16(tmp_path / "c.png", pixels)
        assert np.array_equal(M.read_image(tmp_path / "c.png").pixels, pixels)

    def test_damaged_16_bit_colour_png(self, tmp_path: Path) -> None:
        write_png16(tmp_path / "c.png", np.zeros((9, 13, 3), np.uint16))
        data = (tmp_path / "c.png").read_bytes()
        for cut in (40, len(data) // 2, len(data) - 13):
            (tmp_path / "bad.png").write_bytes(data[:cut])
            with pytest.raises(MediaError):
                M.read_image(tmp_path / "bad.png")

    def test_over_the_pixel_limit_is_one_clear_error(self, tmp_path: Path) -> None:
        write_png_header(tmp_path / "bomb.png", 20000, 10000)
        with pytest.raises(MediaError, match="pixels"):
            M.read_image(tmp_path / "bomb.png")

    def test_below_the_limit_no_pillow_warning(self, tmp_path: Path) -> None:
        write_png_header(tmp_path / "big.png", 10000, 10000)  # 100 MP: Pillow warns above 89 MP
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(MediaError):  # the pixel data is missing
                M.read_image(tmp_path / "big.png")
        assert not [w for w in caught if "DecompressionBomb" in w.category.__name__]

    @pytest.mark.parametrize("suffix", [".gif", ".webp", ".png"])
    def test_animation_is_refused(self, tmp_path: Path, suffix: str) -> None:
        frames = [PILImage.new("RGB", (8, 8), c) for c in ("red", "blue")]
        frames[0].save(tmp_path / ("a" + suffix), save_all=True, append_images=frames[1:])
        with pytest.raises(MediaError, match="2 frames"):
            M.read_image(tmp_path / ("a" + suffix))

    @pytest.mark.parametrize("suffix", [".xyz", ""])
    def test_unknown_output_suffix(self, tmp_path: Path, suffix: str) -> None:
        with pytest.raises(MediaError, match="cannot write image"):
            M.write_image(tmp_path / ("out" + suffix), M.Image(np.zeros((2, 2, 3), np.uint8)))

    @pytest.mark.parametrize("content", [b"", b"not an image at all"])
    def test_bad_files(self, tmp_path: Path, content: bytes) -> None:
        (tmp_path / "bad.png").write_bytes(content)
        with pytest.raises(MediaError):
            M.read_image(tmp_path / "bad.png")


class TestAudio:
    @pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
    def test_formats_round_trip(self, tmp_path: Path, suffix: str) -> None:
        x = (0.5 * np.sin(np.arange(16000) / 7)).astype(np.float32)[:, None]
        M.write_audio(tmp_path / f"a{suffix}", M.Audio.from_array(np.hstack([x, -x]), 16000))
        a = M.read_audio(tmp_path / f"a{suffix}")
        assert (a.sample_rate, a.channels) == (16000, 2)
        y = a.to_array()
        if suffix != ".ogg":  # lossless formats: 16-bit precision
            assert np.abs(y - np.hstack([x, -x])).max() < 1e-4

    def test_blocks_are_bounded(self, tmp_path: Path) -> None:
        sf.write(tmp_path / "long.wav", np.zeros(M.BLOCK_FRAMES * 3 + 5, np.float32), 8000)
        sizes = [len(b) for b in M.read_audio(tmp_path / "long.wav").blocks()]
        assert max(sizes) <= M.BLOCK_FRAMES and sum(sizes) == M.BLOCK_FRAMES * 3 + 5

    def test_resample_stream(self) -> None:
        x = np.sin(2 * np.pi * 440 * np.arange(48000) / 48000).astype(np.float32)[:, None]
        blocks = (x[i : i + 5000] for i in range(0, 48000, 5000))
        y = np.concatenate(list(M.resample_blocks(blocks, 48000, 16000, 1)))
        assert abs(len(y) - 16000) <= 2
        ref = np.sin(2 * np.pi * 440 * np.arange(len(y)) / 16000)
        assert np.abs(y[100:-100, 0] - ref[100:-100]).max() < 1e-2

    def test_unreadable(self, tmp_path: Path) -> None:
        (tmp_path / "x.wav").write_bytes(b"RIFF....garbage")
        with pytest.raises(MediaError):
            M.read_audio(tmp_path / "x.wav")


class TestGaussians:
    def test_ply_sequence_round_trip(self, tmp_path: Path) -> None:
        rng = np.random.default_rng(0)
        names = ["x", "y", "z", "f_dc_0", "opacity", "scale_0", "rot_0"]
        frames = [{n: rng.normal(size=10).astype(np.float32) for n in names} for _ in range(2)]
        M.write_gaussians(tmp_path / "seq", M.Gaussians(frames, ["000.ply", "001.ply"]))
        assert M.media_kind(tmp_path / "seq") == "gaussians"
        back = M.read_gaussians(tmp_path / "seq")
        assert back.names == ["000.ply", "001.ply"]
        assert all(np.array_equal(a[n], b[n]) for a, b in zip(frames, back.frames) for n in names)

    def test_not_gaussians(self, tmp_path: Path) -> None:
        from plyfile import PlyData, PlyElement

        PlyData([PlyElement.describe(np.zeros(3, dtype=[("a", "f4")]), "vertex")]).write(str(tmp_path / "a.ply"))
        with pytest.raises(MediaError, match="lacks"):
            M.read_gaussians(tmp_path / "a.ply")


def test_media_kind() -> None:
    assert M.media_kind("a.JPG") == "image" and M.media_kind("b.flac") == "audio" and M.media_kind("c.ply") == "gaussians"
    with pytest.raises(MediaError, match="unsupported"):
        M.media_kind("notes.txt")
