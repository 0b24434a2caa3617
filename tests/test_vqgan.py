"""The vqgan network and its codebook ladder: shapes, index round trips, rung swaps, locality, k-means."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import typer
from nmc.models.vqgan import ladder as L
from nmc.codec.weights import Weights, read_weights, write_weights
from nmc.models.vqgan.codec import WEIGHTS
from nmc.models.vqgan.fit_prior import assemble
from nmc.models.vqgan.network import VQGAN, Ladder, PatchDiscriminator, Upsample, VQGANArgs, export_tensors
from nmc.models.vqgan.train import TINY, load_init
from safetensors import safe_open


def save(net: VQGAN, path: Path) -> None:
    """What train.py --export writes."""
    write_weights(path, Weights(export_tensors(net), asdict(net.args), report={"step": 7}))


def load(path: Path) -> VQGAN:
    w = read_weights(path)
    return VQGAN.from_state_dict(w.state, w.args)


@pytest.fixture(scope="module")
def tiny() -> VQGAN:
    torch.manual_seed(0)
    return VQGAN(TINY).eval()


class TestNetwork:
    def test_any_size_encodes_and_decodes(self, tiny: VQGAN) -> None:
        x = torch.rand(2, 3, 40, 57)
        idx = tiny.encode(x)
        assert idx.shape == (2, 3, 4) and idx.dtype == torch.long and int(idx.max()) < TINY.codebook_size
        y = tiny.decode(idx, (40, 57))
        assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
        assert tiny.bits(40, 57) == 12 * 6  # 3 x 4 cells of log2(64) bits

    def test_index_round_trip(self, tiny: VQGAN) -> None:
        idx = torch.randint(0, TINY.codebook_size, (2, 5, 7))
        codes = tiny.vq.indices_to_codes(idx)
        assert codes.shape == (2, TINY.code_dim, 5, 7)
        assert torch.allclose(codes.norm(dim=1), torch.ones(2, 5, 7))
        assert torch.equal(tiny.vq.codes_to_indices(codes), idx)

    def test_indices_out_of_range(self, tiny: VQGAN) -> None:
        with pytest.raises(ValueError, match="outside"):
            tiny.decode(torch.full((1, 2, 2), TINY.codebook_size))

    def test_training_forward_reaches_encoder_and_codebook(self) -> None:
        torch.manual_seed(1)
        net = VQGAN(TINY)
        out = net(torch.rand(2, 3, 32, 48))
        assert out.x_hat.shape == (2, 3, 32, 48) and out.vq.indices.shape == (2, 2, 3)
        (F.l1_loss(out.x_hat, torch.rand_like(out.x_hat)) + out.vq.commit + out.vq.codebook_loss).backward()
        for p in (net.g_a[0].weight, net.vq.in_proj.weight, net.vq.codebook, net.vq.out_proj.weight, net.g_s[0][2].weight):
            assert p.grad is not None and p.grad.abs().sum() > 0

    def test_upsample_is_nearest_then_conv(self) -> None:
        torch.manual_seed(2)
        up = Upsample(5, 7).double()
        x = torch.randn(2, 5, 6, 9, dtype=torch.double)
        ref = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), up.weight, up.bias, padding=1)
        assert torch.allclose(up(x), ref, atol=1e-12)

    def test_decoder_is_local(self) -> None:
        """No statistic spans positions: a window of indices decodes like the same window of the whole
        image, once it is farther than the receptive field (~10 cells) from the window's border."""
        torch.manual_seed(3)
        net = VQGAN(VQGANArgs(codebook_size=256)).eval()
        idx = torch.randint(0, 256, (1, 26, 26))
        whole, part = net.decode(idx), net.decode(idx[:, 1:25, 1:25])
        centre = slice(12 * 16, 14 * 16)
        inner = slice(11 * 16, 13 * 16)
        assert torch.allclose(whole[..., centre, centre], part[..., inner, inner], atol=1e-4)
        assert not torch.allclose(whole[..., :32, :32], part[..., :32, :32], atol=1e-4)  # near the border it differs

    def test_rung_swap(self, tiny: VQGAN) -> None:
        torch.manual_seed(4)
        net = VQGAN(TINY)
        net.load_state_dict(tiny.state_dict())
        rung = torch.randn(8, TINY.code_dim)
        net.swap_codebook(rung)
        assert net.args.codebook_size == 8 and net.vq.size == 8
        assert torch.allclose(net.vq.unit_codes(), F.normalize(rung, dim=1))
        idx = net.encode(torch.rand(1, 3, 64, 64))
        assert int(idx.max()) < 8
        assert set(p.data_ptr() for p in net.rung_parameters()) == set(p.data_ptr() for p in net.vq.parameters())
        assert len(net.rung_parameters(decoder=True)) == len(list(net.vq.parameters())) + len(list(net.g_s.parameters()))
        with pytest.raises(ValueError, match="code_dim"):
            net.swap_codebook(torch.randn(8, TINY.code_dim + 1))

    def test_save_load(self, tiny: VQGAN, tmp_path: Path) -> None:
        save(tiny, tmp_path / "w.safetensors")
        back = load(tmp_path / "w.safetensors")
        assert back.args == tiny.args
        assert torch.equal(back.vq.codebook, tiny.vq.codebook)  # fp32: the argmax sees the same codes
        x = torch.rand(1, 3, 48, 48)
        assert torch.allclose(back.decode(tiny.encode(x)), tiny.decode(tiny.encode(x)), atol=2e-2)
        w = read_weights(tmp_path / "w.safetensors")
        assert w.state["g_s.0.2.weight"].dtype == torch.float16 and w.report == {"step": 7} and w.prior is None
        L_path = tmp_path / "ladder.safetensors"
        L.main(network=tmp_path / "w.safetensors", out=L_path, rungs="4", data=None, seed=0)
        with pytest.raises(ValueError, match="no model arguments"):
            load(L_path)

    def test_discriminator_gives_a_logit_map(self) -> None:
        logits = PatchDiscriminator(channels=8, layers=2)(torch.rand(3, 3, 64, 64))
        assert logits.shape[:2] == (3, 1) and logits.shape[2] > 1 and logits.shape[3] > 1


class TestLadder:
    codes = F.normalize(torch.randn(300, 8, generator=torch.Generator().manual_seed(5)), dim=1)

    def test_deterministic_and_nearest(self) -> None:
        a = L.spherical_kmeans(self.codes, 16, seed=3)
        b = L.spherical_kmeans(self.codes, 16, seed=3)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        centroids, labels = a
        assert centroids.shape == (16, 8) and torch.allclose(centroids.norm(dim=1), torch.ones(16))
        assert len(labels.unique()) == 16
        assert torch.equal(labels, (self.codes @ centroids.t()).argmax(dim=1))  # each code maps to its nearest centroid
        assert not torch.equal(L.spherical_kmeans(self.codes, 16, seed=4)[0], centroids)  # the seed matters

    def test_weights(self) -> None:
        w = torch.zeros(300)
        w[:40] = torch.arange(1, 41).float()
        centroids, labels = L.spherical_kmeans(self.codes, 8, w)
        assert labels.shape == (300,) and len(labels[:40].unique()) == 8  # every cluster holds weighted codes
        with pytest.raises(ValueError, match="41 clusters"):
            L.spherical_kmeans(self.codes, 41, w)

    def test_file_is_reproducible(self, tiny: VQGAN, tmp_path: Path) -> None:
        save(tiny, tmp_path / "net.safetensors")
        for name in ("a", "b"):
            L.main(network=tmp_path / "net.safetensors", out=tmp_path / f"{name}.safetensors", rungs="8,4,16", data=None, seed=0)
        with safe_open(str(tmp_path / "a.safetensors"), "pt") as a, safe_open(str(tmp_path / "b.safetensors"), "pt") as b:
            assert a.metadata() == b.metadata() and a.metadata()["rungs"] == "[4, 8, 16]"
            assert set(a.keys()) == set(b.keys()) == {f"rung.{s}.{t}" for s in (4, 8, 16) for t in ("codebook", "labels")}
            assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())  # noqa: SIM118
            assert a.get_tensor("rung.16.codebook").shape == (16, TINY.code_dim)
            assert a.get_tensor("rung.4.labels").shape == (TINY.codebook_size,)

    def test_from_weights_gives_back_the_ladder_of_an_assembled_file(self, tiny: VQGAN, tmp_path: Path) -> None:
        """An assembled file made from a k-means ladder gives back that ladder: the same codebooks, the same labels."""
        save(tiny, tmp_path / "net.safetensors")
        L.main(network=tmp_path / "net.safetensors", out=tmp_path / "kmeans.safetensors", rungs="4,8,16", data=None, seed=0)
        write_weights(tmp_path / "w.safetensors", assemble(tmp_path / "net.safetensors", tmp_path / "kmeans.safetensors", []))
        L.main(from_weights=tmp_path / "w.safetensors", out=tmp_path / "back.safetensors")
        with safe_open(str(tmp_path / "kmeans.safetensors"), "pt") as a, safe_open(str(tmp_path / "back.safetensors"), "pt") as b:
            assert set(a.keys()) == set(b.keys()) and b.metadata()["rungs"] == "[4, 8, 16]"
            assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())  # noqa: SIM118
        net, _, _, what = load_init(tmp_path / "w.safetensors", {"channels": 8, "layers": 2})  # train.py --init: the base network
        assert what.startswith("base network") and net.args == tiny.args and torch.equal(net.vq.codebook, tiny.vq.codebook)
        with pytest.raises(typer.BadParameter, match="no ladder rungs"):
            L.main(from_weights=tmp_path / "net.safetensors", out=tmp_path / "x.safetensors")
        w = read_weights(tmp_path / "w.safetensors")
        w.state["rungs.8.vq.in_proj.bias"] = w.state["rungs.8.vq.in_proj.bias"] + 1  # a fine-tuned rung: not a ladder rung
        write_weights(tmp_path / "tuned.safetensors", w)
        L.main(from_weights=tmp_path / "tuned.safetensors", out=tmp_path / "x.safetensors")  # left out, the others kept
        with safe_open(str(tmp_path / "x.safetensors"), "pt") as f:
            assert f.metadata()["rungs"] == "[4, 16]" and "rung.8.codebook" not in f.keys()  # noqa: SIM118
        for s in (4, 16):
            w.state[f"rungs.{s}.vq.in_proj.bias"] = w.state[f"rungs.{s}.vq.in_proj.bias"] + 1
        write_weights(tmp_path / "all_tuned.safetensors", w)
        with pytest.raises(typer.BadParameter, match="every rung was fine-tuned"):
            L.main(from_weights=tmp_path / "all_tuned.safetensors", out=tmp_path / "x.safetensors")

    def test_an_assembled_file_keeps_every_decoder_when_refitted(self, tiny: VQGAN, tmp_path: Path) -> None:
        """`fit_prior.py --network` of an assembled file (a refit of the priors) keeps each rung's decoder and the base
        point's own (`rungs.{base}.g_s`; session 19's refit dropped it)."""
        save(tiny, tmp_path / "net.safetensors")
        L.main(network=tmp_path / "net.safetensors", out=tmp_path / "kmeans.safetensors", rungs="4,8", data=None, seed=0)
        w = assemble(tmp_path / "net.safetensors", tmp_path / "kmeans.safetensors", [])
        own = Ladder(tiny.args, {4: True, 8: False, tiny.args.codebook_size: True})
        own.load_state_dict(Ladder.from_state_dict(w.state, w.args).state_dict(), strict=False)
        for p in own.parameters():
            p.data.add_(0.01)  # decoders of their own that differ from the base's
        write_weights(tmp_path / "own.safetensors", Weights(export_tensors(own), own.model_args()))
        again = assemble(tmp_path / "own.safetensors", None, [])
        before = read_weights(tmp_path / "own.safetensors").state
        assert set(again.state) == set(before) and again.args["rung_decoders"] == [4, tiny.args.codebook_size]
        assert all(torch.equal(again.state[k], before[k]) for k in before)

    def test_from_the_installed_weights(self, tmp_path: Path) -> None:
        """Every installed operating point decodes with a decoder of its own since 2026-12-03 session 14 (s16 since session
        5, s32 since 6, s1024 since 12, s256 and s2048 since 13; s64, s128, s512 and the base's s8192 since 14), so the
        installed weights hold no ladder rung to give back; the base network is the one every rung was cut from."""
        w = read_weights(WEIGHTS)
        net = Ladder.from_state_dict(w.state, w.args)
        assert net.sizes == [16, 32, 64, 128, 256, 512, 1024, 2048, 8192] and w.args["rung_decoders"] == net.sizes
        assert net.parts(8192)[0] is net.vq and net.parts(8192)[1] is not net.g_s  # the base's codebook, its own decoder
        with pytest.raises(typer.BadParameter, match="every rung was fine-tuned"):
            L.main(from_weights=WEIGHTS, out=tmp_path / "ladder.safetensors")
