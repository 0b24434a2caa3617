"""mcquic network and training-script pieces: shapes, progressive indices, weights and checkpoint round trips."""

import dataclasses

import pytest
import torch
from nmc.codec.weights import Weights, read_weights, write_weights
from nmc.models.mcquic.network import McQuic, McQuicArgs, MultiCodebookVQ, export_tensors
from nmc.models.mcquic.train import TINY


@pytest.fixture(scope="module")
def net() -> McQuic:
    torch.manual_seed(0)
    model = McQuic(TINY)
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
        write_weights(tmp_path / "m.safetensors", Weights(export_tensors(net), dataclasses.asdict(TINY)))
        w = read_weights(tmp_path / "m.safetensors")
        loaded = McQuic.from_state_dict(w.state, w.args)
        half = McQuic.from_state_dict(export_tensors(net), dataclasses.asdict(TINY))
        x = torch.rand(1, 3, 48, 32)
        a, b = loaded.compress(x, 4), half.compress(x, 4)
        assert all(torch.equal(i, j) for i, j in zip(a.indices, b.indices))
        assert torch.equal(loaded.decompress(a.indices, 4, a.shape), half.decompress(b.indices, 4, b.shape))
