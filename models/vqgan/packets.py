"""How vqgan splits a tile's index map over interleaved packets and entropy-codes each one
(docs/FORMAT.md, `vqgan`).

A tile of h x w cells with the interleave (a, b), clamped to (min(a, h), min(b, w)), is coded as
a x b packets: packet j = i b + k holds the cells (y, x) with y mod a = i and x mod b = k, a
sub-grid `grid[i::a, k::b]`. A lost packet therefore leaves holes scattered over the tile, each
with received neighbours on every side (what issue 10's recovery transformer fills), never a block.

Each sub-grid is coded on its own: its first symbol says which table codes it (0: the rung's
`ContextPrior` given the left, upper and upper-left cell of the same sub-grid, in wavefront
order; 1: the rung's unigram table, raster order), whichever is cheaper for the packet.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from nmc.codec import entropy as E
from nmc.codec.prior import PriorSet
from nmc.codec.wavefront import context_rows, decode_grid, encoding_tables

IntArray = npt.NDArray[np.int64]
NEIGHBOURS = ((0, -1), (-1, 0), (-1, -1))  # (dy, dx) within the sub-grid: left, up, up-left
CHOICE = np.array([1, 1], np.int32)  # table of the first symbol: 0 context prior, 1 unigram
MAX_PACKETS = 64  # per tile


def interleave(packets: int) -> tuple[int, int]:
    """The lattice (a, b) of `packets` = a x b per tile, as square as the number allows (8: 2 x 4)."""
    if not 1 <= packets <= MAX_PACKETS:
        raise ValueError(f"packets per tile must be 1..{MAX_PACKETS}, got {packets}")
    a = max(d for d in range(1, math.isqrt(packets) + 1) if packets % d == 0)
    return a, packets // a


def packet_cells(shape: tuple[int, int], lattice: tuple[int, int]) -> list[tuple[slice, slice]]:
    """The cells of each packet of a tile of `shape` (h, w) cells, as strided slices of its grid, in packet order."""
    a, b = min(lattice[0], shape[0]), min(lattice[1], shape[1])
    return [(slice(i, None, a), slice(k, None, b)) for i in range(a) for k in range(b)]


def packet_count(rows: list[int], cols: list[int], lattice: tuple[int, int]) -> int:
    """Index packets of an image whose tiles have `rows` x `cols` cells (tile heights, tile widths)."""
    return sum(min(lattice[0], h) for h in rows) * sum(min(lattice[1], w) for w in cols)


def contexts(grid: IntArray, K: int) -> IntArray:
    """Context rows `(n, 3)` of a sub-grid in raster order (prior fitting)."""
    return context_rows([], grid, NEIGHBOURS, K)


def encode_cells(prior: PriorSet, k: int, grid: IntArray) -> bytes:
    """The stream of one packet: sub-grid `grid` of indices into codebook k."""
    symbols, tables = encoding_tables(prior.priors[k], [], grid, NEIGHBOURS)
    unigram = prior.unigram_is_cheaper(k, grid, E.cross_entropy_bits(symbols, tables))
    enc = E.Encoder()
    enc.encode(np.array([int(unigram)]), CHOICE)
    if unigram:
        enc.encode(grid.ravel(), prior.unigram[k])
    else:
        enc.encode(symbols, tables)
    return enc.to_bytes()


def decode_cells(data: bytes, prior: PriorSet, k: int, shape: tuple[int, int]) -> IntArray:
    """Inverse of `encode_cells` for a sub-grid of `shape` (h, w)."""
    dec = E.Decoder(data)
    if dec.decode(CHOICE, 1)[0]:
        return dec.decode(prior.unigram[k], shape[0] * shape[1]).astype(np.int64).reshape(shape)
    return decode_grid(dec, prior.priors[k], [], NEIGHBOURS, shape)
