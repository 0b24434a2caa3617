"""How mcquic entropy-codes the indices of one tile (docs/FORMAT.md, `mcquic`).

Codebook k of a tile: k < 4 are the coarse codebooks (grid h x w), k = 4 + 2 (s - 1) + j is
codebook j of fine stage s (grid 2h x 2w). Each is coded with its integer `ContextPrior` given
`static_contexts` (codebooks coded before it) and, for the coarse codebooks and fine stage 1,
its own left and upper neighbours (`codec/wavefront.py`); or, when that is cheaper for the tile,
in raster order with its unigram table (bit k of the mask). Fine stages 2 and 3 gain nothing
from neighbours (measured), so they decode in one step.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from nmc.codec import entropy as E
from nmc.codec.prior import PriorSet
from nmc.codec.wavefront import context_rows, decode_grid, encoding_tables

IntArray = npt.NDArray[np.int64]
COARSE_M, FINE_M = 4, 2
NEIGHBOURS = ((0, -1), (-1, 0))  # (dy, dx): left, up
SUBPOS = 4  # alphabet of the sub-position context (which f8 cell of its f16 cell)


def neighbours(k: int) -> tuple[tuple[int, int], ...]:
    """Offsets of the causal neighbours that codebook k is conditioned on."""
    return NEIGHBOURS if k < COARSE_M + FINE_M else ()


def grid_shape(k: int, coarse: tuple[int, int]) -> tuple[int, int]:
    return coarse if k < COARSE_M else (2 * coarse[0], 2 * coarse[1])


def static_contexts(grids: list[IntArray], k: int) -> list[IntArray]:
    """Context planes of codebook k from codebooks coded before it (all in `grids[:k]`).

    Coarse codebook m: coarse codebooks 0..m-1 at the same cell. Fine codebook (s, j): the
    four coarse codebooks of the covering f16 cell, the sub-position, both codebooks of fine
    stage s-1 at the same cell, and codebook 0 of stage s when j = 1.
    """
    if k < COARSE_M:
        return [grids[m] for m in range(k)]
    s, j = divmod(k - COARSE_M, FINE_M)
    h, w = grids[0].shape
    planes = [np.repeat(np.repeat(grids[m], 2, 0), 2, 1) for m in range(COARSE_M)]
    planes.append(np.add.outer(np.arange(2 * h) % 2 * 2, np.arange(2 * w) % 2))
    if s > 0:
        planes += [grids[k - j - FINE_M], grids[k - j - FINE_M + 1]]
    if j > 0:
        planes.append(grids[k - 1])
    return planes


def context_sizes(k: int, K: int) -> list[int]:
    """Alphabet of each context of codebook k (static ones, then the neighbours)."""
    near = [K] * len(neighbours(k))
    if k < COARSE_M:
        return [K] * k + near
    s, j = divmod(k - COARSE_M, FINE_M)
    return [K] * COARSE_M + [SUBPOS] + [K] * (2 * (s > 0) + (j > 0)) + near


def contexts(grids: list[IntArray], k: int, K: int) -> IntArray:
    """All context rows `(h * w, n_ctx)` of codebook k in raster order (training)."""
    return context_rows(static_contexts(grids, k), grids[k], neighbours(k), K)


def encode_tile(enc: E.Encoder, prior: PriorSet, grids: list[IntArray]) -> int:
    """Code the tile's codebooks in order; returns the mask of codebooks coded with the unigram."""
    mask = 0
    for k, grid in enumerate(grids):
        symbols, tables = encoding_tables(prior.priors[k], static_contexts(grids, k), grid, neighbours(k))
        if prior.unigram_is_cheaper(k, grid, E.cross_entropy_bits(symbols, tables)):
            enc.encode(grid.ravel(), prior.unigram[k])
            mask |= 1 << k
        else:
            enc.encode(symbols, tables)
    return mask


def decode_tile(dec: E.Decoder, prior: PriorSet, n_codebooks: int, coarse: tuple[int, int], mask: int) -> list[IntArray]:
    """Inverse of `encode_tile` for a tile of `coarse` (h, w) cells."""
    grids: list[IntArray] = []
    for k in range(n_codebooks):
        h, w = grid_shape(k, coarse)
        if mask >> k & 1:
            grids.append(dec.decode(prior.unigram[k], h * w).astype(np.int64).reshape(h, w))
        else:
            grids.append(decode_grid(dec, prior.priors[k], static_contexts(grids, k), neighbours(k), (h, w)))
    return grids
