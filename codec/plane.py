"""Lossless coding of one 8-bit plane (an alpha channel, a mask) in one range-coded stream.

Planar prediction (left + up - up-left, mod 256; 0 outside the plane) and one of 15 Laplace
tables per 32 x 32 block, or mode 0: every residual of the block is zero. A flat or
straight-edged plane costs a few bytes. Byte layout: docs/FORMAT.md ("The plane coder").
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from . import entropy as E

BLOCK = 32  # pixels per side of the blocks that choose a residual table
SCALES = np.geomspace(0.05, 40.0, 15)  # Laplace scales of modes 1..15; mode 0: all residuals zero
with np.errstate(over="ignore"):  # exp() of the unused branch overflows for small scales
    _TABLES = E.quantized_laplace_tables(SCALES, 128)  # symbols 0..256, residual = symbol - 128
_MODE_TABLE = E.freqs_from_counts(np.array([15.0] + [1.0] * len(SCALES)))


def _blocks(a: np.ndarray) -> np.ndarray:
    """`(h, w)` -> `(n_blocks, BLOCK**2)`, blocks in raster order (padded with -1)."""
    h, w = a.shape
    p = np.full((-(-h // BLOCK) * BLOCK, -(-w // BLOCK) * BLOCK), -1, np.int64)
    p[:h, :w] = a
    return p.reshape(p.shape[0] // BLOCK, BLOCK, p.shape[1] // BLOCK, BLOCK).transpose(0, 2, 1, 3).reshape(-1, BLOCK * BLOCK)


def _unblocks(b: np.ndarray, h: int, w: int) -> np.ndarray:
    nby, nbx = -(-h // BLOCK), -(-w // BLOCK)
    return b.reshape(nby, nbx, BLOCK, BLOCK).transpose(0, 2, 1, 3).reshape(nby * BLOCK, nbx * BLOCK)[:h, :w]


def encode_plane(plane: npt.NDArray[np.uint8]) -> bytes:
    """The stream of an `(h, w)` uint8 plane; the decoder needs h and w from elsewhere."""
    a = np.pad(plane.astype(np.int64), ((1, 0), (1, 0)))
    r = (a[1:, 1:] - a[1:, :-1] - a[:-1, 1:] + a[:-1, :-1] + 128) % 256  # symbols 0..255
    blocks = _blocks(r)
    valid = blocks >= 0
    counts = np.stack([np.bincount(b[v], minlength=257) for b, v in zip(blocks, valid)])
    cost = counts @ -np.log2(_TABLES / _TABLES.sum(1, keepdims=True)).T
    modes = np.where(counts[:, 128] == valid.sum(1), 0, 1 + cost.argmin(1))
    enc = E.Encoder()
    enc.encode(modes, _MODE_TABLE)
    coded = (modes > 0)[:, None] & valid
    enc.encode_indexed(blocks[coded], np.broadcast_to(modes[:, None] - 1, blocks.shape)[coded], _TABLES)
    return enc.to_bytes()


def decode_plane(data: bytes, h: int, w: int) -> npt.NDArray[np.uint8]:
    """Inverse of `encode_plane`; ValueError on a stream that cannot come from it."""
    dec = E.Decoder(data)
    valid = _blocks(np.zeros((h, w), np.int64)) >= 0
    modes = dec.decode(_MODE_TABLE, valid.shape[0]).astype(np.int64)
    coded = (modes > 0)[:, None] & valid
    r = np.full(valid.shape, 128, np.int64)
    r[coded] = dec.decode_indexed(np.broadcast_to(modes[:, None] - 1, valid.shape)[coded], _TABLES)
    if (r > 255).any():
        raise ValueError("plane residual outside 0..255")
    return (np.cumsum(np.cumsum(_unblocks(r, h, w) - 128, 0), 1) % 256).astype(np.uint8)
