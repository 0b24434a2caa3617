"""The .nmc container: fixed prefix, JSON header, CRC-checked packets. Byte layout: docs/FORMAT.md.

    prefix   magic b"\\x89NMC" | uint8 version 3 | uint8 name length | codec name (ASCII)
             | varint header length
    header   UTF-8 JSON object (every field but the codec name), raw-DEFLATE-compressed with
             the codec's preset dictionary (headers cost tens of bytes: they matter at 1 kbit/s)
             | uint32 CRC32 of everything after the version byte up to here
    packet*  varint payload length | uint32 CRC32 of payload | payload
    end      0x80 0x00 (a varint zero in two bytes: never a length) | varint number of packets

Integers are little endian; a varint is unsigned LEB128 in its shortest form (1 byte below 128).
The codec name comes before the compressed header, so a reader finds the codec (and its
dictionary) first. Formats 1 (one dictionary for all codecs, `format1.py`) and 2 (uint32 lengths,
an 8-byte end record) are still read. Each packet is entropy-decodable on its own, so a damaged
one is detected (CRC) and can be skipped by codecs that recover lost data; nothing after the end
record is allowed.
"""

from __future__ import annotations

import itertools
import json
import re
import struct
import zlib
from dataclasses import asdict, dataclass, field, fields
from typing import IO, Any, Callable, Iterator

from . import format1
from .errors import ContainerError, TruncatedError

MAGIC = b"\x89NMC"
FORMAT_VERSION = 3  # what this nmc writes; it reads 1 to 3
_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")
_PACKET = struct.Struct("<II")  # formats 1 and 2: uint32 length, uint32 CRC32
END_MARK = 0xFFFFFFFF  # formats 1 and 2: the end record's "length"
END = b"\x80\x00"  # format 3: the end record's marker, a varint no writer produces
MAX_HEADER_BYTES = 1 << 20
MAX_PACKET_BYTES = 1 << 28
CODEC_NAME = re.compile(rb"[a-z0-9][a-z0-9._-]{0,63}")


def format_id(dictionary: bytes) -> str:
    """Changes with anything that changes the bytes of a file (the version, the header dictionary)."""
    return f"nmc{FORMAT_VERSION}-{zlib.crc32(dictionary):08x}"


@dataclass
class Header:
    """Everything a decoder needs besides the packets (see docs/FORMAT.md for each field)."""

    codec: str
    model_id: str
    weights: str
    media: dict[str, Any]
    setting: str
    coder: dict[str, Any]
    packets: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = field(default=FORMAT_VERSION, compare=False)  # the container format it was read from (not in the JSON)

    def to_json(self) -> bytes:
        """The fields but the codec name (the prefix holds it) and the version, sorted keys, no whitespace."""
        values = {k: v for k, v in asdict(self).items() if k not in ("codec", "version")}
        return json.dumps(values, sort_keys=True, separators=(",", ":")).encode()

    def to_bytes(self, dictionary: bytes) -> bytes:
        deflate = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, dictionary)
        return deflate.compress(self.to_json()) + deflate.flush()

    @classmethod
    def from_bytes(cls, data: bytes, dictionary: bytes, codec: str | None = None, version: int = FORMAT_VERSION) -> Header:
        """Inflate and parse; `codec` is the name from a format-2 or 3 prefix (format 1 has it in the JSON)."""
        try:
            inflate = zlib.decompressobj(-15, dictionary)
            text = inflate.decompress(data, MAX_HEADER_BYTES) + inflate.flush()
            if not inflate.eof or inflate.unused_data or inflate.unconsumed_tail:
                raise ValueError("header does not end where its length says")
            values = json.loads(text.decode())
            if "version" in values:
                raise ValueError("the JSON holds 'version'")
            header = cls(**values, version=version) if codec is None else cls(codec=codec, **values, version=version)
        except (zlib.error, ValueError, TypeError, KeyError) as err:  # KeyError: a duplicate "codec" key, as CPython reports it at times
            raise ContainerError(f"invalid header: {err}") from None
        header.check_types()
        return header

    def check_types(self) -> None:
        """The JSON types of the top-level fields (a CRC-valid header may still be crafted)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "version":
                continue
            if f.name == "packets":
                ok = value is None or (type(value) is int and 0 <= value <= 0xFFFFFFFF)
            else:
                ok = isinstance(value, dict if f.name in ("media", "coder", "extra") else str)
            if not ok:
                raise ContainerError(f"invalid header: field {f.name} = {value!r} has the wrong type (file is damaged)")


def _read_exactly(fo: IO[bytes], size: int, what: str) -> bytes:
    data = fo.read(size)
    if data is None or len(data) != size:
        raise TruncatedError(f"file is truncated: {what} needs {size} bytes")
    return data


def varint(n: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, the lowest first, the top bit set on every byte but the last."""
    if n < 0:
        raise ValueError(f"varint of a negative number {n}")
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varint(fo: IO[bytes], what: str, limit: int, end: bool = False) -> int:
    """A varint of at most `limit` in its shortest form; with `end`, -1 for the end marker `END`.

    Any other encoding (a longer form, a value above `limit`) is damage: one value has one encoding.
    """
    value = shift = 0
    while True:
        (byte,) = _read_exactly(fo, 1, what)
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80 or value > limit or shift >= 35:  # 5 bytes hold every limit (32 bits)
            break
    if end and shift == 14 and byte == value == 0:  # the two bytes of END
        return -1
    if byte >= 0x80 or value > limit or (byte == 0 and shift > 7):  # too long, too large, or a last byte of 0
        raise ContainerError(f"{what}: invalid varint (file is damaged)")
    return value


def _writable(version: int) -> None:
    if version not in (2, 3):  # format 1 had another prefix; its files are only read
        raise ValueError(f"this nmc writes container formats 2 and 3, not {version}")


def write_header(fo: IO[bytes], header: Header, dictionary: bytes, version: int = FORMAT_VERSION) -> None:
    """`dictionary` is the codec's `header_dict`; `version` 2 writes the header length as a uint32
    (golden files of that format, `scripts/rewrite_golden.py`)."""
    _writable(version)
    name = header.codec.encode()
    if not CODEC_NAME.fullmatch(name):
        raise ValueError(f"codec name {header.codec!r} is not 1-64 of [a-z0-9._-]")
    data = header.to_bytes(dictionary)
    checked = _U8.pack(len(name)) + name + (varint(len(data)) if version >= 3 else _U32.pack(len(data))) + data
    fo.write(MAGIC + _U8.pack(version) + checked + _U32.pack(zlib.crc32(checked)))


def read_header(fo: IO[bytes], dictionary: Callable[[str], bytes]) -> Header:
    """The header of a format 1, 2 or 3 file; `dictionary(name)` is codec `name`'s header dictionary."""
    first = fo.read(5) or b""
    if not first:
        raise ContainerError("empty file: not an .nmc file")
    if first[:4] != MAGIC and not MAGIC.startswith(first):
        raise ContainerError("not an .nmc file (bad magic bytes)")
    if len(first) < 5:
        raise TruncatedError("file is truncated inside the prefix")
    version = first[4]
    if version not in (1, 2, 3):
        raise ContainerError(f"unsupported .nmc format version {version} (this nmc reads 1 to 3)")
    name = b""
    if version >= 2:
        (n,) = _read_exactly(fo, 1, "codec name")
        name = _read_exactly(fo, n, "codec name")
        if not CODEC_NAME.fullmatch(name):
            raise ContainerError(f"codec name {name!r} is not valid (file is damaged)")
    if version == 3:
        length = read_varint(fo, "header length", MAX_HEADER_BYTES)
        raw_length = varint(length)  # the shortest form: the bytes read
    else:
        raw_length = _read_exactly(fo, 4, "prefix")
        (length,) = _U32.unpack(raw_length)
        if length > MAX_HEADER_BYTES:
            raise ContainerError(f"header length {length} is implausible (file is damaged)")
    data = _read_exactly(fo, length, "header")
    (crc,) = _U32.unpack(_read_exactly(fo, _U32.size, "header checksum"))
    checked = _U8.pack(len(name)) + name + raw_length + data if version >= 2 else data
    if zlib.crc32(checked) != crc:
        raise ContainerError("header checksum mismatch (file is damaged)")
    if version == 1:
        return Header.from_bytes(data, format1.HEADER_DICT, version=1)
    return Header.from_bytes(data, dictionary(name.decode()), name.decode(), version)


def frame(length: int, crc: int, version: int = FORMAT_VERSION) -> bytes:
    """What comes before a payload: its length (a varint; a uint32 before format 3) and its CRC32."""
    return varint(length) + _U32.pack(crc) if version >= 3 else _PACKET.pack(length, crc)


def end_record(count: int, version: int = FORMAT_VERSION) -> bytes:
    """The record after the last packet: `END` and the packet count (before format 3: `END_MARK` and the count as uint32s)."""
    return END + varint(count) if version >= 3 else _PACKET.pack(END_MARK, count)


class PacketWriter:
    """Writes packets after the header (format `version`, this nmc's by default) and closes the stream with the end record."""

    def __init__(self, fo: IO[bytes], version: int = FORMAT_VERSION) -> None:
        _writable(version)
        self.fo, self.version = fo, version
        self.count = 0

    def write(self, payload: bytes) -> None:
        if len(payload) > MAX_PACKET_BYTES:
            raise ValueError(f"packet of {len(payload)} bytes exceeds {MAX_PACKET_BYTES}")
        self.fo.write(frame(len(payload), zlib.crc32(payload), self.version) + payload)
        self.count += 1

    def close(self) -> None:
        self.fo.write(end_record(self.count, self.version))


def read_frame(fo: IO[bytes], index: int, version: int) -> tuple[int | None, int]:
    """(payload length, CRC32) of packet `index`, or (None, packet count) at the end record.

    The CRC is the last 4 bytes read in every format (`nmc eval --loss` rewrites it there)."""
    what = f"packet {index}"
    if version < 3:
        length, crc = _PACKET.unpack(_read_exactly(fo, _PACKET.size, what))
        if length == END_MARK:
            return None, crc
        if length > MAX_PACKET_BYTES:
            raise ContainerError(f"{what}: invalid length field (file is damaged)")
        return length, crc
    size = read_varint(fo, f"{what} length", MAX_PACKET_BYTES, end=True)
    if size < 0:
        return None, read_varint(fo, "end record's packet count", 0xFFFFFFFF)
    (crc,) = _U32.unpack(_read_exactly(fo, _U32.size, what))
    return size, crc


def read_packets(fo: IO[bytes], header: Header, tolerant: bool = False) -> Iterator[bytes | None]:
    """Yield the payloads after `header` (just read from `fo`) in order; a damaged packet raises,
    or yields None when `tolerant`. The header gives the format and the number of packets (if known).

    In tolerant mode a packet whose length field is damaged cannot be skipped reliably, so
    the rest of the stream is reported lost (None for each packet the header announced), and an
    end record whose count alone is damaged is accepted once every announced packet was read.
    """
    expected = header.packets
    index = 0
    while True:
        try:
            length, crc = read_frame(fo, index, header.version)
            if length is None:
                if tolerant and expected is not None and index < expected:
                    raise ContainerError(f"packet {index}: end record too early (file is damaged)")
                break
            if expected is not None and index >= expected:
                raise ContainerError(f"packet {index}: invalid length field (file is damaged)")
            payload = _read_exactly(fo, length, f"packet {index}")
        except ContainerError:
            if not tolerant or expected is None:
                raise
            yield from itertools.repeat(None, expected - index)
            return
        if zlib.crc32(payload) != crc:
            if not tolerant:
                raise ContainerError(f"packet {index}: checksum mismatch (file is damaged)")
            yield None
        else:
            yield payload
        index += 1
    if (crc != index and not (tolerant and index == expected)) or (expected is not None and index != expected):
        raise ContainerError(f"file has {index} packets but its end record or header says otherwise")
    if fo.read(1):
        raise ContainerError("unexpected data after the end record (file is damaged)")


def pack_streams(streams: list[bytes]) -> bytes:
    """Join byte strings into one packet payload, each prefixed by its uint32 length."""
    return b"".join(_U32.pack(len(s)) + s for s in streams)


def unpack_streams(payload: bytes, count: int) -> list[bytes]:
    """Inverse of `pack_streams`; the count comes from the codec's own layout."""
    streams, pos = [], 0
    for i in range(count):
        if pos + 4 > len(payload):
            raise ContainerError(f"packet too short for stream {i}")
        (n,) = _U32.unpack_from(payload, pos)
        pos += 4
        if pos + n > len(payload):
            raise ContainerError(f"packet too short for stream {i}")
        streams.append(payload[pos : pos + n])
        pos += n
    if pos != len(payload):
        raise ContainerError("packet has trailing bytes")
    return streams
