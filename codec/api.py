"""Library entry points: compress media into .nmc files and back (EnCodec's two levels).

`compress_to_file` / `decompress_from_file` hold the logic over file objects;
`compress` / `decompress` are in-memory wrappers. The CLI, `batch` and `eval` call these.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from . import media as M
from .container import Header, PacketWriter, read_header, read_packets, write_header
from .entropy import CODER_INFO
from .errors import ContainerError, MediaError, NmcError, WeightsMismatchError
from .interface import Codec, Setting
from .registry import codec_for_media, get_codec

Media = Any  # M.Image | M.Audio | M.Gaussians


def load_media(path: str | Path, kind: str | None = None) -> tuple[str, Media]:
    """Read any supported input; `kind` is needed for stdin ('-'), else taken from the path."""
    if str(path) == "-" and kind is None:
        raise MediaError("reading stdin needs an explicit --codec (the media type cannot be guessed)")
    kind = kind or M.media_kind(path)
    reader = {"image": M.read_image, "audio": M.read_audio, "gaussians": M.read_gaussians}[kind]
    return kind, reader(path)


def save_media(target: str | Path | IO[bytes], media: Media) -> None:
    """Write decoded media to a path (format from the suffix) or a binary stream."""
    if isinstance(media, M.Image):
        M.write_image(target, media)
    elif isinstance(media, M.Audio):
        M.write_audio(target, media)
    else:
        if not isinstance(target, (str, Path)):
            raise MediaError("Gaussian scenes cannot be written to stdout; give -o PATH")
        M.write_gaussians(target, media)


def use_device(device: str) -> None:
    """Run the networks of every installed codec on `device` (a resolved `--device`) in this process."""
    from .registry import available

    for name in available():
        codec = get_codec(name)
        if hasattr(codec, "to"):
            codec.to(device)


def resolve_codec(name: str, kind: str, rate: float | None = None) -> Codec:
    """The codec `name`, or for "auto" the one `codec_for_media` takes for `kind` at the requested `rate`."""
    codec = get_codec(codec_for_media(kind, rate) if name == "auto" else name)
    if codec.media != kind:
        raise MediaError(f"codec {codec.name!r} codes {codec.media}, but the input is {kind}")
    return codec


def choose_setting(codec: Codec, quality: str | None = None, bitrate: float | None = None) -> Setting:
    """The named setting, else the highest nominal rate not above `bitrate`, else the default."""
    settings = codec.settings()
    if quality is not None:
        return codec.setting(quality)
    if bitrate is not None:
        fitting = [s for s in settings if s.rate <= bitrate + 1e-9]
        if not fitting:
            raise MediaError(f"{codec.name}: lowest rate is {settings[0].rate:g} {settings[0].unit}, above {bitrate:g}")
        return fitting[-1]
    return codec.default()


def compress_to_file(
    codec: Codec,
    media: Media,
    fo: IO[bytes],
    setting: Setting,
    progress: Callable[[int, int | None], None] | None = None,
    notes: dict[str, Any] | None = None,
) -> Header:
    """Encode and write a complete .nmc stream; packets are written as the codec yields them.

    `progress(done, total)` is called after each packet (total is None when unknown);
    `notes` are added to the header's media metadata (e.g. that the input was downmixed).
    """
    encoded = codec.encode(media, setting)
    header = Header(
        codec=codec.name,
        model_id=codec.model_id,
        weights=codec.weights_hash(),
        media={**(encoded.media or M.metadata(media)), **encoded.fields.section("media"), **(notes or {})},
        setting=setting.name,
        coder=CODER_INFO,
        packets=encoded.packet_count,
        extra=encoded.fields.section("extra"),
    )
    codec.read_fields(header)  # never write a file that the decoder would refuse
    write_header(fo, header, codec.header_dict)
    writer = PacketWriter(fo)
    for packet in encoded.packets:
        writer.write(packet)
        if progress:
            progress(writer.count, encoded.packet_count)
    writer.close()
    return header


def compress_to_target(codec: Codec, media: Media, fo: IO[bytes], target_bpp: float) -> Header:
    """Highest setting whose real size (header included) is at most `target_bpp`."""
    if not isinstance(media, M.Image):
        raise MediaError("--target-bpp applies to images; use --bitrate for audio")
    for setting in reversed(codec.settings()):
        buf = io.BytesIO()
        header = compress_to_file(codec, media, buf, setting)
        bpp = M.real_rate(buf.tell(), M.metadata(media))[0]
        if bpp <= target_bpp:
            fo.write(buf.getvalue())
            return header
    raise MediaError(f"{codec.name}: cannot reach {target_bpp:g} bpp (lowest setting gives {bpp:.4g} bpp)")


@dataclass
class Decoded:
    header: Header
    media: Media


@dataclass
class OpenedFile:
    """A file whose header is read and checked: its codec, typed header fields and packet stream."""

    header: Header
    codec: Codec
    fields: Any  # the codec's `header_fields`
    packets: Iterator[bytes | None]
    lost: list[int] = field(default_factory=list)  # packets lost so far (None under --recover), by number

    def recovery_line(self) -> str | None:
        """One line saying what a decode under --recover filled in; None when nothing was lost."""
        if not self.lost:
            return None
        done = self.codec.recovered or {}
        what = f", {done['indices']} indices by {done['method']}" if done.get("indices") else ""
        alpha = f", {done['alpha_packets']} alpha packet(s) left opaque" if done.get("alpha_packets") else ""
        return f"recovered {len(self.lost)} of {self.header.packets} packets (lost or damaged: {self.lost[:16]}{' ...' if len(self.lost) > 16 else ''}){what}{alpha}"


def header_dictionary(name: str) -> bytes:
    """The preset header dictionary of codec `name` (what `read_header` needs for format 2)."""
    return get_codec(name).header_dict


def open_file(fo: IO[bytes], recover: bool = False, codec: Codec | None = None) -> OpenedFile:
    """Read and validate the header, check the codec and weights, and return the lazy packet stream.

    `codec` is the instance to decode with (default: the installed codec the header names).
    `recover` (lost packets reach the decoder as None) is refused for codecs that cannot recover.
    """
    header = read_header(fo, header_dictionary)
    codec = codec or get_codec(header.codec)
    if header.codec != codec.name:
        raise ContainerError(f"file was written by codec {header.codec!r}, not {codec.name!r}")
    if recover and not codec.can_recover:
        raise MediaError(f"--recover: codec {codec.name} cannot recover lost packets (decode without --recover)")
    fields = codec.read_fields(header)
    if header.media["kind"] != codec.media:
        raise ContainerError(f"header says {header.media['kind']} but codec {codec.name} codes {codec.media} (file is damaged)")
    if header.model_id != codec.model_id or header.weights != codec.weights_hash():
        needed = codec.retired_weights.get(header.weights)
        raise WeightsMismatchError(
            f"file was written by {header.codec} model {header.model_id} with weights {header.weights}"
            f"{f' ({needed})' if needed else ''}, but the installed model is {codec.model_id} with weights "
            f"{codec.weights_hash()}: it needs the other weights version (the nmc release that wrote it)"
        )
    if header.coder != CODER_INFO:
        raise ContainerError(f"file needs entropy coder {header.coder}, this nmc has {CODER_INFO}")
    return OpenedFile(header, codec, fields, read_packets(fo, header, tolerant=recover))


@contextmanager
def _damage_is_an_error(codec: str, at: list[int | None]) -> Iterator[None]:
    """A decoder that fails on file data (a CRC-valid but altered payload can make the range
    decoder or a network fail anywhere) means a damaged file, not a bug to show as a traceback.
    `at[0]` is the packet being decoded (None outside the packets)."""
    try:
        yield
    except ContainerError as err:
        if at[0] is None:
            raise
        raise ContainerError(f"{codec} packet {at[0]}: {err}") from err
    except (NmcError, MemoryError):
        raise
    except Exception as err:
        where = "it" if at[0] is None else f"packet {at[0]}"
        raise ContainerError(f"file is damaged: the {codec} decoder failed on {where} ({type(err).__name__}: {err})") from err


def _tracked(packets: Iterator[bytes | None], at: list[int | None], lost: list[int]) -> Iterator[bytes | None]:
    """`packets`, with the index of the packet being decoded in `at[0]` (None while reading one) and
    the numbers of the lost ones (None, under --recover) appended to `lost`."""
    for i in itertools.count():
        at[0] = None
        try:
            payload = next(packets)
        except StopIteration:
            return
        at[0] = i
        if payload is None:
            lost.append(i)
        yield payload


def decode(opened: OpenedFile) -> Media:
    """The media of an opened file; decoder failures are `ContainerError`s, also for lazy audio and frames."""
    header, name = opened.header, opened.codec.name
    at: list[int | None] = [None]
    opened.codec.recovered = None
    with _damage_is_an_error(name, at):
        media = opened.codec.decode(header, opened.fields, _tracked(opened.packets, at, opened.lost))
    m = header.media
    if isinstance(media, M.Image):
        if media.pixels.shape != (m["height"], m["width"], m["channels"]):
            raise ContainerError(f"file is damaged: decoded {media.pixels.shape} pixels, the header says {m['height']}x{m['width']}x{m['channels']}")
    elif isinstance(media, M.Audio):
        media = dataclasses.replace(media, blocks=_guarded(media.blocks, name, at))
    elif isinstance(media, M.Gaussians):
        media = dataclasses.replace(media, frames=_guarded(media.frames, name, at))
    return media


def _guarded(stream: Callable[[], Iterator[Any]], codec: str, at: list[int | None]) -> Callable[[], Iterator[Any]]:
    """A lazily decoded stream (audio blocks, Gaussian frames) whose decoder failures are `ContainerError`s."""

    def guarded() -> Iterator[Any]:
        with _damage_is_an_error(codec, at):
            yield from stream()

    return guarded


def decompress_from_file(fo: IO[bytes], recover: bool = False, codec: Codec | None = None) -> Decoded:
    """Decode a .nmc stream. Audio comes back lazily: its blocks are decoded while written."""
    opened = open_file(fo, recover, codec)
    return Decoded(opened.header, decode(opened))


def compress(codec_name: str | Codec, media: Media, setting: str | None = None) -> bytes:
    """In-memory `compress_to_file` (a codec by name, or an instance with its options): returns the whole .nmc file."""
    kind = {M.Image: "image", M.Audio: "audio", M.Gaussians: "gaussians"}[type(media)]
    codec = resolve_codec(codec_name, kind) if isinstance(codec_name, str) else codec_name
    buf = io.BytesIO()
    compress_to_file(codec, media, buf, choose_setting(codec, setting))
    return buf.getvalue()


def decompress(data: bytes, recover: bool = False, codec: Codec | None = None) -> Media:
    """In-memory `decompress_from_file`; streamed audio is materialised, and Gaussian frames are
    decoded again from `data` each time they are iterated (one frame in memory at a time)."""
    media = decompress_from_file(io.BytesIO(data), recover, codec).media
    if isinstance(media, M.Audio):
        return M.Audio.from_array(media.to_array(), media.sample_rate)
    if isinstance(media, M.Gaussians):
        return dataclasses.replace(media, frames=lambda: decompress_from_file(io.BytesIO(data), recover, codec).media.frames())
    return media
