"""The .nmc container: round trips, the golden file, and every kind of damage."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import CRAFTED_VALUES, damaged, refused_or_decoded, set_field, synthetic_image, with_header, with_payloads
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmc.codec import api
from nmc.codec.api import header_dictionary
from nmc.codec.container import (
    END,
    FORMAT_VERSION,
    MAGIC,
    Header,
    PacketWriter,
    pack_streams,
    read_header,
    read_packets,
    read_varint,
    unpack_streams,
    varint,
    write_header,
)
from nmc.codec.errors import CodecNotFoundError, ContainerError, NmcError, TruncatedError
from nmc.codec.registry import get_codec

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "toy_format3.nmc"  # written by this nmc (format 3)
GOLDEN_V2 = DATA / "toy_format2.nmc"  # written before format 3 (until 2026-12-02): the same image and packets
GOLDEN_V1 = DATA / "toy_format1.nmc"  # written before format 2: the same image and packets
GOLDEN_PIXELS_SHA256 = "958b6e4576fe45f0330f66f5816aec663a5ffb4bf45a17946c40fdcfb0178322"
TOY_DICT = get_codec("toy-image").header_dict


def _header(packets: int | None = 2) -> Header:
    return Header("toy-image", "toy-image-v1", "ab" * 32, {"kind": "image", "width": 3, "height": 2}, "fine", {"coder": "range"}, packets, {"k": [1, 2]})


def _file(payloads: list[bytes], streamed: bool = False) -> bytes:
    """A file of these payloads; `streamed`: its header does not count them (packets = None)."""
    fo = io.BytesIO()
    write_header(fo, _header(None if streamed else len(payloads)), TOY_DICT)
    w = PacketWriter(fo)
    for p in payloads:
        w.write(p)
    w.close()
    return fo.getvalue()


class TestRoundTrip:
    def test_header_and_packets(self) -> None:
        data = _file([b"abc", b"", b"\x00" * 1000])
        fo = io.BytesIO(data)
        header = read_header(fo, header_dictionary)
        assert header == _header(3) and header.version == FORMAT_VERSION
        assert list(read_packets(fo, header)) == [b"abc", b"", b"\x00" * 1000]

    def test_prefix_layout(self) -> None:
        """magic | version 3 | name length | name | varint header length | header | CRC of all after the version."""
        data = _file([b"x"])
        magic, version, n = struct.unpack_from("<4sBB", data)
        assert (magic, version, data[6 : 6 + n]) == (MAGIC, FORMAT_VERSION, b"toy-image")
        length = data[6 + n]  # one byte: below 128
        assert Header.from_bytes(data[7 + n : 7 + n + length], TOY_DICT, "toy-image") == _header(1)
        assert struct.unpack_from("<I", data, 7 + n + length)[0] == zlib.crc32(data[5 : 7 + n + length])
        assert b'"codec"' not in _header(1).to_json() and b'"version"' not in _header(1).to_json()  # the prefix holds them
        assert length < len(_header(1).to_json()) / 2  # the preset dictionary makes headers small

    def test_packet_layout(self) -> None:
        """varint length | CRC32 | payload per packet, then END | varint count."""
        payloads = [b"x" * 127, b"y" * 128, b""]
        data = _file(payloads)
        fo = io.BytesIO(data)
        read_header(fo, header_dictionary)
        body = b"".join(varint(len(p)) + struct.pack("<I", zlib.crc32(p)) + p for p in payloads)
        assert data[fo.tell() :] == body + b"\x80\x00\x03" and END == b"\x80\x00"
        assert len(body) == 3 * 4 + 1 + 2 + 1 + 255

    def test_varints(self) -> None:
        for n, want in [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (16383, b"\xff\x7f"), (16384, b"\x80\x80\x01"),
                        (2**28, b"\x80\x80\x80\x80\x01"), (2**32 - 1, b"\xff\xff\xff\xff\x0f")]:  # fmt: skip
            assert varint(n) == want
            assert read_varint(io.BytesIO(want), "x", 2**32 - 1) == n
        assert read_varint(io.BytesIO(END), "x", 10, end=True) == -1
        for bad in [END, b"\x81\x00", b"\x80\x80\x00", b"\xff\xff\xff\xff\x10", b"\x80" * 40 + b"\x01", b"\x8b\x01"]:
            with pytest.raises(ContainerError, match="invalid varint") as info:  # a longer form or above the limit: damage
                read_varint(io.BytesIO(bad), "x", 2**32 - 1 if bad[0] != 0x8B else 138)
            assert not isinstance(info.value, TruncatedError)
        with pytest.raises(TruncatedError):
            read_varint(io.BytesIO(b"\x80"), "x", 1000)

    def test_each_codec_brings_its_dictionary(self) -> None:
        header = Header("toy-image", "toy-image-v1", "ab" * 8, {"kind": "image", "width": 56, "height": 40, "channels": 3, "bit_depth": 8},
                        "fine", api.CODER_INFO, 3, {"band": 16, "step": 4})  # fmt: skip
        assert len(header.to_bytes(TOY_DICT)) < len(header.to_bytes(b"")) / 3
        with pytest.raises(ContainerError, match="invalid header"):
            Header.from_bytes(header.to_bytes(TOY_DICT), get_codec("toy-audio").header_dict, "toy-image")

    def test_codec_name_is_read_before_the_header_is_inflated(self) -> None:
        fo = io.BytesIO()
        write_header(fo, dataclasses.replace(_header(), codec="toy-video"), TOY_DICT)  # a codec this nmc does not have
        with pytest.raises(CodecNotFoundError, match="unknown codec 'toy-video'"):
            read_header(io.BytesIO(fo.getvalue()), header_dictionary)

    def test_format2_json_must_not_name_the_codec(self) -> None:
        bad = with_header(_file([b"a"]), lambda h: h.update(codec=1))  # not a name: it stays in the JSON
        with pytest.raises(ContainerError, match="invalid header"):
            read_header(io.BytesIO(bad), header_dictionary)

    def test_streaming_header_without_count(self) -> None:
        fo = io.BytesIO(_file([b"a", b"b"], streamed=True))
        fo2 = io.BytesIO(fo.getvalue())
        header = read_header(fo2, header_dictionary)
        assert header.packets is None and list(read_packets(fo2, header)) == [b"a", b"b"]

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
            read_header(io.BytesIO(b""), header_dictionary)

    def test_bad_magic(self) -> None:
        with pytest.raises(ContainerError, match="magic"):
            read_header(io.BytesIO(b"RIFF" + _file([b"a"])[4:]), header_dictionary)

    def test_bad_version(self) -> None:
        data = bytearray(_file([b"a"]))
        data[4] = FORMAT_VERSION + 1
        with pytest.raises(ContainerError, match=f"version {FORMAT_VERSION + 1}"):
            read_header(io.BytesIO(bytes(data)), header_dictionary)

    @pytest.mark.parametrize("streamed", [False, True])
    @pytest.mark.parametrize("extra", [b"\x00", b"\x80\x00\x01", b"junk" * 9])
    def test_trailing_data(self, streamed: bool, extra: bytes) -> None:
        fo = io.BytesIO(_file([b"a"], streamed) + extra)
        with pytest.raises(ContainerError, match="after the end"):
            list(read_packets(fo, read_header(fo, header_dictionary)))

    @pytest.mark.parametrize("streamed", [False, True])
    @pytest.mark.parametrize("tolerant", [False, True])
    def test_every_cut_is_refused(self, streamed: bool, tolerant: bool) -> None:
        """A file cut at any byte, a packet boundary included, is refused; under --recover with a
        counted header the missing packets are reported lost, and a cut end record is accepted."""
        data = _file([b"aaaa", b"b" * 200, b""], streamed)
        for cut in range(len(data)):
            fo = io.BytesIO(data[:cut])
            try:
                header = read_header(fo, header_dictionary)
                got = list(read_packets(fo, header, tolerant))
            except ContainerError:
                continue
            assert tolerant and not streamed and len(got) == 3 and (None in got[1:] or cut >= len(data) - len(END) - 1), cut  # the end record (3 bytes) cut

    def test_a_dropped_or_repeated_packet_is_refused(self) -> None:
        """Whole packets cut out or repeated keep every CRC valid: the header's and the end record's counts catch it."""
        for streamed in (False, True):
            data = _file([b"aaaa", b"bbbb", b"cccc"], streamed)
            fo = io.BytesIO(data)
            read_header(fo, header_dictionary)
            start = fo.tell()
            frame = data[start : start + 9]
            for bad in (data[:start] + data[start + 9 :], data[:start] + frame + data[start:]):
                fo = io.BytesIO(bad)
                with pytest.raises(ContainerError, match="end record or header|invalid length field"):
                    list(read_packets(fo, read_header(fo, header_dictionary)))

    def test_tolerant_reports_lost_packets(self) -> None:
        data = bytearray(_file([b"aaaa", b"bbbb", b"cccc"]))
        data[data.index(b"bbbb")] ^= 1
        fo = io.BytesIO(bytes(data))
        assert list(read_packets(fo, read_header(fo, header_dictionary), tolerant=True)) == [b"aaaa", None, b"cccc"]

    def test_tolerant_damaged_length_and_end_count(self) -> None:
        data = _file([b"aaaa", b"bbbb", b"cccc"])
        bad = bytearray(data)
        bad[data.index(b"bbbb") - 5] = 0x80  # packet 1's length: now a two-byte varint that is no packet
        fo = io.BytesIO(bytes(bad))
        assert list(read_packets(fo, read_header(fo, header_dictionary), tolerant=True)) == [b"aaaa", None, None]
        for count in (b"\x07", b"\x83\x00", b"\xff"):  # a wrong count, a longer form, a cut varint
            fo = io.BytesIO(data[:-1] + count)
            header = read_header(fo, header_dictionary)
            assert list(read_packets(fo, header, tolerant=True)) == [b"aaaa", b"bbbb", b"cccc"]
            fo.seek(0)
            with pytest.raises(ContainerError):
                list(read_packets(fo, read_header(fo, header_dictionary)))

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

    @pytest.mark.parametrize("golden", [GOLDEN, GOLDEN_V2, GOLDEN_V1], ids=["format3", "format2", "format1"])
    @settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.data())
    def test_random_damage_never_decodes_silently(self, golden: Path, data) -> None:  # noqa: ANN001
        good = golden.read_bytes()
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


def test_golden_files() -> None:
    """The checked-in files of every format keep decoding to the same pixels and hold the same packets;
    this nmc re-encodes them to the format-3 file (compared field by field: DEFLATE output may differ
    between zlib builds)."""
    headers, packets = [], []
    for version, path in ((1, GOLDEN_V1), (2, GOLDEN_V2), (3, GOLDEN)):
        data = path.read_bytes()
        fo = io.BytesIO(data)
        header = read_header(fo, header_dictionary)
        assert (data[4], header.version, header.codec, header.model_id, header.setting, header.packets) == (version, version, "toy-image", "toy-image-v1", "fine", 3)
        assert header.media == {"kind": "image", "width": 56, "height": 40, "channels": 3, "bit_depth": 8}
        packets.append(list(read_packets(fo, header)))
        decoded = api.decompress(data)
        assert hashlib.sha256(decoded.pixels.tobytes()).hexdigest() == GOLDEN_PIXELS_SHA256
        headers.append(header)
    assert packets[0] == packets[1] == packets[2]
    assert [len(p.read_bytes()) for p in (GOLDEN_V2, GOLDEN)] == [47 + 3 * 8 + 2904 + 8, 44 + 3 * 6 + 2904 + 3]  # the framing of formats 2 and 3
    again = io.BytesIO(api.compress("toy-image", decoded, "fine"))
    header = read_header(again, header_dictionary)
    assert header == headers[0] == headers[1] == headers[2] and header.version == FORMAT_VERSION
    assert list(read_packets(again, header)) == packets[2]
