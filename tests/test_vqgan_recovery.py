"""vqgan recovery of lost packets: the masked transformer's fill and the simple concealments, the
recovery file and its binding to the network, `--recover` decodes of files with lost packets (counts,
thread-count determinism, truncations and flips never a traceback), `nmc info`'s damaged packets,
and the index-map extraction -> training -> export -> codec path. Tiny random models, CPU."""

from __future__ import annotations

import copy

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from conftest import open_stream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nmc.codec import api
from nmc.codec import media as M
from nmc.codec.errors import CodecNotFoundError, ContainerError, NmcError
from nmc.codec.inspect import describe
from nmc.codec.threads import torch_threads
from nmc.codec.weights import read_weights
from nmc.models.vqgan import codec as V
from nmc.models.vqgan import recovery as R
from nmc.models.vqgan.network import is_base
from nmc.models.vqgan.packets import packet_cells
from test_vqgan_codec import encode, photo, weights  # noqa: F401  (the random vqgan weights fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = dict(dim=32, layers=2, heads=2, embed=16, max_side=16)


def network_of(path: Path) -> str:
    return R.network_hash(read_weights(path, network=is_base).state)


@pytest.fixture(scope="module")
def recovery_file(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """A random tiny recovery model bound to the random vqgan weights (what the codec mechanics need)."""
    torch.manual_seed(0)
    model = R.IndexTransformer(R.RecoveryArgs((16, 64, 256), **TINY))
    path = tmp_path_factory.mktemp("rec") / "recovery.safetensors"
    R.save_recovery(path, model, network_of(weights), {"what": "random, untrained"}, hashes_of(weights))
    return path


def ladder_of(path: Path):  # noqa: ANN201
    from nmc.models.vqgan.network import Ladder

    w = read_weights(path)
    return Ladder.from_state_dict(w.state, w.args)


def hashes_of(path: Path) -> dict[int, str]:
    return R.codebook_hashes(ladder_of(path))


def code_model(sizes: tuple[int, ...], codebooks: dict[int, torch.Tensor], pointer: bool = False, continuous: bool = False) -> R.IndexTransformer:
    """A random tiny model with code inputs (`code_dim`), holding `codebooks`' unit codes (with `pointer`: a pointer
    model; with `continuous`: a continuous one, its code head random too, not the zeros it starts from)."""
    torch.manual_seed(2)
    args = R.RecoveryArgs(sizes, **TINY, code_dim=next(iter(codebooks.values())).shape[1], pointer=pointer, continuous=continuous)
    model = R.IndexTransformer(args)
    model.set_codes(codebooks)
    if continuous:
        with torch.no_grad():
            model.code_out.weight.normal_(0, 0.3)
    return model.eval()


def training_photos(tmp_path: Path) -> Path:
    """A folder of three small photos, what the `train_recovery.py` tests train and hold out on."""
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(photo(96, 128, 50 * i, 70 * i)).save(photos / f"p{i}.png")
    return photos


@pytest.fixture(scope="module")
def codec(weights: Path, recovery_file: Path) -> V.VQGANCodec:  # noqa: F811
    return V.VQGANCodec(weights, tile=64, recovery_path=recovery_file)


@pytest.fixture(scope="module")
def no_model(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> V.VQGANCodec:  # noqa: F811
    """The codec with no recovery model installed: `--recover` fills the neighbours' mean."""
    return V.VQGANCodec(weights, tile=64, recovery_path=tmp_path_factory.mktemp("none") / "recovery.safetensors")


def lose(data: bytes, lost: set[int]) -> bytes:
    """`data` with the payload of each packet in `lost` damaged (its CRC no longer matches)."""
    from nmc.codec.api import header_dictionary
    from nmc.codec.container import read_frame, read_header

    fo, out = io.BytesIO(data), bytearray(data)
    header = read_header(fo, header_dictionary)
    for i in range(len(open_stream(data)[1])):
        n, _ = read_frame(fo, i, header.version)
        assert n is not None
        if i in lost:
            out[fo.tell()] ^= 0xFF
        fo.seek(n, io.SEEK_CUR)
    return bytes(out)


class TestFill:
    def test_windows_cover_the_axis_within_the_side(self) -> None:
        for n in (1, 16, 17, 40, 48, 100):
            w = R.windows(n, 16, 4)
            assert w[0][2] == 0 and w[-1][3] == n and all(a[3] == b[2] for a, b in zip(w, w[1:]))
            assert all(e - s <= 16 and s <= cs < ce <= e for s, e, cs, ce in w)

    def test_fill_changes_only_masked_cells_and_is_deterministic(self) -> None:
        torch.manual_seed(1)
        model = R.IndexTransformer(R.RecoveryArgs((16, 64), **TINY)).eval()
        rng = np.random.default_rng(0)
        grid = rng.integers(0, 64, (20, 37))
        masked = rng.random(grid.shape) < 0.3
        a = R.fill(model, np.where(masked, -5, grid), masked, 1)  # what the masked cells held is never read
        assert np.array_equal(a[~masked], grid[~masked]) and a.min() >= 0 and a.max() < 64
        assert np.array_equal(R.fill(model, grid, masked, 1), a)
        one = R.fill(model, grid, masked, 1, steps=1)  # one round: the one-shot argmax of every masked cell
        (_, y1, _, cy1), (_, x1, _, cx1) = R.windows(20, 16)[0], R.windows(37, 16)[0]  # the first window and its core
        win = model.features(torch.from_numpy(grid[:y1, :x1])[None], torch.from_numpy(masked[:y1, :x1])[None], 1)[0]
        core = masked[:cy1, :cx1]
        assert np.array_equal(one[:cy1, :cx1][core], model.logits(win[:cy1, :cx1][torch.from_numpy(core)], 1).argmax(-1).numpy())
        with torch_threads(2):
            assert np.array_equal(R.fill(model, grid, masked, 1), a)
        with pytest.raises(ValueError, match="exceeds 16 cells"):
            model.features(torch.zeros(1, 17, 4, dtype=torch.long), torch.zeros(1, 17, 4, dtype=torch.bool), 0)

    def test_code_inputs_fill_is_the_same_for_one_or_two_threads(self) -> None:
        """(The token model's: `test_fill_changes_only_masked_cells_and_is_deterministic`.) Both decisions."""
        codes = torch.nn.functional.normalize(torch.randn(80, 8, generator=torch.Generator().manual_seed(3)), dim=1)
        model = code_model((16, 64), {16: codes[:16], 64: codes[16:]})
        rng = np.random.default_rng(4)
        grid, masked = rng.integers(0, 64, (12, 15)), rng.random((12, 15)) < 0.4
        for rule in (None, codes[16:]):
            with torch_threads(1):
                a = R.fill(model, grid, masked, 1, codes=rule)
            with torch_threads(2):
                assert np.array_equal(R.fill(model, grid, masked, 1, codes=rule), a)

    def test_expected_code_is_the_code_nearest_the_mean(self) -> None:
        """p = (0.4, 0.35, 0.25) over codes (1, 0), (0, 1), (0.6, 0.8): argmax takes code 0, the expected
        code (0.55, 0.55) is nearest code 2. With zero features, a code-input model's logits are its biases."""
        codes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
        model = code_model((3,), {3: codes})
        with torch.no_grad():
            model.out.weight.zero_(), model.out.bias.zero_(), model.bias.copy_(torch.tensor([0.4, 0.35, 0.25]).log())
        grid, masked = np.zeros((4, 5), np.int64), np.zeros((4, 5), bool)
        masked[1:3, 2:4] = True
        assert (R.fill(model, grid, masked, 0)[masked] == 0).all()
        assert (R.fill(model, grid, masked, 0, codes=codes)[masked] == 2).all()

    def test_pointer_fill_copies_only_neighbours_and_is_deterministic(self) -> None:
        """Every filled cell holds the final index of one of its 8 neighbours (a received one, or one filled in an
        earlier round: the 5x5 hole's centre waits two rounds), only received indices appear, the masked cells'
        contents are never read, and 1 or 2 threads give the same map. Windows: 20 x 37 cells, 16 a side."""
        codes = torch.nn.functional.normalize(torch.randn(1040, 8, generator=torch.Generator().manual_seed(7)), dim=1)
        model = code_model((16, 1024), {16: codes[:16], 1024: codes[16:]}, pointer=True)
        rng = np.random.default_rng(8)
        grid = rng.permutation(1024)[: 20 * 37].reshape(20, 37)  # distinct indices: a copy's source is visible
        masked = rng.random(grid.shape) < 0.3
        masked[3:8, 20:25] = True
        with torch_threads(1):
            a = R.fill(model, np.where(masked, -5, grid), masked, 1)
        with torch_threads(2):
            assert np.array_equal(R.fill(model, grid, masked, 1), a)
        assert np.array_equal(a[~masked], grid[~masked]) and set(a[masked]) <= set(grid[~masked])
        padded = np.pad(a, 1, constant_values=-1)
        for y, x in zip(*np.nonzero(masked)):
            around = [padded[y + 1 + dy, x + 1 + dx] for dy, dx in R.SLOTS]
            assert a[y, x] in around, (y, x)
        assert a[5, 22] in grid[~masked] and (R.fill(model, grid, np.ones_like(masked), 1) == 0).all()  # nothing received: fill_nearest's

    def test_pointer_excludes_masked_and_outside_slots(self) -> None:
        """-inf exactly at the masked neighbours and beyond the edges; the targets are the received neighbours
        with the code nearest the cell's true one, all of them on a tie, never a masked one holding the true index."""
        codes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])
        model = code_model((4,), {4: codes}, pointer=True)
        x = torch.tensor([[[0, 3, 1], [3, 0, 2], [0, 2, 3]]])
        m = torch.zeros(1, 3, 3, dtype=torch.bool)
        m[0, 1, 1] = m[0, 0, 0] = m[0, 2, 0] = True  # the centre's true index 0 is masked at both its corners
        scores = model.pointer_logits(model.features(x, m, 0), m)
        finite = torch.isfinite(scores)
        assert finite[0, 1, 1].tolist() == [False, True, True, True, True, False, True, True]  # slots 0 and 5: (-1,-1), (1,-1)
        assert finite[0, 0, 0].tolist() == [False, False, False, False, True, False, True, False]  # (1,1): the masked centre
        best = R.best_slots(x, m, codes)
        assert best[0, 1, 1].tolist() == [False, True, False, True, False, False, False, True]  # code 3, nearest to 0, three times
        from nmc.models.vqgan.train_recovery import pointer_loss

        scores = torch.zeros(1, 3, 3, 8).masked_fill(~R.neighbours(~m, False), -float("inf"))
        loss, _ = pointer_loss(scores, x, m, codes)  # uniform over the valid slots: best are the centre's 3 of 6, (0,0)'s 2 of 2, (2,0)'s 1 of 2
        assert loss.item() == pytest.approx((np.log(2) + 0 + np.log(2)) / 3)

    def test_baselines(self) -> None:
        grid = np.array([[1, 2, 3], [4, 5, 6], [7, 7, 7]])
        masked = np.zeros((3, 3), bool)
        masked[1, 1] = masked[0, 0] = True
        near = R.fill_nearest(grid, masked)
        assert near[0, 0] in (2, 4) and near[1, 1] in (2, 4, 6, 7) and np.array_equal(near[~masked], grid[~masked])
        freq = R.fill_frequent(grid, masked)
        assert freq[0, 0] == freq[1, 1] == 7
        assert (R.fill_frequent(grid, np.ones((3, 3), bool), 9) == 9).all()
        assert (R.fill_nearest(grid, np.ones((3, 3), bool)) == 0).all()

    def test_neighbours_mean(self) -> None:
        """`fill_mean`: each masked cell the mean of its received 8-neighbours' codes, the diagonal ones weighing
        `DIAGONAL` (cells off the map and masked ones do not count), a masked cell without one (a 3 x 3 hole's centre)
        the nearest received cell's code, nothing received at all index 0's code (as `fill_nearest`). Received cells
        bit for bit, masked cells never read, the same bytes on 1 and 2 threads, and what a continuous model fills
        with a zero head."""
        codes = torch.nn.functional.normalize(torch.randn(20, 8, generator=torch.Generator().manual_seed(5)), dim=1)
        rng = np.random.default_rng(6)
        grid, masked = rng.integers(0, 20, (9, 11)), rng.random((9, 11)) < 0.3
        masked[2:5, 3:6] = masked[0, 0] = masked[8, 10] = True  # a hole, two corners
        with torch_threads(1):
            a = R.fill_mean(np.where(masked, -5, grid), masked, codes)
        with torch_threads(2):
            assert R.fill_mean(grid, masked, codes).tobytes() == a.tobytes()
        own = codes[grid].numpy()
        assert a.dtype == np.float32 and a.shape == (9, 11, 8) and np.isfinite(a).all()
        assert a[~masked].tobytes() == own[~masked].tobytes()
        near = R.fill_nearest(grid, masked)
        for y, x in zip(*np.nonzero(masked)):
            around = [(y + dy, x + dx, 1.0 if dy == 0 or dx == 0 else R.DIAGONAL) for dy, dx in R.SLOTS
                      if 0 <= y + dy < 9 and 0 <= x + dx < 11 and not masked[y + dy, x + dx]]  # fmt: skip
            want = sum(w * own[v, u].astype(np.float64) for v, u, w in around) / sum(w for *_, w in around) if around else codes[near[y, x]].numpy()
            assert np.allclose(a[y, x], want, atol=1e-6), (y, x)
        assert masked[2:5, 3:6].all() and a[3, 4].tobytes() == codes[near[3, 4]].numpy().tobytes()  # the hole's centre: a copy
        assert (R.fill_mean(grid, np.ones((9, 11), bool), codes) == codes[0].numpy()).all()
        model = code_model((20,), {20: codes}, continuous=True)
        with torch.no_grad():
            model.code_out.weight.zero_()
        assert R.fill_codes(model, grid, masked, 0, codes).tobytes() == a.tobytes()


class TestRecoveryFile:
    def test_round_trip_fp16(self, recovery_file: Path, weights: Path) -> None:  # noqa: F811
        model, network, codebooks = R.load_recovery(recovery_file)
        assert network == network_of(weights) and model.args.sizes == (16, 64, 256) and codebooks == hashes_of(weights)
        assert model.tokens.weight.dtype == torch.float32 and not model.training

    def test_a_file_from_before_code_inputs_loads_as_a_token_model(self, recovery_file: Path, tmp_path: Path) -> None:
        """Files written before `code_dim` existed have no such key in their arguments: a learned token table."""
        from safetensors import safe_open
        from safetensors.torch import save_file

        with safe_open(str(recovery_file), framework="pt") as f:
            meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        args = json.loads(meta["model_args"])
        meta["model_args"] = json.dumps({k: v for k, v in args.items() if k not in ("code_dim", "pointer")})  # nor a pointer
        old = tmp_path / "old.safetensors"
        save_file(tensors, str(old), metadata=meta)
        model, _, _ = R.load_recovery(old)
        assert "code_dim" in args and model.args == R.load_recovery(recovery_file)[0].args and model.args.code_dim == 0
        assert hasattr(model, "tokens") and not hasattr(model, "codes") and not model.args.pointer and not hasattr(model, "ptr_q")
        assert set(model.state_dict()) == set(tensors)  # the same tensors as before the pointer: bias and all
        grid, masked = np.random.default_rng(5).integers(0, 64, (9, 11)), np.random.default_rng(6).random((9, 11)) < 0.3
        assert np.array_equal(R.fill(model, grid, masked, 1), R.fill(R.load_recovery(recovery_file)[0], grid, masked, 1))

    def test_code_inputs_round_trip_and_bind_to_the_installed_codes(self, weights: Path, tmp_path: Path) -> None:  # noqa: F811
        """A code-input model's file holds its unit codes in fp32; the codebook hashes it records are those
        of these codes, so the codec uses it exactly for the codebooks whose installed codes they are."""
        net = ladder_of(weights)
        model = code_model((16, 64, 256), {s: net.unit_codes(s) for s in (16, 64, 256)})
        path = tmp_path / "codes.safetensors"
        R.save_recovery(path, model, network_of(weights), {})
        loaded, network, codebooks = R.load_recovery(path)
        assert loaded.args == model.args and loaded.codes.dtype == torch.float32 and codebooks == hashes_of(weights)
        assert all(torch.equal(loaded.state_dict()[k], v.float()) for k, v in model.state().items())
        codec = V.VQGANCodec(weights, tile=64, recovery_path=path)
        assert codec.recovery[1] == {16: 0, 64: 1, 256: 2}
        for size, k in codec.recovery[1].items():
            assert torch.equal(codec.recovery[0].unit_codes(k), codec.model.net.unit_codes(size))
        out = api.decompress(lose(encode(codec, photo(), "s64"), {1}), recover=True, codec=codec)
        assert codec.recovered is not None and codec.recovered["method"] == "recovery" and out.pixels.shape == (96, 128, 3)
        moved = {s: net.unit_codes(s) for s in (16, 64, 256)} | {64: net.unit_codes(64).roll(1, 0)}  # another numbering of s64
        R.save_recovery(path, code_model((16, 64, 256), moved), network_of(weights), {}, hashes_of(weights))  # the codes decide
        assert V.VQGANCodec(weights, tile=64, recovery_path=path).recovery[1] == {16: 0, 256: 2}

    def test_pointer_round_trip_and_recover(self, weights: Path, tmp_path: Path) -> None:  # noqa: F811
        """A pointer model's file: its arguments and tensors (no logits over the codes: no `bias`) come back, and
        the codec fills lost packets with it, the same pixels as before the round trip."""
        net = ladder_of(weights)
        model = code_model((16, 64, 256), {s: net.unit_codes(s) for s in (16, 64, 256)}, pointer=True)
        path = tmp_path / "pointer.safetensors"
        R.save_recovery(path, model, network_of(weights), {})
        loaded, _, codebooks = R.load_recovery(path)
        assert loaded.args == model.args and loaded.args.pointer and codebooks == hashes_of(weights)
        assert set(loaded.state_dict()) == set(model.state()) and "bias" not in model.state() and "slot_bias" in model.state()
        assert all(torch.equal(loaded.state_dict()[k], v.float()) for k, v in model.state().items())
        grid, masked = np.random.default_rng(9).integers(0, 64, (9, 11)), np.random.default_rng(10).random((9, 11)) < 0.3
        half = code_model((16, 64, 256), {s: net.unit_codes(s) for s in (16, 64, 256)}, pointer=True)
        half.load_state_dict({k: v.float() for k, v in model.state().items()})  # the fp16-rounded weights, as shipped
        assert np.array_equal(R.fill(loaded, grid, masked, 1), R.fill(half.eval(), grid, masked, 1))
        codec = V.VQGANCodec(weights, tile=64, recovery_path=path)
        out = api.decompress(lose(encode(codec, photo(), "s64"), {1}), recover=True, codec=codec)
        assert codec.recovered is not None and codec.recovered["method"] == "recovery" and out.pixels.shape == (96, 128, 3)

    def test_missing_bad_or_foreign_file_is_one_clear_error(self, weights: Path, tmp_path: Path) -> None:  # noqa: F811
        data = lose(encode(V.VQGANCodec(weights), photo()), {1})
        (tmp_path / "junk.safetensors").write_bytes(b"junk")
        foreign = tmp_path / "foreign.safetensors"
        R.save_recovery(foreign, R.IndexTransformer(R.RecoveryArgs((16, 64, 256), **TINY)), "0123456789abcdef", {}, hashes_of(weights))
        missing = V.VQGANCodec(weights, recovery_path=tmp_path / "none.safetensors")  # not installed: the neighbours' mean, said so
        opened = api.open_file(io.BytesIO(data), recover=True, codec=missing)
        out = api.decode(opened).pixels
        assert f"by the received neighbours' mean (no recovery model installed at {tmp_path / 'none.safetensors'})" in str(opened.recovery_line())
        assert out.tobytes() == api.decompress(data, recover=True, codec=V.VQGANCodec(weights, concealment="mean")).pixels.tobytes()
        for path, fragment in ((tmp_path / "junk.safetensors", "not a vqgan recovery file"),
                               (foreign, "recovery model for network 0123456789abcdef")):  # fmt: skip
            with pytest.raises(CodecNotFoundError, match=fragment):
                api.decompress(data, recover=True, codec=V.VQGANCodec(weights, recovery_path=path))


    def test_a_codebook_the_model_was_not_trained_on_falls_back_to_the_neighbours_mean(self, weights: Path, tmp_path: Path) -> None:  # noqa: F811
        """The model knows indices only in its training maps' numbering: another ladder's s64 (same base
        network) would be filled with nonsense, so that codebook gets the neighbours' mean, and says so."""
        other = {**hashes_of(weights), 64: "0123456789abcdef"}
        path = tmp_path / "other_ladder.safetensors"
        R.save_recovery(path, R.IndexTransformer(R.RecoveryArgs((16, 64, 256), **TINY)), network_of(weights), {}, other)
        codec = V.VQGANCodec(weights, tile=64, recovery_path=path)
        data = lose(encode(codec, photo(), "s64"), {1})
        opened = api.open_file(io.BytesIO(data), recover=True, codec=codec)
        out = api.decode(opened).pixels
        mean = api.decompress(data, recover=True, codec=V.VQGANCodec(weights, tile=64, concealment="mean")).pixels
        assert out.tobytes() == mean.tobytes() and "by the received neighbours' mean (the recovery model is not bound to the s64 codebook)" in str(opened.recovery_line())
        assert codec.recovery[1] == {16: 0, 256: 2}


class TestRecover:
    def test_lost_packets_are_filled(self, codec: V.VQGANCodec) -> None:
        px = photo(96, 128)
        data = encode(codec, px)
        n = len(open_stream(data)[1])  # 2 x 2 tiles of 4 x 4 cells, 8 packets each
        with pytest.raises(ContainerError, match="checksum"):
            api.decompress(lose(data, {1}), codec=codec)
        good = api.decompress(data, codec=codec).pixels
        opened = api.open_file(io.BytesIO(lose(data, {1, 2})), recover=True, codec=codec)
        out = api.decode(opened).pixels
        assert out.shape == good.shape and opened.lost == [1, 2]
        cells = int(sum(np.zeros((4, 4))[c].size for c in packet_cells((4, 4), codec.lattice)[1:3]))
        assert codec.recovered == {"packets": 2, "indices": cells, "alpha_packets": 0, "method": "recovery"}
        line = opened.recovery_line()
        assert line is not None and line.startswith(f"recovered 2 of {n} packets") and f"{cells} indices by recovery" in line
        assert api.decompress(data, recover=True, codec=codec).pixels.tobytes() == good.tobytes() and codec.recovered is None

    def test_concealments_differ_only_where_lost(self, weights: Path, recovery_file: Path) -> None:  # noqa: F811
        data = lose(encode(V.VQGANCodec(weights), photo(96, 128)), {3})
        outs = {c: api.decompress(data, recover=True, codec=V.VQGANCodec(weights, recovery_path=recovery_file, concealment=c)).pixels
                for c in V.CONCEALMENTS}  # fmt: skip
        assert all(o.shape == (96, 128, 3) for o in outs.values())
        with pytest.raises(ValueError, match="concealment"):
            V.VQGANCodec(weights, concealment="zero")

    def test_same_pixels_for_any_thread_count(self, codec: V.VQGANCodec) -> None:
        data = lose(encode(codec, photo(96, 128)), {0, 5})
        for c in (codec, V.VQGANCodec(codec.weights_path, tile=64, concealment="mean")):
            with torch_threads(1):
                a = api.decompress(data, recover=True, codec=c).pixels
            with torch_threads(2):
                b = api.decompress(data, recover=True, codec=c).pixels
            assert np.array_equal(a, b)

    def test_without_a_recovery_model_the_cli_decodes_with_the_neighbours_mean(self, weights: Path, tmp_path: Path, capsys,  # noqa: ANN001, F811
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
        """`nmc decompress --recover` (in-process, as the CLI runs) on a file with 2 of 8 packets lost and no recovery model
        installed: exit 0, the neighbours' mean's pixels, one `recovered` line naming that fill; without --recover one error line."""
        from PIL import Image

        from nmc.cli.main import main
        from nmc.codec import registry

        missing = tmp_path / "none.safetensors"
        monkeypatch.setattr(V.VQGANCodec, "weights_path", weights)
        monkeypatch.setattr(V.VQGANCodec, "recovery_path", missing)
        registry.get_codec.cache_clear()

        def nmc(*argv: str) -> tuple[int, list[str]]:
            try:
                main(list(argv))
                code = 0
            except SystemExit as e:
                code = int(e.code or 0)
            return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]

        try:
            Image.fromarray(photo(96, 128)).save(tmp_path / "a.png")
            assert nmc("compress", str(tmp_path / "a.png"), "-c", "vqgan", "-q", "s64", "-o", str(tmp_path / "a.nmc"))[0] == 0
            (tmp_path / "bad.nmc").write_bytes(lose((tmp_path / "a.nmc").read_bytes(), {1, 2}))
            code, lines = nmc("decompress", str(tmp_path / "bad.nmc"), "-o", str(tmp_path / "plain.png"))
            assert code == 1 and len(lines) == 1 and lines[0].startswith("nmc: error:") and not (tmp_path / "plain.png").exists()
            code, lines = nmc("decompress", str(tmp_path / "bad.nmc"), "-o", str(tmp_path / "out.png"), "--recover")
            assert code == 0 and not any("Traceback" in line for line in lines)
            said = [line for line in lines if line.startswith("recovered")]
            assert len(said) == 1 and said[0].startswith("recovered 2 of 8 packets (lost or damaged: [1, 2])")
            assert said[0].endswith(f"by the received neighbours' mean (no recovery model installed at {missing})")
            mean = api.decompress((tmp_path / "bad.nmc").read_bytes(), recover=True, codec=V.VQGANCodec(weights, concealment="mean")).pixels
            assert np.array_equal(M.read_image(tmp_path / "out.png").pixels, mean)
        finally:
            registry.get_codec.cache_clear()

    def test_lost_alpha_packet_stays_opaque(self, codec: V.VQGANCodec) -> None:
        rgba = np.concatenate([photo(40, 72), np.full((40, 72, 1), 7, np.uint8)], axis=2)
        data = encode(V.VQGANCodec(codec.weights_path, tile=32), rgba)
        _, packets = open_stream(data)
        last_alpha = len(packets) - 1  # the last tile's alpha packet
        out = api.decompress(lose(data, {last_alpha}), recover=True, codec=V.VQGANCodec(codec.weights_path, tile=32, recovery_path=codec.recovery_path))
        assert (out.pixels[32:, 64:, 3] == 255).all() and (out.pixels[:32, :64, 3] == 7).all()

    def test_info_lists_damaged_packets(self, codec: V.VQGANCodec, tmp_path: Path) -> None:
        data = encode(codec, photo(96, 128))
        (tmp_path / "x.nmc").write_bytes(lose(data, {2, 4}))
        assert describe(tmp_path / "x.nmc")["damaged_packets"] == [2, 4]
        (tmp_path / "y.nmc").write_bytes(data[:-30])
        info = describe(tmp_path / "y.nmc")
        assert info["damaged_packets"][-1] == info["packet_count"] - 1 and info["damaged_packets"]

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.data())
    def test_truncations_and_flips_decode_or_fail_cleanly(self, codec: V.VQGANCodec, no_model: V.VQGANCodec, data) -> None:  # noqa: ANN001
        """With a recovery model and without one (the neighbours' mean)."""
        good = _good_file(codec)
        if data.draw(st.booleans()):
            bad = good[: data.draw(st.integers(0, len(good) - 1))]
        else:
            b = bytearray(good)
            for pos, x in data.draw(st.lists(st.tuples(st.integers(0, len(b) - 1), st.integers(1, 255)), min_size=1, max_size=4)):
                b[pos] ^= x
            bad = bytes(b)
        for recover, c in ((False, codec), (True, codec), (True, no_model)):
            try:
                out = api.decompress(bad, recover=recover, codec=c)
            except NmcError as err:
                assert "\n" not in str(err)
                continue
            assert out.pixels.shape == (96, 128, 3)


_GOOD: dict[str, bytes] = {}


def _good_file(codec: V.VQGANCodec) -> bytes:
    if "x" not in _GOOD:
        _GOOD["x"] = encode(codec, photo(96, 128))
    return _GOOD["x"]


def test_maps_train_export_and_recover(weights: Path, tmp_path: Path) -> None:  # noqa: F811
    """index_maps.py -> train_recovery.py --tiny -> the exported file recovers lost packets in the codec."""
    from nmc.models.vqgan import index_maps, train_recovery

    photos = training_photos(tmp_path)
    maps = tmp_path / "maps.safetensors"
    index_maps.main(network=weights, out=maps, data=photos, ladder=None, scales="1,0.5", flips=True, shifts="0,8", device="cpu")
    read, which, meta, codebooks = index_maps.read_maps(maps)
    assert codebooks[64].shape == (64, 8) and torch.allclose(codebooks[64].norm(dim=1), torch.ones(64))
    assert sorted(read) == [16, 64, 256] and len(which) == 3 * 2 * 2 * 2 and meta["network"] == network_of(weights)
    assert read[64][0].shape == (6, 8) and int(read[256][0].max()) < 256
    export = tmp_path / "rec.safetensors"
    train_recovery.main(maps=[maps], ckpt_dir=tmp_path / "ckpt", export=export, max_steps=3, tiny=True, holdout=1, warmup=1, log_every=1)
    assert "eval held-out s64" in (tmp_path / "ckpt" / "train.log").read_text() and "expected code" in (tmp_path / "ckpt" / "train.log").read_text()
    train_recovery.main(maps=[maps], ckpt_dir=tmp_path / "ckpt", max_steps=4, tiny=True, holdout=1, warmup=1, log_every=1)  # resumes
    assert "resumed from" in (tmp_path / "ckpt" / "train.log").read_text()
    assert R.load_recovery(export)[0].args.code_dim == 8 and R.load_recovery(export)[2] == hashes_of(weights)
    tokens = tmp_path / "tokens.safetensors"
    train_recovery.main(maps=[maps], ckpt_dir=tmp_path / "ckpt_tokens", export=tokens, max_steps=2, tiny=True, holdout=0, warmup=1, code_inputs=False)
    assert R.load_recovery(tokens)[0].args.code_dim == 0 and R.load_recovery(tokens)[2] == hashes_of(weights)
    pointer = tmp_path / "pointer.safetensors"
    train_recovery.main(maps=[maps], ckpt_dir=tmp_path / "ckpt_pointer", export=pointer, max_steps=2, tiny=True, holdout=1, warmup=1, log_every=1, pointer=True)
    assert "pointer" in (tmp_path / "ckpt_pointer" / "train.log").read_text().split("eval held-out s64")[1] and R.load_recovery(pointer)[0].args.pointer
    c = V.VQGANCodec(weights, recovery_path=export)
    out = api.decompress(lose(encode(c, photo()), {0}), recover=True, codec=c)
    assert out.pixels.shape == (96, 128, 3) and c.recovered is not None and c.recovered["indices"] > 0


class TestDecodedLoss:
    def test_pointer_codes_forward_one_neighbour_backward_the_mixture(self) -> None:
        from nmc.models.vqgan.train_recovery import pointer_codes

        torch.manual_seed(0)
        codes = torch.nn.functional.normalize(torch.randn(16, 8), dim=1)
        indices = torch.randint(16, (2, 5, 6))
        masked = torch.zeros(2, 5, 6, dtype=torch.bool)
        masked[:, 1::2, 1::4] = True  # one packet of a 2x4 lattice
        masked[1] = True  # no received cell at all: the nearest-cell copy (here the most frequent index)
        scores = torch.randn(2, 5, 6, 8).masked_fill(~R.neighbours(~masked, False), -torch.inf).requires_grad_(True)
        out = pointer_codes(scores, indices, masked, codes, 1.0, torch.Generator().manual_seed(1)).permute(0, 2, 3, 1)
        cand = R.neighbours(codes[indices], 0.0)
        ys, xs = torch.nonzero(masked[0], as_tuple=True)
        for y, x in zip(ys.tolist(), xs.tolist()):  # exactly one received neighbour's code
            assert min(float((out[0, y, x].detach() - cand[0, y, x, j]).abs().max()) for j in range(8) if torch.isfinite(scores[0, y, x, j])) < 1e-6
        assert torch.equal(out[0][~masked[0]], codes[indices[0]][~masked[0]])  # received cells keep their codes
        assert torch.allclose(out[1], codes[torch.from_numpy(R.fill_nearest(indices[1].numpy(), masked[1].numpy()))])
        (out[0] * torch.randn_like(out[0])).sum().backward()
        g = scores.grad
        assert g is not None and float(g[0][masked[0]].abs().sum()) > 0 and float(g[0][~masked[0]].abs().sum()) == 0 and float(g[1].abs().sum()) == 0

    def test_train_export_init_and_recover(self, weights: Path, tmp_path: Path) -> None:  # noqa: F811
        """train_recovery.py --decoded-loss --tiny on photos -> the export recovers in the codec and starts another run."""
        from nmc.models.vqgan import train_recovery

        photos = training_photos(tmp_path)
        export, log = tmp_path / "rec.safetensors", tmp_path / "ckpt" / "train.log"
        train_recovery.main(maps=[], decoded_loss=True, network=weights, data=photos, ckpt_dir=tmp_path / "ckpt", export=export, max_steps=3, tiny=True,
                            holdout=1, warmup=1, log_every=1, eval_sizes="64", w_ce=0.1)  # fmt: skip
        text = log.read_text()
        assert "step 3 loss" in text and "lpips" in text and "eval held-out s64: 1 photos x 2 draws" in text and "pointer" in text.split("eval held-out s64")[1]
        model, network, hashes = R.load_recovery(export)
        assert model.args.pointer and model.args.code_dim == 8 and network == network_of(weights) and hashes == hashes_of(weights)
        c = V.VQGANCodec(weights, recovery_path=export)
        out = api.decompress(lose(encode(c, photo()), {0}), recover=True, codec=c)
        assert out.pixels.shape == (96, 128, 3) and c.recovered is not None and c.recovered["indices"] > 0 and c.recovered["method"] == "recovery"
        train_recovery.main(maps=[], decoded_loss=True, network=weights, data=photos, ckpt_dir=tmp_path / "next", init=export, max_steps=1, tiny=True,
                            holdout=1, eval_sizes="")  # fmt: skip
        assert f"starts from {export}" in (tmp_path / "next" / "train.log").read_text()
        foreign = tmp_path / "foreign.safetensors"
        R.save_recovery(foreign, R.IndexTransformer(R.RecoveryArgs((16, 64, 256), **TINY)), "0" * 16, {})
        with pytest.raises(typer.BadParameter, match="--init"):
            train_recovery.main(maps=[], decoded_loss=True, network=weights, data=photos, ckpt_dir=tmp_path / "bad", init=foreign, max_steps=1, tiny=True, holdout=1)


class TestContinuous:
    """A continuous model fills code vectors (the neighbours' mean plus its own), which the codec synthesises."""

    def test_fill_is_finite_keeps_received_codes_and_does_not_depend_on_threads(self) -> None:
        """20 x 37 cells in 16-cell windows; a 5 x 5 hole whose centre has no received neighbour. Received cells: their
        code, bit for bit; masked cells: never read. With the head at zero (a fresh model), a masked cell is the mean
        of its received neighbours' codes (`fill_mean`'s weights), or the nearest received cell's code."""
        codes = torch.nn.functional.normalize(torch.randn(80, 8, generator=torch.Generator().manual_seed(11)), dim=1)
        model = code_model((16, 64), {16: codes[:16], 64: codes[16:]}, continuous=True)
        rng = np.random.default_rng(12)
        grid, masked = rng.integers(0, 64, (20, 37)), rng.random((20, 37)) < 0.3
        masked[3:8, 20:25] = True
        with torch_threads(1):
            a = R.fill_codes(model, np.where(masked, -5, grid), masked, 1, codes[16:])
        with torch_threads(2):
            assert np.array_equal(R.fill_codes(model, grid, masked, 1, codes[16:]), a)
        own = codes[16:][grid].numpy()
        assert a.dtype == np.float32 and a.shape == (20, 37, 8) and np.isfinite(a).all()
        assert a[~masked].tobytes() == own[~masked].tobytes() and not np.allclose(a[masked], own[masked])
        with pytest.raises(ValueError, match="fill_codes"):
            R.fill(model, grid, masked, 1)  # no indices to give
        with torch.no_grad():
            model.code_out.weight.zero_()
        zero = R.fill_codes(model, grid, masked, 1, codes[16:])
        y, x = next((y, x) for y, x in zip(*np.nonzero(masked)) if 0 < y < 19 and 0 < x < 36 and not masked[y - 1 : y + 2, x - 1 : x + 2].all())
        around = ~masked[y - 1 : y + 2, x - 1 : x + 2] * np.array([[R.DIAGONAL, 1, R.DIAGONAL], [1, 0, 1], [R.DIAGONAL, 1, R.DIAGONAL]])
        want = (own[y - 1 : y + 2, x - 1 : x + 2] * around[..., None]).sum((0, 1)) / around.sum()
        assert np.allclose(zero[y, x], want, atol=1e-6)
        near = R.fill_nearest(grid, masked)[5, 22]  # the hole's centre
        assert np.array_equal(zero[5, 22], codes[16:][near].numpy())

    def test_codes_take_a_gradient_only_at_masked_cells(self) -> None:
        codes = torch.nn.functional.normalize(torch.randn(16, 8), dim=1)
        indices, masked = torch.randint(16, (2, 5, 6)), torch.rand(2, 5, 6) < 0.4
        own, near = codes[indices], R.nearest_codes(indices, masked, codes)
        delta = torch.randn(2, 5, 6, 8, requires_grad=True)
        out = R.continuous_codes(delta, own, masked, near)
        assert torch.equal(out[~masked], own[~masked])
        (out * torch.randn_like(out)).sum().backward()
        assert delta.grad is not None and float(delta.grad[~masked].abs().sum()) == 0 and bool((delta.grad[masked] != 0).any())
        with pytest.raises(ValueError, match="continuous"):
            R.IndexTransformer(R.RecoveryArgs((16,), **TINY, continuous=True))  # no code inputs

    def test_decoder_hashes_are_the_tensors_bytes(self, weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
        """What binds a continuous model to a size does not depend on where the unit codes were computed: normalising them
        one ulp differently (as a GPU does here and there) leaves every hash as it is, the network in another memory
        layout too, and on a CUDA machine the network there gives the CPU's hashes; a changed decoder weight changes its
        size's hash only."""
        net = ladder_of(weights)
        ours = R.decoder_hashes(net)
        normalize = torch.nn.functional.normalize
        monkeypatch.setattr(torch.nn.functional, "normalize", lambda x, **kw: torch.nextafter(normalize(x, **kw), torch.tensor(2.0)))
        assert not torch.equal(net.unit_codes(64), normalize(net.parts(64)[0].codebook.float(), dim=-1))  # the codes moved
        assert R.decoder_hashes(net) == ours
        monkeypatch.undo()
        assert R.decoder_hashes(copy.deepcopy(net).to(memory_format=torch.channels_last)) == ours
        if torch.cuda.is_available():
            assert R.decoder_hashes(copy.deepcopy(net).cuda()) == ours
        moved = copy.deepcopy(net)
        with torch.no_grad():
            next(moved.parts(256)[1].parameters()).view(-1)[0] += 1e-3
        assert {s for s, h in R.decoder_hashes(moved).items() if h != ours[s]} == {s for s in net.sizes if net.parts(s)[1] is net.parts(256)[1]}

    def test_round_trip_recover_and_threads(self, weights: Path, tmp_path: Path) -> None:  # noqa: F811
        """The file keeps the mode; the codec decodes lost packets with it, the same pixels for 1 or 2 threads, other
        pixels than the nearest copy; a size whose codes or decoder were not the ones trained through falls back."""
        net = ladder_of(weights)
        model = code_model((16, 64, 256), {s: net.unit_codes(s) for s in (16, 64, 256)}, continuous=True)
        path = tmp_path / "continuous.safetensors"
        R.save_recovery(path, model, network_of(weights), {}, R.decoder_hashes(net))
        loaded, _, hashes = R.load_recovery(path)
        assert loaded.args == model.args and loaded.args.continuous and hashes == R.decoder_hashes(net) != hashes_of(weights)
        assert "code_out.weight" in loaded.state_dict() and "bias" not in loaded.state_dict()
        codec = V.VQGANCodec(weights, tile=64, recovery_path=path)
        assert codec.recovery[1] == {16: 0, 64: 1, 256: 2}
        data = lose(encode(codec, photo(), "s64"), {1, 2})
        with torch_threads(1):
            out = api.decompress(data, recover=True, codec=codec).pixels
        with torch_threads(2):
            assert np.array_equal(api.decompress(data, recover=True, codec=codec).pixels, out)
        assert codec.recovered is not None and codec.recovered["method"] == "recovery" and out.shape == (96, 128, 3)
        nearest = api.decompress(data, recover=True, codec=V.VQGANCodec(weights, tile=64, concealment="nearest")).pixels
        assert not np.array_equal(out, nearest)
        mean = api.decompress(data, recover=True, codec=V.VQGANCodec(weights, tile=64, concealment="mean")).pixels
        R.save_recovery(path, model, network_of(weights), {}, {**R.decoder_hashes(net), 64: hashes_of(weights)[64]})  # s64: its codes, not its decoder
        codec = V.VQGANCodec(weights, tile=64, recovery_path=path)
        opened = api.open_file(io.BytesIO(data), recover=True, codec=codec)
        assert api.decode(opened).pixels.tobytes() == mean.tobytes() and codec.recovery[1] == {16: 0, 256: 2}
        assert "by the received neighbours' mean (the recovery model is not bound to the s64 codebook and decoder)" in str(opened.recovery_line())

    def test_a_concealing_decoder_becomes_the_rungs_own(self, weights: Path, tmp_path: Path) -> None:  # noqa: F811
        """`rung_decoder.py` moves a recovery file's s64 decoder into the weights: the same priors and packets, other s64
        pixels only; the recovery file written beside it carries no decoder and binds s64 to the new decoder, and
        `restamp_recovery.py --drop 64` unbinds it (the neighbours' mean fills s64)."""
        import subprocess
        import sys

        from nmc.models.vqgan import rung_decoder

        net = ladder_of(weights)
        model = code_model((16, 64, 256), {s: net.unit_codes(s) for s in (16, 64, 256)}, continuous=True)
        state = {k: v.clone() for k, v in net.parts(64)[1].state_dict().items()}
        state[[k for k in state if k.endswith("bias")][-1]] += 0.5
        conceal, new, rec = tmp_path / "conceal.safetensors", tmp_path / "new.safetensors", tmp_path / "rec.safetensors"
        R.save_recovery(conceal, model, network_of(weights), {}, R.decoder_hashes(net), {64: state})
        rung_decoder.main(weights=weights, recovery=conceal, size=64, out=new, note="test", recovery_out=rec)
        before, after = read_weights(weights), read_weights(new)
        assert after.args["rung_decoders"] == sorted({*before.args.get("rung_decoders", []), 64})
        assert all(np.array_equal(a, b) for a, b in zip(before.prior.unigram, after.prior.unigram))  # type: ignore[union-attr]
        old_codec, new_codec = V.VQGANCodec(weights, tile=64), V.VQGANCodec(new, tile=64, recovery_path=rec)
        for setting in ("s16", "s64"):
            a, b = encode(old_codec, photo(), setting), encode(new_codec, photo(), setting)
            assert open_stream(a)[1] == open_stream(b)[1]  # the same packets (the headers name other weights)
            same = np.array_equal(api.decompress(a, codec=old_codec).pixels, api.decompress(b, codec=new_codec).pixels)
            assert same == (setting == "s16")
        loaded, network, bindings = R.load_recovery(rec)
        assert not loaded.decoder_states and network == network_of(weights)
        assert bindings[64] == R.decoder_hashes(ladder_of(new))[64] != R.decoder_hashes(net)[64] and new_codec.recovery[1] == {16: 0, 64: 1, 256: 2}
        script = Path(__file__).resolve().parents[1] / "scripts" / "restamp_recovery.py"
        subprocess.run([sys.executable, "-P", str(script), str(rec), str(new), str(tmp_path / "drop.safetensors"), "--drop", "64"], check=True, capture_output=True)
        assert V.VQGANCodec(new, tile=64, recovery_path=tmp_path / "drop.safetensors").recovery[1] == {16: 0, 256: 2}
        with pytest.raises(typer.BadParameter, match="no decoder for size 16"):
            rung_decoder.main(weights=weights, recovery=conceal, size=16, out=tmp_path / "x.safetensors", note="", recovery_out=None)
        from nmc.models.vqgan import slim_weights  # the copy a GPU call carries: what s64 (kept) or s16 reads is unchanged

        for keep, same in (("64", {16, 64, 256}), ("", {16, 256})):
            slim_weights.main(weights=new, keep=keep, out=tmp_path / "slim.safetensors")
            full, slim = R.decoder_hashes(ladder_of(new)), R.decoder_hashes(ladder_of(tmp_path / "slim.safetensors"))
            assert {s for s in full if full[s] == slim[s]} >= same and (64 in same or full[64] != slim[64])
            assert network_of(tmp_path / "slim.safetensors") == network_of(new)
        with pytest.raises(typer.BadParameter, match="no own decoder for \\[256\\]"):
            slim_weights.main(weights=new, keep="256", out=tmp_path / "x.safetensors")

    def test_the_base_point_gets_a_decoder_of_its_own(self, weights: Path, tmp_path: Path) -> None:  # noqa: F811
        """`rung_decoder.py` on the base's size (s256 here, s8192 installed): the base network, its hash, every packet
        and the other sizes' pixels stay; s256 decodes through the new decoder, and a slim copy without it through the
        base's again."""
        from nmc.models.vqgan import rung_decoder, slim_weights

        net = ladder_of(weights)
        assert net.vq.size == 256 and net.parts(256)[1] is net.g_s
        model = code_model((16, 64, 256), {s: net.unit_codes(s) for s in (16, 64, 256)}, continuous=True)
        state = {k: v.clone() for k, v in net.g_s.state_dict().items()}
        state[[k for k in state if k.endswith("bias")][-1]] += 0.5
        conceal, new = tmp_path / "conceal.safetensors", tmp_path / "new.safetensors"
        R.save_recovery(conceal, model, network_of(weights), {}, R.decoder_hashes(net), {256: state})
        rung_decoder.main(weights=weights, recovery=conceal, size=256, out=new, note="test", recovery_out=None)
        tuned = ladder_of(new)
        assert network_of(new) == network_of(weights) and tuned.sizes == net.sizes and read_weights(new).args["rungs"] == read_weights(weights).args["rungs"]
        assert tuned.parts(256)[0] is tuned.vq and tuned.parts(256)[1] is not tuned.g_s and 256 in read_weights(new).args["rung_decoders"]
        base = read_weights(new, network=is_base)  # what --recover hashes: the rungs' tensors not read
        assert sorted(base.state) == sorted(k for k in read_weights(new).state if is_base(k)) and base.prior is not None
        old_codec, new_codec = V.VQGANCodec(weights, tile=64), V.VQGANCodec(new, tile=64)
        for setting in ("s16", "s256"):
            a, b = encode(old_codec, photo(), setting), encode(new_codec, photo(), setting)
            assert open_stream(a)[1] == open_stream(b)[1]
            same = np.array_equal(api.decompress(a, codec=old_codec).pixels, api.decompress(b, codec=new_codec).pixels)
            assert same == (setting == "s16")
        slim_weights.main(weights=new, keep="", out=tmp_path / "slim.safetensors")
        assert R.decoder_hashes(ladder_of(tmp_path / "slim.safetensors"))[256] == R.decoder_hashes(net)[256]
        with pytest.raises(typer.BadParameter, match="no operating point of 100 codes"):
            rung_decoder.main(weights=weights, recovery=conceal, size=100, out=tmp_path / "x.safetensors", note="", recovery_out=None)

    def test_a_concealing_decoder_decodes_only_windows_with_lost_cells(self, weights: Path, tmp_path: Path) -> None:  # noqa: F811
        """A file carrying a concealing decoder for s64 (here a copy of s64's decoder with its output conv's bias moved,
        so that its pixels differ visibly): under --recover, the windows of the 64x64 tiles whose cells were lost decode
        through it, the others exactly as with the plain file; a file without losses and the "mean" baseline do not use
        it; a decoder that does not fit the network is one clear error."""
        net = ladder_of(weights)
        model = code_model((16, 64, 256), {s: net.unit_codes(s) for s in (16, 64, 256)}, continuous=True)
        plain, conceal = tmp_path / "plain.safetensors", tmp_path / "conceal.safetensors"
        R.save_recovery(plain, model, network_of(weights), {}, R.decoder_hashes(net))
        state = {k: v.clone() for k, v in net.parts(64)[1].state_dict().items()}
        last = [k for k in state if k.endswith("bias")][-1]
        state[last] += 0.5
        R.save_recovery(conceal, model, network_of(weights), {}, R.decoder_hashes(net), {64: state})
        assert sorted(R.load_recovery(conceal)[0].decoder_states) == [64]
        codec = V.VQGANCodec(weights, tile=64, dec_margin=0, recovery_path=conceal)
        clean = encode(codec, photo(128, 128), "s64")
        data = lose(clean, {0})  # the first packet of the first tile (rows 0-63, columns 0-63)
        a = api.decompress(data, recover=True, codec=V.VQGANCodec(weights, tile=64, dec_margin=0, recovery_path=plain)).pixels
        b = api.decompress(data, recover=True, codec=codec).pixels
        assert not np.array_equal(a[:64, :64], b[:64, :64]) and np.array_equal(a[64:], b[64:]) and np.array_equal(a[:, 64:], b[:, 64:])
        assert np.array_equal(api.decompress(clean, codec=codec).pixels, api.decompress(clean, codec=V.VQGANCodec(weights, tile=64, dec_margin=0)).pixels)
        codec.concealment = "mean"
        mean = api.decompress(data, recover=True, codec=codec).pixels
        assert np.array_equal(mean, api.decompress(data, recover=True, codec=V.VQGANCodec(weights, tile=64, dec_margin=0, concealment="mean")).pixels)
        state["bad"] = torch.zeros(1)
        R.save_recovery(conceal, model, network_of(weights), {}, R.decoder_hashes(net), {64: state})
        with pytest.raises(CodecNotFoundError, match="concealing decoder does not fit") as err:
            api.decompress(data, recover=True, codec=V.VQGANCodec(weights, tile=64, recovery_path=conceal))
        assert "\n" not in str(err.value)
        with pytest.raises(ValueError, match="only a continuous"):
            R.save_recovery(conceal, code_model((16,), {16: net.unit_codes(16)}), network_of(weights), {}, None, {16: state})

    def test_a_model_for_another_network_is_refused_in_one_line(self, weights: Path, tmp_path: Path) -> None:  # noqa: F811
        net = ladder_of(weights)
        foreign = tmp_path / "foreign.safetensors"
        R.save_recovery(foreign, code_model((16, 64, 256), {s: net.unit_codes(s) for s in (16, 64, 256)}, continuous=True), "0123456789abcdef", {},
                        R.decoder_hashes(net))  # fmt: skip
        data = lose(encode(V.VQGANCodec(weights), photo()), {1})
        with pytest.raises(CodecNotFoundError, match="recovery model for network 0123456789abcdef") as err:
            api.decompress(data, recover=True, codec=V.VQGANCodec(weights, recovery_path=foreign))
        assert "\n" not in str(err.value)

    def test_train_export_recover_and_init_from_a_pointer(self, weights: Path, tmp_path: Path) -> None:  # noqa: F811
        """train_recovery.py --continuous --tiny: it logs the fill's code cosine beside its start's (cos0), the held-out
        check names both fills, the export recovers in the codec, `--export-every` exports along the way; a pointer export
        starts a run (its head fresh), a continuous one keeps its head unless `--fresh-head`."""
        from nmc.models.vqgan import train_recovery

        photos = training_photos(tmp_path)
        export, log = tmp_path / "cont.safetensors", tmp_path / "ckpt" / "train.log"
        common = dict(maps=[], network=weights, data=photos, tiny=True, holdout=1, warmup=1, log_every=1)
        train_recovery.main(**common, continuous=True, ckpt_dir=tmp_path / "ckpt", export=export, export_every=2, max_steps=3, eval_sizes="64")
        text = log.read_text()
        assert sorted(p.name for p in tmp_path.glob("cont*.safetensors")) == ["cont-s2.safetensors", "cont.safetensors"]  # --export-every
        assert R.load_recovery(tmp_path / "cont-s2.safetensors")[0].args.continuous and "exported " + str(tmp_path / "cont-s2.safetensors") in text
        assert "step 3 loss" in text and "cos0" in text and "neighbours' mean" in text.split("eval held-out s64")[1] and "continuous" in text.split("eval held-out s64")[1]
        model, network, hashes = R.load_recovery(export)
        assert model.args.continuous and not model.args.pointer and network == network_of(weights) and hashes == R.decoder_hashes(ladder_of(weights))
        assert float(model.code_out.weight.detach().abs().sum()) > 0  # trained away from the neighbours' mean
        c = V.VQGANCodec(weights, recovery_path=export)
        out = api.decompress(lose(encode(c, photo()), {0}), recover=True, codec=c)
        assert out.pixels.shape == (96, 128, 3) and c.recovered is not None and c.recovered["method"] == "recovery"
        pointer = tmp_path / "pointer.safetensors"
        train_recovery.main(**common, decoded_loss=True, ckpt_dir=tmp_path / "ptr", export=pointer, max_steps=1, eval_sizes="")
        train_recovery.main(**common, continuous=True, ckpt_dir=tmp_path / "next", init=pointer, max_steps=1, eval_sizes="")
        assert f"starts from {pointer} (fresh: code_out.weight, code_out.bias)" in (tmp_path / "next" / "train.log").read_text()
        for fresh_head, kept in ((False, True), (True, False)):  # a continuous export keeps its head unless --fresh-head
            again = tmp_path / f"again{fresh_head}"
            train_recovery.main(**common, continuous=True, ckpt_dir=again, init=export, fresh_head=fresh_head, max_steps=0, eval_sizes="",
                                export=again / "x.safetensors")  # fmt: skip
            head = R.load_recovery(again / "x.safetensors")[0].code_out.weight.detach()
            assert torch.equal(head, model.code_out.weight.detach().half().float()) is kept and (float(head.abs().sum()) == 0) is not kept
        with pytest.raises(typer.BadParameter, match="--continuous needs code inputs"):
            train_recovery.main(**common, continuous=True, code_inputs=False, ckpt_dir=tmp_path / "bad", max_steps=1)

    def test_tune_decoder_trains_exports_resumes_and_conceals(self, weights: Path, tmp_path: Path) -> None:  # noqa: F811
        """train_recovery.py --continuous --tune-decoder 64: the decoder copy trains (its weights move from the network's),
        the checkpoint resumes with it (and refuses a run without it), the held-out check scores the fill through it,
        the export carries it and the codec loads it; the size must be a trained one; other sizes may train beside it."""
        from nmc.models.vqgan import train_recovery

        photos = training_photos(tmp_path)
        export, ckpt = tmp_path / "conceal.safetensors", tmp_path / "ckpt"
        common = dict(maps=[], network=weights, data=photos, tiny=True, holdout=1, warmup=1, log_every=1, continuous=True, train_sizes="64")
        train_recovery.main(**common, tune_decoder=64, ckpt_dir=ckpt, export=export, max_steps=2, eval_sizes="64", decoder_lr=1.0)
        text = (ckpt / "train.log").read_text()
        assert "through the concealing decoder: continuous" in text.split("eval held-out s64")[1]
        model = R.load_recovery(export)[0]
        net = ladder_of(weights)
        trained, original = model.decoder_states[64], net.parts(64)[1].state_dict()
        assert trained.keys() == original.keys() and any(not torch.allclose(trained[k].float(), original[k], atol=1e-4) for k in trained)
        train_recovery.main(**common, tune_decoder=64, ckpt_dir=ckpt, max_steps=3, eval_sizes="")
        assert "resumed from" in (ckpt / "train.log").read_text()
        with pytest.raises(typer.BadParameter, match="with the s64 decoder"):
            train_recovery.main(**common, ckpt_dir=ckpt, max_steps=4, eval_sizes="")
        with pytest.raises(typer.BadParameter, match="the size among --train-sizes"):
            train_recovery.main(**{**common, "train_sizes": "16"}, tune_decoder=64, ckpt_dir=tmp_path / "other", max_steps=1)
        with pytest.raises(typer.BadParameter, match="no codebook of that size"):
            train_recovery.main(**{**common, "train_sizes": ""}, tune_decoder=100, ckpt_dir=tmp_path / "none", max_steps=1)
        two = tmp_path / "two"  # the transformer at two sizes, the decoder on the steps at s64 only
        train_recovery.main(**{**common, "train_sizes": "16,64"}, tune_decoder=64, ckpt_dir=two, export=two / "x.safetensors", max_steps=3, eval_sizes="")
        assert sorted(R.load_recovery(two / "x.safetensors")[0].decoder_states) == [64]
        codec = V.VQGANCodec(weights, recovery_path=export)
        out = api.decompress(lose(encode(codec, photo()), {0}), recover=True, codec=codec)
        assert out.pixels.shape == (96, 128, 3) and 64 in codec.model.net.concealers


    def test_adversarial_decoder_resumes_exactly_and_needs_a_decoder(self, weights: Path, tmp_path: Path) -> None:  # noqa: F811
        """--w-adv: a PatchGAN trains beside the concealing decoder (its losses logged); 2 steps, then 2 more resumed from the
        checkpoint, give the decoder and discriminator of 4 steps in one run, bit for bit; a checkpoint with a
        discriminator refuses a run without one, and --w-adv needs --tune-decoder."""
        from nmc.models.trainkit import checkpoint as ckpt_io
        from nmc.models.vqgan import train_recovery

        photos = training_photos(tmp_path)
        common = dict(maps=[], network=weights, data=photos, tiny=True, holdout=1, warmup=1, log_every=1, continuous=True,
                      train_sizes="64", tune_decoder=64, mean_sizes="64", eval_sizes="", decoder_lr=1.0, w_adv=0.5, adv_ramp=2)  # fmt: skip
        one, two = tmp_path / "one", tmp_path / "two"
        train_recovery.main(**common, ckpt_dir=one, max_steps=4)
        train_recovery.main(**common, ckpt_dir=two, max_steps=2)
        train_recovery.main(**common, ckpt_dir=two, max_steps=4)
        assert " adv " in (one / "train.log").read_text() and "resumed from" in (two / "train.log").read_text()
        a, b = (ckpt_io.load(d)[0] for d in (one, two))  # type: ignore[index]
        assert any(k.startswith("d/") for k in a) and a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("d/", "g/")))
        with pytest.raises(typer.BadParameter, match="with a discriminator"):
            train_recovery.main(**{**common, "w_adv": 0.0}, ckpt_dir=two, max_steps=5)
        with pytest.raises(typer.BadParameter, match="--tune-decoder"):
            train_recovery.main(**{**common, "tune_decoder": 0, "mean_sizes": ""}, ckpt_dir=tmp_path / "none", max_steps=1)

    def test_mean_sizes_train_the_decoder_on_the_mean_and_the_codec_fills_it(self, weights: Path, tmp_path: Path) -> None:  # noqa: F811
        """train_recovery.py --tune-decoder 64 --mean-sizes 64: only the decoder learns (the transformer of --init stays
        as it was), on the neighbours' mean; the export records s64 as a mean size, and under --recover the codec fills
        s64 with the mean through that decoder (the pixels of a model whose vector is zero), not with the model."""
        from nmc.models.vqgan import train_recovery

        photos = training_photos(tmp_path)
        net = ladder_of(weights)
        model = code_model((16, 64, 256), {s: net.unit_codes(s) for s in (16, 64, 256)}, continuous=True)
        init, export = tmp_path / "init.safetensors", tmp_path / "mean.safetensors"
        R.save_recovery(init, model, network_of(weights), {}, R.decoder_hashes(net))
        common = dict(maps=[], network=weights, data=photos, tiny=True, holdout=1, warmup=1, log_every=1, continuous=True, train_sizes="64")
        train_recovery.main(**common, tune_decoder=64, mean_sizes="64", init=init, ckpt_dir=tmp_path / "ckpt", export=export, max_steps=2,
                            eval_sizes="64", decoder_lr=1.0)  # fmt: skip
        assert "neighbours' mean" in (tmp_path / "ckpt" / "train.log").read_text().split("through the concealing decoder")[1]
        trained, start = R.load_recovery(export)[0], R.load_recovery(init)[0]
        assert trained.mean_sizes == {64} and sorted(trained.decoder_states) == [64]
        assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), start.state_dict().values()))  # the transformer stays
        data = lose(encode(V.VQGANCodec(weights, tile=64), photo(), "s64"), {1, 2})
        zero, as_model = tmp_path / "zero.safetensors", tmp_path / "model.safetensors"
        decoder = {k: v.float() for k, v in trained.decoder_states[64].items()}
        R.save_recovery(as_model, trained, network_of(weights), {}, R.decoder_hashes(net), {64: decoder})  # the same tensors, no mean size
        with torch.no_grad():
            trained.code_out.weight.zero_()
            trained.code_out.bias.zero_()
        R.save_recovery(zero, trained, network_of(weights), {}, R.decoder_hashes(net), {64: decoder})
        out = {}
        for name, path in (("mean", export), ("zero", zero), ("model", as_model)):
            codec = V.VQGANCodec(weights, tile=64, recovery_path=path)
            out[name] = api.decompress(data, recover=True, codec=codec).pixels
            assert codec.recovered is not None
            assert (codec.recovered["method"] == "the received neighbours' mean, through the recovery file's concealing decoder") == (name == "mean")
        assert np.array_equal(out["mean"], out["zero"]) and not np.array_equal(out["mean"], out["model"])
        with pytest.raises(typer.BadParameter, match="only the --tune-decoder size"):
            train_recovery.main(**common, tune_decoder=64, mean_sizes="16", ckpt_dir=tmp_path / "bad", max_steps=1)
        intact = tmp_path / "intact.safetensors"  # --loss-max 0: the control, the decoder on intact maps (no cell masked)
        train_recovery.main(**common, tune_decoder=64, mean_sizes="64", init=init, ckpt_dir=tmp_path / "intact", export=intact, max_steps=2,
                            eval_sizes="", decoder_lr=1.0, loss_max=0.0)  # fmt: skip
        assert "cos" not in (tmp_path / "intact" / "train.log").read_text().split("step 2 loss")[1].split("\n")[0]
        assert any(not torch.equal(a, b) for a, b in zip(R.load_recovery(intact)[0].decoder_states[64].values(), trained.decoder_states[64].values()))
        with pytest.raises(typer.BadParameter, match="trains a decoder alone"):
            train_recovery.main(**common, tune_decoder=64, ckpt_dir=tmp_path / "bad", max_steps=1, loss_max=0.0)
        with pytest.raises(ValueError, match="without a concealing decoder"):
            R.save_recovery(zero, trained, network_of(weights), {}, R.decoder_hashes(net), None, [64])

class TestLossChannels:
    def test_rates_bursts_and_seeds(self) -> None:
        from nmc.codec import loss as L

        n = 200_000
        ind, burst = L.lost_packets(n, 0.2, "independent", 1), L.lost_packets(n, 0.2, "burst", 1)
        assert abs(ind.mean() - 0.2) < 0.01 and abs(burst.mean() - 0.2) < 0.01
        starts = np.flatnonzero(burst[1:] & ~burst[:-1])
        assert abs(burst.sum() / len(starts) - L.BURST) < 0.1  # mean burst length
        assert np.array_equal(L.lost_packets(50, 0.3, "burst", 7), L.lost_packets(50, 0.3, "burst", 7))
        with pytest.raises(ValueError, match="channel"):
            L.lost_packets(5, 0.1, "erasure", 0)

    def test_gap_closed_against_the_better_baseline_in_each_direction(self) -> None:
        """The share of the gap: against the better baseline per metric (lower ST-LPIPS, higher PSNR), baselines get no row,
        nan where the baseline decodes as well as no loss; a report without baselines (made before them) gets no rows."""
        from nmc.codec import loss as L

        def mean(how: str, lp: float, psnr: float) -> dict:
            return {"codec": "c", "setting": "s", "channel": "independent", "loss": 0.2, "concealment": how, "st_lpips": lp, "psnr": psnr}

        loss = {"metrics": ["st_lpips", "psnr"], "loss_free": {"c s": {"st_lpips": 0.05, "psnr": 25.0}}, "baselines": {"c": ["near", "freq"]},
                "means": [mean("own", 0.06, 25.0), mean("near", 0.07, 23.0), mean("freq", 0.09, 24.0)]}  # fmt: skip
        (row,) = L.gap_closed(loss, {"st_lpips": False, "psnr": True})
        assert row["concealment"] == "own" and row["st_lpips"] == pytest.approx(0.5) and row["psnr"] == pytest.approx(1.0)
        loss["means"][0]["psnr"] = 24.5
        assert L.gap_closed(loss, {"st_lpips": False, "psnr": True})[0]["psnr"] == pytest.approx(0.5)  # from freq's 24, the better
        loss["loss_free"]["c s"]["psnr"] = 24.0
        assert math.isnan(L.gap_closed(loss, {"st_lpips": False, "psnr": True})[0]["psnr"])  # no gap to close
        assert L.gap_closed({**loss, "baselines": {}}, {"st_lpips": False, "psnr": True}) == []

    def test_with_lost_damages_exactly_those_packets(self, codec: V.VQGANCodec, tmp_path: Path) -> None:
        from nmc.codec import loss as L
        from nmc.codec.api import header_dictionary

        data = _good_file(codec)
        lost = np.zeros(len(open_stream(data)[1]), bool)
        lost[[0, 7, 31]] = True
        (tmp_path / "x.nmc").write_bytes(L.with_lost(data, lost, header_dictionary))
        assert describe(tmp_path / "x.nmc")["damaged_packets"] == [0, 7, 31]


def test_conceal_check_writes_the_trials_blocks_and_recover_obeys_them(weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """`with_conceal_check` (`nmc compress --conceal-check`): at a size with a concealing decoder that fills the mean, the
    encoder decodes each tile of 64 pixels a side with a quarter of its packets lost through both decoders and writes in
    `own_blocks` the blocks where ST-LPIPS's map (rigged here) finds the concealing decoder's the farther: the same
    packets, and under --recover those blocks' pixels from the setting's own decoder, the others from the concealing
    one. With the real metric the blocks are what --recover's two decodes of the same losses give."""
    from nmc.codec.api import header_dictionary
    from nmc.codec.container import read_header
    from nmc.codec.reference import ImageReference

    net = ladder_of(weights)
    model = code_model((16, 64, 256), {s: net.unit_codes(s) for s in (16, 64, 256)}, continuous=True)
    torch.manual_seed(3)
    decoder = {k: v + 0.05 * torch.randn_like(v) for k, v in net.parts(64)[1].state_dict().items()}  # another decoder
    path = tmp_path / "conceal.safetensors"
    R.save_recovery(path, model, network_of(weights), {}, R.decoder_hashes(net), {64: decoder}, [64])
    codec = V.VQGANCodec(weights, tile=64, recovery_path=path)
    monkeypatch.setattr(V, "OWN_BLOCK", 2)  # blocks of 32 pixels: 3 x 4 of them on the 96 x 128 photo

    def rigged(self: ImageReference, decoded: list[np.ndarray]) -> np.ndarray:
        """The own decoder the nearer in each tile's top-left 32 x 32 pixels, the farther elsewhere."""
        calls.append(self.rgb.shape)
        own = np.full(self.rgb.shape[:2], 2.0, np.float32)
        own[:32, :32] = 0
        return np.stack([np.ones_like(own), own])

    plain, calls = encode(codec, photo()), []
    monkeypatch.setattr(ImageReference, "st_lpips_maps", rigged)
    checked = encode(codec.with_conceal_check(), photo())
    assert calls == [(64, 64, 3)] * 4  # in tiles of 64: the two of 64 x 64 tried (the two below are 32 high), two losses each
    assert read_header(io.BytesIO(checked), header_dictionary).extra["own_blocks"] == "a00"  # blocks (0, 0) and (0, 2): 1010 0000 0000
    assert open_stream(checked)[1] == open_stream(plain)[1]
    assert np.array_equal(api.decompress(checked, codec=codec).pixels, api.decompress(plain, codec=codec).pixels)
    out = api.decompress(lose(checked, {1, 2}), recover=True, codec=codec).pixels
    assert codec.recovered is not None and "% of them through the setting's own decoder, as the file asks" in codec.recovered["method"]
    concealed = api.decompress(lose(plain, {1, 2}), recover=True, codec=codec).pixels
    mean = api.decompress(lose(plain, {1, 2}), recover=True, codec=V.VQGANCodec(weights, tile=64, recovery_path=path, concealment="mean")).pixels
    own = np.zeros((96, 128), bool)
    own[:32, :32] = own[:32, 64:96] = True
    assert np.array_equal(out[own], mean[own]) and np.array_equal(out[~own], concealed[~own]) and not np.array_equal(mean[own], concealed[own])
    small = photo(48, 128)  # no tile 64 pixels a side: no trial, though the rigged metric prefers some blocks
    assert encode(codec.with_conceal_check(), small) == encode(codec, small) and len(calls) == 4
    monkeypatch.setattr(ImageReference, "st_lpips_maps", lambda self, d: np.stack([np.zeros(self.rgb.shape[:2])] * 2))
    assert encode(codec.with_conceal_check(), photo()) == plain  # no block set: no field
    monkeypatch.undo()
    monkeypatch.setattr(V, "OWN_BLOCK", 2)
    # the real metric: the trial's blocks are those --recover's two decodes of the same losses give, map summed per block
    blocks = read_header(io.BytesIO(encode(codec.with_conceal_check(), photo())), header_dictionary).extra.get("own_blocks", "")
    worse = np.zeros((3, 4))
    for lost in ({0, 4, 8, 12}, {2, 6, 10, 14}):  # `trial_lost(8)`'s two losses in the two tiles tried
        damaged = lose(plain, lost)
        decodes = [api.decompress(damaged, recover=True, codec=c).pixels for c in (codec, V.VQGANCodec(weights, tile=64, recovery_path=path, concealment="mean"))]
        for x0 in (0, 64):
            crop = np.s_[0:64, x0 : x0 + 64]
            a, b = ImageReference(np.ascontiguousarray(photo()[crop])).st_lpips_maps([d[crop].copy() for d in decodes])
            worse[:2, x0 // 32 : x0 // 32 + 2] += (a - b).reshape(2, 32, 2, 32).sum(axis=(1, 3))
    assert blocks == V.pack_blocks(worse > 0)
    assert encode(codec.with_conceal_check(), photo(), "s16") == encode(codec, photo(), "s16")  # no concealing decoder at s16: no trial
    assert encode(codec.with_packets(1).with_conceal_check(), photo()) == encode(codec.with_packets(1), photo())  # nothing to lose a quarter of
    assert V.trial_lost(8) == [[0, 4], [2, 6]] and V.trial_lost(2) == [[0], [1]] and V.trial_lost(64) == [list(range(0, 64, 4)), list(range(2, 64, 4))]


def test_own_blocks_pack_and_are_checked() -> None:
    """`own_blocks`: 4 blocks a hex digit, raster order, the first the highest bit; a header whose bitmap has another length
    than the image's blocks is refused."""
    from nmc.codec.container import Header

    own = np.zeros((3, 5), bool)
    own[0, 0] = own[1, 2] = own[2, 4] = True
    assert V.pack_blocks(own) == "8102" and V.pack_blocks(~np.ones((2, 2), bool)) == ""  # 1000 0001 0000 001(0)
    cells = V.unpack_blocks("8102", (3 * V.OWN_BLOCK - 1, 5 * V.OWN_BLOCK))
    assert np.array_equal(cells[:: V.OWN_BLOCK, :: V.OWN_BLOCK], own) and cells.shape == (3 * V.OWN_BLOCK - 1, 5 * V.OWN_BLOCK)
    media = {"kind": "image", "width": 5 * V.OWN_BLOCK * 16, "height": 3 * V.OWN_BLOCK * 16, "channels": 3, "bit_depth": 8}
    header = Header("vqgan", "vqgan-v1", "x", media, "s64", {}, 8, {})
    for bits, ok in (("8102", True), ("", True), ("81", False), ("81020", False)):
        fields = V.Fields(stride=16, tile=1024, interleave=[2, 4], alpha=False, dec_margin=8, own_blocks=bits)
        assert fields.consistent(header, V._setting(64, False)) is ok


def test_eval_loss_report(weights: Path, recovery_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from PIL import Image

    from nmc.codec import evaluate, registry

    monkeypatch.setattr(V.VQGANCodec, "weights_path", weights)
    monkeypatch.setattr(V.VQGANCodec, "recovery_path", recovery_file)
    registry.get_codec.cache_clear()
    try:
        Image.fromarray(photo(96, 128)).save(tmp_path / "a.png")
        report = evaluate.run([tmp_path / "a.png"], ["vqgan"], [], tmp_path / "r", {"image": ["psnr"]}, loss=[0.3], loss_settings=["s16"], loss_draws=2)
        loss = report["loss"]
        assert loss["settings"] == {"vqgan": ["s16"]} and len(loss["records"]) == 2 * 2 * len(V.CONCEALMENTS)
        assert {r["concealment"] for r in loss["records"]} == set(V.CONCEALMENTS) and all(r["packets"] == 8 for r in loss["records"])
        assert len({r["seed"] for r in loss["records"]}) == 4 and {m["channel"] for m in loss["means"]} == {"independent", "burst"}
        md = (tmp_path / "r" / "report.md").read_text()
        assert "## Packet loss" in md and (tmp_path / "r" / "loss_psnr.png").exists()
        assert loss["baselines"] == {"vqgan": ["nearest", "frequent"]} and "### Share of the gap closed" in md and "| vqgan | s16 | burst | 0.3 | mean |" in md
        again = evaluate.run([tmp_path / "a.png"], ["vqgan"], [], tmp_path / "r", {"image": ["psnr"]}, loss=[0.3], loss_settings=["s16"], loss_draws=2)
        assert again["loss"]["records"] == loss["records"]  # from the cache
        cached = len((tmp_path / "r" / "cache.jsonl").read_text().splitlines())
        checked = evaluate.run([tmp_path / "a.png"], ["vqgan"], [], tmp_path / "r", {"image": ["psnr"]}, loss=[0.3], loss_settings=["s16"], loss_draws=2,
                               conceal_check=True)["loss"]  # fmt: skip
        assert checked["conceal_check"] and not loss["conceal_check"]  # recorded; no concealing decoder here, so the same files
        assert checked["records"] == loss["records"] and len((tmp_path / "r" / "cache.jsonl").read_text().splitlines()) == cached + len(loss["records"])
        (tmp_path / "r" / "loss_psnr.png").unlink()
        evaluate.rebuild_page(tmp_path / "r")  # `nmc eval --html-only`: every plot again, the loss plots too
        assert (tmp_path / "r" / "loss_psnr.png").exists()
        Image.fromarray(photo(96, 128)[::-1].copy()).save(tmp_path / "b.png")  # two files for two processes
        runs = [evaluate.run([tmp_path / "a.png", tmp_path / "b.png"], ["vqgan"], [], tmp_path / f"w{w}", {"image": ["psnr"]}, loss=[0.3],
                             loss_settings=["s16"], loss_draws=2, workers=w)["loss"]["records"] for w in (1, 2)]  # fmt: skip
        assert len(runs[0]) == 2 * len(loss["records"]) and runs[1] == runs[0]  # the same records, in the same order
        assert len((tmp_path / "w2" / "cache.jsonl").read_text().splitlines()) == len((tmp_path / "w1" / "cache.jsonl").read_text().splitlines())
    finally:
        registry.get_codec.cache_clear()
