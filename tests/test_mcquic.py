"""The mcquic codec: round trips of every image mode and size, tiled == whole coding, packet
independence, bit-identical decoding across thread counts, lossless alpha, edge cases and damaged
files. Uses the shipped weights when present, otherwise a small random model built here."""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from conftest import CRAFTED_VALUES, damaged, open_stream, photo, refused_or_decoded, set_field, with_header, with_payloads
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nmc.codec import api, registry
from nmc.codec import entropy as E
from nmc.codec import media as M
from nmc.codec.container import (
    PacketWriter,
    pack_streams,
    unpack_streams,
    write_header,
)
from nmc.codec.errors import ContainerError, MediaError, NmcError
from nmc.codec.plane import decode_plane, encode_plane
from nmc.codec.prior import ContextPrior, PriorSet
from nmc.codec.weights import Weights, write_weights
from nmc.models.mcquic import codec as Q
from nmc.models.mcquic import index_coding as I
from PIL import Image

SAMPLES = Path(__file__).parent.parent / "samples"


def random_prior(K: int, seed: int = 0) -> PriorSet:
    rng = np.random.default_rng(seed)

    def one(k: int) -> ContextPrior:
        sizes = I.context_sizes(k, K)
        return ContextPrior(
            rng.integers(-64, 64, K).astype(np.int32),
            [rng.integers(-127, 128, (n + 1, 8)).astype(np.int8) for n in sizes],
            [rng.integers(-127, 128, (8, K)).astype(np.int8) for _ in sizes],
            np.full(len(sizes), 30, np.int64),
        )

    return PriorSet([one(k) for k in range(10)], E.freqs_from_counts(rng.random((10, K)) ** 4))


@pytest.fixture(scope="session")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if Q.WEIGHTS.is_file():
        return Q.WEIGHTS
    import torch
    from nmc.models.mcquic.network import McQuic, export_tensors
    from nmc.models.mcquic.train import TINY

    torch.manual_seed(0)
    net = McQuic(TINY)
    net.train()
    net(torch.rand(4, 3, 64, 64))  # codebooks from data
    path = tmp_path_factory.mktemp("mcquic") / "random.safetensors"
    write_weights(path, Weights(export_tensors(net.eval()), asdict(TINY), random_prior(TINY.coarse_k)))
    return path


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="session")
def codec(weights: Path) -> Q.McQuicCodec:
    return Q.McQuicCodec(weights)


def encode(codec: Q.McQuicCodec, pixels: np.ndarray, setting: str = "q2") -> bytes:
    buf = io.BytesIO()
    api.compress_to_file(codec, M.Image(pixels), buf, codec.setting(setting))
    return buf.getvalue()


def decode(codec: Q.McQuicCodec, data: bytes) -> np.ndarray:
    header, packets = open_stream(data)
    return codec.decode(header, codec.read_fields(header), iter(packets)).pixels


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def rewrite(data: bytes, edit: dict[int, bytes]) -> bytes:
    """The same file with some packet payloads replaced (valid CRCs: only the codec can notice)."""
    header, packets = open_stream(data)
    buf = io.BytesIO()
    write_header(buf, header, Q.McQuicCodec.header_dict)
    writer = PacketWriter(buf)
    for i, p in enumerate(packets):
        writer.write(edit.get(i, p))  # type: ignore[arg-type]
    writer.close()
    return buf.getvalue()


SHIPPED = Q.WEIGHTS.is_file()
shipped = pytest.mark.skipif(not SHIPPED, reason="rates and quality need the trained weights and priors")


class TestInterface:
    def test_registered_settings_and_auto(self) -> None:
        assert "mcquic" in registry.available()
        c = registry.get_codec("mcquic")
        assert [(s.name, s.rate) for s in c.settings()] == [("q1", 0.125), ("q2", 0.375), ("q3", 0.625), ("q4", 0.875)]
        assert c.media == "image" and c.setting(c.default_setting) and registry.codec_for_media("image") == "mcquic"

    def test_missing_weights_is_one_clear_error(self, tmp_path: Path) -> None:
        c = Q.McQuicCodec(tmp_path / "none.safetensors")
        with pytest.raises(registry.CodecNotFoundError, match="weights not found"):
            c.encode(M.Image(photo(16, 16)), c.setting("q1"))

    def test_weights_file_holds_network_and_prior(self, weights: Path) -> None:
        from safetensors import safe_open

        from nmc.codec.weights import read_weights

        with safe_open(str(weights), "np") as f:
            names = list(f.keys())
        assert "prior.unigram" in names and "prior.9.bias" in names
        assert any(n.startswith("g_s.") for n in read_weights(weights).state)  # the kit's layout prefixes them with "net."


class TestRoundTrip:
    @pytest.mark.parametrize("h,w", [(1, 1), (1, 37), (29, 1), (17, 33), (64, 48)])
    def test_any_size(self, codec: Q.McQuicCodec, h: int, w: int) -> None:
        px = photo(h, w)
        data = encode(codec, px, "q1")
        header, packets = open_stream(data)
        out = decode(codec, data)
        assert out.shape == (h, w, 3) and out.dtype == np.uint8
        assert header.media == {"kind": "image", "width": w, "height": h, "channels": 3, "bit_depth": 8} and len(packets) == 1

    def test_gray_stored_as_rgb_comes_back_gray(self, codec: Q.McQuicCodec) -> None:
        rgb = np.repeat(photo().mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
        data = encode(codec, rgb, "q2")
        header, _ = open_stream(data)
        out = decode(codec, data)
        assert header.extra["gray"] is True and out.shape == rgb.shape
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
        colour = photo()  # a colour photo keeps its three planes and writes no gray field
        header, _ = open_stream(encode(codec, colour, "q2"))
        assert "gray" not in header.extra

    def test_gray_comes_back_gray(self, codec: Q.McQuicCodec) -> None:
        gray = photo().mean(axis=2, keepdims=True).astype(np.uint8)
        out = decode(codec, encode(codec, gray, "q3"))
        assert out.shape == gray.shape and (psnr(out, gray) > 22 or not SHIPPED)

    def test_rgba_alpha_is_lossless(self, codec: Q.McQuicCodec) -> None:
        px = photo()
        xx = np.mgrid[0 : px.shape[0], 0 : px.shape[1]][1]
        alpha = np.clip((xx - 40) * 8, 0, 255).astype(np.uint8)  # transparent left, a soft edge, opaque right
        alpha[30:50, 60:90] = np.random.default_rng(0).integers(0, 256, (20, 30))
        data = encode(codec, np.dstack([px, alpha]))
        out = decode(codec, data)
        assert out.shape == (96, 128, 4) and np.array_equal(out[..., 3], alpha)
        assert open_stream(data)[0].extra["alpha"] is True

    def test_opaque_alpha_costs_nothing(self, codec: Q.McQuicCodec) -> None:
        px = photo()
        rgba = np.dstack([px, np.full(px.shape[:2], 255, np.uint8)])
        data, plain = encode(codec, rgba), encode(codec, px)
        out = decode(codec, data)
        assert out.shape[2] == 4 and (out[..., 3] == 255).all() and abs(len(data) - len(plain)) < 16

    def test_gray_alpha_and_16_bit(self, codec: Q.McQuicCodec) -> None:
        g16 = (photo()[..., :1].astype(np.uint16) * 257 + 100).astype(np.uint16)
        a16 = np.full_like(g16, 65535)
        a16[:10] = 0
        data = encode(codec, np.dstack([g16, a16]))
        header = open_stream(data)[0]
        out = decode(codec, data)
        assert header.media["bit_depth"] == 16 and header.media["channels"] == 2
        assert out.dtype == np.uint16 and out.shape == (96, 128, 2)
        assert np.array_equal(out[..., 1], a16[..., 0]) and (out[..., 0] % 257 == 0).all()  # 8-bit precision, 16-bit range

    @shipped
    def test_rate_and_quality_increase_with_setting(self, codec: Q.McQuicCodec) -> None:
        px = photo(128, 192)
        sizes, quality = [], []
        for q in ("q1", "q2", "q3", "q4"):
            data = encode(codec, px, q)
            sizes.append(len(data))
            quality.append(psnr(decode(codec, data), px))
        assert sizes == sorted(sizes) and len(set(sizes)) == 4
        assert quality[0] < quality[1] < quality[3] and quality[1] > 22
        bpp = [8 * s / px.shape[0] / px.shape[1] for s in sizes]
        assert all(b < s.rate * 1.1 for b, s in zip(bpp, codec.settings()))  # entropy coding beats the fixed length

    @shipped
    def test_target_bpp_picks_the_highest_setting_below(self, codec: Q.McQuicCodec) -> None:
        px = photo(128, 192)
        sizes = {q: len(encode(codec, px, q)) for q in ("q1", "q2", "q3", "q4")}
        target = 8 * (sizes["q2"] + sizes["q3"]) / 2 / px.size * 3
        buf = io.BytesIO()
        header = api.compress_to_target(codec, M.Image(px), buf, target)
        assert header.setting == "q2" and len(buf.getvalue()) == sizes["q2"]


class TestTiling:
    def test_tiles_match_whole_image(self, weights: Path) -> None:
        px = photo(144, 208)
        whole = Q.McQuicCodec(weights)
        tiled = Q.McQuicCodec(weights, tile=64)  # 128 px of encoder context around each tile
        data_w, data_t = encode(whole, px, "q2"), encode(tiled, px, "q2")
        assert len(open_stream(data_t)[1]) == 3 * 4 and len(open_stream(data_w)[1]) == 1
        out_w, out_t = decode(whole, data_w), decode(tiled, data_t)
        assert psnr(out_t, out_w) > 40 and psnr(out_t, px) > psnr(out_w, px) - 0.1

    def test_decoder_has_no_seams(self, weights: Path) -> None:
        """With full encoder context the indices are the whole image's, and tiled synthesis equals it."""
        px = photo(112, 160)
        data_w = encode(Q.McQuicCodec(weights), px, "q3")
        data_t = encode(Q.McQuicCodec(weights, tile=64, enc_margin=256), px, "q3")
        out_w, out_t = decode(Q.McQuicCodec(weights), data_w), decode(Q.McQuicCodec(weights), data_t)
        diff = np.abs(out_w.astype(int) - out_t.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # float summation order only

    def test_packets_decode_alone(self, weights: Path) -> None:
        c = Q.McQuicCodec(weights, tile=64, enc_margin=32)
        px = photo(100, 150)
        data = encode(c, px, "q3")
        header, packets = open_stream(data)
        rgb = M.to_rgb8(M.Image(px))[0]
        for i, box in enumerate(Q.tiles(100, 150, 64)):
            grids, alpha = c.read_packet(header, c.read_fields(header), packets[i], box)
            expected = Q.tile_indices(c.run, rgb, box, 3, margin=32)
            assert alpha is None and all(np.array_equal(a, b) for a, b in zip(grids, expected))


class TestIndexCoding:
    def test_prior_round_trip(self) -> None:
        prior, K = random_prior(32, seed=2), 32
        rng = np.random.default_rng(1)
        for h, w in [(1, 1), (2, 7), (5, 3)]:
            grids = [rng.integers(0, K, (h, w)) for _ in range(4)] + [rng.integers(0, K, (2 * h, 2 * w)) for _ in range(6)]
            enc = E.Encoder()
            mask = I.encode_tile(enc, prior, grids)
            out = I.decode_tile(E.Decoder(enc.to_bytes()), prior, 10, (h, w), mask)
            assert all(np.array_equal(a, b) for a, b in zip(out, grids))


class TestAlpha:
    @pytest.mark.parametrize("shape", [(1, 1), (1, 70), (33, 1), (40, 65)])
    def test_lossless(self, shape: tuple[int, int]) -> None:
        rng = np.random.default_rng(0)
        for a in (np.zeros(shape, np.uint8), rng.integers(0, 256, shape).astype(np.uint8), np.full(shape, 255, np.uint8)):
            assert np.array_equal(decode_plane(encode_plane(a), *shape), a)

    def test_golden_stream(self) -> None:
        """The alpha stream depends on no weights: pin its bytes so the format cannot drift."""
        y, x = np.mgrid[0:40, 0:70]
        a = np.clip((x - 20) * 9 + y, 0, 255).astype(np.uint8)
        a[10:20, 30:50] = x[10:20, 30:50] * 37 % 256
        data = encode_plane(a)
        assert hashlib.sha256(data).hexdigest() == "b4b273f442616965793066a3a1bddbfa3e2266b4dba9ee040485dede4d21f67a"
        assert np.array_equal(decode_plane(data, 40, 70), a)

    def test_flat_alpha_is_nearly_free(self) -> None:
        a = np.zeros((256, 256), np.uint8)
        a[:, 100:] = 255
        assert len(encode_plane(a)) <= 32


class TestErrors:
    def test_damaged_packet_is_one_clear_error(self, codec: Q.McQuicCodec) -> None:
        data = encode(codec, photo(), "q2")
        flipped = bytearray(data)
        flipped[-20] ^= 0x10  # inside the last packet's payload: the container's CRC catches it
        with pytest.raises(ContainerError, match="checksum"):
            decode(codec, bytes(flipped))
        meta, indices = unpack_streams(open_stream(data)[1][0], 2)  # type: ignore[arg-type]
        for bad in (pack_streams([meta, indices[:-1]]), pack_streams([meta]), pack_streams([b"\0" * 6, indices])):
            with pytest.raises(ContainerError, match="mcquic packet 0"):  # valid CRC, bad content
                api.decompress(rewrite(data, {0: bad}), codec=codec)

    def test_lost_packet_is_an_error(self, codec: Q.McQuicCodec) -> None:
        data = bytearray(encode(codec, photo(), "q1"))
        data[-20] ^= 1
        with pytest.raises(MediaError, match="cannot recover"):
            api.decompress(bytes(data), recover=True, codec=codec)

    def test_inconsistent_header(self, codec: Q.McQuicCodec) -> None:
        header, packets = open_stream(encode(codec, photo(), "q1"))
        header.extra["stages"] = 3
        with pytest.raises(ContainerError, match="inconsistent header"):
            codec.read_fields(header)
        header.extra["stages"], header.media["width"] = 1, 10**9  # would need a huge allocation
        with pytest.raises(ContainerError, match="media.width|inconsistent header"):
            codec.read_fields(header)


@pytest.fixture(scope="module")
def alpha_file(codec: Q.McQuicCodec) -> bytes:
    rgba = np.concatenate([photo(40, 72), np.tile(np.arange(72, dtype=np.uint8)[None, :, None] * 3, (40, 1, 1))], axis=2)
    return encode(Q.McQuicCodec(codec.weights_path, tile=32), rgba, "q2")  # 6 packets, with alpha streams


class TestProperties:
    """Damage that passes the CRCs: a clean NmcError, or an image of the announced shape."""

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.data())
    def test_crc_valid_payload_damage(self, codec: Q.McQuicCodec, alpha_file: bytes, data) -> None:  # noqa: ANN001
        packet = data.draw(st.integers(0, 5))
        bad = with_payloads(alpha_file, lambda i, p: data.draw(damaged(p)) if i == packet else p)
        try:
            out = api.decompress(bad, codec=codec)
        except NmcError:
            return
        assert out.pixels.shape == (40, 72, 4)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.sampled_from([f"media.{k}" for k in ("width", "height", "channels", "bit_depth", "kind")]
                           + [f"extra.{k}" for k in ("stride", "tile", "stages", "dec_margin", "codebooks", "codebook_size", "alpha")] + ["packets", "setting"]),
           CRAFTED_VALUES)  # fmt: skip
    @shipped  # through `decompress_path`: the installed codec
    def test_crafted_header_values(self, codec: Q.McQuicCodec, alpha_file: bytes, key: str, value: object) -> None:
        refused_or_decoded(with_header(alpha_file, lambda h: set_field(h, key, value)), ".png")


@shipped  # through the registry: the installed codec
class TestFiles:
    @pytest.mark.parametrize("mode", ["P", "CMYK", "L", "RGBA", "I;16", "LA"])
    def test_pil_modes_through_the_api(self, codec: Q.McQuicCodec, tmp_path: Path, mode: str) -> None:
        src = Image.fromarray(photo(40, 56))
        if mode == "I;16":
            src = Image.fromarray(np.asarray(src.convert("L")).astype(np.uint16) * 257)
        elif mode == "RGBA":
            src = src.convert("RGBA")
            src.putalpha(Image.linear_gradient("L").resize((56, 40)))
        else:
            src = src.convert(mode)
        path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
        src.save(path)
        image = api.load_media(path)[1]
        out = api.decompress(api.compress("mcquic", image, "q2"))
        assert out.pixels.shape == image.pixels.shape and out.pixels.dtype == image.pixels.dtype
        if image.channels in (2, 4):
            assert np.array_equal(out.pixels[..., -1], image.pixels[..., -1])

    def test_cli_round_trip(self, tmp_path: Path) -> None:
        from nmc.cli.main import main

        src = tmp_path / "x.png"
        Image.fromarray(photo(40, 56)).save(src)
        for argv in (["compress", str(src), "--codec", "mcquic", "--quality", "q1"], ["decompress", str(src) + ".nmc", "-o", str(tmp_path / "y.png")]):
            try:
                main(argv)
            except SystemExit as exit_:
                assert exit_.code in (0, None)
        assert psnr(np.asarray(Image.open(tmp_path / "y.png")), photo(40, 56)) > (15 if SHIPPED else 0)


class TestNetworkV2:
    """Bounded latents, every level from one forward, and weights of v1 that keep loading."""

    def test_v1_weights_args_mean_unbounded(self) -> None:
        from nmc.models.mcquic.network import McQuicArgs, args_from_dict

        v1 = {k: v for k, v in asdict(McQuicArgs()).items() if k not in ("dec_f2_blocks", "bounded")}
        assert args_from_dict(v1).bounded is False and args_from_dict(v1).dec_f2_blocks == 0
        assert args_from_dict(asdict(McQuicArgs())) == McQuicArgs()

    @pytest.mark.parametrize("arch", ["v2", "v3"])
    def test_codebooks_stay_bounded_whatever_the_input_scale(self, arch: str) -> None:
        import torch
        from nmc.models.mcquic.network import McQuic
        from nmc.models.mcquic.train import TINY_ARCHS

        torch.manual_seed(0)
        net = McQuic(TINY_ARCHS[arch]).train()
        for _ in range(3):
            net(torch.rand(2, 3, 64, 64) * 1000)  # an unbounded encoder would follow the input scale
        assert max(net.codebook_max_norm()) <= 2.0  # `coarse_dim` = 4 entries in [-1, 1]

    def test_every_level_of_the_forward_is_the_decoded_image(self) -> None:
        import torch
        from nmc.models.mcquic.network import McQuic
        from nmc.models.mcquic.train import TINY

        torch.manual_seed(0)
        net = McQuic(TINY).train()
        net(torch.rand(2, 3, 64, 64))  # codebooks from data
        net.eval()
        x = torch.rand(2, 3, 48, 64)
        with torch.no_grad():
            out = net(x, [1, 2, 3, 4])
        assert out.x_hat.shape == (4, 2, 3, 48, 64)
        for q in range(1, 5):
            c = net.compress(x, q)
            assert torch.allclose(out.x_hat[q - 1].clamp(0, 1), net.decompress(c.indices, q, c.shape), atol=1e-5)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for i in range(4):
        Image.fromarray(photo(96, 128, 60 * i, 90 * i)).save(root / f"p{i}.png")
    return root


@pytest.mark.parametrize("keep", [True, False])
def test_a_fine_tune_from_an_export_keeps_the_codebooks(keep: bool) -> None:
    """An export holds only `embed`; its first training call must not draw new codewords from the batch."""
    import torch

    from nmc.models.mcquic.network import MultiCodebookVQ

    torch.manual_seed(0)
    vq, trained = MultiCodebookVQ(2, 8, 4), torch.randn(2, 8, 4)
    vq.embed.copy_(trained)
    flat = trained[:, torch.randint(8, (64,))] + 0.01 * torch.randn(2, 64, 4)  # latents near the codewords
    if keep:
        vq.keep_codebook()
    vq.train()(vq._unflatten(flat, 1, 8, 8))
    moved = (vq.embed - trained).abs().max().item()
    assert moved < 0.05 if keep else moved > 0.1


class TestTraining:
    """train.py on the CPU: exact resume, then export -> fit_prior -> codec round trip."""

    def run(self, data: Path, ckpt: Path, steps: int, **kw: object) -> None:
        from nmc.models.mcquic import train

        train.main(data=data, ckpt_dir=ckpt, max_steps=steps, tiny=True, holdout=0, warmup=2, lr=2e-3, log_every=1, **kw)  # type: ignore[arg-type]

    @pytest.mark.parametrize("arch", ["v2", "v3"])
    def test_resume_continues_identically(self, tiny_data: Path, tmp_path: Path, arch: str) -> None:
        import torch
        from nmc.models.mcquic.network import args_from_dict
        from nmc.models.mcquic.train import TINY_ARCHS
        from nmc.models.trainkit.checkpoint import load as load_checkpoint

        for ckpt, steps in (("zero", 0), ("a", 6), ("b", 3), ("b", 6)):  # b: 3 steps, then resumed to 6
            self.run(tiny_data, tmp_path / ckpt, steps, arch=arch, schedule="wsd", total_steps=8, decay_steps=4)
        zero, a, b = (load_checkpoint(tmp_path / c) for c in ("zero", "a", "b"))
        assert zero is not None and a is not None and b is not None and a[1]["step"] == b[1]["step"] == 6
        assert args_from_dict(a[1]["model_args"]) == TINY_ARCHS[arch]
        model = [k for k in a[0] if k.startswith("model/")]
        assert model and all(torch.equal(a[0][k], b[0][k]) for k in model)
        assert not torch.equal(a[0]["model/g_s.0.conv1.weight"], zero[0]["model/g_s.0.conv1.weight"])  # it did train

    def test_init_takes_the_architecture_of_its_file(self, tiny_data: Path, tmp_path: Path) -> None:
        from nmc.models.mcquic.network import args_from_dict
        from nmc.models.mcquic.train import TINY_ARCHS
        from nmc.models.trainkit.checkpoint import load as load_checkpoint

        self.run(tiny_data, tmp_path / "v2", 2, arch="v2", export=tmp_path / "v2.safetensors")
        self.run(tiny_data, tmp_path / "tune", 2, init=tmp_path / "v2.safetensors")  # the default --arch is v3
        tune = load_checkpoint(tmp_path / "tune")
        assert tune is not None and args_from_dict(tune[1]["model_args"]) == TINY_ARCHS["v2"]

    def test_export_fit_prior_and_code(self, tiny_data: Path, tmp_path: Path) -> None:
        from nmc.models.mcquic import fit_prior

        self.run(tiny_data, tmp_path / "ckpt", 4)
        saved = lambda: {f.name: f.read_bytes() for f in (tmp_path / "ckpt").iterdir() if f.suffix in (".json", ".safetensors")}  # noqa: E731
        before = saved()
        self.run(tiny_data, tmp_path / "ckpt", 0, export=tmp_path / "net.safetensors")  # export only: the checkpoint stays as it was
        assert saved() == before and "ckpt.json" in before
        fit_prior.main(network=tmp_path / "net.safetensors", out=tmp_path / "w.safetensors", data=tiny_data, held_out=0.25, steps=20, batch=256)
        codec = Q.McQuicCodec(tmp_path / "w.safetensors")
        assert codec.model.net.args.bounded and codec.model.net.args.gdn  # a fresh run's default, --arch v3, codes
        px = photo(40, 56)
        for q in ("q1", "q4"):
            out = decode(codec, encode(codec, px, q))
            assert out.shape == px.shape and psnr(out, px) > 5

