"""Damaged .nmc files whose CRCs still match, so that only the decoder can notice: header fields
edited, packet payloads replaced. Used by the property tests and by scripts/fuzz.py."""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any, Callable

from nmc.codec.container import END_MARK, HEADER_DICT


def with_header(data: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """The same file with its JSON header edited and a valid CRC: damage only the decoder can notice."""
    (n,) = struct.unpack_from("<I", data, 5)
    inflate = zlib.decompressobj(-15, HEADER_DICT)
    fields = json.loads(inflate.decompress(data[9 : 9 + n]) + inflate.flush())
    edit(fields)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, HEADER_DICT)
    body = deflate.compress(json.dumps(fields).encode()) + deflate.flush()
    return data[:5] + struct.pack("<I", len(body)) + body + struct.pack("<I", zlib.crc32(body)) + data[9 + n + 4 :]


def with_payloads(data: bytes, edit: Callable[[int, bytes], bytes]) -> bytes:
    """The same file with packet i's payload replaced by edit(i, payload), CRCs recomputed."""
    (n,) = struct.unpack_from("<I", data, 5)
    pos, out, i = 9 + n + 4, [data[: 9 + n + 4]], 0
    while True:
        length, crc = struct.unpack_from("<II", data, pos)
        if length == END_MARK:
            return b"".join(out) + data[pos:]
        payload = edit(i, data[pos + 8 : pos + 8 + length])
        out.append(struct.pack("<II", len(payload), zlib.crc32(payload)) + payload)
        pos, i = pos + 8 + length, i + 1


def coded_streams(payload: bytes) -> list[tuple[int, int]]:
    """(offset, length) of the streams after the first of a `pack_streams` payload with 8+ bytes
    (the range-coded ones of the real codecs); [] when the payload is not laid out that way."""
    out, pos = [], 0
    while pos + 4 <= len(payload):
        (n,) = struct.unpack_from("<I", payload, pos)
        out.append((pos + 4, n))
        pos += 4 + n
    return [(a, n) for a, n in out[1:] if n >= 8] if pos == len(payload) else []
