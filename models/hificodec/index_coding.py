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
from nmc.codec.prior import PriorSet, tables_from_scores

IntArray = npt.NDArray[np.int64]


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
    `block` frames at a time, so memory does not grow with the packet."""
    n, T = indices.shape
    ctx = [contexts(indices, k, groups, prior.alphabet) for k in range(n)]

    def tables(k: int, t: int) -> IntArray:
        return tables_from_scores(prior.priors[k].scores(ctx[k][t : t + block]))

    mask = 0
    for k in range(n):
        bits = sum(E.cross_entropy_bits(indices[k, t : t + block], tables(k, t)) for t in range(0, T, block))
        mask |= prior.unigram_is_cheaper(k, indices[k], bits) << k
    for t in range(0, T, block):
        rows: list[npt.NDArray[np.integer]] = [np.broadcast_to(prior.unigram[k], (min(block, T - t), prior.alphabet)) if mask >> k & 1 else tables(k, t) for k in range(n)]
        enc.encode(indices[:, t : t + block].T.ravel(), np.stack(rows, axis=1).reshape(-1, prior.alphabet))
    return mask


def decode_indices(dec: E.Decoder, prior: PriorSet, groups: int, n_codebooks: int, frames: int, mask: int) -> IntArray:
    """Inverse of `encode_indices`: `(n_codebooks, frames)` indices, one frame at a time."""
    K = prior.alphabet
    out = np.full((n_codebooks, frames + 1), K, np.int64)  # column -1 is "none yet" (frame -1)
    plan: list[tuple[int, IntArray | None, list[tuple[int, bool, np.ndarray]]]] = []
    for k in range(n_codebooks):
        if mask >> k & 1:
            plan.append((k, None, []))
        else:
            src = [(j, j < k, prior.priors[k].term(c)) for c, j in enumerate(sources(k, groups))]
            plan.append((k, prior.priors[k].bias.astype(np.int64), src))
    for t in range(frames):
        for k, base, src in plan:
            if base is None:
                out[k, t] = dec.decode(prior.unigram[k], 1)[0]
                continue
            s = base.copy()
            for j, same_frame, delta in src:
                s += delta[out[j, t if same_frame else t - 1]]
            out[k, t] = dec.decode(tables_from_scores(s)[None])[0]
    return out[:, :frames]
