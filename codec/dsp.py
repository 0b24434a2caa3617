"""Small streaming signal-processing steps that decoders share."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


class DCBlocker:
    """Streaming DC removal: y[n] = x[n] - mean(x[n-N+1 .. n]), with silence assumed before the start.

    A neural decoder's activations (Snake's sin², biases) leave a small DC offset in its output.
    Subtracting a causal moving average of N samples removes DC exactly and leaves speech alone
    (with N = fs / 10 the average passes at most 3.2 % of a component at 100 Hz or above). FIR in float64 with the
    history carried between blocks: cutting the stream elsewhere changes at most the last bit.
    """

    def __init__(self, channels: int, length: int) -> None:
        if length < 1:
            raise ValueError(f"DCBlocker length must be >= 1, got {length}")
        self.length = length
        self.history = np.zeros((length, channels), np.float64)  # the last N input samples

    def __call__(self, block: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """`(T, channels)` float32 -> the same shape, DC removed."""
        x = np.concatenate([self.history, block.astype(np.float64)])
        c = np.cumsum(x, axis=0)
        n, t = self.length, len(block)
        # sum of the N samples ending at each new sample: c[i] - c[i - N] over the padded signal
        window = c[n:] - c[:t] if t else c[:0]
        self.history = x[-n:]
        return (block - window / n).astype(np.float32)
