"""Context coding of a 2-D grid of indices with a `ContextPrior`, decoded one wavefront per call.

Index (y, x) of a grid is conditioned first on `static` context planes (values the decoder knows
before the grid: other codebooks, sub-positions), then on the grid's own values at causal
`offsets` (dy, dx <= 0, e.g. left (0, -1) and up (-1, 0)); outside the grid the value is the
alphabet size K ("not available"). With offsets the grid is coded in wavefront order, by
t = y + x and by y within a wavefront: every neighbour lies on an earlier wavefront, so a decoder
decodes a whole anti-diagonal per call (h + w - 1 calls instead of h x w). Without offsets the
grid is coded in raster order and decoded in one call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from . import entropy as E
from .prior import ContextPrior, coder_tables_from_scores

IntArray = npt.NDArray[np.int64]
Offsets = Sequence[tuple[int, int]]


def _check(offsets: Offsets) -> None:
    if any(dy > 0 or dx > 0 or dy == dx == 0 for dy, dx in offsets):
        raise ValueError(f"offsets {list(offsets)} are not all causal (dy, dx <= 0, not both 0)")


def coding_order(h: int, w: int, offsets: Offsets) -> IntArray:
    """Raster positions in coding order: wavefronts (then rows) with offsets, else raster order."""
    if not offsets:
        return np.arange(h * w)
    y, x = np.divmod(np.arange(h * w), w)
    return np.lexsort((y, y + x))


def neighbour_planes(grid: IntArray, offsets: Offsets, K: int) -> list[IntArray]:
    """The grid's own value at each offset, K outside it."""
    _check(offsets)
    h, w = grid.shape
    pad_y, pad_x = max([-dy for dy, _ in offsets], default=0), max([-dx for _, dx in offsets], default=0)
    padded = np.full((h + pad_y, w + pad_x), K, np.int64)
    padded[pad_y:, pad_x:] = grid
    return [padded[pad_y + dy : pad_y + dy + h, pad_x + dx : pad_x + dx + w] for dy, dx in offsets]


def context_rows(static: list[IntArray], grid: IntArray, offsets: Offsets, K: int) -> IntArray:
    """All context rows `(h * w, n_ctx)` of the grid in raster order (training and encoding)."""
    planes = static + neighbour_planes(grid, offsets, K)
    return np.stack([p.ravel() for p in planes], axis=1) if planes else np.zeros((grid.size, 0), np.int64)


def encoding_tables(prior: ContextPrior, static: list[IntArray], grid: IntArray, offsets: Offsets) -> tuple[IntArray, E.Tables]:
    """The grid's symbols in coding order and the frequency table `(h * w, K)` of each."""
    h, w = grid.shape
    order = coding_order(h, w, offsets)
    return grid.ravel()[order], prior.coder_tables(context_rows(static, grid, offsets, prior.alphabet)[order])


def decode_grid(dec: E.Decoder, prior: ContextPrior, static: list[IntArray], offsets: Offsets, shape: tuple[int, int]) -> IntArray:
    """Inverse of coding `encoding_tables`' symbols with their tables."""
    _check(offsets)
    (h, w), K = shape, prior.alphabet
    order = coding_order(h, w, offsets)  # raster positions, one wavefront after another (or raster order)
    known = np.stack([p.ravel()[order] for p in static], axis=1) if static else np.zeros((h * w, 0), np.int64)
    s = prior.scores(known, len(static))  # in coding order
    if not offsets:
        return dec.decode(coder_tables_from_scores(s)).astype(np.int64).reshape(h, w)
    pad_y, pad_x = max(-dy for dy, _ in offsets), max(-dx for _, dx in offsets)
    padded = np.full((h + pad_y, w + pad_x), K, np.int64)  # the grid with a border of "not available"
    y, x = np.divmod(order, w)
    at = (y + pad_y) * (w + pad_x) + x + pad_x  # the same positions in `padded`, flat
    near = np.stack([at + dy * (w + pad_x) + dx for dy, dx in offsets], axis=1)  # their neighbours in `padded`
    flat = padded.ravel()
    ends = np.cumsum(np.bincount(y + x))
    for a, b in zip(ends - np.bincount(y + x), ends):
        st = s[a:b]  # each row is used once: added to in place
        prior.add_terms(st, len(static), flat[near[a:b]])
        flat[at[a:b]] = dec.decode(coder_tables_from_scores(st))
    return padded[pad_y:, pad_x:].copy()
