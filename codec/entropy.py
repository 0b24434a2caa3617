"""Entropy coding: constriction's range coder driven by integer frequency tables.

Every probability that reaches the coder is an integer table (stored with the weights or
computed with integer arithmetic), turned into float64 by an exact conversion. The decoder
therefore rebuilds bit-identical models on any machine, thread count or device; the only
float-to-discrete steps left to the codecs are quantization and table-index lookups
(CompressAI's `build_indexes` idea).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import constriction
import numpy as np
import numpy.typing as npt

from .errors import ContainerError

CODER_INFO = {"library": "constriction", "version": "0.5.0", "coder": "range", "perfect": False}
PRECISION = 16  # bits of the integer tables; constriction's range coder keeps 24
_ROWS_PER_CALL = 4096  # bounds the float64 copy of per-symbol tables
_FAMILY = constriction.stream.model.Categorical(perfect=False)  # per-symbol tables (stateless, made once)

IntArray = npt.NDArray[np.integer]


def _check_symbols(symbols: IntArray, size: int) -> npt.NDArray[np.int32]:
    symbols = np.ascontiguousarray(symbols, dtype=np.int32).ravel()
    if symbols.size and (symbols.min() < 0 or symbols.max() >= size):
        raise ValueError(f"symbols outside the alphabet [0, {size}): {symbols.min()}..{symbols.max()}")
    return symbols


@dataclass(frozen=True)
class Tables:
    """Frequency tables already in the float64 form the coder takes (the same integers, exactly):
    what `prior` makes its per-symbol tables as (valid by construction), so that no coder call
    checks and converts them again. `Tables.of` checks and converts integer tables."""

    probs: npt.NDArray[np.float64]

    @classmethod
    def of(cls, freqs: IntArray) -> Tables:
        return cls(_as_probabilities(freqs))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.probs.shape


def _as_probabilities(freqs: IntArray | Tables) -> npt.NDArray[np.float64]:
    if isinstance(freqs, Tables):
        return np.ascontiguousarray(freqs.probs)  # constriction reads the buffer as C-contiguous
    if not np.issubdtype(freqs.dtype, np.integer):
        raise TypeError(f"frequency tables must be integers, got {freqs.dtype}")
    if freqs.size == 0 or freqs.min() < 0 or (freqs.sum(axis=-1) == 0).any():
        raise ValueError("frequency tables must be non-negative with a positive total")
    return np.ascontiguousarray(freqs, dtype=np.float64)  # exact: entries stay below 2**53


def freqs_from_counts(counts: npt.ArrayLike, precision: int = PRECISION) -> npt.NDArray[np.int32]:
    """Integer table over the last axis summing to 2**precision, every symbol >= 1.

    Used once at export time (e.g. per-codebook index histograms); deterministic itself.
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.shape[-1]
    total = 1 << precision
    if n > total:
        raise ValueError(f"alphabet of {n} symbols does not fit {precision}-bit tables")
    p = counts / np.maximum(counts.sum(axis=-1, keepdims=True), 1e-300)
    freqs = 1 + np.floor(p * (total - n)).astype(np.int64)
    flat = freqs.reshape(-1, n)  # give the rounding remainder to each table's mode
    flat[np.arange(flat.shape[0]), p.reshape(-1, n).argmax(axis=1)] += total - flat.sum(axis=1)
    return freqs.astype(np.int32)


def quantized_gaussian_tables(scales: npt.ArrayLike, support: int, precision: int = PRECISION) -> npt.NDArray[np.int32]:
    """Tables of a zero-mean Gaussian quantized to integer bins in [-support, support].

    One row per scale; codecs store the rows with their weights and pick one per symbol by
    index, after subtracting the (quantized) mean from the symbol.
    """
    edges = np.arange(-support - 0.5, support + 1.0, dtype=np.float64)
    erfc = np.vectorize(math.erfc)
    cdf = 0.5 * erfc(-edges[None, :] / (np.asarray(scales, dtype=np.float64)[:, None] * math.sqrt(2)))
    return freqs_from_counts(np.diff(cdf, axis=1), precision)


def quantized_laplace_tables(scales: npt.ArrayLike, support: int, precision: int = PRECISION) -> npt.NDArray[np.int32]:
    """Like `quantized_gaussian_tables` for a zero-mean Laplace distribution of scale b."""
    edges = np.arange(-support - 0.5, support + 1.0, dtype=np.float64)
    b = np.asarray(scales, dtype=np.float64)[:, None]
    cdf = np.where(edges < 0, 0.5 * np.exp(edges / b), 1 - 0.5 * np.exp(-edges / b))
    return freqs_from_counts(np.diff(cdf, axis=1), precision)


def cross_entropy_bits(symbols: IntArray, freqs: IntArray | Tables) -> float:
    """Ideal code length in bits of `symbols` under the table(s) (the coder's lower bound)."""
    probs = _as_probabilities(freqs)
    symbols = np.asarray(symbols).ravel()
    if probs.ndim == 1:
        p = (probs / probs.sum())[symbols]
    else:  # each symbol's entry over its row's total: the floats of normalising every row, without doing it
        p = probs[np.arange(symbols.size), symbols] / probs.sum(axis=-1)
    return float(-np.log2(p).sum())


class Encoder:
    """Appends symbol arrays to one range-coded stream; `to_bytes()` gives the stream."""

    def __init__(self) -> None:
        self._coder = constriction.stream.queue.RangeEncoder()

    def encode(self, symbols: IntArray, freqs: IntArray | Tables) -> None:
        """Code symbols with one table `(n,)` for all, or one row each `(len(symbols), n)`."""
        symbols = _check_symbols(symbols, freqs.shape[-1])
        probs = _as_probabilities(freqs)
        if probs.ndim == 1:
            self._coder.encode(symbols, constriction.stream.model.Categorical(probs, perfect=False))
            return
        if probs.shape[0] != symbols.size:
            raise ValueError(f"{symbols.size} symbols but {probs.shape[0]} tables")
        for i in range(0, symbols.size, _ROWS_PER_CALL):
            self._coder.encode(symbols[i : i + _ROWS_PER_CALL], _FAMILY, probs[i : i + _ROWS_PER_CALL])

    def encode_indexed(self, symbols: IntArray, table_index: IntArray, tables: IntArray) -> None:
        """Code each symbol with the row `tables[table_index[i]]` (e.g. one row per scale)."""
        table_index = np.asarray(table_index).ravel()
        for i in range(0, table_index.size, _ROWS_PER_CALL):
            sl = slice(i, i + _ROWS_PER_CALL)
            self.encode(np.asarray(symbols).ravel()[sl], tables[table_index[sl]])

    def encode_uniform(self, symbols: IntArray, bits: int) -> None:
        """Code symbols in [0, 2**bits) under a flat table: the same words as `encode` with
        `np.ones(2**bits)` (a power of two splits the coder's range exactly either way), decoded faster."""
        self._coder.encode(_check_symbols(symbols, 1 << bits), constriction.stream.model.Uniform(1 << bits))

    def to_bytes(self) -> bytes:
        return self._coder.get_compressed().astype("<u4").tobytes()


class Decoder:
    """Reads symbols back from `Encoder.to_bytes()` with the same tables in the same order."""

    def __init__(self, data: bytes) -> None:
        if len(data) % 4:
            raise ContainerError("entropy-coded stream is not a whole number of 32-bit words")
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        self._coder = constriction.stream.queue.RangeDecoder(words)

    def decode(self, freqs: IntArray | Tables, count: int | None = None) -> npt.NDArray[np.int32]:
        """Decode `count` symbols with one table `(n,)`, or one per row of `(m, n)`."""
        probs = _as_probabilities(freqs)
        if probs.ndim == 1:
            if count is None:
                raise ValueError("count is required with a single table")
            model = constriction.stream.model.Categorical(probs, perfect=False)
            return np.asarray(self._coder.decode(model, count), dtype=np.int32)
        if probs.shape[0] <= _ROWS_PER_CALL:  # one call (sequential decoders ask for a few symbols at a time)
            return np.asarray(self._coder.decode(_FAMILY, probs), dtype=np.int32)
        parts = [self._coder.decode(_FAMILY, probs[i : i + _ROWS_PER_CALL]) for i in range(0, probs.shape[0], _ROWS_PER_CALL)]
        return np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)

    def decode_uniform(self, bits: int, count: int) -> npt.NDArray[np.int32]:
        """`count` symbols of `Encoder.encode_uniform` (or of `encode` with `np.ones(2**bits)`)."""
        return np.asarray(self._coder.decode(constriction.stream.model.Uniform(1 << bits), count), dtype=np.int32)

    def decode_indexed(self, table_index: IntArray, tables: IntArray) -> npt.NDArray[np.int32]:
        table_index = np.asarray(table_index).ravel()
        parts = [self.decode(tables[table_index[i : i + _ROWS_PER_CALL]]) for i in range(0, table_index.size, _ROWS_PER_CALL)]
        return np.concatenate(parts) if parts else np.zeros(0, np.int32)
