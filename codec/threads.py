"""torch's intra-op thread count, set for a block and restored after it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` torch intra-op threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def one_thread() -> AbstractContextManager[None]:
    """Networks on one thread: oneDNN's convolutions sum in an order that depends on the thread
    count, and a last-ULP difference can flip a VQ index or a rounded sample. On one thread the
    bytes a codec writes and the media it decodes are the same whatever the caller's setting."""
    return torch_threads(1)
