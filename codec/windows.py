"""Streaming windows with context: cut a long signal into chunks that a network codes one at a
time, each with enough of its neighbours (more than the receptive field) that chunked coding
equals whole-signal coding while memory stays bounded by the chunk size."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np


def windows(blocks: Iterable[np.ndarray], chunk: int, context: int) -> Iterator[tuple[np.ndarray, int, int]]:
    """Cut a stream of arrays (time on axis 0) into chunks of `chunk` rows, each with up to
    `context` rows of its neighbours on both sides; yields `(window, a, b)` with the chunk at
    `window[a:b]`. Holds at most one chunk, its contexts and one block.
    """
    buf: np.ndarray | None = None
    origin = pos = 0  # absolute rows of buf[0] and of the next chunk's start
    it = iter(blocks)
    while True:
        block = next(it, None)
        if block is not None:
            buf = block if buf is None else np.concatenate([buf, block])
        if buf is None:
            return
        end = origin + len(buf)
        while pos < end and (block is None or end - pos >= chunk + context):
            lo, stop = max(pos - context, origin), min(pos + chunk, end)
            yield buf[lo - origin : min(stop + context, end) - origin], pos - lo, stop - lo
            pos = stop
            cut = max(pos - context, origin) - origin
            buf, origin = buf[cut:], origin + cut
        if block is None:
            return


def sub_windows(window: np.ndarray, a: int, b: int, size: int, context: int) -> Iterator[tuple[np.ndarray, int, int]]:
    """Like `windows` inside one window: chunks of `size` rows of `window[a:b]` with context."""
    for s in range(a, b, size):
        e = min(s + size, b)
        lo, hi = max(s - context, 0), min(e + context, len(window))
        yield window[lo:hi], s - lo, e - lo


def exact_length(blocks: Iterable[np.ndarray], channels: int, keep: int, total: int) -> Iterator[np.ndarray]:
    """The first `keep` rows of a stream of `(n, channels)` blocks, then zeros up to `total` rows."""
    got = 0
    for b in blocks:
        b = b[: keep - got]
        got += len(b)
        if len(b):
            yield b
        if got == keep:
            break
    if total > got:
        yield np.zeros((total - got, channels), np.float32)
