"""The vqgan codec: settings from the weights, round trips of every image mode and size, tiles
without seams, interleaved packets that decode alone, bit-identical files across thread counts,
the target-bpp and `--codec auto` choices, damaged files and crafted headers, and the
export -> ladder -> fit_prior -> codec path. Uses weights built here: a random network of the
shipped architecture (two rungs, one with its own decoder) and random integer priors."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
import typer
from conftest import CRAFTED_VALUES, damaged, open_stream, photo, refused_or_decoded, set_field, with_header, with_payloads
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nmc.codec import api, registry
from nmc.codec import entropy as E
from nmc.codec import loss as L
from nmc.codec import media as M
from nmc.codec.errors import CodecNotFoundError, ContainerError, MediaError, NmcError
from nmc.codec.prior import ContextPrior, PriorSet
from nmc.codec.weights import Weights, read_weights, write_weights
from nmc.models.vqgan import codec as V
from nmc.models.vqgan import packets as P
from nmc.models.vqgan.network import Ladder, VQGANArgs, export_tensors
from nmc.models.vqgan.tiling import tile_indices
from PIL import Image

SAMPLES = Path(__file__).parent.parent / "samples"
ARGS = VQGANArgs(codebook_size=256)  # the shipped architecture with a smaller base codebook
RUNGS = {16: False, 64: True}  # rung 64 has its own decoder


def random_prior(sizes: list[int], seed: int = 0) -> PriorSet:
    rng = np.random.default_rng(seed)

    def one(K: int) -> ContextPrior:
        return ContextPrior(rng.integers(-64, 64, K).astype(np.int32), [rng.integers(-127, 128, (K + 1, 8)).astype(np.int8) for _ in range(3)],
                            [rng.integers(-127, 128, (8, K)).astype(np.int8) for _ in range(3)], np.full(3, 30, np.int64))  # fmt: skip

    return PriorSet([one(K) for K in sizes], [E.freqs_from_counts(rng.random(K) ** 4) for K in sizes])


@pytest.fixture(scope="session")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random network whose base codebook holds pairs of codes 1e-6 apart: the choice within a pair
    hangs on the last bits of the latent, so a thread-dependent summation order shows in the indices."""
    torch.manual_seed(0)
    net = Ladder(ARGS, RUNGS).eval()
    half = torch.nn.functional.normalize(torch.randn(ARGS.codebook_size // 2, ARGS.code_dim), dim=1)
    with torch.no_grad():
        net.vq.codebook.copy_(torch.cat([half, half + 1e-6 * torch.randn_like(half)]))
    path = tmp_path_factory.mktemp("vqgan") / "random.safetensors"
    write_weights(path, Weights(export_tensors(net), net.model_args(), random_prior(net.sizes)))
    return path


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="session")
def codec(weights: Path) -> V.VQGANCodec:
    return V.VQGANCodec(weights)


@pytest.fixture(scope="module")
def installed(weights: Path) -> Iterator[None]:
    """The test weights as the installed ones (what the registry, `--codec auto` and the file API use)."""
    before = V.VQGANCodec.weights_path
    V.VQGANCodec.weights_path = weights
    registry.get_codec.cache_clear()
    yield
    V.VQGANCodec.weights_path = before
    registry.get_codec.cache_clear()


def encode(codec: V.VQGANCodec, pixels: np.ndarray, setting: str = "s64") -> bytes:
    buf = io.BytesIO()
    api.compress_to_file(codec, M.Image(pixels), buf, codec.setting(setting))
    return buf.getvalue()


def decode(codec: V.VQGANCodec, data: bytes) -> np.ndarray:
    return api.decompress(data, codec=codec).pixels


class TestInterface:
    def test_settings_are_the_weights_codebooks(self, codec: V.VQGANCodec) -> None:
        assert [(s.name, s.rate, s.unit) for s in codec.settings()] == [(f"s{n}", np.log2(n) / 256, "bpp") for n in (16, 64, 256)]
        assert codec.default().name == "s64" and codec.media == "image" and codec.can_recover

    def test_weights_hold_network_rungs_and_priors(self, weights: Path) -> None:
        w = read_weights(weights)
        assert w.state["rungs.16.vq.codebook"].shape == (16, ARGS.code_dim) and w.state["rungs.16.vq.codebook"].dtype == torch.float32
        assert any(k.startswith("rungs.64.g_s.") for k in w.state) and not any(k.startswith("rungs.16.g_s.") for k in w.state)
        assert w.state["rungs.64.vq.in_proj.weight"].dtype == torch.float16 and w.args["rungs"] == [16, 64]
        assert w.prior is not None and w.prior.alphabets == [16, 64, 256]

    def test_missing_weights_is_one_clear_error(self, tmp_path: Path) -> None:
        c = V.VQGANCodec(tmp_path / "none.safetensors")
        with pytest.raises(CodecNotFoundError, match="weights not found"):
            c.settings()
        (tmp_path / "bad.safetensors").write_bytes(b"junk")
        with pytest.raises(CodecNotFoundError, match="not a usable vqgan weights file"):
            V.VQGANCodec(tmp_path / "bad.safetensors").settings()

    def test_not_installed_is_listed_and_never_auto(self) -> None:
        from nmc.codec.inspect import list_models

        if V.VQGANCodec.installed():
            pytest.skip("the shipped weights are installed")
        row = next(r for r in list_models() if r["codec"] == "vqgan")
        assert row["settings"] == [] and row["weights_size"] == "not installed"
        assert registry.codec_for_media("image", 0.02) != "vqgan"

    def test_packets_option(self, weights: Path) -> None:
        assert V.VQGANCodec(weights, packets=1).lattice == (1, 1) and V.VQGANCodec(weights).lattice == (2, 4)
        with pytest.raises(ValueError, match="packets per tile"):
            V.VQGANCodec(weights, packets=0)


class TestRoundTrip:
    @pytest.mark.parametrize("h,w", [(1, 1), (1, 37), (29, 1), (17, 33), (64, 48), (100, 150)])
    def test_any_size(self, codec: V.VQGANCodec, h: int, w: int) -> None:
        px = photo(h, w)
        data = encode(codec, px, "s16")
        header, packets = open_stream(data)
        cells = (-(-h // 16), -(-w // 16))
        assert header.media == {"kind": "image", "width": w, "height": h, "channels": 3, "bit_depth": 8}
        assert len(packets) == header.packets == min(2, cells[0]) * min(4, cells[1])  # one tile, its interleave clamped
        out = decode(codec, data)
        assert out.shape == (h, w, 3) and out.dtype == np.uint8

    def test_gray_comes_back_gray(self, codec: V.VQGANCodec) -> None:
        gray = photo().mean(axis=2, keepdims=True).astype(np.uint8)
        out = decode(codec, encode(codec, gray))
        assert out.shape == gray.shape
        rgb = np.repeat(gray, 3, axis=2)  # R=G=B stored as RGB: decoded with R=G=B, flagged in the header
        data = encode(codec, rgb)
        out = decode(codec, data)
        assert open_stream(data)[0].extra["gray"] is True and (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
        assert "gray" not in open_stream(encode(codec, photo()))[0].extra

    def test_rgba_alpha_is_lossless_in_its_own_packet(self, codec: V.VQGANCodec) -> None:
        px = photo()
        alpha = np.clip((np.mgrid[0:96, 0:128][1] - 40) * 8, 0, 255).astype(np.uint8)
        alpha[30:50, 60:90] = np.random.default_rng(0).integers(0, 256, (20, 30))
        data, plain = encode(codec, np.dstack([px, alpha])), encode(codec, px)
        header, packets = open_stream(data)
        out = decode(codec, data)
        assert out.shape == (96, 128, 4) and np.array_equal(out[..., 3], alpha) and header.extra["alpha"] is True
        assert len(packets) == len(open_stream(plain)[1]) + 1 and packets[:-1] == open_stream(plain)[1]  # index packets unchanged

    def test_opaque_alpha_costs_nothing(self, codec: V.VQGANCodec) -> None:
        px = photo()
        data, plain = encode(codec, np.dstack([px, np.full(px.shape[:2], 255, np.uint8)])), encode(codec, px)
        out = decode(codec, data)
        assert out.shape[2] == 4 and (out[..., 3] == 255).all() and abs(len(data) - len(plain)) < 8

    def test_gray_alpha_and_16_bit(self, codec: V.VQGANCodec) -> None:
        g16 = (photo()[..., :1].astype(np.uint16) * 257 + 100).astype(np.uint16)
        a16 = np.full_like(g16, 65535)
        a16[:10] = 0
        data = encode(codec, np.dstack([g16, a16]))
        header, out = open_stream(data)[0], decode(codec, data)
        assert header.media["bit_depth"] == 16 and header.media["channels"] == 2 and out.dtype == np.uint16 and out.shape == (96, 128, 2)
        assert np.array_equal(out[..., 1], a16[..., 0]) and (out[..., 0] % 257 == 0).all()  # 8-bit precision, 16-bit range

    def test_every_setting_and_multi_tile_images(self, weights: Path) -> None:
        c = V.VQGANCodec(weights, tile=64)
        px = photo(100, 150)  # 7 x 10 cells in 2 x 3 tiles of 4 x 4 cells (the last row and column narrower)
        for s in c.settings():
            header, packets = open_stream(encode(c, px, s.name))
            assert header.packets == len(packets) == (2 + 2) * (4 + 4 + 2)  # per tile min(2, rows) x min(4, cols)
            assert decode(c, encode(c, px, s.name)).shape == px.shape


class TestTiling:
    def test_decoder_has_no_seams(self, weights: Path) -> None:
        """With the whole image as encoder context the indices are the whole image's, and tiled
        synthesis equals whole-image synthesis; without a decoder margin the seams show."""
        px = photo(112, 160)
        whole = encode(V.VQGANCodec(weights), px, "s256")
        tiled = encode(V.VQGANCodec(weights, tile=32, enc_margin=256), px, "s256")
        out_w = decode(V.VQGANCodec(weights), whole)
        out_t = decode(V.VQGANCodec(weights), tiled)
        diff = np.abs(out_w.astype(int) - out_t.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # float summation order only
        seamed = decode(V.VQGANCodec(weights), with_header(tiled, lambda h: set_field(h, "extra.dec_margin", 0)))
        assert np.abs(seamed.astype(int) - out_w.astype(int)).max() > 2

    def test_tiles_match_whole_image(self, weights: Path) -> None:
        px = photo(144, 208)
        c = V.VQGANCodec(weights, tile=64)  # 128 px of encoder context around each tile
        rgb = M.to_rgb8(M.Image(px))[0]
        whole = tile_indices(c.run, rgb, (0, 144, 0, 208), [64], 0)[0]
        for box in [(0, 64, 0, 64), (64, 128, 128, 208), (128, 144, 64, 128)]:
            part = tile_indices(c.run, rgb, box, [64], c.enc_margin)[0]
            assert np.array_equal(part, whole[box[0] // 16 : box[1] // 16, box[2] // 16 : box[3] // 16])


class TestPackets:
    def test_interleave(self) -> None:
        assert [P.interleave(n) for n in (1, 2, 4, 7, 8, 9, 12, 64)] == [(1, 1), (1, 2), (2, 2), (1, 7), (2, 4), (3, 3), (3, 4), (8, 8)]
        for bad in (0, 65):
            with pytest.raises(ValueError):
                P.interleave(bad)

    @pytest.mark.parametrize("shape", [(1, 1), (1, 9), (3, 2), (7, 10), (32, 48)])
    def test_cells_cover_the_tile_once_and_scatter(self, shape: tuple[int, int]) -> None:
        owner = np.full(shape, -1)
        for j, cells in enumerate(P.packet_cells(shape, (2, 4))):
            assert (owner[cells] == -1).all() and owner[cells].size > 0
            owner[cells] = j
        assert (owner >= 0).all() and owner.max() + 1 == min(2, shape[0]) * min(4, shape[1])
        if shape[0] >= 2 and shape[1] >= 4:  # a lost packet leaves holes whose 8 neighbours were all received
            padded = np.pad(owner, 1, constant_values=-1)
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    if dy or dx:
                        assert not (padded[1 + dy : 1 + dy + shape[0], 1 + dx : 1 + dx + shape[1]] == owner).any()

    def test_each_packet_decodes_alone(self, codec: V.VQGANCodec) -> None:
        px = photo(100, 150)
        data = encode(codec, px, "s64")
        grid = tile_indices(codec.run, M.to_rgb8(M.Image(px))[0], (0, 112, 0, 160), [64], codec.enc_margin)[0]
        _, packets = open_stream(data)
        cells = P.packet_cells(grid.shape, codec.lattice)
        for j in reversed(range(len(packets))):  # any order: no state crosses packets
            payload = packets[j]
            assert payload is not None
            assert np.array_equal(P.decode_cells(payload, codec.model.prior, 1, grid[cells[j]].shape), grid[cells[j]])

    def test_same_bytes_without_score_tables(self, codec: V.VQGANCodec, monkeypatch: pytest.MonkeyPatch) -> None:
        """Large codebooks (8192) compute their context scores per row instead of tabulating them: the same files."""
        from nmc.codec import prior as prior_module

        px = photo(100, 150)
        data, pixels = encode(codec, px, "s256"), decode(codec, encode(codec, px, "s256"))
        monkeypatch.setattr(prior_module, "TABLE_LIMIT", 0)
        assert encode(codec, px, "s256") == data and np.array_equal(decode(codec, data), pixels)

    @pytest.mark.parametrize("shape", [(1, 1), (2, 7), (5, 3)])
    def test_coding_round_trip_both_tables(self, shape: tuple[int, int]) -> None:
        prior, rng = random_prior([32], seed=2), np.random.default_rng(1)
        flat = PriorSet(prior.priors, [np.full(32, 2048, np.int32)])  # the uniform unigram beats a random context prior
        peaked = PriorSet(prior.priors, [E.freqs_from_counts(np.r_[1000.0, np.ones(31)])])  # ...and a peaked one on all-zero grids
        for p, grid in ((prior, rng.integers(0, 32, shape)), (flat, rng.integers(0, 32, shape)), (peaked, np.zeros(shape, np.int64))):
            data = P.encode_cells(p, 0, grid)
            assert np.array_equal(P.decode_cells(data, p, 0, shape), grid)
        assert E.Decoder(P.encode_cells(peaked, 0, np.zeros((4, 4), np.int64))).decode(P.CHOICE, 1)[0] == 1


SCRIPT = textwrap.dedent("""
    import hashlib, io, json, sys, numpy as np, torch
    torch.set_num_threads(int(sys.argv[1]))
    from nmc.codec import api, media as M
    from nmc.models.vqgan.codec import VQGANCodec
    codec = VQGANCodec(sys.argv[2])
    buf = io.BytesIO()
    api.compress_to_file(codec, M.Image(np.load(sys.argv[3])), buf, codec.setting("s256"))
    back = api.decompress(open(sys.argv[4], "rb").read(), codec=codec)
    print(json.dumps([hashlib.sha256(buf.getvalue()).hexdigest(), hashlib.sha256(back.pixels.tobytes()).hexdigest()]))
""")


def test_files_and_pixels_do_not_depend_on_the_thread_count(weights: Path, tmp_path: Path) -> None:
    """Encoded here on one thread; processes with 1 and 2 threads encode the photo again and decode this file."""
    px = np.clip(np.asarray(Image.open(SAMPLES / "photo_aqua.png").convert("RGB")).astype(np.int16) + 4, 0, 255).astype(np.uint8)[256:, :384]
    codec = V.VQGANCodec(weights)
    data = encode(codec, np.ascontiguousarray(px), "s256")
    np.save(tmp_path / "x.npy", px)
    (tmp_path / "x.nmc").write_bytes(data)
    here = [hashlib.sha256(data).hexdigest(), hashlib.sha256(decode(codec, data).tobytes()).hexdigest()]
    for threads in (1, 2):
        run = subprocess.run([sys.executable, "-c", SCRIPT, str(threads), str(weights), str(tmp_path / "x.npy"), str(tmp_path / "x.nmc")],
                             capture_output=True, text=True, check=True)  # fmt: skip
        assert json.loads(run.stdout) == here, f"{threads} threads"


@pytest.mark.usefixtures("installed")
class TestChoice:
    def test_target_bpp_picks_the_best_setting_within(self, codec: V.VQGANCodec) -> None:
        px = photo(128, 192)
        sizes = {s.name: len(encode(codec, px, s.name)) for s in codec.settings()}
        bpp = {n: 8 * b / px.shape[0] / px.shape[1] for n, b in sizes.items()}
        for target in sorted(bpp.values()):
            buf = io.BytesIO()
            header = api.compress_to_target(codec, M.Image(px), buf, target)
            best = max((s for s in codec.settings() if bpp[s.name] <= target), key=lambda s: s.rate)
            assert header.setting == best.name and len(buf.getvalue()) == sizes[best.name]
        with pytest.raises(MediaError, match="cannot reach"):
            api.compress_to_target(codec, M.Image(px), io.BytesIO(), min(bpp.values()) * 0.99)

    def test_auto_takes_vqgan_only_below_the_image_codecs_lowest_setting(self) -> None:
        others = [c for n, c in registry.available().items() if c.media == "image" and c.installed() and n != "vqgan"]
        if not others:
            assert registry.codec_for_media("image") == registry.codec_for_media("image", 0.01) == "vqgan"
            return
        top = max(others, key=lambda c: c.auto_priority)
        lowest = registry.get_codec(top.name).settings()[0].rate
        assert registry.codec_for_media("image") == registry.codec_for_media("image", lowest) == top.name
        assert registry.codec_for_media("image", lowest * 0.99) == "vqgan"
        assert registry.codec_for_media("image", 1e-6) == "vqgan"  # nothing reaches it: the codec that goes lowest

    def test_packets_per_tile_is_a_compress_option(self, tmp_path: Path) -> None:
        from nmc.codec.files import compress_path

        src = tmp_path / "x.png"
        Image.fromarray(photo(64, 128)).save(src)  # one tile of 4 x 8 cells
        compress_path(src, tmp_path / "8.nmc", "vqgan")
        compress_path(src, tmp_path / "16.nmc", "vqgan", packets=16)
        files = {n: (tmp_path / f"{n}.nmc").read_bytes() for n in (8, 16)}
        for n, lattice in ((8, [2, 4]), (16, [4, 4])):
            header, packets = open_stream(files[n])
            assert header.extra["interleave"] == lattice and header.packets == len(list(packets)) == n
        codec = registry.get_codec("vqgan")
        assert np.array_equal(decode(codec, files[8]), decode(codec, files[16]))  # the same indices, packed otherwise
        assert codec.lattice == (2, 4)  # the shared codec is unchanged: --packets codes through a copy
        lost = L.with_lost(files[16], np.eye(16, dtype=bool)[5], api.header_dictionary)
        no_model = V.VQGANCodec(codec.weights_path, recovery_path=Path("/nonexistent"))  # the neighbours' mean fills
        assert api.decompress(lost, recover=True, codec=no_model).pixels.shape == (64, 128, 3)
        for bad in (0, 65):
            with pytest.raises(MediaError, match="1 to 64 index packets per tile"):
                compress_path(src, tmp_path / "bad.nmc", "vqgan", packets=bad)
        assert not (tmp_path / "bad.nmc").exists()

    def test_auto_with_target_bpp_through_the_files_api(self, tmp_path: Path) -> None:
        from nmc.codec.files import compress_path

        src = tmp_path / "x.png"
        Image.fromarray(photo(256, 384)).save(src)
        for target in (0.1, 0.2):  # below and above mcquic's lowest setting (q1, 0.125 bpp nominal)
            out = tmp_path / f"{target}.nmc"
            compress_path(src, out, target_bpp=target)
            header, _ = open_stream(out.read_bytes())
            assert header.codec == registry.codec_for_media("image", target) and 8 * out.stat().st_size / (256 * 384) <= target
        assert open_stream((tmp_path / "0.1.nmc").read_bytes())[0].codec == "vqgan"


@pytest.fixture(scope="module")
def multi_file(codec: V.VQGANCodec) -> bytes:
    rgba = np.concatenate([photo(40, 72), np.tile(np.arange(72, dtype=np.uint8)[None, :, None] * 3, (40, 1, 1))], axis=2)
    return encode(V.VQGANCodec(codec.weights_path, tile=32), rgba, "s64")  # 2 x 3 tiles, index packets and alpha packets


@st.composite
def ff_words(draw: st.DrawFn, payload: bytes) -> bytes:
    """Two words of a range-coded packet set to 0xFFFFFFFF (an impossible state for the decoder)."""
    if len(payload) < 8:
        return payload + b"\xff" * 4
    at = 4 * draw(st.integers(0, len(payload) // 4 - 2))
    return payload[:at] + b"\xff" * 8 + payload[at + 8 :]


class TestErrors:
    def test_damaged_packet_is_one_clear_error(self, codec: V.VQGANCodec) -> None:
        data = bytearray(encode(codec, photo()))
        data[-20] ^= 0x10  # inside the last packet's payload: the container's CRC catches it
        with pytest.raises(ContainerError, match="checksum"):
            decode(codec, bytes(data))
        no_model = V.VQGANCodec(codec.weights_path, recovery_path=Path("/nonexistent"))  # recovery: tests/test_vqgan_recovery.py
        assert api.decompress(bytes(data), recover=True, codec=no_model).pixels.shape == (96, 128, 3)
        assert no_model.recovered is not None and no_model.recovered["method"] == "the received neighbours' mean (no recovery model installed at /nonexistent)"
        good = encode(codec, photo())
        for bad in (b"", b"\x01\x02\x03", b"\xff" * 12):  # CRC-valid, bad content
            try:
                out = api.decompress(with_payloads(good, lambda i, p: bad if i == 3 else p), codec=codec)
            except ContainerError as err:
                assert "vqgan" in str(err) and "packet 3" in str(err)
            else:
                assert out.pixels.shape == (96, 128, 3)

    def test_inconsistent_header(self, codec: V.VQGANCodec) -> None:
        header, _ = open_stream(encode(codec, photo()))
        for key, value in (("extra.interleave", [0, 4]), ("extra.interleave", [9, 9]), ("extra.interleave", [2]), ("extra.tile", 1000),
                           ("packets", 7), ("extra.alpha", True), ("media.width", 2**20 + 1), ("setting", "s32")):  # fmt: skip
            h, _ = open_stream(encode(codec, photo()))
            set_field(h.__dict__, key, value)
            with pytest.raises(ContainerError, match="damaged"):
                codec.read_fields(h)
        codec.read_fields(header)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.data())
    def test_crc_valid_payload_damage(self, codec: V.VQGANCodec, multi_file: bytes, data) -> None:  # noqa: ANN001
        n = len(open_stream(multi_file)[1])
        packet = data.draw(st.integers(0, n - 1))
        bad = with_payloads(multi_file, lambda i, p: data.draw(st.one_of(damaged(p), ff_words(p))) if i == packet else p)
        try:
            out = api.decompress(bad, codec=codec)
        except NmcError:
            return
        assert out.pixels.shape == (40, 72, 4)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.sampled_from([f"media.{k}" for k in ("width", "height", "channels", "bit_depth", "kind")]
                           + [f"extra.{k}" for k in ("stride", "tile", "interleave", "dec_margin", "alpha", "gray")] + ["packets", "setting"]),
           CRAFTED_VALUES)  # fmt: skip
    @pytest.mark.usefixtures("installed")  # through `decompress_path`: the installed codec
    def test_crafted_header_values(self, multi_file: bytes, key: str, value: object) -> None:
        refused_or_decoded(with_header(multi_file, lambda h: set_field(h, key, value)), ".png")

    def test_truncations_are_clean_errors(self, codec: V.VQGANCodec, multi_file: bytes) -> None:
        for cut in range(0, len(multi_file), 7):
            with pytest.raises(NmcError):
                api.decompress(multi_file[:cut], codec=codec)


@pytest.fixture(scope="module")
def tiny_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for i in range(4):
        Image.fromarray(photo(96, 128, 60 * i, 90 * i)).save(root / f"p{i}.png")
    return root


def test_export_ladder_rung_fit_prior_and_code(tiny_photos: Path, tmp_path: Path) -> None:
    """train.py base and rung exports, ladder.py, fit_prior.py: one weights file the codec codes with."""
    from nmc.models.vqgan import fit_prior, ladder, train

    common: dict = dict(data=tiny_photos, tiny=True, holdout=0, warmup=1, lr=2e-3, disc_start=100, log_every=1)
    train.main(ckpt_dir=tmp_path / "base", max_steps=2, export=tmp_path / "base.safetensors", **common)
    ladder.main(network=tmp_path / "base.safetensors", out=tmp_path / "ladder.safetensors", rungs="8,16", data=None, seed=0)
    train.main(ckpt_dir=tmp_path / "r16", max_steps=1, init=tmp_path / "base.safetensors", ladder=tmp_path / "ladder.safetensors", rung=16,
               tune_decoder=True, export=tmp_path / "r16.safetensors", **common)  # fmt: skip
    out = tmp_path / "w.safetensors"
    fit_prior.main(network=tmp_path / "base.safetensors", out=out, ladder=tmp_path / "ladder.safetensors", rung=[tmp_path / "r16.safetensors"],
                   data=tiny_photos, packets=8, held_out=0.25, dim=8, steps=20, batch=256, seed=0, threads=1, device="cpu", cache=Path(""))  # fmt: skip
    w = read_weights(out)
    assert w.args["rungs"] == [8, 16] and w.args["rung_decoders"] == [16] and w.prior is not None and w.prior.alphabets == [8, 16, 64]
    assert {r["packets"] for r in w.report["real_rates"]} == {1, 8} and all(r["real_bpp"] > 0 for r in w.report["real_rates"])
    tuned = read_weights(tmp_path / "r16.safetensors").state
    assert torch.equal(w.state["rungs.16.vq.codebook"], tuned["vq.codebook"]) and torch.equal(w.state["rungs.16.g_s.0.2.weight"], tuned["g_s.0.2.weight"])
    assert torch.equal(w.state["rungs.8.vq.in_proj.weight"], w.state["vq.in_proj.weight"])  # a ladder rung keeps the base's 1x1 convs
    only = tmp_path / "only.safetensors"  # the GPU machine's file: the same network, no priors; a --network again
    fit_prior.main(network=tmp_path / "base.safetensors", out=only, ladder=tmp_path / "ladder.safetensors", rung=[tmp_path / "r16.safetensors"],
                   data=tmp_path / "none", assemble_only=True)  # fmt: skip
    for again in (read_weights(only), fit_prior.assemble(only, None, []), fit_prior.assemble(out, None, [])):
        assert again.prior is None and json.loads(json.dumps(again.args)) == w.args and again.state.keys() == w.state.keys()
        assert all(torch.equal(again.state[k], w.state[k]) for k in w.state)
    codec = V.VQGANCodec(out)
    px = photo(40, 56)
    for s in ("s8", "s16", "s64"):
        assert decode(codec, encode(codec, px, s)).shape == px.shape
    train.main(ckpt_dir=tmp_path / "other", max_steps=1, seed=1, export=tmp_path / "other.safetensors", **common)
    with pytest.raises(typer.BadParameter, match="not the base network"):
        fit_prior.assemble(tmp_path / "other.safetensors", None, [tmp_path / "r16.safetensors"])  # a rung of another base
