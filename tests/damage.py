"""Damaged .nmc files whose CRCs still match, so that only the decoder can notice: header fields
edited, packet payloads replaced. Used by the property tests and by scripts/fuzz.py."""

from __future__ import annotations

import io
import json
import struct
import zlib
from typing import Any, Callable

from nmc.codec.api import header_dictionary
from nmc.codec.container import CODEC_NAME, MAGIC, frame, read_frame, read_header, read_varint, varint
from nmc.codec.format1 import HEADER_DICT as FORMAT1_DICT


def _header_span(data: bytes) -> tuple[int, int, int, str | None]:
    """(offset of the header length field, its size, the header length, codec name of a format-2 or 3 prefix)."""
    if data[4] == 1:
        return 5, 4, struct.unpack_from("<I", data, 5)[0], None
    n = data[5]
    if data[4] == 2:
        return 6 + n, 4, struct.unpack_from("<I", data, 6 + n)[0], data[6 : 6 + n].decode()
    fo = io.BytesIO(data[6 + n :])
    length = read_varint(fo, "header length", 1 << 20)
    return 6 + n, fo.tell(), length, data[6 : 6 + n].decode()


def with_header(data: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """The same file with its JSON header edited and a valid CRC: damage only the decoder can notice.

    `edit` sees every field, `codec` included; in format 2 or 3 a new codec name that fits the prefix
    goes there, any other value into the JSON (which a reader refuses)."""
    at, size, n, name = _header_span(data)
    dictionary = FORMAT1_DICT if name is None else header_dictionary(name)
    inflate = zlib.decompressobj(-15, dictionary)
    fields = json.loads(inflate.decompress(data[at + size : at + size + n]) + inflate.flush())
    if name is not None:
        fields["codec"] = name
    edit(fields)
    if name is not None and isinstance(fields.get("codec"), str) and CODEC_NAME.fullmatch(fields["codec"].encode("utf-8", "replace")):
        name = fields.pop("codec")
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, dictionary)
    body = deflate.compress(json.dumps(fields).encode()) + deflate.flush()
    rest = data[at + size + n + 4 :]
    if name is None:
        return data[:5] + struct.pack("<I", len(body)) + body + struct.pack("<I", zlib.crc32(body)) + rest
    length = struct.pack("<I", len(body)) if data[4] == 2 else varint(len(body))
    checked = bytes([len(name)]) + name.encode() + length + body
    return MAGIC + data[4:5] + checked + struct.pack("<I", zlib.crc32(checked)) + rest


def with_payloads(data: bytes, edit: Callable[[int, bytes], bytes]) -> bytes:
    """The same file (any format) with packet i's payload replaced by edit(i, payload), CRCs recomputed."""
    fo = io.BytesIO(data)
    version = read_header(fo, header_dictionary).version
    out, i = [data[: fo.tell()]], 0
    while True:
        pos = fo.tell()
        length, _ = read_frame(fo, i, version)
        if length is None:
            return b"".join(out) + data[pos:]
        payload = edit(i, fo.read(length))
        out.append(frame(len(payload), zlib.crc32(payload), version) + payload)
        i += 1


def coded_streams(payload: bytes) -> list[tuple[int, int]]:
    """(offset, length) of the streams after the first of a `pack_streams` payload with 8+ bytes
    (the range-coded ones of the real codecs); [] when the payload is not laid out that way."""
    out, pos = [], 0
    while pos + 4 <= len(payload):
        (n,) = struct.unpack_from("<I", payload, pos)
        out.append((pos + 4, n))
        pos += 4 + n
    return [(a, n) for a, n in out[1:] if n >= 8] if pos == len(payload) else []
