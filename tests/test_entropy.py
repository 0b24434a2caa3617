"""The constriction layer: exact round trips, near-zero overhead, machine-independent models."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from nmc.codec import entropy as E


def _skewed(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.full(n, 0.3))


class TestTables:
    def test_freqs_from_counts(self) -> None:
        f = E.freqs_from_counts(np.array([[0, 0, 5, 1000], [1, 1, 1, 1]]))
        assert f.dtype == np.int32 and (f.sum(axis=1) == 1 << E.PRECISION).all() and f.min() >= 1

    def test_gaussian_and_laplace_tables(self) -> None:
        for tables in (E.quantized_gaussian_tables([0.3, 2.0, 50.0], 20), E.quantized_laplace_tables([0.3, 2.0, 50.0], 20)):
            assert tables.shape == (3, 41) and (tables.sum(axis=1) == 1 << E.PRECISION).all()
            assert tables[0].argmax() == 20 and tables[0, 20] > tables[2, 20]  # narrow scale peaks higher

    def test_rejects_float_tables(self) -> None:
        with pytest.raises(TypeError):
            E.Encoder().encode(np.zeros(3, np.int32), np.ones(4))

    def test_rejects_symbols_outside_alphabet(self) -> None:
        with pytest.raises(ValueError, match="alphabet"):
            E.Encoder().encode(np.array([4]), np.ones(4, np.int32))


class TestCoding:
    def test_prepared_tables_code_as_integer_tables(self) -> None:
        """`Tables` (float64, made once by the priors) give the bytes and bit counts of the integer
        tables, whatever the array's memory layout (constriction reads C order only)."""
        rng = np.random.default_rng(3)
        freqs = E.freqs_from_counts(rng.dirichlet(np.ones(16), size=300))
        symbols = np.array([rng.choice(16, p=t / t.sum()) for t in freqs])
        want = E.Encoder()
        want.encode(symbols, freqs)
        for probs in (freqs.astype(np.float64), np.asfortranarray(freqs.astype(np.float64))):
            got = E.Encoder()
            got.encode(symbols, E.Tables(probs))
            assert got.to_bytes() == want.to_bytes()
            assert E.cross_entropy_bits(symbols, E.Tables(probs)) == E.cross_entropy_bits(symbols, freqs)
            assert np.array_equal(E.Decoder(want.to_bytes()).decode(E.Tables(probs)), symbols)

    def test_million_symbols_round_trip_with_tiny_overhead(self) -> None:
        rng = np.random.default_rng(1)
        p = _skewed(1024)
        freqs = E.freqs_from_counts(p)
        symbols = rng.choice(1024, size=10**6, p=p)
        enc = E.Encoder()
        enc.encode(symbols, freqs)
        data = enc.to_bytes()
        assert np.array_equal(E.Decoder(data).decode(freqs, symbols.size), symbols)
        overhead = 8 * len(data) / E.cross_entropy_bits(symbols, freqs) - 1
        assert 0 <= overhead < 1e-3

    def test_per_symbol_tables_and_mixed_streams(self) -> None:
        rng = np.random.default_rng(2)
        tables = E.freqs_from_counts(rng.dirichlet(np.ones(16), size=5000))
        symbols = np.array([rng.choice(16, p=t / t.sum()) for t in tables])
        scales = E.quantized_gaussian_tables([0.5, 1.0, 8.0], 30)
        idx = rng.integers(0, 3, 3000)
        latents = np.clip(np.round(rng.normal(size=3000) * np.array([0.5, 1.0, 8.0])[idx]), -30, 30).astype(np.int32) + 30
        enc = E.Encoder()
        enc.encode(symbols, tables)
        enc.encode_indexed(latents, idx, scales)
        enc.encode(np.array([3, 1]), np.array([1, 1, 1, 1]))
        dec = E.Decoder(enc.to_bytes())
        assert np.array_equal(dec.decode(tables), symbols)
        assert np.array_equal(dec.decode_indexed(idx, scales), latents)
        assert np.array_equal(dec.decode(np.array([1, 1, 1, 1]), 2), [3, 1])

    @pytest.mark.parametrize("bits", range(1, 9))
    def test_uniform_is_a_flat_table(self, bits: int) -> None:
        """`encode_uniform` writes the words of `encode` with a flat table (queen's raw bits, in
        files written before it existed), and either decoder reads the other's stream."""
        symbols = np.random.default_rng(bits).integers(0, 1 << bits, 20000)
        flat, fast = E.Encoder(), E.Encoder()
        flat.encode(symbols, np.ones(1 << bits, np.int64))
        fast.encode_uniform(symbols, bits)
        assert flat.to_bytes() == fast.to_bytes()
        assert np.array_equal(E.Decoder(flat.to_bytes()).decode_uniform(bits, symbols.size), symbols)

    def test_golden_words(self) -> None:
        """The coder's output for a fixed input is pinned: a coder change cannot slip through."""
        enc = E.Encoder()
        enc.encode(np.array([0, 2, 1, 2, 0, 2, 0, 2, 1]), np.array([1, 6, 3]))
        assert enc.to_bytes().hex() == GOLDEN_HEX

    def test_other_process_and_thread_count_decode_identically(self) -> None:
        """Models rebuilt in a fresh process with one thread decode the parent's stream exactly."""
        code = textwrap.dedent(
            """
            import sys, numpy as np, torch
            torch.set_num_threads(1)
            from nmc.codec import entropy as E
            rng = np.random.default_rng(7)
            counts = rng.integers(0, 1000, size=(4, 255))
            tables = np.concatenate([E.freqs_from_counts(counts), E.quantized_laplace_tables([0.7, 3.0, 9.0, 40.0], 127)])
            data = bytes.fromhex(sys.stdin.read())
            idx = rng.integers(0, 8, 20000)
            print(E.Decoder(data).decode_indexed(idx, tables).tobytes().hex())
            """
        )
        rng = np.random.default_rng(7)
        counts = rng.integers(0, 1000, size=(4, 255))
        tables = np.concatenate([E.freqs_from_counts(counts), E.quantized_laplace_tables([0.7, 3.0, 9.0, 40.0], 127)])
        idx = rng.integers(0, 8, 20000)
        symbols = np.array([rng.choice(255, p=tables[i, :255] / tables[i, :255].sum()) for i in idx])
        enc = E.Encoder()
        enc.encode_indexed(symbols, idx, tables)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, "-c", code], input=enc.to_bytes().hex(), capture_output=True, text=True, env=env, check=True)
        assert np.array_equal(np.frombuffer(bytes.fromhex(out.stdout.strip()), np.int32), symbols)


GOLDEN_HEX = "386e0316"  # constriction 0.5.0 range coder, 16-bit tables
