"""The queen codec adapter: container packets and header fields, streaming, files on disk, damage."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from importlib.metadata import entry_points
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from conftest import CRAFTED_VALUES, damaged, open_stream, refused_or_decoded, set_field, with_header, with_payloads
from hypothesis import HealthCheck, given, settings, strategies as st
from test_cli import assert_user_error, files_in, run

from nmc.codec import api, splatting
from nmc.codec.api import header_dictionary
from nmc.codec.container import read_frame, read_header
from nmc.codec import media as M
from nmc.codec.errors import ContainerError, MediaError, NmcError
from nmc.codec.files import FRAMES_MARKER
from nmc.codec.registry import get_codec
from nmc.codec.threads import torch_threads
from nmc.models.queen import core, scenes
from nmc.models.queen.codec import QueenCodec

SAMPLE = Path(__file__).parent.parent / "samples" / "gaussians_queen"
GOLDEN = Path(__file__).parent / "data" / "queen_format2.nmc"
FAST = core.Settings(fit_rows=3000, fit_steps=40, gate_steps=40)  # lam comes from the setting

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def codec() -> QueenCodec:
    return QueenCodec(group=3, core=FAST)


@pytest.fixture(scope="module")
def sample() -> M.Gaussians:
    return M.read_gaussians(SAMPLE)


@pytest.fixture(scope="module")
def coded(codec: QueenCodec, sample: M.Gaussians) -> bytes:
    return encode(codec, sample, "q2")


@pytest.fixture
def fast_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed codec (what the command line uses) with the test's encoder effort."""
    queen = get_codec("queen")
    monkeypatch.setattr(queen, "_core", FAST)
    monkeypatch.setattr(queen, "group", 3)


def encode(codec: QueenCodec, seq: M.Gaussians, setting: str) -> bytes:
    buf = io.BytesIO()
    api.compress_to_file(codec, seq, buf, codec.setting(setting))
    return buf.getvalue()


def render_psnr(a: np.ndarray, b: np.ndarray, layout: M.GaussianLayout) -> float:
    cam = scenes.held_out_cameras((48, 36), 1)[0]
    return splatting.psnr(splatting.render(a, layout, cam), splatting.render(b, layout, cam))


class TestInterface:
    def test_registered_for_ply_sequences(self) -> None:
        assert "queen" in [ep.name for ep in entry_points(group="nmc.codecs")]
        assert api.resolve_codec("auto", M.media_kind(SAMPLE)).name == "queen"
        rates = [s.rate for s in get_codec("queen").settings()]
        assert rates == sorted(rates) and get_codec("queen").default().name == "q2"

    def test_header(self, coded: bytes, sample: M.Gaussians) -> None:
        header, packets = open_stream(coded)
        assert header.media == {"kind": "gaussians", "frame_count": 4, "names": sample.names, "gaussians": 256}
        assert header.extra == {"group": 3, "normals": True, "sh_degree": 3} and header.weights == "none"
        assert len(packets) == header.packets == 4 + 2  # two groups: a header packet each, then the frames

    def test_settings_come_from_lam(self, codec: QueenCodec, sample: M.Gaussians, coded: bytes) -> None:
        lams = [s.lam for s in codec.settings()]  # type: ignore[attr-defined]
        assert lams == sorted(lams, reverse=True)
        low, high = coded, encode(codec, sample, "q4")
        frames = list(sample.frames())
        err = [np.mean([((a - b) ** 2).mean() for a, b in zip(frames, api.decompress(d).frames())]) for d in (low, high)]
        assert len(low) < len(high) and err[0] > err[1]


class TestRoundTrip:
    def test_frames_names_and_quality(self, coded: bytes, sample: M.Gaussians) -> None:
        out = api.decompress(coded)
        assert out.names == sample.names and out.layout == sample.layout and out.counts == [256] * 4
        frames = list(out.frames())
        assert len(frames) == 4 and frames[0].dtype == np.float32
        assert min(render_psnr(a, b, sample.layout) for a, b in zip(sample.frames(), frames)) > 35

    @pytest.mark.parametrize("degree, normals", [(0, False), (1, True)])
    def test_other_layouts(self, codec: QueenCodec, degree: int, normals: bool) -> None:
        layout = M.GaussianLayout(degree, normals)
        frames = list(scenes.generate(scenes.SceneConfig(gaussians=120, frames=2, sh_degree=degree)))
        out = api.decompress(encode(codec, M.Gaussians.from_matrices(layout, frames), "q4"))
        assert out.layout == layout
        assert min(render_psnr(a, b, layout) for a, b in zip(frames, out.frames(), strict=True)) > 35

    def test_same_bytes_whatever_the_thread_count(self, codec: QueenCodec, sample: M.Gaussians, coded: bytes) -> None:
        with torch_threads(2):
            assert encode(codec, sample, "q2") == coded


class TestStreaming:
    def test_encoder_holds_one_group(self, codec: QueenCodec, sample: M.Gaussians, monkeypatch: pytest.MonkeyPatch) -> None:
        """The adapter pulls the frames of one group, codes it, and hands out its packets before reading on."""
        class Recorder:
            def __init__(self, *args: object) -> None:
                pass

            def encode_group(self, frames: list[np.ndarray]) -> core.EncodedGroup:
                return core.EncodedGroup(b"G", [b"f"] * len(frames))

        monkeypatch.setattr(core, "GroupEncoder", Recorder)  # the codec imports it when it encodes
        frames, pulled = list(sample.frames()) * 2, []

        def counted() -> Iterator[np.ndarray]:
            for t, m in enumerate(frames):
                pulled.append(t)
                yield m

        encoded = codec.encode(M.Gaussians(sample.layout, [f"f{t}.ply" for t in range(8)], [256] * 8, counted), codec.setting("q1"))
        seen = [(packet, len(pulled)) for packet in encoded.packets]
        assert encoded.packet_count == len(seen) == 11
        assert seen == [(b"G", 3)] + [(b"f", 3)] * 3 + [(b"G", 6)] + [(b"f", 6)] * 3 + [(b"G", 8)] + [(b"f", 8)] * 2

    def test_decoder_yields_each_frame_from_its_packets(self, coded: bytes) -> None:
        """Frame t is decoded once the packets up to it are read, not after the whole file."""
        buf, ends = io.BytesIO(coded), []  # where each packet ends in the file
        version = read_header(buf, header_dictionary).version
        for i in range(len(open_stream(coded)[1])):
            length, _ = read_frame(buf, i, version)
            buf.seek(length or 0, io.SEEK_CUR)
            ends.append(buf.tell())
        buf.seek(0)
        frames = api.decompress_from_file(buf).media.frames()
        next(frames)
        assert buf.tell() == ends[1]  # G0 and f0
        assert len(list(frames)) == 3 and buf.tell() == len(coded)

    def test_changing_count_is_refused_before_coding(self, codec: QueenCodec, sample: M.Gaussians) -> None:
        frames = list(sample.frames())
        seq = M.Gaussians.from_matrices(sample.layout, [frames[0], frames[1][:200]], ["a.ply", "b.ply"])
        with pytest.raises(MediaError, match="b.ply holds 200 Gaussians, a.ply 256: queen codes a constant set"):
            codec.encode(seq, codec.setting("q1"))


@pytest.mark.usefixtures("fast_registry")
class TestFiles:
    def test_cli_round_trip_and_info(self, capsys, tmp_path: Path) -> None:  # noqa: ANN001
        nmc, out = tmp_path / "x.nmc", tmp_path / "decoded"
        run(capsys, "compress", str(SAMPLE), "-o", str(nmc))
        code, _, _ = run(capsys, "decompress", str(nmc), "-o", str(out))
        assert code == 0 and files_in(out) == {f"frame_{t:04d}.ply" for t in range(4)} | {FRAMES_MARKER}
        assert M.read_gaussians(out).names == M.read_gaussians(SAMPLE).names
        code, text, _ = run(capsys, "info", str(nmc), "--json")
        info = json.loads(text)
        assert code == 0 and info["codec"] == "queen" and info["media"]["gaussians"] == 256 and info["unit"] == "MB/frame"
        assert info["packet_count"] == 6 and info["file_bytes"] == nmc.stat().st_size

    def test_default_output_and_force(self, capsys, tmp_path: Path, coded: bytes) -> None:  # noqa: ANN001
        seq = tmp_path / "seq"
        (tmp_path / "seq.nmc").write_bytes(coded)
        run(capsys, "decompress", str(tmp_path / "seq.nmc"))  # seq.nmc -> seq/
        assert len(M.read_gaussians(seq).names) == 4
        assert_user_error(run(capsys, "decompress", str(tmp_path / "seq.nmc")), "already exists")
        assert run(capsys, "decompress", str(tmp_path / "seq.nmc"), "--force")[0] == 0  # nmc's own, unchanged
        (seq / "notes.txt").write_text("mine")
        assert_user_error(run(capsys, "decompress", str(tmp_path / "seq.nmc"), "--force"), "is a directory that nmc did not write")
        assert (seq / "notes.txt").read_text() == "mine" and len(M.read_gaussians(seq).names) == 4
        assert_user_error(run(capsys, "decompress", str(tmp_path / "seq.nmc"), "-o", str(SAMPLE.parent), "--force"), "is a directory")

    def test_single_frame(self, capsys, tmp_path: Path, coded: bytes) -> None:  # noqa: ANN001
        one = tmp_path / "one.ply"
        shutil.copy(SAMPLE / "frame_0001.ply", one)
        run(capsys, "compress", str(one), "-o", str(tmp_path / "one.nmc"))
        run(capsys, "decompress", str(tmp_path / "one.nmc"), "-o", str(tmp_path / "back.ply"))
        assert M.read_gaussians(tmp_path / "back.ply").counts == [256]
        (tmp_path / "four.nmc").write_bytes(coded)
        assert_user_error(run(capsys, "decompress", str(tmp_path / "four.nmc"), "-o", str(tmp_path / "four.ply")), "written to a directory")
        assert not (tmp_path / "four.ply").exists()

    @pytest.mark.parametrize("defect, message", [
        ("nan", "frame_0002.ply: NaN or infinite values in ['opacity']"),
        ("attributes", "frame_0003.ply: attributes differ from frame_0000.ply"),
        ("count", "frame_0001.ply holds 255 Gaussians"),
        ("empty", "holds no .ply frames"),
        ("not 3dgs", "not a 3DGS frame"),
    ])  # fmt: skip
    def test_bad_sequences(self, capsys, tmp_path: Path, defect: str, message: str) -> None:  # noqa: ANN001
        seq = tmp_path / "seq"
        seq.mkdir()
        layout, frames = M.GaussianLayout(3), list(M.read_gaussians(SAMPLE).frames())
        if defect == "nan":
            frames[2][7, layout.slices()["opacity"]] = np.nan
        elif defect == "count":
            frames[1] = frames[1][:-1]
        if defect not in ("empty", "not 3dgs"):
            M.write_gaussians(seq, M.Gaussians.from_matrices(layout, frames))
        if defect == "attributes":
            M.write_gaussians(seq / "frame_0003.ply", M.Gaussians.from_matrices(M.GaussianLayout(1), [frames[3][:, :23]]))
        elif defect == "not 3dgs":
            M.write_gaussians(seq / "a.ply", M.Gaussians.from_matrices(layout, frames[:1]))
            (seq / "a.ply").write_bytes((seq / "a.ply").read_bytes().replace(b"property float rot_3", b"property float rot_x"))
        before = files_in(tmp_path)
        assert_user_error(run(capsys, "compress", str(seq), "-o", str(tmp_path / "x.nmc")), message)
        assert files_in(tmp_path) == before


class TestDamage:
    def test_packets_and_groups_are_checked(self, coded: bytes) -> None:
        with pytest.raises(ContainerError, match="queen packet 1"):
            list(api.decompress(with_payloads(coded, lambda i, p: p[:-4] if i == 1 else p)).frames())
        header_first = with_payloads(coded, lambda i, p: open_stream(coded)[1][0] if i == 1 else p)  # type: ignore[return-value]
        with pytest.raises(ContainerError):
            list(api.decompress(header_first).frames())

    def test_header_count_bounds_the_allocation(self, coded: bytes) -> None:
        """A header claiming more Gaussians than the packets hold is refused before the state is allocated."""
        lying = with_header(coded, lambda h: h["media"].update(gaussians=8_000_000))
        with pytest.raises(ContainerError, match="8000000"):
            list(api.decompress(lying).frames())

    def test_lost_packet_is_an_error(self, coded: bytes) -> None:
        bad = bytearray(coded)
        bad[-30] ^= 1
        with pytest.raises(MediaError, match="cannot recover"):
            api.decompress(bytes(bad), recover=True)
        with pytest.raises(ContainerError, match="checksum"):
            list(api.decompress(bytes(bad)).frames())


class TestProperties:
    """Damage that passes the CRCs: a clean NmcError, or frames of the announced shape."""

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.data())
    def test_crc_valid_payload_damage(self, coded: bytes, data) -> None:  # noqa: ANN001
        packet = data.draw(st.integers(0, 5))
        bad = with_payloads(coded, lambda i, p: data.draw(damaged(p)) if i == packet else p)
        try:
            frames = list(api.decompress(bad).frames())
        except NmcError:
            return
        assert len(frames) == 4 and all(f.shape == (256, 59) for f in frames)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.sampled_from([f"media.{k}" for k in ("frame_count", "names", "gaussians", "kind")]
                           + [f"extra.{k}" for k in ("group", "sh_degree", "normals")] + ["packets", "setting"]),
           CRAFTED_VALUES | st.sampled_from([["../x.ply"] * 4, ["a.ply", "b.ply", "c.ply", "/tmp/d.ply"]]))  # fmt: skip
    def test_crafted_header_values(self, coded: bytes, key: str, value: object) -> None:
        refused_or_decoded(with_header(coded, lambda h: set_field(h, key, value)), "")


def test_golden_file() -> None:
    """tests/data/queen_format2.nmc (samples/gaussians_queen frames 0-2 at q2, groups of 2, FAST)
    decodes to the same frames: the format and the decoder are pinned (integer state: any machine)."""
    out = api.decompress(GOLDEN.read_bytes())
    assert out.names == ["frame_0000.ply", "frame_0001.ply", "frame_0002.ply"]
    digest = hashlib.sha256(b"".join(f.astype("<f4").tobytes() for f in out.frames())).hexdigest()
    assert digest == "722b33221e4bc4575bf1cebea001064f34738ece993ccb0d57904db0f61a561d"
