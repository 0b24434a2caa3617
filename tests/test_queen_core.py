"""queen coding core: symbol coding, round trip, closed loop, the position gate, determinism."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from nmc.codec.entropy import Encoder
from nmc.codec.errors import ContainerError, MediaError
from nmc.codec import splatting
from nmc.codec.media import GaussianLayout
from nmc.models.queen import core, scenes, symbols as S

CFG = scenes.SceneConfig(gaussians=600, frames=5, seed=1)
FAST = core.Settings(lam=1e-6, fit_rows=3000, fit_steps=60, gate_steps=60)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return list(scenes.generate(CFG))


@pytest.fixture(scope="module")
def coded(frames: list[np.ndarray], one_torch_thread: None) -> tuple[core.EncodedGroup, core.GroupEncoder]:
    enc = core.GroupEncoder(GaussianLayout(3), FAST)
    return enc.encode_group(frames), enc


def decode(group: core.EncodedGroup) -> list[np.ndarray]:
    return list(core.GroupDecoder(GaussianLayout(3), CFG.gaussians).decode_group(group.header, group.packets))


class TestSymbols:
    @given(st.lists(st.integers(-(2**45), 2**45), max_size=200))
    @settings(max_examples=40, deadline=None)
    def test_wide_round_trip(self, values: list[int]) -> None:
        side, enc = S.Writer(), Encoder()
        S.encode_wide(side, enc, np.array(values, np.int64))
        reader, dec = S.unpack(S.pack(side, enc))
        assert S.decode_wide(reader, dec, len(values)).tolist() == values

    def test_classes_are_compact(self) -> None:
        v = np.random.default_rng(0).laplace(0, 50, 20000).astype(np.int64)
        cls, nraw, _ = S.to_classes(v)
        assert cls.max() < 40
        empirical = -np.sum(np.unique(v, return_counts=True)[1] / v.size * np.log2(np.unique(v, return_counts=True)[1] / v.size))
        assert S.wide_bits(v) / v.size < empirical + 0.1  # classes + raw bits lose little against the true entropy

    def test_table_from_pmf(self) -> None:
        t = S.Table.from_pmf([0.5, 0.25, 0.25, 0.0], lo=-1)
        assert t.deficit.tolist() == [0, 16, 16, 255] and (t.lo, t.hi) == (-1, 2)
        assert t.bits([-1, 0, 1]) == pytest.approx(-np.log2(t.freqs()[[0, 1, 2]] / t.freqs().sum()).sum())


class TestRoundTrip:
    def test_decoder_matches_encoder_state(self, coded: tuple[core.EncodedGroup, core.GroupEncoder]) -> None:
        group, enc = coded
        out = decode(group)
        assert len(out) == CFG.frames and out[0].dtype == np.float32
        assert enc.state is not None and np.array_equal(out[-1], core.to_float(enc.state))

    def test_quality_and_rate(self, frames: list[np.ndarray], coded: tuple[core.EncodedGroup, core.GroupEncoder]) -> None:
        group, _ = coded
        out = decode(group)
        cam = scenes.held_out_cameras((48, 36), 1)[0]
        psnr = [splatting.psnr(splatting.render(f, GaussianLayout(3), cam), splatting.render(o, GaussianLayout(3), cam)) for f, o in zip(frames, out)]
        assert min(psnr) > 38
        delta_bits = 8 * np.mean([len(p) for p in group.packets[1:]]) / CFG.gaussians
        assert delta_bits < 60  # float32 .ply: 1984 bits per Gaussian

    def test_no_drift(self, frames: list[np.ndarray], coded: tuple[core.EncodedGroup, core.GroupEncoder]) -> None:
        """Closed loop: the error of the last frame is no larger than that of the first residual frame."""
        out = decode(coded[0])
        err = [float(np.sqrt(((o - f) ** 2).mean())) for f, o in zip(frames, out)]
        assert err[-1] < 1.5 * err[1]
        assert max(err) < 3 * err[0]  # residual frames cost no more error than the keyframe

    def test_next_group_continues_without_keyframe(self, frames: list[np.ndarray]) -> None:
        enc, dec = core.GroupEncoder(GaussianLayout(3), FAST), core.GroupDecoder(GaussianLayout(3), CFG.gaussians)
        first, second = enc.encode_group(frames[:3]), enc.encode_group(frames[3:])
        assert first.meta["keyframe"] and not second.meta["keyframe"]
        assert sum(map(len, second.packets)) < 0.5 * sum(map(len, first.packets))
        out = list(dec.decode_group(first.header, first.packets)) + list(dec.decode_group(second.header, second.packets))
        assert np.array_equal(out[-1], core.to_float(enc.state))  # type: ignore[arg-type]
        with pytest.raises(ContainerError, match="reference"):
            list(core.GroupDecoder(GaussianLayout(3), CFG.gaussians).decode_group(second.header, second.packets))  # no keyframe before it

    def test_settings_trade_rate_for_quality(self, frames: list[np.ndarray], coded: tuple[core.EncodedGroup, core.GroupEncoder]) -> None:
        coarse = core.GroupEncoder(GaussianLayout(3), core.Settings(**{**FAST.__dict__, "lam": 1e-5})).encode_group(frames)
        size = lambda g: sum(map(len, g.packets))  # noqa: E731
        err = lambda g: float(np.mean([((o - f) ** 2).mean() for f, o in zip(frames, decode(g))]))  # noqa: E731
        assert size(coarse) < size(coded[0]) and err(coarse) > err(coded[0])


class TestGate:
    def test_static_gaussians_are_left_alone(self, coded: tuple[core.EncodedGroup, core.GroupEncoder]) -> None:
        out = decode(coded[0])
        static = scenes.static_mask(scenes.build_base(CFG))
        moved = np.any([np.any(o[:, :3] != out[0][:, :3], axis=1) for o in out[1:]], axis=0)
        assert 1 - moved[static].mean() >= 0.95
        assert moved[~static].mean() > 0.95  # and the moving object is updated

    def test_gate_opens_where_it_pays(self) -> None:
        from nmc.models.queen.gate import fit_gate

        r = np.zeros((200, 3))
        r[:100, 0] = 0.05  # moved by 500 steps
        r[100:, 0] = 2e-4  # jitter of two steps
        q = np.round(r / core.GRID) * core.GRID
        mask = fit_gate(r, q, np.ones(200), np.full(200, 20.0), lam=1e-6)
        assert mask[:100].all() and not mask[100:].any()

    def test_noise_floor_leaves_jitter_where_coding_it_would_pay(self) -> None:
        """With a weight that makes coding the jitter pay (a 100k scene at 1e-6 did, on 47 % of
        its static Gaussians), the floor still leaves the noise alone and updates what moves."""
        from nmc.models.queen.gate import fit_gate, noise_floor

        rng = np.random.default_rng(0)
        r = rng.normal(0, 3e-4, (1000, 3))  # two frames' jitter of 2e-4 each
        r[:300] += rng.normal(0, 5e-3, (300, 3))  # 30 % moving
        q = np.round(r / core.GRID) * core.GRID
        bits = core.position_bits(np.round(r / core.GRID).astype(np.int64))
        w = np.full(1000, 1e3)
        assert fit_gate(r, q, w, bits, lam=1e-6)[300:].mean() > 0.9  # without the floor: the jitter is coded
        floor = noise_floor(r)
        assert 14 * 9e-8 < floor < 24 * 9e-8  # 16.27 noise variances (9e-8 per coordinate), a little more with the movers
        mask = fit_gate(r, q, w, bits, lam=1e-6, floor=floor)
        assert mask[300:].mean() < 0.005 and mask[:300].mean() > 0.95
        assert noise_floor(np.zeros((50, 3))) == 0 and not fit_gate(np.zeros((50, 3)), np.zeros((50, 3)), w[:50], bits[:50], 1e-6).any()


class TestLatent:
    def test_rdoq_matches_the_direct_cost(self) -> None:
        """`choose` expands |err - d w|^2; a direct evaluation of every candidate picks the same latents."""
        from nmc.models.queen import latent

        rng = np.random.default_rng(1)
        r = rng.normal(0, 2e-3, (3000, 45))
        coder = latent.fit(r, np.full(3000, 30.0), 1e-6, 4, core.GRID, steps=30)
        z = coder.choose(r, np.full(3000, 30.0), 1e-6, core.GRID)
        w_q = coder.weight.astype(np.float64) * core.GRID
        ref = np.clip(np.round(r @ np.linalg.pinv(w_q)), [t.lo for t in coder.tables], [t.hi for t in coder.tables]).astype(np.int64)
        for _ in range(2):
            for j, t in enumerate(coder.tables):
                cands = np.stack([ref[:, j], ref[:, j] - np.sign(ref[:, j]), 0 * ref[:, j]], 1)
                cost = []
                for c in range(3):
                    trial = ref.copy()
                    trial[:, j] = cands[:, c]
                    cost.append(30.0 * ((r - trial @ w_q) ** 2).sum(1) + 1e-6 * t.symbol_bits()[cands[:, c] - t.lo])
                ref[:, j] = cands[np.arange(3000), np.argmin(cost, 0)]
        assert (z != ref).any(axis=1).mean() < 1e-3  # the same choice but for float ties
        assert np.abs(z).sum() > 1000  # and not a trivial one

    def test_fit_group_blocks(self) -> None:
        from nmc.models.queen import latent

        rng = np.random.default_rng(2)
        a, b = rng.normal(0, 1e-3, (500, 3)), rng.normal(0, 1e-3, (500, 1))
        coders = latent.fit_group([(a, np.ones(500), 2), (b, np.ones(500), 0), (b, np.ones(500), 3)], 1e-7, core.GRID, steps=20)
        assert [c.weight.shape for c in coders] == [(2, 3), (0, 1), (1, 1)] and [len(c.tables) for c in coders] == [2, 0, 1]
        with pytest.raises(ValueError, match="same rows"):
            latent.fit_group([(a, np.ones(500), 2), (b[:400], np.ones(400), 1)], 1e-7, core.GRID)


class TestErrors:
    def test_count_change_and_nan(self, frames: list[np.ndarray], coded: tuple[core.EncodedGroup, core.GroupEncoder]) -> None:
        enc = core.GroupEncoder(GaussianLayout(3), FAST)
        enc.encode_group(frames[:1])
        with pytest.raises(MediaError, match="count changed from 600 to 599"):
            enc.encode_group([frames[1][:-1]])
        bad = frames[1].copy()
        bad[3, 7] = np.nan
        with pytest.raises(MediaError, match="NaN"):
            enc.encode_group([bad])

    def test_damaged_streams(self, coded: tuple[core.EncodedGroup, core.GroupEncoder]) -> None:
        group = coded[0]
        with pytest.raises(ContainerError):
            decode(core.EncodedGroup(group.header[:-5], group.packets))
        with pytest.raises(ContainerError):
            decode(core.EncodedGroup(group.header, [group.packets[0][:20]]))


DECODE_IN_CHILD = """
import hashlib, json, sys, torch
torch.set_num_threads(1)
import numpy as np
from nmc.models.queen import core
from nmc.codec.media import GaussianLayout
d = json.load(open(sys.argv[1]))
dec = core.GroupDecoder(GaussianLayout(3), 600)
coders = dec.read_header(bytes.fromhex(d["header"]))
tables = hashlib.sha256(b"".join(t.freqs().tobytes() for c in coders.values() for t in c.tables)).hexdigest()
frames = list(dec.decode_group(bytes.fromhex(d["header"]), [bytes.fromhex(p) for p in d["packets"]]))
print(json.dumps({"tables": tables, "frames": hashlib.sha256(b"".join(f.tobytes() for f in frames)).hexdigest()}))
"""


def test_tables_and_frames_are_identical_in_a_one_thread_process(coded: tuple[core.EncodedGroup, core.GroupEncoder], tmp_path: Path) -> None:
    group, _ = coded
    coders = core.GroupDecoder(GaussianLayout(3), CFG.gaussians).read_header(group.header)
    tables = hashlib.sha256(b"".join(t.freqs().tobytes() for c in coders.values() for t in c.tables)).hexdigest()
    frames = hashlib.sha256(b"".join(f.tobytes() for f in decode(group))).hexdigest()
    (tmp_path / "g.json").write_text(json.dumps({"header": group.header.hex(), "packets": [p.hex() for p in group.packets]}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", DECODE_IN_CHILD, str(tmp_path / "g.json")], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout) == {"tables": tables, "frames": frames}
