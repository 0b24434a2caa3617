"""torch's intra-op thread count (and cuDNN's numerics), set for a block and restored after it."""

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


@contextmanager
def exact_cuda() -> Iterator[None]:
    """On a GPU: full fp32 convolutions (no TF32, whose 10-bit mantissa flips many more VQ indices
    than the CPU's rounding does) and deterministic cuDNN algorithms chosen without benchmarking,
    so a file codes to the same bytes every time on the same GPU. Flags only: CUDA is not started."""
    import torch

    cudnn = torch.backends.cudnn
    before = cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32
    cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32 = False, True, False, False
    try:
        yield
    finally:
        cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32 = before


@contextmanager
def _one_thread() -> Iterator[None]:
    with torch_threads(1), exact_cuda():
        yield


def one_thread() -> AbstractContextManager[None]:
    """Networks on one thread: oneDNN's convolutions sum in an order that depends on the thread
    count, and a last-ULP difference can flip a VQ index or a rounded sample. On one thread the
    bytes a codec writes and the media it decodes are the same whatever the caller's setting.
    On a GPU the block also runs with `exact_cuda`."""
    return _one_thread()
