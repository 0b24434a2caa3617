"""mcquic network and training-script pieces: shapes, progressive indices, weights and checkpoint round trips
(v2 and v3 layouts, tiny sizes)."""

import dataclasses

import pytest
import torch
from nmc.codec.weights import Weights, read_weights, write_weights
from nmc.models.mcquic.network import ARCHS, GDN, McQuic, McQuicArgs, MultiCodebookVQ, args_from_dict, export_tensors
from nmc.models.mcquic.train import TINY_ARCHS


@pytest.fixture(scope="module", params=["v2", "v3"])
def net(request: pytest.FixtureRequest) -> McQuic:
    torch.manual_seed(0)
    model = McQuic(TINY_ARCHS[request.param])
    model.train()
    model(torch.rand(4, 3, 64, 64))  # initialise codebooks from data
    return model.eval()


class TestMultiCodebookVQ:
    def test_indices_codes_symmetric(self):
        torch.manual_seed(0)
        vq = MultiCodebookVQ(m=3, k=16, dim=4).eval()
        x = torch.randn(2, 12, 5, 7)
        idx = vq.codes_to_indices(x)
        assert idx.shape == (2, 3, 5, 7) and idx.dtype == torch.int64
        codes = vq.indices_to_codes(idx)
        assert torch.equal(vq.codes_to_indices(codes), idx)
        assert torch.equal(vq(x).indices, idx)

    def test_ema_and_dead_restart_keep_codebook_used(self):
        torch.manual_seed(0)
        vq = MultiCodebookVQ(m=2, k=32, dim=2, restart_every=5).train()
        for _ in range(40):
            vq(torch.randn(8, 4, 8, 8))
        assert vq.usage().min() > 0.9
        assert vq.bits == 10


class TestMcQuic:
    def test_rates(self):
        net = McQuic(McQuicArgs())
        assert [round(net.bpp(q), 3) for q in range(1, 5)] == [0.125, 0.375, 0.625, 0.875]
        with pytest.raises(ValueError, match="quality"):
            net.bpp(5)

    def test_any_size_and_progressive_indices(self, net):
        x = torch.rand(1, 3, 37, 53)
        full = net.compress(x, 4)
        assert [tuple(i.shape) for i in full.indices] == [(1, 4, 3, 4)] + [(1, 2, 6, 8)] * 3
        for q in range(1, 4):
            part = net.compress(x, q)
            assert all(torch.equal(a, b) for a, b in zip(part.indices, full.indices[:q]))
            y = net.decompress(full.indices, q, full.shape)  # coarser qualities decode from a prefix
            assert y.shape == x.shape and torch.equal(y, net.decompress(part.indices, q, part.shape))

    def test_save_load_round_trip(self, net, tmp_path):
        write_weights(tmp_path / "m.safetensors", Weights(export_tensors(net), dataclasses.asdict(net.args)))
        w = read_weights(tmp_path / "m.safetensors")
        loaded = McQuic.from_state_dict(w.state, w.args)
        assert loaded.args == net.args
        half = McQuic.from_state_dict(export_tensors(net), dataclasses.asdict(net.args))
        x = torch.rand(1, 3, 48, 32)
        a, b = loaded.compress(x, 4), half.compress(x, 4)
        assert all(torch.equal(i, j) for i, j in zip(a.indices, b.indices))
        assert torch.equal(loaded.decompress(a.indices, 4, a.shape), half.decompress(b.indices, 4, b.shape))


class TestV3:
    """v3's fields: files without them (v1, v2) build the v2 layout; v3 weights load only as v3."""

    def test_a_v2_file_without_the_v3_fields_builds_v2(self):
        v2_file = {k: v for k, v in dataclasses.asdict(ARCHS["v2"]).items() if k not in ("gdn", "dec_channels")}
        args = args_from_dict(v2_file)
        assert args == ARCHS["v2"] and not args.gdn and args.dec_channels is None
        assert not any(isinstance(m, GDN) for m in McQuic(args).modules())

    def test_v3_layout(self):
        net, v2 = McQuic(ARCHS["v3"]), McQuic(ARCHS["v2"])
        assert sum(isinstance(m, GDN) for m in net.modules()) == 3  # g_a at f8 and f16, g_c
        assert [round(net.bpp(q), 3) for q in range(1, 5)] == [round(v2.bpp(q), 3) for q in range(1, 5)]  # same rate table
        assert args_from_dict(dataclasses.asdict(ARCHS["v3"])) == ARCHS["v3"]  # JSON lists back to tuples

    def test_v3_weights_do_not_load_as_v2(self, tmp_path):
        torch.manual_seed(0)
        v3 = McQuic(TINY_ARCHS["v3"]).eval()
        with pytest.raises(ValueError, match="does not match"):
            McQuic.from_state_dict(export_tensors(v3), dataclasses.asdict(TINY_ARCHS["v2"]))

    def test_gdn_is_a_positive_gain_and_its_inverse_multiplies(self):
        torch.manual_seed(0)
        g, ig = GDN(4), GDN(4, inverse=True)
        with torch.no_grad():
            g.weight.neg_()  # the sign of gamma and beta does not matter: the norm uses their absolute values
        x = torch.randn(2, 4, 5, 5) * 10
        norm = 1.001 + 0.1 * x.abs() + 1e-4 * x.abs().sum(1, keepdim=True)  # beta 1 (+ 1e-3, the floor), gamma 0.1 I + 1e-4 at init
        assert torch.allclose(g(x), x / norm, atol=1e-5) and torch.allclose(ig(x), x * norm, atol=1e-4)

    def test_every_gdn_weight_learns(self):
        """abs() has a zero gradient at 0: a gamma initialised with exact zeros off the diagonal never mixes channels."""
        torch.manual_seed(0)
        g = GDN(6)
        g(torch.randn(2, 6, 5, 5)).square().sum().backward()
        assert g.weight.grad is not None and bool((g.weight.grad != 0).all())
