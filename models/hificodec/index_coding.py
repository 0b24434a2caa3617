"""How hificodec entropy-codes the GRVQ indices of one channel of a packet (docs/FORMAT.md).

Indices are coded frame-major (frame t: codebooks 0..n-1), each with the integer `ContextPrior`
of its codebook given the most recent index of a few related codebooks (`sources`), or, when
that is cheaper for the packet, with the codebook's unigram table (bit k of the mask).
Contexts restart at every packet, so packets decode independently.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from nmc.codec import entropy as E
from nmc.codec.prior import PriorSet, coder_tables_from_scores

IntArray = npt.NDArray[np.int64]
KEEP_ENTRIES = 1 << 22  # table entries (32 MB) up to which a packet's tables are made once (`encode_indices`)


def sources(k: int, groups: int) -> list[int]:
    """Codebooks whose most recent index is a context of codebook k = level * groups + g.

    Itself (previous frame), the previous level of the same group, level 0 of the next group,
    level 0 of the same group (from level 2) and the same level of the next group (from level 1).
    """
    level, g = divmod(k, groups)
    other = (g + 1) % groups
    out = [k, k - groups, other, g, level * groups + other]
    keep = [True, level >= 1, True, level >= 2, level >= 1]
    return list(dict.fromkeys(j for j, ok in zip(out, keep) if ok))


def context_sizes(n_codebooks: int, groups: int, K: int) -> list[list[int]]:
    """The context alphabets of each codebook's prior (K + 1 values: K means "none yet")."""
    return [[K] * len(sources(k, groups)) for k in range(n_codebooks)]


def contexts(indices: npt.ArrayLike, k: int, groups: int, K: int) -> IntArray:
    """Context rows `(T, len(sources(k)))` of codebook k for one packet's indices `(n_codebooks, T)`.

    The most recent index of codebook j is the one at frame t if j < k, else at t - 1; `K`
    stands for "none yet" at the packet start (contexts never cross packets).
    """
    idx = np.asarray(indices, dtype=np.int64)
    cols = [idx[j] if j < k else np.concatenate([[K], idx[j, :-1]])[: idx.shape[1]] for j in sources(k, groups)]
    return np.stack(cols, axis=1)


def encode_indices(enc: E.Encoder, prior: PriorSet, indices: npt.NDArray[np.integer], groups: int, block: int = 64) -> int:
    """Code `(n_codebooks, T)` indices frame-major; returns the unigram mask. Tables are built
    `block` frames at a time, so memory does not grow with the packet: a packet of up to
    `KEEP_ENTRIES` table entries keeps the tables that chose the mask for its coding, a longer
    one makes them again."""
    n, T = indices.shape
    ctx = [contexts(indices, k, groups, prior.alphabet) for k in range(n)]
    keep = n * T * prior.alphabet <= KEEP_ENTRIES
    kept: dict[tuple[int, int], E.Tables] = {}

    def tables(k: int, t: int) -> E.Tables:
        return kept.pop((k, t), None) or prior.priors[k].coder_tables(ctx[k][t : t + block])

    mask = 0
    for k in range(n):
        bits = 0.0
        for t in range(0, T, block):
            made = tables(k, t)
            bits += E.cross_entropy_bits(indices[k, t : t + block], made)
            if keep:
                kept[k, t] = made
        mask |= prior.unigram_is_cheaper(k, indices[k], bits) << k
        if mask >> k & 1:
            kept = {key: v for key, v in kept.items() if key[0] != k}
    unigram = [E.Tables.of(u).probs for u in prior.unigram]
    for t in range(0, T, block):
        rows = [np.broadcast_to(unigram[k], (min(block, T - t), prior.alphabet)) if mask >> k & 1 else tables(k, t).probs for k in range(n)]
        enc.encode(indices[:, t : t + block].T.ravel(), E.Tables(np.stack(rows, axis=1).reshape(-1, prior.alphabet)))
    return mask


def decode_indices(dec: E.Decoder, prior: PriorSet, groups: int, n_codebooks: int, frames: int, mask: int) -> IntArray:
    """Inverse of `encode_indices`: `(n_codebooks, frames)` indices, one frame at a time.

    In frame-major order the most recent index of codebook j < k is frame t's when codebook k of
    frame t is decoded, and of j >= k frame t - 1's: `last` (each codebook's most recent index, K
    before the first) holds every context (`contexts`).
    """
    out = np.zeros((frames, n_codebooks), np.int64)
    last = np.full(n_codebooks, prior.alphabet, np.int64)
    unigram = {k: E.Tables.of(prior.unigram[k]) for k in range(n_codebooks) if mask >> k & 1}
    context = {}
    for k in range(n_codebooks):
        stack = prior.priors[k].stacked()
        assert stack is not None  # contexts of 1025 values x 1024 symbols: below TABLE_LIMIT
        context[k] = (np.array(sources(k, groups)), prior.priors[k].bias, *stack)
    for t in range(frames):
        for k in range(n_codebooks):
            if k in unigram:
                last[k] = dec.decode(unigram[k], 1)[0]
                continue
            src, bias, offsets, table, dtype = context[k]
            s = np.add.reduce(table[last[src] + offsets], axis=0, dtype=dtype)
            s += bias
            last[k] = dec.decode(coder_tables_from_scores(s[None]))[0]
        out[t] = last
    return out.T
