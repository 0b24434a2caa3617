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


def _frames(n: int = 3, gaussians: int = 20, degree: int = 1, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(gaussians, M.GaussianLayout(degree).channels)).astype(np.float32) for _ in range(n)]


def _write_ply(path: Path, columns: dict[str, np.ndarray], dtype: str = "f4") -> None:
    from plyfile import PlyData, PlyElement

    rec = np.empty(len(next(iter(columns.values()))), dtype=[(k, dtype) for k in columns])
    for k, v in columns.items():
        rec[k] = v
    PlyData([PlyElement.describe(rec, "vertex")]).write(str(path))


class TestGaussians:
    LAYOUT = M.GaussianLayout(1)

    def test_ply_sequence_round_trip(self, tmp_path: Path) -> None:
        frames = _frames()
        M.write_gaussians(tmp_path / "seq", M.Gaussians.from_matrices(self.LAYOUT, frames, ["000.ply", "001.ply", "002.ply"]))
        assert M.media_kind(tmp_path / "seq") == "gaussians"
        back = M.read_gaussians(tmp_path / "seq")
        assert back.names == ["000.ply", "001.ply", "002.ply"] and back.counts == [20] * 3 and back.layout == self.LAYOUT
        assert all(np.array_equal(a, b) for a, b in zip(frames, back.frames(), strict=True))
        assert all(np.array_equal(a, b) for a, b in zip(frames, back.frames()))  # streams again

    def test_frames_stream_one_at_a_time(self, tmp_path: Path) -> None:
        """Reading opens each frame when it is reached: a frame damaged after opening fails there, not before."""
        M.write_gaussians(tmp_path / "seq", M.Gaussians.from_matrices(self.LAYOUT, _frames(3)))
        seq = M.read_gaussians(tmp_path / "seq")
        frames = seq.frames()
        first = next(frames)
        bad = self.LAYOUT.to_frame(_frames(1)[0])
        bad["x"][4] = np.nan
        _write_ply(tmp_path / "seq" / "frame_0002.ply", bad)
        assert np.array_equal(next(frames), _frames(3)[1]) and first.shape == (20, self.LAYOUT.channels)
        with pytest.raises(MediaError, match=r"frame_0002.ply: NaN or infinite values in \['x'\]"):
            next(frames)

    def test_writer_streams(self, tmp_path: Path) -> None:
        """Each frame is on disk before the next one is asked for."""
        def frames():  # noqa: ANN202
            for t, m in enumerate(_frames(3)):
                assert len(list((tmp_path / "seq").glob("*.ply"))) == t
                yield m

        M.write_gaussians(tmp_path / "seq", M.Gaussians(self.LAYOUT, ["a.ply", "b.ply", "c.ply"], [20] * 3, frames))
        assert sorted(p.name for p in (tmp_path / "seq").iterdir()) == ["a.ply", "b.ply", "c.ply"]

    def test_single_frame_file(self, tmp_path: Path) -> None:
        M.write_gaussians(tmp_path / "one.ply", M.Gaussians.from_matrices(self.LAYOUT, _frames(1)))
        back = M.read_gaussians(tmp_path / "one.ply")
        assert back.names == ["one.ply"] and np.array_equal(next(back.frames()), _frames(1)[0])
        with pytest.raises(MediaError, match="3 frames is written to a directory"):
            M.write_gaussians(tmp_path / "three.ply", M.Gaussians.from_matrices(self.LAYOUT, _frames(3)))

    @pytest.mark.parametrize("names", [["../evil.ply"], ["a.ply", "a.ply"], [".hidden.ply"], ["x.txt"]])
    def test_writer_refuses_unsafe_names(self, tmp_path: Path, names: list[str]) -> None:
        with pytest.raises(MediaError, match="plain .ply file names"):
            M.write_gaussians(tmp_path / "seq", M.Gaussians.from_matrices(self.LAYOUT, _frames(len(names)), names))
        assert not (tmp_path / "evil.ply").exists()

    def test_hidden_and_other_files_are_not_frames(self, tmp_path: Path) -> None:
        M.write_gaussians(tmp_path / "seq", M.Gaussians.from_matrices(self.LAYOUT, _frames(2)))
        (tmp_path / "seq" / "._frame_0000.ply").write_bytes(b"resource fork")
        (tmp_path / "seq" / "static.npy").write_bytes(b"x")
        assert M.read_gaussians(tmp_path / "seq").names == ["frame_0000.ply", "frame_0001.ply"]

    def test_empty_directory(self, tmp_path: Path) -> None:
        (tmp_path / "empty").mkdir()
        for call in (M.media_kind, M.read_gaussians):
            with pytest.raises(MediaError, match="holds no .ply frames"):
                call(tmp_path / "empty")

    def test_not_gaussians(self, tmp_path: Path) -> None:
        _write_ply(tmp_path / "a.ply", {"a": np.zeros(3)})
        with pytest.raises(MediaError, match="not a 3DGS frame"):
            M.read_gaussians(tmp_path / "a.ply")
        (tmp_path / "b.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 5\nproperty float x\nend_header\n\0")
        with pytest.raises(MediaError, match="not a Gaussian-splatting .ply"):
            M.read_gaussians(tmp_path / "b.ply")

    def test_attribute_sets_differ_between_frames(self, tmp_path: Path) -> None:
        """Refused from the headers, before any frame is read."""
        M.write_gaussians(tmp_path / "seq", M.Gaussians.from_matrices(self.LAYOUT, _frames(2)))
        M.write_gaussians(tmp_path / "seq" / "frame_0002.ply", M.Gaussians.from_matrices(M.GaussianLayout(0), [np.zeros((20, 14), np.float32)]))
        with pytest.raises(MediaError, match=r"frame_0002.ply: attributes differ from frame_0000.ply \(missing \['f_rest_0'"):
            M.read_gaussians(tmp_path / "seq")

    def test_other_gaussian_counts_are_read(self, tmp_path: Path) -> None:
        """Counts may change between frames (per-frame anchors code them); codecs that cannot, refuse."""
        frames = [_frames(1, 20)[0], _frames(1, 7)[0]]
        M.write_gaussians(tmp_path / "seq", M.Gaussians.from_matrices(self.LAYOUT, frames))
        assert M.read_gaussians(tmp_path / "seq").counts == [20, 7]


class TestGaussianLayout:
    FRAME = _frames(1, degree=3)[0]

    def test_round_trip(self) -> None:
        layout = M.GaussianLayout(3)
        frame = layout.to_frame(self.FRAME)
        assert list(frame)[:6] == ["x", "y", "z", "nx", "ny", "nz"] and len(frame) == 62
        assert np.array_equal(layout.to_matrix(frame), self.FRAME)

    @pytest.mark.parametrize("change, message", [
        (lambda f: f.pop("rot_3"), "missing"),
        (lambda f: f.update(extra=f["x"]), "unexpected"),
        (lambda f: f.pop("f_rest_44"), "SH degree"),
        (lambda f: f["opacity"].__setitem__(0, np.nan), "NaN"),
        (lambda f: f.update(nx=np.ones_like(f["x"])), "normals"),
    ])  # fmt: skip
    def test_refuses(self, change, message: str) -> None:  # type: ignore[no-untyped-def]
        frame = {k: v.copy() for k, v in M.GaussianLayout(3).to_frame(self.FRAME).items()}
        change(frame)
        with pytest.raises(MediaError, match=message):
            M.GaussianLayout(3).to_matrix(frame)

    def test_other_degree_is_another_layout(self) -> None:
        low = M.GaussianLayout(1).to_frame(np.zeros((3, M.GaussianLayout(1).channels), np.float32))
        with pytest.raises(MediaError, match="differ"):
            M.GaussianLayout(3).to_matrix(low)

    def test_uchar_colours_are_not_3dgs(self, tmp_path: Path) -> None:
        frame = M.GaussianLayout(0).to_frame(np.zeros((3, 14), np.float32))
        _write_ply(tmp_path / "c.ply", {**frame, "red": np.zeros(3)})
        with pytest.raises(MediaError, match=r"unexpected \['red'\]"):
            M.read_gaussians(tmp_path / "c.ply")


def test_media_kind() -> None:
    assert M.media_kind("a.JPG") == "image" and M.media_kind("b.flac") == "audio" and M.media_kind("c.ply") == "gaussians"
    with pytest.raises(MediaError, match="unsupported"):
        M.media_kind("notes.txt")
