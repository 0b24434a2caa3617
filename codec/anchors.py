"""Classical codecs that `nmc eval` measures the learned codecs against.

An anchor looks like a codec to the evaluator: `settings()` is its quality-knob sweep
(lowest rate first), `encode(media, setting)` returns the anchor's whole file and
`decode(data)` gives media back, so its rate is the size of its own file.

Images are coded as 8-bit RGB (alpha dropped). Gaussian sequences are coded frame by frame
(`FrameAnchor`): the raw `.ply`, SPZ, and a quantize-and-lzma baseline. Audio anchors code the mono downmix, which
is also what every audio metric compares; they decode at their own coding rate (8 kHz for
Codec2) and the metrics resample.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
from abc import ABC, abstractmethod
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable, ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

from .errors import CodecNotFoundError, MediaError
from .media import Audio, GaussianLayout, Gaussians, Image, Matrix, to_rgb8, write_ply


class Anchor(ABC):
    """A classical codec with a sweep of quality settings."""

    name: ClassVar[str]  # set by @register_anchor
    media: ClassVar[str]  # "image", "audio" or "gaussians"
    description: ClassVar[str] = ""

    @abstractmethod
    def settings(self) -> list[str]:
        """Names of the sweep's points, lowest rate first."""

    @abstractmethod
    def encode(self, media: Any, setting: str) -> bytes:
        """The anchor's complete file for `media` at `setting`."""

    @abstractmethod
    def decode(self, data: bytes) -> Any:
        """Media from a file written by `encode`."""

    def version(self) -> str:
        """Library version; part of the eval cache key, so an upgrade recomputes its points."""
        return "unknown"

    def _knob(self, setting: str, prefix: str = "", suffix: str = "") -> float:
        """The number inside a setting name like 'q30', 'qp37' or '0.05bpp'."""
        if setting.startswith(prefix) and setting.endswith(suffix):
            try:
                return float(setting[len(prefix) : len(setting) - len(suffix)])
            except ValueError:
                pass
        raise ValueError(f"{self.name}: bad setting {setting!r} (examples: {', '.join(self.settings()[:3])})")


ANCHORS: dict[str, type[Anchor]] = {}
A = TypeVar("A", bound=type[Anchor])


def register_anchor(name: str) -> Callable[[A], A]:
    def wrap(cls: A) -> A:
        cls.name = name
        ANCHORS[name] = cls
        return cls

    return wrap


def get_anchor(name: str) -> Anchor:
    if name not in ANCHORS:
        raise CodecNotFoundError(f"unknown anchor {name!r} (known: {', '.join(ANCHORS)})")
    return ANCHORS[name]()


# ---------------------------------------------------------------- images through Pillow


class PillowAnchor(Anchor):
    """An image format Pillow writes; the sweep is over `values` of one save() argument."""

    media = "image"
    format: ClassVar[str]
    values: ClassVar[list[float]]
    prefix: ClassVar[str] = "q"
    suffix: ClassVar[str] = ""
    plugin: ClassVar[str] = "pillow"  # distribution whose version identifies the encoder

    def settings(self) -> list[str]:
        return [f"{self.prefix}{v:g}{self.suffix}" for v in self.values]

    def save_args(self, value: float) -> dict[str, Any]:
        return {"quality": int(value)}

    def load_plugin(self) -> None:
        """Import whatever registers the format with Pillow (nothing for built-in formats)."""

    def version(self) -> str:
        return f"{self.plugin} {version(self.plugin)}"

    def setting_args(self, setting: str) -> dict[str, Any]:
        """The save() arguments of a setting name."""
        return self.save_args(self._knob(setting, self.prefix, self.suffix))

    def encode(self, media: Image, setting: str) -> bytes:
        from PIL import Image as PILImage

        self.load_plugin()
        rgb, _ = to_rgb8(media)
        buf = io.BytesIO()
        PILImage.fromarray(rgb).save(buf, self.format, **self.setting_args(setting))
        return buf.getvalue()

    def decode(self, data: bytes) -> Image:
        from PIL import Image as PILImage

        self.load_plugin()
        with PILImage.open(io.BytesIO(data)) as im:
            return Image(np.asarray(im.convert("RGB")))


@register_anchor("jpeg")
class JPEG(PillowAnchor):
    description = "JPEG (libjpeg-turbo via Pillow), 4:2:0, optimized Huffman tables"
    format = "JPEG"
    values = [1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95]

    def save_args(self, value: float) -> dict[str, Any]:
        return {"quality": int(value), "optimize": True}


@register_anchor("webp")
class WebP(PillowAnchor):
    description = "WebP lossy (libwebp via Pillow), method 6"
    format = "WEBP"
    values = [0, 5, 10, 20, 35, 50, 65, 80, 90, 95, 100]

    def save_args(self, value: float) -> dict[str, Any]:
        return {"quality": int(value), "method": 6}


@register_anchor("avif")
class AVIF(PillowAnchor):
    """AVIF through Pillow. Quality 0 is AV1's coarsest quantizer, and with libavif's defaults (speed 6,
    perceptual delta-q) it stops at about 0.05 bpp on the dev photos; the `-s0-dq0` settings below it
    search at speed 0 without perceptual delta-q (`deltaq-mode=0`, like VVC's `-qpa 0`), about 0.02
    bpp at q0 on dev01 (0.037 at q0), the lowest rate this encoder reaches. 1-2 s per 768x512 photo."""

    description = "AVIF (libavif/aom via Pillow), 4:2:0, default speed; *-s0-dq0: speed 0, deltaq-mode 0 (lowest rates)"
    format = "AVIF"
    values = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
    low_values = [0, 5, 10]  # with speed 0 and deltaq-mode 0, below q0 in rate
    LOW = "-s0-dq0"

    def settings(self) -> list[str]:
        return [f"q{v:g}{self.LOW}" for v in self.low_values] + super().settings()

    def setting_args(self, setting: str) -> dict[str, Any]:
        if setting.endswith(self.LOW):
            return {"quality": int(self._knob(setting, "q", self.LOW)), "speed": 0, "advanced": {"deltaq-mode": "0"}}
        return super().setting_args(setting)


@register_anchor("jpeg2000")
class JPEG2000(PillowAnchor):
    description = "JPEG 2000 codestream (OpenJPEG via Pillow), 9/7 wavelet, rate given in bpp"
    format = "JPEG2000"
    values = [0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.4, 0.6, 1.0, 1.5, 2.0]
    prefix, suffix = "", "bpp"

    def save_args(self, value: float) -> dict[str, Any]:
        # OpenJPEG's rate is a compression ratio against the raw 24-bit RGB size.
        return {"quality_mode": "rates", "quality_layers": [24 / value], "irreversible": True, "no_jp2": True}


@register_anchor("jxl")
class JPEGXL(PillowAnchor):
    description = "JPEG XL (libjxl via pillow-jxl-plugin), effort 7"
    format = "JXL"
    values = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
    plugin = "pillow-jxl-plugin"

    def load_plugin(self) -> None:
        import pillow_jxl  # noqa: F401  (registers the JXL format with Pillow)


@register_anchor("hevc")
class HEVC(PillowAnchor):
    description = "HEVC intra in HEIF (libheif/x265 via pillow-heif), 4:2:0"
    format = "HEIF"
    values = [0, 5, 10, 20, 30, 40, 50, 60, 70]
    plugin = "pillow-heif"

    def load_plugin(self) -> None:
        from pillow_heif import register_heif_opener

        register_heif_opener()


# ---------------------------------------------------------------- VVC intra through ffmpeg


@register_anchor("vvc")
class VVC(Anchor):
    """VVC intra (libvvenc in the ffmpeg of imageio-ffmpeg), PSNR-tuned (`-qpa 0`).

    File: one byte of crop flags (bit 0: drop the last column, bit 1: the last row; 4:2:0
    needs even sizes) followed by the raw Annex-B bitstream. RGB <-> YCbCr is BT.709 full
    range, 10-bit 4:2:0 (the only input format libvvenc takes), done by ffmpeg's swscale.
    """

    media = "image"
    description = "VVC intra (libvvenc via ffmpeg), 10-bit 4:2:0, -qpa 0, preset medium"
    values = [63, 60, 57, 52, 47, 42, 37, 32, 27, 22, 17]  # 63: libvvenc's highest QP, ~0.007 bpp on dev01
    _TO_YUV = "scale=out_color_matrix=bt709:out_range=pc:flags=accurate_rnd+full_chroma_int"
    _TO_RGB = "scale=in_color_matrix=bt709:in_range=pc:flags=accurate_rnd+full_chroma_int"

    def settings(self) -> list[str]:
        return [f"qp{v}" for v in self.values]

    def version(self) -> str:
        import imageio_ffmpeg

        return f"ffmpeg {imageio_ffmpeg.get_ffmpeg_version()}"

    def encode(self, media: Image, setting: str) -> bytes:
        qp = int(self._knob(setting, "qp"))
        rgb, _ = to_rgb8(media)
        h, w = rgb.shape[:2]
        rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        args = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{rgb.shape[1]}x{rgb.shape[0]}", "-i", "pipe:0", "-vf", self._TO_YUV]
        args += ["-pix_fmt", "yuv420p10le", "-c:v", "libvvenc", "-qpa", "0", "-qp", str(qp), "-preset", "medium", "-f", "vvc", "pipe:1"]
        return bytes([(w % 2) | (h % 2) << 1]) + _ffmpeg(args, rgb.tobytes())

    def decode(self, data: bytes) -> Image:
        if not data:
            raise MediaError("vvc: empty file")
        args = ["-f", "vvc", "-i", "pipe:0", "-vf", self._TO_RGB, "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1"]
        raw = _ffmpeg(args, data[1:])
        width, height = _ffmpeg_probe_size(data[1:])
        rgb = np.frombuffer(raw, np.uint8).reshape(height, width, 3)
        return Image(np.ascontiguousarray(rgb[: height - (data[0] >> 1 & 1), : width - (data[0] & 1)]))


def _ffmpeg(args: list[str], stdin: bytes) -> bytes:
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", *args]
    done = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    if done.returncode != 0 or not done.stdout:
        raise MediaError(f"ffmpeg failed: {done.stderr.decode(errors='replace').strip()[-300:]}")
    return done.stdout


def _ffmpeg_probe_size(bitstream: bytes) -> tuple[int, int]:
    """Width and height of the picture in a VVC bitstream (from ffmpeg's stream summary)."""
    import re

    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-f", "vvc", "-i", "pipe:0"]
    info = subprocess.run(cmd, input=bitstream, capture_output=True, check=False).stderr.decode(errors="replace")
    found = re.search(r"Video: vvc.*?, (\d+)x(\d+)", info)
    if not found:
        raise MediaError("vvc: cannot read the picture size from the bitstream")
    return int(found.group(1)), int(found.group(2))


# ---------------------------------------------------------------- audio


def mono(audio: Audio) -> npt.NDArray[np.float32]:
    """The mono downmix `(frames,)` of an audio signal."""
    return audio.to_array().mean(axis=1).astype(np.float32)


def resample(x: npt.NDArray[np.float32], rate_in: int, rate_out: int) -> npt.NDArray[np.float32]:
    import soxr

    return x if rate_in == rate_out else soxr.resample(x, rate_in, rate_out, quality="HQ").astype(np.float32)


@register_anchor("opus")
class Opus(Anchor):
    """Opus (libopus via opuslib-next-bundled), VBR, application 'audio' as opusenc uses.

    File: a 7-byte header (uint8 coding rate in kHz, uint32 frames, uint16 pre-skip) and the
    packets, each prefixed by its length in one byte (< 252) or two (RFC 6716 sec. 3.2.1
    style), i.e. Ogg's framing cost left out. Input at 8/12/16/24/48 kHz is coded at its own
    rate, anything else at 48 kHz. The lowest point uses 60 ms frames (libopus cannot go
    below about 4 kbit/s); the others 20 ms.
    """

    media = "audio"
    description = "Opus (libopus), VBR, 20 ms frames (60 ms at 4 kbit/s), mono"
    values = [4, 6, 8, 10, 12, 16]  # kbit/s given to the encoder
    _HEAD = struct.Struct("<BIH")
    _RATES = (8000, 12000, 16000, 24000, 48000)

    def settings(self) -> list[str]:
        return [f"{v}k" for v in self.values]

    def version(self) -> str:
        return f"opuslib-next-bundled {version('opuslib-next-bundled')}"

    def encode(self, media: Audio, setting: str) -> bytes:
        import opuslib_next as opus

        kbps = self._knob(setting, "", "k")
        rate = media.sample_rate if media.sample_rate in self._RATES else 48000
        x = resample(mono(media), media.sample_rate, rate)
        enc = opus.Encoder(rate, 1, "audio")
        enc.bitrate = int(kbps * 1000)
        frame = rate * (60 if kbps < 6 else 20) // 1000
        frames, pre_skip = len(x), enc.lookahead  # the decoder's output lags by pre_skip samples
        x = np.concatenate([x, np.zeros(pre_skip + (-(frames + pre_skip)) % frame, np.float32)])
        out = [self._HEAD.pack(rate // 1000, frames, pre_skip)]
        for i in range(0, len(x), frame):
            packet = enc.encode_float(x[i : i + frame].tobytes(), frame)
            n = len(packet)
            out.append((bytes([n]) if n < 252 else bytes([252 + (n - 252) % 4, (n - 252) // 4])) + packet)
        return b"".join(out)

    def decode(self, data: bytes) -> Audio:
        import opuslib_next as opus

        khz, frames, pre_skip = self._HEAD.unpack_from(data)
        rate, pos = khz * 1000, self._HEAD.size
        dec, parts = opus.Decoder(rate, 1), []
        while pos < len(data):
            n = data[pos] if data[pos] < 252 else data[pos] + 4 * data[pos + 1]
            pos += 1 if data[pos] < 252 else 2
            parts.append(np.frombuffer(dec.decode_float(data[pos : pos + n], rate * 120 // 1000), np.float32))
            pos += n
        x = np.concatenate(parts)[pre_skip : pre_skip + frames]
        return Audio.from_array(x, rate)


@register_anchor("codec2")
class Codec2(Anchor):
    """Codec2 (libcodec2 via pycodec2) at 8 kHz, written as a `.c2` file as c2enc does.

    File: the 7-byte `.c2` header (magic C0 DE C2, version 1.0, mode, flags) and the frames.
    """

    media = "audio"
    description = "Codec2 (libcodec2), 8 kHz, .c2 file with its 7-byte header"
    RATE = 8000
    _MODES = {"700C": 8, "1200": 5, "1600": 2, "2400": 1, "3200": 0}  # name -> .c2 mode byte
    _MAGIC = b"\xc0\xde\xc2\x01\x00"

    def settings(self) -> list[str]:
        return list(self._MODES)

    def version(self) -> str:
        return f"pycodec2 {version('pycodec2')}, fresh-process decode"  # points of the old in-process decode are not reused

    @staticmethod
    def _codec(mode: str) -> Any:
        import pycodec2

        return pycodec2.Codec2(int(mode.rstrip("C")))

    def encode(self, media: Audio, setting: str) -> bytes:
        if setting not in self._MODES:
            raise ValueError(f"codec2: bad setting {setting!r} (choose from {', '.join(self._MODES)})")
        c2 = self._codec(setting)
        x = resample(mono(media), media.sample_rate, self.RATE)
        n = c2.samples_per_frame()
        pcm = np.clip(np.round(np.pad(x, (0, (-len(x)) % n)) * 32767), -32768, 32767).astype(np.int16)
        frames = [c2.encode(pcm[i : i + n]) for i in range(0, len(pcm), n)]
        return self._MAGIC + bytes([self._MODES[setting], 0]) + b"".join(frames)

    # libcodec2 draws the phases of unvoiced frames from process-wide generators it never resets
    # (codec2_rand's seed and libc's rand), so a second decode of the same file in one process gave
    # other samples (up to 0.67 of full scale apart) and `nmc eval`'s Codec2 rows depended on the
    # order of its decodes. A fresh interpreter decodes as c2dec does, the same samples every time.
    _DECODE = (
        "import sys, pycodec2; c2 = pycodec2.Codec2(int(sys.argv[1])); n = c2.bytes_per_frame(); "
        "body = sys.stdin.buffer.read(); "
        "sys.stdout.buffer.write(b''.join(c2.decode(body[i : i + n]).astype('<i2').tobytes() for i in range(0, len(body), n)))"
    )

    def decode(self, data: bytes) -> Audio:
        if data[:5] != self._MAGIC or data[5] not in self._MODES.values():
            raise MediaError("codec2: not a .c2 file this anchor wrote")
        mode = next(k for k, v in self._MODES.items() if v == data[5])
        cmd = [sys.executable, "-c", self._DECODE, mode.rstrip("C")]
        done = subprocess.run(cmd, input=data[7:], capture_output=True, check=False)
        if done.returncode != 0:
            raise MediaError(f"codec2: decoding failed: {done.stderr.decode(errors='replace').strip()[-300:]}")
        return Audio.from_array(np.frombuffer(done.stdout, "<i2").astype(np.float32) / 32768, self.RATE)


# ---------------------------------------------------------------- Gaussian sequences, frame by frame


class FrameAnchor(Anchor):
    """A Gaussian sequence coded one frame at a time, as a splat format stores a single scene.

    File: a 6-byte header (uint8 SH degree, uint8 normals, uint32 frames), then per frame its
    format's bytes prefixed by uint32 Gaussians and uint32 length (all little endian): the rate
    is the sum of the per-frame files plus 8 bytes each. Frames are decoded one at a time when read.
    """

    media = "gaussians"
    _HEAD = struct.Struct("<BBI")

    @abstractmethod
    def encode_frame(self, m: Matrix, layout: GaussianLayout, setting: str) -> bytes: ...

    @abstractmethod
    def decode_frame(self, data: bytes, layout: GaussianLayout) -> Matrix: ...

    def encode(self, media: Gaussians, setting: str) -> bytes:
        self.setting_check(setting)
        out = [self._HEAD.pack(media.layout.sh_degree, media.layout.normals, len(media.names))]
        for m in media.frames():
            data = self.encode_frame(m, media.layout, setting)
            out += [struct.pack("<II", len(m), len(data)), data]
        return b"".join(out)

    def decode(self, data: bytes) -> Gaussians:
        degree, normals, frames = self._HEAD.unpack_from(data)
        layout, counts, chunks, pos = GaussianLayout(degree, bool(normals)), [], [], self._HEAD.size
        for _ in range(frames):
            count, n = struct.unpack_from("<II", data, pos)
            counts.append(count)
            chunks.append(data[pos + 8 : pos + 8 + n])
            pos += 8 + n
        return Gaussians(layout, [f"frame_{t:04d}.ply" for t in range(frames)], counts, lambda: (self.decode_frame(c, layout) for c in chunks))

    def setting_check(self, setting: str) -> None:
        if setting not in self.settings():
            raise ValueError(f"{self.name}: bad setting {setting!r} (choose from {', '.join(self.settings())})")


@register_anchor("ply")
class RawPly(FrameAnchor):
    """The uncompressed float32 `.ply` of each frame, as 3DGS writes it: the rate to beat."""

    description = "float32 3DGS .ply per frame (uncompressed)"

    def settings(self) -> list[str]:
        return ["f32"]

    def version(self) -> str:
        return f"plyfile {version('plyfile')}"

    def encode_frame(self, m: Matrix, layout: GaussianLayout, setting: str) -> bytes:
        buf = io.BytesIO()
        write_ply(buf, layout, m)
        return buf.getvalue()

    def decode_frame(self, data: bytes, layout: GaussianLayout) -> Matrix:
        """The body after the header is a float32 record per vertex (the file `write_ply` made)."""
        end = data.index(b"end_header\n") + len(b"end_header\n")
        lines = data[:end].decode("ascii").splitlines()
        count = next(int(line.split()[2]) for line in lines if line.startswith("element vertex"))
        names = [line.split()[2] for line in lines if line.startswith("property float")]
        vertex = np.frombuffer(data, [(n, "<f4") for n in names], count, end)
        return layout.to_matrix({n: vertex[n] for n in names})


@register_anchor("spz")
class SPZ(FrameAnchor):
    """Niantic's SPZ (v3: 24-bit fixed-point positions with 12 fractional bits, 8-bit log scales,
    colours and opacities, smallest-three quaternions, 5/4-bit SH; gzip) through `gsply`
    (`pip install nmc[spz]`). The sweep keeps SH degree 0..3 (higher bands dropped and read
    back as zeros), the knob splat tools offer; SPZ itself has no quality setting."""

    description = "SPZ v3 per frame (gsply), SH degree 0-3 kept"

    def settings(self) -> list[str]:
        return [f"sh{d}" for d in range(4)]

    def version(self) -> str:
        try:
            return f"gsply {version('gsply')}"
        except PackageNotFoundError:
            return "gsply (not installed)"

    @staticmethod
    def _gsply() -> Any:
        try:
            import gsply
        except ImportError:
            raise MediaError("the spz anchor needs gsply: pip install 'nmc[spz]'") from None
        return gsply

    def encode_frame(self, m: Matrix, layout: GaussianLayout, setting: str) -> bytes:
        import tempfile
        from pathlib import Path

        gsply, sl, n = self._gsply(), layout.slices(), len(m)
        keep = (int(setting[2:]) + 1) ** 2 - 1
        rest = m[:, sl["rest"]].reshape(n, 3, -1).transpose(0, 2, 1)[:, :keep]  # (N, K, 3) as gsply takes it
        data = gsply.GSData(means=m[:, sl["pos"]].copy(), scales=m[:, sl["scale"]].copy(), quats=m[:, sl["rot"]].copy(),
                            opacities=m[:, sl["opacity"]].ravel().copy(), sh0=m[:, sl["dc"]].copy(), shN=np.ascontiguousarray(rest))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "frame.spz"
            gsply.write_spz(path, data, version=3)
            return path.read_bytes()

    def decode_frame(self, data: bytes, layout: GaussianLayout) -> Matrix:
        import tempfile
        from pathlib import Path

        gsply = self._gsply()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "frame.spz"
            path.write_bytes(data)
            g = gsply.read_spz(path)
        rest_cols = layout.slices()["rest"]
        n, k = len(g.means), (rest_cols.stop - rest_cols.start) // 3  # f_rest coefficients per colour
        rest = np.zeros((n, 3, k), np.float32)
        shn = np.asarray(g.shN, np.float32)
        if shn.size >= 3 * n:  # gsply gives a placeholder for SH degree 0
            rest[:, :, : shn.size // (3 * n)] = shn.reshape(n, -1, 3).transpose(0, 2, 1)
        parts = [g.means, g.sh0, rest.reshape(n, -1), np.reshape(g.opacities, (n, 1)), g.scales, g.quats]
        return np.concatenate([np.asarray(p, np.float32).reshape(n, -1) for p in parts], axis=1)


@register_anchor("quant")
class QuantizedLzma(FrameAnchor):
    """Each channel of each frame quantized uniformly to b bits between its min and max (kept as
    float32), the uint16 planes byte-shuffled (high bytes, then low) and compressed by lzma
    (xz, preset 9): the plain engineering baseline. 16 bits is the point the issue names; fewer
    bits give the rest of its curve."""

    description = "per-frame b-bit quantization per channel (min..max) + byte shuffle + lzma -9"
    bits = [8, 10, 12, 14, 16]

    def settings(self) -> list[str]:
        return [f"{b}bit" for b in self.bits]

    def version(self) -> str:
        import lzma

        return f"numpy {np.__version__}, xz preset 9, liblzma check {lzma.CHECK_CRC64}"

    def encode_frame(self, m: Matrix, layout: GaussianLayout, setting: str) -> bytes:
        import lzma

        levels = (1 << int(setting[:-3])) - 1
        lo, hi = m.min(axis=0), m.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1).astype(np.float64)
        q = np.round((m - lo) / span * levels).astype(np.uint16).T  # (C, N): channel planes
        shuffled = np.stack([q >> 8, q & 0xFF]).astype(np.uint8)
        return struct.pack("<IH", len(m), levels) + lo.astype("<f4").tobytes() + hi.astype("<f4").tobytes() + lzma.compress(shuffled.tobytes(), preset=9)

    def decode_frame(self, data: bytes, layout: GaussianLayout) -> Matrix:
        import lzma

        n, levels = struct.unpack_from("<IH", data)
        c, pos = layout.channels, 6
        lo, hi = (np.frombuffer(data, "<f4", c, pos + 4 * c * i).astype(np.float64) for i in (0, 1))
        planes = np.frombuffer(lzma.decompress(data[pos + 8 * c :]), np.uint8).reshape(2, c, n).astype(np.uint16)
        q = (planes[0] << 8) | planes[1]
        return (lo + q.T * (np.where(hi > lo, hi - lo, 1) / levels)).astype(np.float32)
