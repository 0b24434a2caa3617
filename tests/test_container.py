"""The .nmc container: round trips, the golden file, and every kind of damage."""

from __future__ import annotations

import hashlib
import io
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import CRAFTED_VALUES, damaged, refused_or_decoded, set_field, synthetic_image, with_header, with_payloads
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmc.codec import api
from nmc.codec.container import (
    FORMAT_VERSION,
    MAGIC,
    Header,
    PacketWriter,
    pack_streams,
    read_header,
    read_packets,
    unpack_streams,
    write_header,
)
from nmc.codec.errors import ContainerError, NmcError, TruncatedError

GOLDEN = Path(__file__).parent / "data" / "golden_toy.nmc"
GOLDEN_PIXELS_SHA256 = "958b6e4576fe45f0330f66f5816aec663a5ffb4bf45a17946c40fdcfb0178322"


def _header(packets: int | None = 2) -> Header:
    return Header("toy-image", "toy-image-v1", "ab" * 32, {"kind": "image", "width": 3, "height": 2}, "fine", {"coder": "range"}, packets, {"k": [1, 2]})


def _file(payloads: list[bytes], packets: int | None = None) -> bytes:
    fo = io.BytesIO()
    write_header(fo, _header(len(payloads) if packets is None else packets))
    w = PacketWriter(fo)
    for p in payloads:
        w.write(p)
    w.close()
    return fo.getvalue()


class TestRoundTrip:
    def test_header_and_packets(self) -> None:
        data = _file([b"abc", b"", b"\x00" * 1000])
        fo = io.BytesIO(data)
        assert read_header(fo) == _header(3)
        assert list(read_packets(fo, 3)) == [b"abc", b"", b"\x00" * 1000]

    def test_prefix_layout(self) -> None:
        data = _file([b"x"])
        magic, version, length = struct.unpack_from("<4sBI", data)
        assert (magic, version) == (MAGIC, FORMAT_VERSION)
        assert Header.from_bytes(data[9 : 9 + length]) == _header(1)
        assert length < len(_header(1).to_json()) / 2  # the preset dictionary makes headers small

    def test_streaming_header_without_count(self) -> None:
        fo = io.BytesIO(_file([b"a", b"b"], packets=None))
        fo2 = io.BytesIO(fo.getvalue())
        header = read_header(fo2)
        assert list(read_packets(fo2, header.packets)) == [b"a", b"b"]

    def test_streams(self) -> None:
        streams = [b"", b"12", b"x" * 70000]
        assert unpack_streams(pack_streams(streams), 3) == streams
        with pytest.raises(ContainerError):
            unpack_streams(pack_streams(streams)[:-1], 3)
        with pytest.raises(ContainerError):
            unpack_streams(pack_streams(streams) + b"!", 3)


class TestDamage:
    def test_empty(self) -> None:
        with pytest.raises(ContainerError, match="empty"):
            read_header(io.BytesIO(b""))

    def test_bad_magic(self) -> None:
        with pytest.raises(ContainerError, match="magic"):
            read_header(io.BytesIO(b"RIFF" + _file([b"a"])[4:]))

    def test_bad_version(self) -> None:
        data = bytearray(_file([b"a"]))
        data[4] = FORMAT_VERSION + 1
        with pytest.raises(ContainerError, match="version 2"):
            read_header(io.BytesIO(bytes(data)))

    def test_trailing_data(self) -> None:
        fo = io.BytesIO(_file([b"a"]) + b"\x00")
        with pytest.raises(ContainerError, match="after the end"):
            list(read_packets(fo, read_header(fo).packets))

    def test_tolerant_reports_lost_packets(self) -> None:
        data = bytearray(_file([b"aaaa", b"bbbb", b"cccc"]))
        data[data.index(b"bbbb")] ^= 1
        fo = io.BytesIO(bytes(data))
        assert list(read_packets(fo, read_header(fo).packets, tolerant=True)) == [b"aaaa", None, b"cccc"]

    def test_every_truncation_and_byte_flip_is_detected(self) -> None:
        data = api.compress("toy-image", synthetic_image(20, 24), "coarse")
        for cut in range(len(data)):
            with pytest.raises(ContainerError) as info:
                api.decompress(data[:cut])
            if cut >= 9:
                assert isinstance(info.value, TruncatedError) or "damaged" in str(info.value) or "header" in str(info.value)
        for pos in range(len(data)):
            bad = bytearray(data)
            bad[pos] ^= 0x5A
            with pytest.raises(NmcError):
                api.decompress(bytes(bad))

    @settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.data())
    def test_random_damage_never_decodes_silently(self, data) -> None:  # noqa: ANN001
        good = GOLDEN.read_bytes()
        expected = api.decompress(good).pixels
        edits = data.draw(st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(1, 255)), min_size=0, max_size=4))
        cut = data.draw(st.integers(0, len(good)))
        bad = bytearray(good[:cut])
        for pos, x in edits:
            if pos < len(bad):
                bad[pos] ^= x
        try:
            out = api.decompress(bytes(bad))
        except NmcError:
            return
        assert bytes(bad) == good and np.array_equal(out.pixels, expected)

    @settings(max_examples=150, deadline=None)
    @given(st.data())
    def test_crc_valid_payload_damage_is_refused_or_decoded(self, data) -> None:  # noqa: ANN001
        """Damage that passes the CRC reaches the decoder: a clean error, or pixels of the right shape."""
        packet = data.draw(st.integers(0, 2))
        bad = with_payloads(GOLDEN.read_bytes(), lambda i, p: data.draw(damaged(p)) if i == packet else p)
        try:
            out = api.decompress(bad)
        except NmcError:
            return
        assert out.pixels.shape == (40, 56, 3)
        refused_or_decoded(bad, ".png")

    @settings(max_examples=200, deadline=None)
    @given(st.sampled_from(["media.width", "media.height", "media.channels", "media.bit_depth", "media.kind", "extra.step", "extra.band",
                            "media", "extra", "packets", "setting", "codec", "model_id", "weights", "coder"]), CRAFTED_VALUES)  # fmt: skip
    def test_crafted_header_values_are_refused_or_decoded(self, key: str, value: object) -> None:
        refused_or_decoded(with_header(GOLDEN.read_bytes(), lambda h: set_field(h, key, value)), ".png")


def test_golden_file() -> None:
    """The checked-in file must keep decoding to the same pixels, and re-encode to the same bytes."""
    data = GOLDEN.read_bytes()
    header = read_header(io.BytesIO(data))
    assert (header.codec, header.model_id, header.setting, header.packets) == ("toy-image", "toy-image-v1", "fine", 3)
    assert header.media == {"kind": "image", "width": 56, "height": 40, "channels": 3, "bit_depth": 8}
    decoded = api.decompress(data)
    assert hashlib.sha256(decoded.pixels.tobytes()).hexdigest() == GOLDEN_PIXELS_SHA256
    # Re-encoding the decoded pixels (they re-quantize to the same symbols) gives the same file;
    # compared field by field because DEFLATE output may differ between zlib builds.
    again = io.BytesIO(api.compress("toy-image", decoded, "fine"))
    golden = io.BytesIO(data)
    assert read_header(again) == read_header(golden)
    assert list(read_packets(again, 3)) == list(read_packets(golden, 3))
