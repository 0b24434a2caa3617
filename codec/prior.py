"""Context priors over VQ indices, evaluated with integer arithmetic only.

A `ContextPrior` predicts one index (alphabet K) from a few context indices (e.g. the same
codebook in the previous frame, the coarser level at the same place) with a factorized
bilinear model:

    score[k] = bias[k] + sum_c (embed_c[ctx_c] . proj_c[:, k]) * mult_c >> 16      (integers)
    freq[k]  = EXP2[score[k] - max(score) ...]                                       (table lookup)

`embed_c` and `proj_c` are int8, so every dot product is an integer below 2**24 and is
computed exactly even by a float32 BLAS in any summation order; `mult_c` rescales to
1/UNITS-bit steps with an integer multiply and shift. The frequency tables that reach the
range coder are therefore bit-identical on every machine, device and thread count.
Training happens in float (`models/trainkit/priors.py`, torch) and ends with one quantization
step (`ContextPrior.quantize`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from . import entropy as E
from .threads import one_thread

UNITS = 16  # score steps per bit
RANGE = 22 * UNITS  # scores more than 22 bits below the best symbol share the floor frequency
TABLE_LIMIT = 1 << 23  # context values x symbols up to which a context's score rows are tabulated once (`term`)
EXP2 = np.maximum(1, np.round(2.0**16 * 2.0 ** ((np.arange(RANGE + 1) - RANGE) / UNITS))).astype(np.int64)
_EXP2_F64 = EXP2.astype(np.float64)  # the same integers, as the coder takes them (`coder_tables_from_scores`)
BLOCK = 1 << 16  # entries (rows x K) of the score blocks computed at a time: each stays in the CPU's cache


@dataclass
class ContextPrior:
    """Integer model of P(symbol | contexts). Context value `sizes[c]` means "not available"."""

    bias: npt.NDArray[np.int32]  # (K,) in score units
    embed: list[npt.NDArray[np.int8]]  # per context: (sizes[c] + 1, d)
    proj: list[npt.NDArray[np.int8]]  # per context: (d, K)
    mult: npt.NDArray[np.int64]  # (n_ctx,)
    _terms: dict[int, npt.NDArray[np.integer]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _stack: tuple[npt.NDArray[np.int64], npt.NDArray[np.integer], type] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def alphabet(self) -> int:
        return int(self.bias.shape[0])

    @property
    def sizes(self) -> list[int]:
        return [e.shape[0] - 1 for e in self.embed]

    def term(self, c: int) -> npt.NDArray[np.integer]:
        """Score contribution `(sizes[c] + 1, K)` of context c, for every context value (cached).

        Scores are additive over contexts, so `scores(x) = bias + sum_c term(c)[x_c]` exactly;
        sequential decoders then need only table gathers per symbol.
        """
        if c not in self._terms:
            t = self._dots(c, self.embed[c]) * self.mult[c] >> 16
            self._terms[c] = t.astype(np.int16 if np.abs(t).max() < 2**15 else np.int32)
        return self._terms[c]

    def _dots(self, c: int, rows: npt.NDArray[np.int8]) -> npt.NDArray[np.int64]:
        """`rows @ proj_c` for rows of `embed_c`, exactly (int8 dot products: integers below 2**24 in
        float32, any summation order). In torch on one thread: numpy's BLAS would start a thread
        per core in every process (16 forked workers: 256 threads for the first file's tables) and
        its threads stall on a busy machine (on 2 cores: a speech codec's tables took 2.4-3.1x the CPU time
        of one BLAS thread, 12 rows x 8192 12 ms instead of 0.7). Where torch is not loaded (the ONNX Runtime path,
        `onnx_backend`), numpy's einsum gives the same integers without importing it (2 s) and without BLAS (its own
        loops: 7 ms for 1025 x 32 x 1024, where numpy's integer matmul takes 105)."""
        if "torch" not in sys.modules:
            dots = np.einsum("ij,jk->ik", rows.astype(np.float32), self.proj[c].astype(np.float32), optimize=False)
            return dots.astype(np.int64)
        import torch

        with one_thread():
            dots = torch.from_numpy(rows.astype(np.float32)) @ torch.from_numpy(self.proj[c].astype(np.float32))
        return dots.numpy().astype(np.int64)

    def _tabulated(self, c: int) -> bool:
        """Whether context c's `term` table (its values x symbols) is small enough to compute once (`TABLE_LIMIT`)."""
        return self.embed[c].shape[0] * self.alphabet <= TABLE_LIMIT

    def term_rows(self, c: int, values: npt.NDArray[np.int64]) -> npt.NDArray[np.integer]:
        """`term(c)[values]` `values.shape + (K,)`: gathered from the cached table, or for a large
        one (a codebook of thousands given thousands: 8193 x 8192 takes 7 s and 400 MB) computed
        for these rows only, with the same integers (the dot products are exact either way)."""
        if self._tabulated(c):
            return self.term(c)[values]
        return (self._dots(c, self.embed[c][values.ravel()]) * self.mult[c] >> 16).reshape(*values.shape, self.alphabet)

    def stacked(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.integer], type] | None:
        """Every context's `term` in one table (context c's rows from `offsets[c]`) and the integer
        type that holds every score exactly (cached): `scores = bias + table[ctx + offsets].sum(1)`.
        None when a context is too large to tabulate (`TABLE_LIMIT`)."""
        if self._stack is None:
            if not all(self._tabulated(c) for c in range(len(self.embed))):
                return None
            terms = [self.term(c) for c in range(len(self.embed))]
            offsets = np.cumsum([0] + [len(t) for t in terms[:-1]]).astype(np.int64)
            table = np.concatenate(terms) if terms else np.zeros((0, self.alphabet), np.int16)
            bound = int(np.abs(self.bias).max(initial=0)) + sum(int(np.abs(t).max(initial=0)) for t in terms)
            self._stack = (offsets, table, np.int32 if bound < 2**31 else np.int64)
        return self._stack

    def scores(self, contexts: npt.ArrayLike, count: int | None = None) -> npt.NDArray[np.integer]:
        """Integer scores `(m, K)` for context rows `(m, n_ctx)`; with `count`, rows of the first
        `count` contexts only (a sequential decoder adds the others as it goes: `add_terms`)."""
        n = len(self.embed) if count is None else count
        ctx = np.asarray(contexts, dtype=np.int64)
        ctx = ctx.reshape(-1, n) if n else ctx.reshape(len(ctx), 0)  # no contexts: rows `(m, 0)`
        if ctx.size:
            bad = (ctx.min(axis=0) < 0) | (ctx.max(axis=0) > self.sizes[:n])
            if bad.any():
                c = int(bad.argmax())
                raise ValueError(f"context {c} outside [0, {self.sizes[c]}]")
        stack = self.stacked()
        if stack is None:
            total = np.broadcast_to(self.bias.astype(np.int64), (ctx.shape[0], self.alphabet)).copy()
            for c in range(n):
                total += self.term_rows(c, ctx[:, c])
            return total
        offsets, table, dtype = stack
        total = np.empty((ctx.shape[0], self.alphabet), dtype)
        step = max(1, BLOCK // self.alphabet)
        for i in range(0, ctx.shape[0], step):  # a block of gathered rows stays in cache while summed
            out = total[i : i + step]
            rows = np.take(table, ctx[i : i + step] + offsets[:n], axis=0, mode="clip")  # in range (checked above)
            np.add.reduce(rows, axis=1, dtype=dtype, out=out)
            out += self.bias
        return total

    def add_terms(self, scores: npt.NDArray[np.integer], first: int, values: npt.NDArray[np.int64]) -> None:
        """`scores += sum_j term(first + j)[values[:, j]]`: the terms of the contexts that a
        sequential decoder learns as it goes (its own neighbours, so `values` are not checked)."""
        stack = self.stacked()
        if stack is None:
            for j in range(values.shape[1]):
                scores += self.term_rows(first + j, values[:, j])
            return
        offsets, table, dtype = stack
        scores += np.add.reduce(np.take(table, values + offsets[first : first + values.shape[1]], axis=0, mode="clip"), axis=1, dtype=dtype)

    def tables(self, contexts: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Integer frequency tables `(m, K)` for the range coder."""
        return tables_from_scores(self.scores(contexts))

    def coder_tables(self, contexts: npt.ArrayLike) -> E.Tables:
        """`tables(contexts)` as the coder takes them, computed a block of rows at a time."""
        ctx = np.asarray(contexts, dtype=np.int64).reshape(-1, len(self.embed))
        probs = np.empty((ctx.shape[0], self.alphabet), np.float64)
        step = max(1, BLOCK // self.alphabet)
        for i in range(0, ctx.shape[0], step):
            _by_level(self.scores(ctx[i : i + step]), _EXP2_F64, probs[i : i + step])
        return E.Tables(probs)

    def to_tensors(self, prefix: str) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {f"{prefix}.bias": self.bias, f"{prefix}.mult": self.mult}
        for c, (e, p) in enumerate(zip(self.embed, self.proj)):
            out[f"{prefix}.embed{c}"] = e
            out[f"{prefix}.proj{c}"] = p
        return out

    @classmethod
    def quantize(cls, bias: np.ndarray, embed: list[np.ndarray], proj: list[np.ndarray]) -> ContextPrior:
        """The integer model of a float one (natural-log logits `bias + sum_c embed_c[x_c] @ proj_c`):
        the export step after fitting (`models/trainkit/priors.py`)."""
        to_units = UNITS / np.log(2.0)  # natural-log logits -> score units
        q_embed, q_proj, mult = [], [], []
        for e, p in zip(embed, proj):
            se = max(np.abs(e).max(), 1e-8) / 127
            sp = max(np.abs(p).max(), 1e-8) / 127
            q_embed.append(np.round(e / se).astype(np.int8))
            q_proj.append(np.round(p / sp).astype(np.int8))
            mult.append(int(round(se * sp * to_units * 65536)))
        return cls(np.round(bias * to_units).astype(np.int32), q_embed, q_proj, np.array(mult, np.int64))

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], prefix: str) -> ContextPrior:
        n = sum(1 for k in tensors if k.startswith(f"{prefix}.embed"))
        return cls(
            bias=np.asarray(tensors[f"{prefix}.bias"], np.int32),
            embed=[np.asarray(tensors[f"{prefix}.embed{c}"], np.int8) for c in range(n)],
            proj=[np.asarray(tensors[f"{prefix}.proj{c}"], np.int8) for c in range(n)],
            mult=np.asarray(tensors[f"{prefix}.mult"], np.int64),
        )


def _by_level(scores: npt.NDArray[np.integer], table: npt.NDArray[Any], out: npt.NDArray[Any] | None = None) -> npt.NDArray[Any]:
    """`table[max(0, score - best + RANGE)]` for every score of each row: `np.take`'s clip mode
    is the max(0, .) (and faster than its "raise" mode, which copies `out`)."""
    return np.take(table, scores - (np.maximum.reduce(scores, axis=-1, keepdims=True) - RANGE), mode="clip", out=out)


def tables_from_scores(scores: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    """Frequency tables from integer scores: the best symbol gets 2**16, each score unit below it 1/UNITS bit less."""
    return _by_level(scores, EXP2)


def coder_tables_from_scores(scores: npt.NDArray[np.integer]) -> E.Tables:
    """`tables_from_scores` as the coder takes them (valid by construction: no checks, no conversion)."""
    return E.Tables(_by_level(scores, _EXP2_F64))


@dataclass
class PriorSet:
    """The priors of a codec's codebooks, as stored in its weights file: one `ContextPrior`
    and one unigram table per codebook (the unigram codes a packet when it is cheaper).
    Codebooks may differ in size (a ladder of codebooks, one per setting)."""

    priors: list[ContextPrior]
    unigram: list[npt.NDArray[np.int32]]  # per codebook (K_k,), each sums to 2**16

    def __post_init__(self) -> None:
        self.unigram = [np.asarray(u, np.int32) for u in self.unigram]

    @property
    def alphabets(self) -> list[int]:
        return [len(u) for u in self.unigram]

    @property
    def alphabet(self) -> int:
        """The alphabet of every codebook; ValueError when they differ (use `alphabets`)."""
        sizes = set(self.alphabets)
        if len(sizes) != 1:
            raise ValueError(f"codebooks of several sizes {sorted(sizes)}")
        return sizes.pop()

    def check(self, contexts: list[list[int]], alphabets: list[int] | None = None) -> None:
        """ValueError unless there is one prior per codebook, with `contexts[k]` the alphabet sizes of
        prior k's contexts (what the codec gives it), over `alphabets[k]` symbols (default: one
        alphabet shared by every codebook)."""
        if len(self.priors) != len(contexts) or len(self.unigram) != len(contexts):
            raise ValueError(f"priors for {len(self.priors)} codebooks, the network has {len(contexts)}")
        expected = alphabets if alphabets is not None else [self.alphabet] * len(contexts)
        if self.alphabets != expected:
            raise ValueError(f"unigram tables over {self.alphabets} symbols, the codec has {expected}")
        for k, (p, sizes) in enumerate(zip(self.priors, contexts)):
            dims = {e.shape[1] for e in p.embed} | {q.shape[0] for q in p.proj}
            if p.sizes != sizes or p.alphabet != expected[k] or len(dims) > 1 or any(q.shape[1] != expected[k] for q in p.proj):
                raise ValueError(f"prior {k} has contexts of sizes {p.sizes} over {p.alphabet} symbols, the codec gives {sizes} over {expected[k]}")

    def unigram_is_cheaper(self, k: int, symbols: npt.ArrayLike, context_bits: float) -> bool:
        """Whether codebook k's unigram table codes `symbols` in fewer bits than its context
        tables (`context_bits`): the encoder's choice per packet and codebook (a mask bit)."""
        return E.cross_entropy_bits(np.asarray(symbols), self.unigram[k]) < context_bits

    def to_tensors(self) -> dict[str, np.ndarray]:
        """`prior.unigram` holds the tables as rows zero-padded to the largest alphabet (a valid
        table has no zero), then each codebook's `ContextPrior`."""
        unigram = np.zeros((len(self.unigram), max(self.alphabets, default=0)), np.int32)
        for k, u in enumerate(self.unigram):
            unigram[k, : len(u)] = u
        out: dict[str, np.ndarray] = {"prior.unigram": unigram}
        for k, p in enumerate(self.priors):
            out.update(p.to_tensors(f"prior.{k}"))
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> PriorSet:
        rows = np.asarray(tensors["prior.unigram"], np.int32)
        priors = [ContextPrior.from_tensors(tensors, f"prior.{k}") for k in range(rows.shape[0])]
        if any(rows[k, p.alphabet :].any() for k, p in enumerate(priors)):
            raise ValueError("prior.unigram has entries beyond a codebook's alphabet")
        return cls(priors, [rows[k, : p.alphabet] for k, p in enumerate(priors)])


def ideal_bits(prior: ContextPrior, symbols: npt.ArrayLike, contexts: npt.ArrayLike) -> float:
    """Cross-entropy in bits of `symbols` under the integer tables (what the coder achieves)."""
    s, ctx = np.asarray(symbols).ravel(), np.asarray(contexts).reshape(-1, len(prior.embed))
    step = max(1, (1 << 22) // prior.alphabet)  # rows per chunk: tables of a large alphabet stay ~32 MB
    bits = 0.0
    for i in range(0, s.size, step):
        t = prior.coder_tables(ctx[i : i + step]).probs
        bits -= float(np.log2(t[np.arange(t.shape[0]), s[i : i + step]] / t.sum(axis=1)).sum())
    return bits
