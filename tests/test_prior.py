"""Integer context priors: they learn structure, code exactly, and are machine-independent."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from nmc.codec import entropy as E
from nmc.codec import prior as P
from nmc.models.trainkit.priors import FitConfig, fit_context_prior


def _markov(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = np.zeros(n, np.int64)
    for t in range(1, n):
        s[t] = (s[t - 1] + rng.integers(-2, 3)) % k  # next symbol is within +-2 of the last
    return s, np.stack([np.r_[k, s[:-1]]], axis=1)  # context k = "no previous symbol"


def test_learns_context_and_codes_exactly() -> None:
    s, ctx = _markov(6000, 64)
    prior = fit_context_prior(s[:5000], ctx[:5000], 64, [64], FitConfig(dim=16, steps=300, batch=1024), seed=0)
    bits = P.ideal_bits(prior, s[5000:], ctx[5000:]) / 1000
    assert bits < 3.5  # true entropy log2(5) = 2.32 bits; without context 6 bits
    tables = prior.tables(ctx[5000:])
    enc = E.Encoder()
    enc.encode(s[5000:], tables)
    data = enc.to_bytes()
    assert np.array_equal(E.Decoder(data).decode(tables), s[5000:])
    assert 8 * len(data) < 1.01 * bits * 1000 + 64


def test_tables_as_functions_of_the_codes_generalise_to_rare_symbols() -> None:
    """256 codes on a circle, the next symbol near the last on the circle, ~8 training symbols per code:
    free tables cannot learn rare codes' rows, tables made from the codes can (similar codes, similar rows)."""
    k, rng = 256, np.random.default_rng(1)
    angle = rng.permutation(k) * 2 * np.pi / k  # the index order says nothing: only the codes do
    codes = np.stack([np.cos(angle), np.sin(angle)], 1)
    order = np.argsort(angle)  # codes by angle
    pos = np.empty(k, np.int64)
    pos[order] = np.arange(k)
    s = np.zeros(3000, np.int64)
    for t in range(1, len(s)):
        s[t] = order[(pos[s[t - 1]] + rng.integers(-3, 4)) % k]
    ctx = np.stack([np.r_[k, s[:-1]]], axis=1)
    fit = FitConfig(dim=8, steps=150, batch=512, lr=1e-2, hidden=32)
    free = fit_context_prior(s[:2000], ctx[:2000], k, [k], fit, seed=0)
    coded = fit_context_prior(s[:2000], ctx[:2000], k, [k], fit, seed=0, codes=codes)
    free_bits, code_bits = (P.ideal_bits(p, s[2000:], ctx[2000:]) / 1000 for p in (free, coded))
    assert code_bits < 5 < 7 < free_bits  # measured 4.2 and 7.5; true entropy log2(7) = 2.8 bits, no context 8


def test_term_tables_give_the_bilinear_scores_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cached per-context tables sum to bias + sum_c (embed_c[x_c] . proj_c * mult_c) >> 16, and
    so do the rows computed without a table (large alphabets)."""
    rng = np.random.default_rng(5)
    prior = P.ContextPrior(
        bias=rng.integers(-500, 0, 300).astype(np.int32),
        embed=[rng.integers(-127, 128, (n + 1, 24)).astype(np.int8) for n in (300, 17)],
        proj=[rng.integers(-127, 128, (24, 300)).astype(np.int8) for _ in range(2)],
        mult=np.array([4000, 90000], np.int64),
    )
    ctx = np.stack([rng.integers(0, 301, 500), rng.integers(0, 18, 500)], axis=1)
    direct = prior.bias.astype(np.int64)[None] + sum(
        (prior.embed[c][ctx[:, c]].astype(np.int64) @ prior.proj[c].astype(np.int64) * prior.mult[c]) >> 16 for c in range(2)
    )
    assert np.array_equal(prior.scores(ctx), direct)
    with np.testing.assert_raises(ValueError):
        prior.scores(np.array([[301, 0]]))
    bits = P.ideal_bits(prior, ctx[:, 1], ctx)
    monkeypatch.setattr(P, "TABLE_LIMIT", 300 * 18)  # context 0 (301 x 300 entries) without its table, context 1 with
    prior._terms.clear()
    prior._stack = None  # the tables of every context in one (`stacked`), built with the old limit
    assert np.array_equal(prior.scores(ctx), direct) and set(prior._terms) == {1} and P.ideal_bits(prior, ctx[:, 1], ctx) == bits


def test_serialization_round_trip() -> None:
    s, ctx = _markov(500, 16)
    prior = fit_context_prior(s, ctx, 16, [16], FitConfig(dim=4, steps=20), seed=0)
    back = P.ContextPrior.from_tensors(prior.to_tensors("p"), "p")
    assert np.array_equal(back.tables(ctx), prior.tables(ctx))


def test_prior_set_of_codebooks_of_several_sizes() -> None:
    """vqgan's rungs: one codebook each, of its own size; stored as zero-padded unigram rows."""
    rng = np.random.default_rng(1)

    def prior(K: int) -> P.ContextPrior:
        return P.ContextPrior(rng.integers(-50, 0, K).astype(np.int32), [rng.integers(-9, 9, (K + 1, 4)).astype(np.int8)],
                              [rng.integers(-9, 9, (4, K)).astype(np.int8)], np.array([100], np.int64))  # fmt: skip

    sizes = [4, 16, 8]
    ps = P.PriorSet([prior(K) for K in sizes], [E.freqs_from_counts(rng.random(K)) for K in sizes])
    tensors = ps.to_tensors()
    assert tensors["prior.unigram"].shape == (3, 16) and not tensors["prior.unigram"][0, 4:].any()
    back = P.PriorSet.from_tensors(tensors)
    assert back.alphabets == sizes and all(np.array_equal(a, b) for a, b in zip(back.unigram, ps.unigram))
    back.check([[K] for K in sizes], sizes)
    with np.testing.assert_raises(ValueError):
        back.check([[K] for K in sizes])  # one shared alphabet expected
    with np.testing.assert_raises(ValueError):
        back.check([[K] for K in sizes], [4, 16, 16])
    tensors["prior.unigram"][0, 5] = 1  # an entry beyond codebook 0's alphabet
    with np.testing.assert_raises(ValueError):
        P.PriorSet.from_tensors(tensors)


def test_tables_identical_in_another_process_with_other_thread_counts() -> None:
    """The tables come from integer products (exact in a float32 BLAS, see the test above), so a
    process with several BLAS threads gets the same bytes."""
    rng = np.random.default_rng(3)
    prior = P.ContextPrior(
        bias=rng.integers(-200, 0, 1024).astype(np.int32),
        embed=[rng.integers(-127, 128, (1025, 32)).astype(np.int8) for _ in range(3)],
        proj=[rng.integers(-127, 128, (32, 1024)).astype(np.int8) for _ in range(3)],
        mult=np.array([300, 17, 5000], np.int64),
    )
    ctx = rng.integers(0, 1025, (2000, 3))
    code = textwrap.dedent(
        """
        import sys, numpy as np
        from nmc.codec import prior as P
        t = {k: v for k, v in np.load(sys.argv[1]).items()}
        p = P.ContextPrior.from_tensors(t, "p")
        sys.stdout.write(p.tables(t["ctx"]).tobytes().hex())
        """
    )
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"prior_{os.getpid()}.npz")
    np.savez(path, ctx=ctx, **prior.to_tensors("p"))
    env = {**os.environ, "OMP_NUM_THREADS": "4", "OPENBLAS_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, env=env, check=True).stdout
    os.remove(path)
    assert bytes.fromhex(out) == prior.tables(ctx).tobytes()
