"""The .nmc container: fixed prefix, JSON header, CRC-checked packets. Byte layout: docs/FORMAT.md.

    prefix   magic b"\\x89NMC" | uint8 version | uint32 header length     (little endian)
    header   UTF-8 JSON object, raw-DEFLATE-compressed with the preset dictionary
             HEADER_DICT (headers cost tens of bytes: they matter at 1 kbit/s) |
             uint32 CRC32 of the compressed bytes
    packet*  uint32 payload length | uint32 CRC32 of payload | payload
    end      uint32 0xFFFFFFFF | uint32 number of packets

Each packet is entropy-decodable on its own, so a damaged one is detected (CRC) and can be
skipped by codecs that recover lost data; nothing after the end record is allowed.
"""

from __future__ import annotations

import itertools
import json
import struct
import zlib
from dataclasses import asdict, dataclass, field, fields
from typing import IO, Any, Iterator

from .errors import ContainerError, TruncatedError

MAGIC = b"\x89NMC"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<4sBI")
_U32 = struct.Struct("<I")
_PACKET = struct.Struct("<II")
END_MARK = 0xFFFFFFFF
MAX_HEADER_BYTES = 1 << 20
MAX_PACKET_BYTES = 1 << 28
# Part of format version 1: changing a single byte of it needs a new FORMAT_VERSION.
HEADER_DICT = (  # two typical headers, the most frequent last (DEFLATE codes near matches cheaper)
    b'{"codec":"mcquic","coder":{"coder":"range","library":"constriction","perfect":false,"version":"0.5.0"},'
    b'"extra":{"alpha":false,"codebook_size":256,"codebooks":[4,2,2,2],"dec_margin":10,"stages":2,"stride":16,"tile":1024},'
    b'"media":{"bit_depth":8,"channels":3,"height":512,"kind":"image","width":768},"model_id":"mcquic-v1","packets":1,'
    b'"setting":"q2","weights":"'
    b'{"codec":"hificodec","coder":{"coder":"range","library":"constriction","perfect":false,"version":"0.5.0"},'
    b'"extra":{"chunk_frames":1500,"codebook_size":1024,"codebooks":4,"frames":60,"groups":2,"hop":320},'
    b'"media":{"channels":1,"coded_channels":1,"coded_frames":16000,"coded_rate":16000,"frames":16000,"kind":"audio",'
    b'"sample_rate":16000},"model_id":"hificodec-16k-v1","packets":1,"setting":"2kbps","weights":"'
)
FORMAT_ID = f"nmc{FORMAT_VERSION}-{zlib.crc32(HEADER_DICT):08x}"  # changes with anything that changes the bytes


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

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    def to_bytes(self) -> bytes:
        deflate = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, HEADER_DICT)
        return deflate.compress(self.to_json()) + deflate.flush()

    @classmethod
    def from_bytes(cls, data: bytes) -> Header:
        try:
            inflate = zlib.decompressobj(-15, HEADER_DICT)
            text = inflate.decompress(data, MAX_HEADER_BYTES) + inflate.flush()
            if not inflate.eof or inflate.unused_data or inflate.unconsumed_tail:
                raise ValueError("header does not end where its length says")
            header = cls(**json.loads(text.decode()))
        except (zlib.error, ValueError, TypeError) as err:
            raise ContainerError(f"invalid header: {err}") from None
        header.check_types()
        return header

    def check_types(self) -> None:
        """The JSON types of the top-level fields (a CRC-valid header may still be crafted)."""
        for f in fields(self):
            value = getattr(self, f.name)
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


def write_header(fo: IO[bytes], header: Header) -> None:
    data = header.to_bytes()
    fo.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(data)))
    fo.write(data)
    fo.write(_U32.pack(zlib.crc32(data)))


def read_header(fo: IO[bytes]) -> Header:
    first = fo.read(_PREFIX.size) or b""
    if not first:
        raise ContainerError("empty file: not an .nmc file")
    if first[:4] != MAGIC and not MAGIC.startswith(first):
        raise ContainerError("not an .nmc file (bad magic bytes)")
    if len(first) < _PREFIX.size:
        raise TruncatedError("file is truncated inside the prefix")
    _, version, length = _PREFIX.unpack(first)
    if version != FORMAT_VERSION:
        raise ContainerError(f"unsupported .nmc format version {version} (this nmc reads {FORMAT_VERSION})")
    if length > MAX_HEADER_BYTES:
        raise ContainerError(f"header length {length} is implausible (file is damaged)")
    data = _read_exactly(fo, length, "header")
    (crc,) = _U32.unpack(_read_exactly(fo, _U32.size, "header checksum"))
    if zlib.crc32(data) != crc:
        raise ContainerError("header checksum mismatch (file is damaged)")
    return Header.from_bytes(data)


class PacketWriter:
    """Writes packets after the header and closes the stream with the end record."""

    def __init__(self, fo: IO[bytes]) -> None:
        self.fo = fo
        self.count = 0

    def write(self, payload: bytes) -> None:
        if len(payload) > MAX_PACKET_BYTES:
            raise ValueError(f"packet of {len(payload)} bytes exceeds {MAX_PACKET_BYTES}")
        self.fo.write(_PACKET.pack(len(payload), zlib.crc32(payload)))
        self.fo.write(payload)
        self.count += 1

    def close(self) -> None:
        self.fo.write(_PACKET.pack(END_MARK, self.count))


def read_packets(fo: IO[bytes], expected: int | None = None, tolerant: bool = False) -> Iterator[bytes | None]:
    """Yield packet payloads in order; a damaged packet raises, or yields None when `tolerant`.

    In tolerant mode a packet whose length field is damaged cannot be skipped reliably, so
    the rest of the stream is reported lost (None for each packet the header announced).
    """
    index = 0
    while True:
        try:
            length, crc = _PACKET.unpack(_read_exactly(fo, _PACKET.size, f"packet {index}"))
            if length == END_MARK:
                break
            if length > MAX_PACKET_BYTES or (expected is not None and index >= expected):
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
    if crc != index or (expected is not None and index != expected):
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
