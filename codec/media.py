"""Reading and writing media: images (Pillow), audio (soundfile, soxr), Gaussian scenes (plyfile).

Policies, stated once here:
- Images become `(H, W, C)` arrays, C in {1, 2, 3, 4} (gray, gray+alpha, RGB, RGBA), uint8 or
  uint16; EXIF orientation is applied; palette images expand to RGB(A); CMYK/YCbCr/LAB to RGB.
- Audio is float32 `(frames, channels)` at the file's own rate, read and written in blocks
  so that hours of audio never sit in memory at once.
- A Gaussian scene is a sequence of `.ply` frames (a directory, in name order, or one file),
  streamed frame by frame; each frame is an `(N, C)` float32 matrix of the standard 3DGS vertex
  properties (x, y, z, f_dc_*, f_rest_*, opacity, scale_*, rot_*) in `GaussianLayout` order.
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


Matrix = npt.NDArray[np.float32]  # one 3DGS frame: (N, C) float32 in `GaussianLayout` column order


@dataclass
class Gaussians:
    """A sequence of 3DGS frames of one layout, streamed like audio: `frames()` yields one `(N, C)`
    matrix at a time (memory holds one frame whatever the length); `counts` are the Gaussians
    per frame and `source` the path it was read from (None when decoded)."""

    layout: GaussianLayout
    names: list[str]  # file name of each frame, to write the sequence back
    counts: list[int]
    frames: Callable[[], Iterator[Matrix]]
    source: Path | None = None

    @classmethod
    def from_matrices(cls, layout: GaussianLayout, matrices: list[Matrix], names: list[str] | None = None) -> Gaussians:
        """A sequence held in memory (tests, small scenes)."""
        names = names or [f"frame_{t:04d}.ply" for t in range(len(matrices))]
        return cls(layout, names, [len(m) for m in matrices], lambda: iter(matrices))


def metadata(media: Image | Audio | Gaussians) -> dict[str, Any]:
    """The header's media metadata of a source (docs/FORMAT.md, `media`)."""
    if isinstance(media, Image):
        return {"kind": "image", "width": media.width, "height": media.height, "channels": media.channels, "bit_depth": media.bit_depth}
    if isinstance(media, Audio):
        return {"kind": "audio", "sample_rate": media.sample_rate, "channels": media.channels, "frames": media.frames}
    return {"kind": "gaussians", "frame_count": len(media.names), "names": media.names}


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
        if any(is_frame_name(f.name) for f in p.iterdir()):
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
    png = not isinstance(target, (str, Path)) or Path(target).suffix.lower() == ".png"
    try:
        # zlib level 1: a 768x512 photo in 0.04 s instead of 0.19 s at Pillow's default 6, 19 % larger
        # (a third of the CPU time of a learned photo decode went there, and `nmc batch` decodes many)
        im.save(target, format=None if isinstance(target, (str, Path)) else "PNG", **({"compress_level": 1} if png else {}))
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

REST_COUNTS = {0: 0, 1: 9, 2: 24, 3: 45}  # f_rest_* per SH degree (3 colours x ((d+1)^2 - 1))
NORMALS = ("nx", "ny", "nz")
GROUPS = ("pos", "dc", "rest", "opacity", "scale", "rot")  # attribute groups, in matrix-column order


@dataclass(frozen=True)
class GaussianLayout:
    """Columns of a 3DGS frame matrix: position (x, y, z), colour DC (f_dc_0..2), the higher SH
    coefficients (f_rest_*), opacity (logit), scale (log, 3) and rotation (quaternion w, x, y, z,
    not normalised): the raw parameters a 3DGS `.ply` stores. Normals (nx, ny, nz), which 3DGS
    writes as zeros, are accepted when they are zero and written back as zeros."""

    sh_degree: int
    normals: bool = True

    @property
    def names(self) -> list[str]:
        """Property names in matrix-column order."""
        rest = REST_COUNTS[self.sh_degree]
        return (["x", "y", "z"] + [f"f_dc_{i}" for i in range(3)] + [f"f_rest_{i}" for i in range(rest)]
                + ["opacity"] + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)])

    @property
    def channels(self) -> int:
        return 14 + REST_COUNTS[self.sh_degree]

    def slices(self) -> dict[str, slice]:
        """Columns of each attribute group."""
        widths = {"pos": 3, "dc": 3, "rest": REST_COUNTS[self.sh_degree], "opacity": 1, "scale": 3, "rot": 4}
        out, start = {}, 0
        for g in GROUPS:
            out[g] = slice(start, start + widths[g])
            start += widths[g]
        return out

    @classmethod
    def of(cls, properties: Iterable[str], where: str = "frame") -> GaussianLayout:
        """The layout of a frame's vertex properties; a MediaError names what does not fit 3DGS."""
        keys = set(properties)
        rest = sum(1 for k in keys if k.startswith("f_rest_"))
        degree = {v: k for k, v in REST_COUNTS.items()}.get(rest)
        if degree is None:
            raise MediaError(f"{where}: not a 3DGS frame ({rest} f_rest_* properties is no SH degree: 0, 9, 24 or 45 expected)")
        layout = cls(degree, all(n in keys for n in NORMALS))
        expected = set(layout.names) | (set(NORMALS) if layout.normals else set())
        missing, extra = sorted(expected - keys), sorted(keys - expected)
        if missing or extra:
            raise MediaError(f"{where}: not a 3DGS frame (missing {missing}, unexpected {extra})")
        return layout

    def to_matrix(self, frame: dict[str, np.ndarray], where: str = "frame") -> Matrix:
        """`(N, C)` float32 of a frame with this layout; refuses other layouts, NaN and infinity."""
        if (other := GaussianLayout.of(frame, where)) != self:
            raise MediaError(f"{where}: attributes differ from the first frame ({other} vs {self})")
        if self.normals and any(np.any(frame[n] != 0) for n in NORMALS):
            raise MediaError(f"{where}: normals (nx, ny, nz) are not zero; 3DGS frames carry none")
        m = np.stack([np.asarray(frame[n], np.float32) for n in self.names], axis=1)
        if not np.isfinite(m).all():
            bad = sorted({self.names[c] for c in np.nonzero(~np.isfinite(m).all(axis=0))[0]})
            raise MediaError(f"{where}: NaN or infinite values in {bad}")
        return m

    @property
    def ply_names(self) -> list[str]:
        """Vertex property names of a `.ply` frame, in the standard 3DGS order (normals after x, y, z)."""
        return [*self.names[:3], *NORMALS, *self.names[3:]] if self.normals else self.names

    def to_frame(self, m: Matrix) -> dict[str, npt.NDArray[np.float32]]:
        """Property dict (the standard 3DGS `.ply` order, normals as zeros) of a matrix."""
        cols = {n: np.ascontiguousarray(m[:, i], np.float32) for i, n in enumerate(self.names)}
        zeros = np.zeros(m.shape[0], np.float32)
        return {n: cols.get(n, zeros) for n in self.ply_names}


def is_frame_name(name: str) -> bool:
    """A frame file name nmc reads and writes: `*.ply`, a plain name (no path), not hidden."""
    return (name.lower().endswith(".ply") and not name.startswith(".") and "/" not in name and "\\" not in name
            and "\0" not in name and len(name.encode("utf-8", "replace")) <= 255)


def read_gaussians(path: str | Path) -> Gaussians:
    """One `.ply` (a single frame) or a directory of `.ply` frames in name order, streamed.

    Every header is checked first (a 3DGS layout, the same properties in every frame), so a
    sequence that cannot be coded is refused before any work; NaN and infinite values are found
    when each frame is read."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if is_frame_name(f.name) and f.is_file())
        if not files:
            raise MediaError(f"{p}: directory holds no .ply frames")
    elif is_frame_name(p.name) or not p.exists():
        files = [p]
    else:
        raise MediaError(f"{p}: a frame must be a .ply file whose name does not start with '.'")
    first, count = _ply_header(files[0])
    layout, counts = GaussianLayout.of(first, str(files[0])), [count]
    for f in files[1:]:
        properties, count = _ply_header(f)
        if set(properties) != set(first):
            missing, extra = sorted(set(first) - set(properties)), sorted(set(properties) - set(first))
            raise MediaError(f"{f}: attributes differ from {files[0].name} (missing {missing}, unexpected {extra})")
        counts.append(count)
    return Gaussians(layout, [f.name for f in files], counts, lambda: (_read_ply(f, layout) for f in files), p)


def _ply_header(path: Path) -> tuple[list[str], int]:
    """Vertex property names and count; plyfile maps binary data without reading it."""
    vertex = _ply_vertex(path)
    return list(vertex.dtype.names or ()), len(vertex)


def _ply_vertex(path: Path) -> np.ndarray:
    from plyfile import PlyData, PlyParseError

    _open_input(path)
    try:
        return PlyData.read(str(path), mmap="r")["vertex"].data
    except (PlyParseError, KeyError, ValueError, OSError, IndexError, TypeError) as err:
        raise MediaError(f"{path}: not a Gaussian-splatting .ply ({err})") from None


def _read_ply(path: Path, layout: GaussianLayout) -> Matrix:
    vertex = _ply_vertex(path)
    try:
        return layout.to_matrix({name: vertex[name] for name in vertex.dtype.names or ()}, str(path))
    except MediaError:
        raise
    except (ValueError, TypeError) as err:  # list properties, say, where numbers belong
        raise MediaError(f"{path}: not a Gaussian-splatting .ply ({err})") from None


def write_gaussians(path: str | Path, scene: Gaussians) -> None:
    """A sequence to a directory of `.ply` files named as in `scene.names` (created if needed),
    written one frame at a time; a single frame to a path ending in `.ply`."""
    p = Path(path)
    if p.suffix.lower() == ".ply":
        if len(scene.names) != 1:
            raise MediaError(f"{p}: a sequence of {len(scene.names)} frames is written to a directory, not a .ply file")
        targets = [p]
    else:
        bad = [n for n in scene.names if not is_frame_name(n)]
        if bad or len(set(scene.names)) != len(scene.names):
            raise MediaError(f"frame names {bad or scene.names} are not distinct plain .ply file names")
        p.mkdir(exist_ok=True)
        targets = [p / n for n in scene.names]
    for target, m in zip(targets, scene.frames(), strict=True):
        write_ply(target, scene.layout, m)


def write_ply(target: str | Path | IO[bytes], layout: GaussianLayout, m: Matrix) -> None:
    """One frame as a binary little-endian 3DGS `.ply` (float32 properties in the standard order)."""
    from plyfile import PlyData, PlyElement

    rec = np.zeros(len(m), dtype=[(n, "<f4") for n in layout.ply_names])
    table = rec.view("<f4").reshape(len(m), -1)  # the fields as columns: two block copies, not one per property
    table[:, :3] = m[:, :3]
    table[:, 3 + 3 * layout.normals :] = m[:, 3:]  # the normals, if any, stay zero
    PlyData([PlyElement.describe(rec, "vertex")]).write(target if not isinstance(target, Path) else str(target))
