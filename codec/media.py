"""Reading and writing media: images (Pillow), audio (soundfile, soxr), Gaussian scenes (plyfile).

Policies, stated once here:
- Images become `(H, W, C)` arrays, C in {1, 2, 3, 4} (gray, gray+alpha, RGB, RGBA), uint8 or
  uint16; EXIF orientation is applied; palette images expand to RGB(A); CMYK/YCbCr/LAB to RGB.
- Audio is float32 `(frames, channels)` at the file's own rate, read and written in blocks
  so that hours of audio never sit in memory at once.
- A Gaussian scene is a list of frames; each frame maps the 3DGS vertex properties of a
  `.ply` (x, y, z, f_dc_*, f_rest_*, opacity, scale_*, rot_*) to float32 arrays.
"""

from __future__ import annotations

import io
import struct
import sys
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

import numpy as np
import numpy.typing as npt

from .errors import MediaError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".ppm", ".pgm"}
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif"}
BLOCK_FRAMES = 1 << 16
MAX_PIXELS = 2 * 89_478_485  # Pillow's decompression-bomb limit: larger images are refused, on input and in headers
MAX_AUDIO_CHANNELS = 1024  # libsndfile's limit; bounds a decoder's per-channel buffers


@dataclass
class Image:
    pixels: npt.NDArray[np.uint8] | npt.NDArray[np.uint16]  # (H, W, C)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[2])

    @property
    def bit_depth(self) -> int:
        return 16 if self.pixels.dtype == np.uint16 else 8


@dataclass
class Audio:
    """A (possibly streamed) audio signal; `blocks()` yields float32 `(n, channels)` arrays once."""

    sample_rate: int
    channels: int
    frames: int
    blocks: Callable[[], Iterator[npt.NDArray[np.float32]]]

    @classmethod
    def from_array(cls, samples: npt.ArrayLike, sample_rate: int) -> Audio:
        x = np.asarray(samples, dtype=np.float32)
        x = x[:, None] if x.ndim == 1 else x
        return cls(sample_rate, x.shape[1], x.shape[0], lambda: iter([x[i : i + BLOCK_FRAMES] for i in range(0, len(x), BLOCK_FRAMES)]))

    def downmix(self) -> Audio:
        """Mono: the mean of the channels."""
        return Audio(self.sample_rate, 1, self.frames, lambda: (b.mean(axis=1, keepdims=True) for b in self.blocks()))

    def resampled(self, rate: int) -> Audio:
        """The same signal at `rate` Hz, resampled block by block."""
        if rate == self.sample_rate:
            return self
        frames = round(self.frames * rate / self.sample_rate)
        return Audio(rate, self.channels, frames, lambda: resample_blocks(self.blocks(), self.sample_rate, rate, self.channels))

    def to_array(self) -> npt.NDArray[np.float32]:
        parts = list(self.blocks())
        return np.concatenate(parts) if parts else np.zeros((0, self.channels), np.float32)


GaussianFrame = dict[str, npt.NDArray[np.float32]]


@dataclass
class Gaussians:
    frames: list[GaussianFrame]
    names: list[str]  # file name of each frame, to write the sequence back


def metadata(media: Image | Audio | Gaussians) -> dict[str, Any]:
    """The header's media metadata of a source (docs/FORMAT.md, `media`)."""
    if isinstance(media, Image):
        return {"kind": "image", "width": media.width, "height": media.height, "channels": media.channels, "bit_depth": media.bit_depth}
    if isinstance(media, Audio):
        return {"kind": "audio", "sample_rate": media.sample_rate, "channels": media.channels, "frames": media.frames}
    return {"kind": "gaussians", "frame_count": len(media.frames), "names": media.names}


def real_rate(nbytes: int, media: dict[str, Any]) -> tuple[float, str]:
    """The rate of a file of `nbytes` (header included) coding `media` (its `metadata`), and its unit."""
    if media["kind"] == "image":
        return 8 * nbytes / (media["width"] * media["height"]), "bpp"
    if media["kind"] == "audio":
        seconds = media["frames"] / media["sample_rate"]
        return (8 * nbytes / seconds / 1000 if seconds else 0.0), "kbps"
    return nbytes / 1e6 / max(1, media["frame_count"]), "MB/frame"


def media_kind(path: str | Path) -> str:
    """'image', 'audio' or 'gaussians', from the suffix (or directory contents)."""
    p = Path(path)
    if p.is_dir():
        if any(p.glob("*.ply")):
            return "gaussians"
        raise MediaError(f"{p}: directory holds no .ply frames")
    suffix = p.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in AUDIO_SUFFIXES:
        return "audio"
    if suffix == ".ply":
        return "gaussians"
    raise MediaError(f"{p}: unsupported file type {suffix or '(no suffix)'!r}")


def _open_input(path: str | Path) -> IO[bytes] | Path:
    """A path, or the bytes of stdin for '-'; empty or missing input is a MediaError."""
    if str(path) == "-":
        data = sys.stdin.buffer.read()
        if not data:
            raise MediaError("stdin is empty")
        return io.BytesIO(data)
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{p}: no such file")
    if p.is_file() and p.stat().st_size == 0:
        raise MediaError(f"{p}: file is empty")
    return p


# ---------------------------------------------------------------- images


def read_image(path: str | Path) -> Image:
    from PIL import Image as PILImage, ImageOps, UnidentifiedImageError

    src = _open_input(path)
    try:
        with warnings.catch_warnings():  # images up to MAX_PIXELS are fine here: no DecompressionBombWarning on stderr
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(src) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise MediaError(f"{path}: image of {im.width}x{im.height} pixels is larger than the limit of {MAX_PIXELS} pixels")
                if getattr(im, "is_animated", False) and im.format != "MPO":  # MPO: a camera JPEG plus previews
                    raise MediaError(f"{path}: image has {getattr(im, 'n_frames', '?')} frames (animation or pages); nmc codes one still image")
                png16 = im.format == "PNG" and im.mode in ("LA", "RGB", "RGBA") and bool(im.tile) and str(im.tile[0].args).endswith(";16B")  # before load()
                orientation = im.getexif().get(0x0112, 1)
                if png16 and (px16 := _read_png16(src)) is not None:
                    return Image(_orient(px16, orientation))  # Pillow would keep only the high bytes
                oriented = ImageOps.exif_transpose(im) if orientation != 1 else im  # it copies even when nothing to do
                return Image(_pil_to_array(oriented))
    except MediaError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, PILImage.DecompressionBombError, zlib.error, struct.error) as err:
        raise MediaError(f"{path}: cannot read image ({err})") from None


def _pil_to_array(im: "PILImage.Image") -> np.ndarray:  # type: ignore[name-defined]  # noqa: F821
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        im = im.convert("RGB")
    elif mode.startswith("I;16") or mode == "I":
        a = np.asarray(im).astype(np.int64)
        if a.min() < 0 or a.max() > 65535:
            raise MediaError(f"32-bit integer images outside 0..65535 are not supported (mode {mode})")
        return a.astype(np.uint16)[:, :, None]
    elif mode == "F":
        raise MediaError("floating-point images are not supported")
    if im.mode not in ("L", "LA", "RGB", "RGBA"):
        raise MediaError(f"unsupported image mode {im.mode}")
    a = np.asarray(im, dtype=np.uint8)
    return a[:, :, None] if a.ndim == 2 else a


def _read_png16(src: IO[bytes] | Path) -> npt.NDArray[np.uint16] | None:
    """A 16-bit gray+alpha, RGB or RGBA PNG at full precision `(H, W, C)`; None when interlaced
    (left to Pillow, at 8 bits)."""
    data = src.read_bytes() if isinstance(src, Path) else src.getvalue()  # type: ignore[attr-defined]
    pos, idat = 8, []
    while pos < len(data):
        n, kind = struct.unpack_from(">I4s", data, pos)
        body = data[pos + 8 : pos + 8 + n]
        if data[pos + 8 + n : pos + 12 + n] != struct.pack(">I", zlib.crc32(kind + body)):
            raise MediaError(f"PNG chunk {kind!r} is truncated or damaged")
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack_from(">IIBBBBB", data, pos + 8)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + n
    channels = {4: 2, 2: 3, 6: 4}.get(ctype, 0)
    if depth != 16 or not channels or interlace:
        return None
    size = h * (1 + 2 * channels * w)
    raw = zlib.decompressobj().decompress(b"".join(idat), size)  # bounded: a crafted stream could inflate to gigabytes
    if len(raw) < size:
        raise MediaError("16-bit PNG is truncated")
    rows = np.frombuffer(raw, np.uint8).reshape(h, -1)
    px = _unfilter(rows[:, 1:], rows[:, 0], 2 * channels).astype(np.uint16).reshape(h, w, channels, 2)
    return ((px[..., 0] << 8) | px[..., 1]).astype(np.uint16)  # big endian


def _unfilter(rows: np.ndarray, filters: np.ndarray, bpp: int) -> np.ndarray:
    """Undo PNG's scanline filters (RFC 2083, 6), one anti-diagonal of pixels at a time: pixel
    (y, x) depends only on (y, x - 1), (y - 1, x) and (y - 1, x - 1), so each step is vectorised."""
    h, w = rows.shape[0], rows.shape[1] // bpp
    f = rows.reshape(h, w, bpp).astype(np.int32)
    out = np.zeros((h + 1, w + 1, bpp), np.int32)  # a zero row above and a zero column to the left
    for t in range(h + w - 1):
        y = np.arange(max(0, t - w + 1), min(h, t + 1))
        x = t - y
        a, b, c = out[y + 1, x], out[y, x + 1], out[y, x]
        pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        kind = filters[y][:, None]
        pred = np.select([kind == 1, kind == 2, kind == 3, kind == 4], [a, b, (a + b) >> 1, paeth], 0)
        out[y + 1, x + 1] = (f[y, x] + pred) & 0xFF
    return out[1:, 1:].astype(np.uint8)


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an `(H, W, C)` array, as ImageOps.exif_transpose does."""
    a = a.transpose(1, 0, 2) if orientation in (5, 6, 7, 8) else a
    if orientation in (2, 3, 6, 7):
        a = a[:, ::-1]
    if orientation in (3, 4, 7, 8):
        a = a[::-1]
    return np.ascontiguousarray(a)


IMAGE_WRITE = {".png", ".tif", ".tiff", ".bmp", ".webp", ".jpg", ".jpeg", ".gif", ".ppm", ".pgm"}
AUDIO_WRITE = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS"), ".opus": ("OGG", "OPUS")}


def check_output_suffix(kind: str, path: str | Path) -> None:
    """Refuse an output name whose suffix names no format for `kind` (before any decoding work)."""
    suffixes = {"image": IMAGE_WRITE, "audio": set(AUDIO_WRITE)}.get(kind)
    suffix = Path(path).suffix.lower()
    if suffixes is not None and suffix not in suffixes:
        raise MediaError(f"{path}: cannot write {kind} as {suffix or '(no suffix)'!r} (use one of {', '.join(sorted(suffixes))})")


def write_image(target: str | Path | IO[bytes], image: Image) -> None:
    """Write by suffix (PNG when writing to a stream); 16-bit gray stays 16-bit in PNG/TIFF."""
    from PIL import Image as PILImage

    if isinstance(target, (str, Path)):
        check_output_suffix("image", target)
    px = image.pixels
    if px.dtype == np.uint16:
        im = PILImage.fromarray(px[:, :, 0].astype("<u2")) if px.shape[2] == 1 else PILImage.fromarray((px >> 8).astype(np.uint8))
    else:
        im = PILImage.fromarray(px[:, :, 0] if px.shape[2] == 1 else px)
    try:
        im.save(target, format=None if isinstance(target, (str, Path)) else "PNG")
    except (ValueError, KeyError, OSError) as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise  # a real I/O error (disk full, permissions): reported as such
        raise MediaError(f"cannot write this image as {Path(str(target)).suffix or 'PNG'} ({err})") from None


def to_rgb8(image: Image) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8] | None]:
    """The 8-bit RGB planes a colour codec codes, and the alpha plane (None if opaque/absent)."""
    px = image.pixels.astype(np.uint8) if image.bit_depth == 8 else ((image.pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    color = px[:, :, :-1] if px.shape[2] in (2, 4) else px
    alpha = px[:, :, -1] if px.shape[2] in (2, 4) else None
    if alpha is not None and alpha.min() == 255:
        alpha = None
    rgb = np.repeat(color, 3, axis=2) if color.shape[2] == 1 else color
    return np.ascontiguousarray(rgb), alpha


# ---------------------------------------------------------------- audio


def read_audio(path: str | Path) -> Audio:
    """Stream an audio file (WAV, FLAC, OGG Vorbis/Opus, MP3, ...) in blocks."""
    import soundfile as sf

    src = _open_input(path)
    try:
        info = sf.info(src)
        if isinstance(src, io.BytesIO):
            src.seek(0)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise MediaError(f"{path}: cannot read audio ({err})") from None
    if info.frames == 0:
        raise MediaError(f"{path}: audio has no samples")
    if info.channels > MAX_AUDIO_CHANNELS:
        raise MediaError(f"{path}: {info.channels} channels, more than {MAX_AUDIO_CHANNELS}")

    def blocks() -> Iterator[npt.NDArray[np.float32]]:
        if isinstance(src, io.BytesIO):
            src.seek(0)
        try:
            with sf.SoundFile(src) as f:
                while True:
                    block = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
                    if not len(block):
                        return
                    yield block
        except (sf.LibsndfileError, RuntimeError) as err:
            raise MediaError(f"{path}: cannot read audio ({err})") from None

    return Audio(int(info.samplerate), int(info.channels), int(info.frames), blocks)


def finite_blocks(blocks: Iterable[npt.NDArray[np.float32]], who: str) -> Iterator[npt.NDArray[np.float32]]:
    """The blocks, refusing NaN or infinite samples (a codec cannot code them)."""
    for b in blocks:
        if not np.isfinite(b).all():
            raise MediaError(f"{who}: audio contains NaN or infinite samples")
        yield b


def resample_blocks(blocks: Iterator[npt.NDArray[np.float32]], rate_in: int, rate_out: int, channels: int) -> Iterator[npt.NDArray[np.float32]]:
    """Resample a block stream with soxr's streaming resampler (bounded memory)."""
    if rate_in == rate_out:
        yield from blocks
        return
    import soxr

    rs = soxr.ResampleStream(rate_in, rate_out, channels, dtype="float32", quality="HQ")
    for block in blocks:
        out = rs.resample_chunk(np.ascontiguousarray(block, dtype=np.float32))
        if len(out):
            yield out.reshape(-1, channels)
    tail = rs.resample_chunk(np.zeros((0, channels), np.float32), last=True)
    if len(tail):
        yield tail.reshape(-1, channels)


def write_audio(target: str | Path | IO[bytes], audio: Audio, suffix: str = ".wav") -> None:
    """Write 16-bit PCM (or Vorbis/Opus) block by block; the suffix of a path picks the format."""
    import soundfile as sf

    if isinstance(target, (str, Path)):
        check_output_suffix("audio", target)
        suffix = Path(target).suffix.lower()
    fmt, subtype = AUDIO_WRITE[suffix]
    with sf.SoundFile(target, "w", samplerate=audio.sample_rate, channels=audio.channels, format=fmt, subtype=subtype) as f:
        for block in audio.blocks():
            f.write(np.clip(block, -1.0, 1.0))


# ---------------------------------------------------------------- Gaussian scenes


def read_gaussians(path: str | Path) -> Gaussians:
    """One `.ply` (a single frame) or a directory of `.ply` frames in name order."""
    p = Path(path)
    files = sorted(p.glob("*.ply")) if p.is_dir() else [p]
    if not files:
        raise MediaError(f"{p}: no .ply frames")
    return Gaussians([_read_ply(f) for f in files], [f.name for f in files])


def _read_ply(path: Path) -> GaussianFrame:
    from plyfile import PlyData, PlyParseError

    _open_input(path)
    try:
        vertex = PlyData.read(str(path))["vertex"].data
    except (PlyParseError, KeyError, ValueError, OSError, IndexError) as err:
        raise MediaError(f"{path}: not a Gaussian-splatting .ply ({err})") from None
    frame = {name: np.asarray(vertex[name], dtype=np.float32) for name in vertex.dtype.names}
    missing = [k for k in ("x", "y", "z", "opacity") if k not in frame]
    if missing:
        raise MediaError(f"{path}: .ply lacks Gaussian properties {missing}")
    return frame


def write_gaussians(path: str | Path, scene: Gaussians) -> None:
    """A single frame to a `.ply` file, a sequence to a directory of `.ply` files."""
    from plyfile import PlyData, PlyElement

    p = Path(path)
    targets = [p] if len(scene.frames) == 1 and p.suffix == ".ply" else [p / n for n in scene.names]
    if len(targets) > 1 or p.suffix != ".ply":
        p.mkdir(parents=True, exist_ok=True)
    for target, frame in zip(targets, scene.frames):
        names = list(frame)
        rec = np.empty(len(frame[names[0]]), dtype=[(n, "f4") for n in names])
        for n in names:
            rec[n] = frame[n]
        PlyData([PlyElement.describe(rec, "vertex")]).write(str(target))
