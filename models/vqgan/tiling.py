"""vqgan's tiles (`codec/tiling.py`): the network run on one tile of an image with a margin of context around it.

The encoder sees each tile plus `margin` pixels of the (replicate-padded) image; the decoder
synthesises each tile from the index map of the whole image, the tile's plus `margin` cells
around it. Both margins exceed the network's reach (an encoder cell sees ~6 cells of pixels, a
decoded pixel ~6.5 cells of indices: models/vqgan/CARD.md), and normalisation is per position,
so tiles meet without seams. Both run on one thread (the same bytes and pixels for any thread count).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from nmc.codec.threads import one_thread
from nmc.codec.tiling import Box, cell_window, encoder_window, put_pixels

if TYPE_CHECKING:
    from .network import Ladder

STRIDE = 16  # pixels per index cell
IntArray = npt.NDArray[np.int64]


def tile_indices(net: Ladder, rgb: npt.NDArray[np.uint8], box: Box, sizes: list[int], margin: int, device: str = "cpu") -> list[IntArray]:
    """Index grids of tile `box` of `rgb` `(H, W, 3)`, one per codebook size in `sizes` (the encoder runs once)."""
    import torch

    y0, y1, x0, x1 = box
    window, (wy0, wx0) = encoder_window(rgb, box, margin, STRIDE)
    with torch.inference_mode(), one_thread():  # the same bytes for any thread count
        x = torch.from_numpy(window).to(device).permute(2, 0, 1)[None].float().div_(255)  # channels_last strides
        y = net.features(x)
        grids = [net.quantize(y, s)[0] for s in sizes]
    cells = (slice((y0 - wy0) // STRIDE, (y1 - wy0) // STRIDE), slice((x0 - wx0) // STRIDE, (x1 - wx0) // STRIDE))
    return [g[cells].cpu().numpy().astype(np.int64) for g in grids]


def synthesise(net: Ladder, out: np.ndarray, indices: IntArray, box: Box, size: int, margin: int, device: str = "cpu", gray: bool = False) -> None:
    """Decode tile `box` of `out` `(H, W, C)` from `indices`, the index map of the whole image into the
    codebook of `size` codes: the tile's cells and `margin` cells around it."""
    import torch

    wy0, wy1, wx0, wx1 = cell_window(box, margin, (indices.shape[0], indices.shape[1]), STRIDE)
    with torch.inference_mode(), one_thread():  # the same pixels for any thread count
        x = net.decode_at(torch.from_numpy(indices[None, wy0:wy1, wx0:wx1]).to(device), size)[0]
        put_pixels(out, x, box, (STRIDE * wy0, STRIDE * wx0), gray)
