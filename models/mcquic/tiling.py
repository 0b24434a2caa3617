"""mcquic's tiles (`codec/tiling.py`): the network run on one tile of an image with a margin of context around it.

The encoder sees each tile plus `margin` pixels of the (replicate-padded) image; the decoder
synthesises each tile from the index grids of the whole image, the tile's plus `margin` coarse
cells around it (more than the decoder's receptive field), so tiles meet without seams and
memory stays bounded by the tile size. Both run on one thread (the same bytes and pixels for any
thread count).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from nmc.codec.threads import one_thread
from nmc.codec.tiling import Box, cell_window, encoder_window, put_pixels

if TYPE_CHECKING:
    from .network import McQuic

STRIDE = 16  # pixels per coarse cell; fine cells are 8 pixels
IntArray = npt.NDArray[np.int64]


def tile_indices(net: McQuic, rgb: npt.NDArray[np.uint8], box: Box, stages: int, margin: int, device: str = "cpu") -> list[IntArray]:
    """Index grids of one tile (coarse codebooks, then fine) from `rgb` `(H, W, 3)`.

    The network sees the tile plus `margin` pixels of the (replicate-padded) image around it.
    """
    import torch

    y0, y1, x0, x1 = box
    window, (wy0, wx0) = encoder_window(rgb, box, margin, STRIDE)
    with torch.inference_mode(), one_thread():  # the same bytes for any thread count
        x = torch.from_numpy(window).to(device).permute(2, 0, 1)[None].float().div_(255)  # channels_last strides
        res = net.compress(x, stages)
    grids = []
    for s, idx in enumerate(res.indices):
        f = STRIDE if s == 0 else STRIDE // 2
        part = idx[0, :, (y0 - wy0) // f : (y1 - wy0) // f, (x0 - wx0) // f : (x1 - wx0) // f]
        grids += list(part.cpu().numpy().astype(np.int64))
    return grids


def synthesise(net: McQuic, out: np.ndarray, coarse: np.ndarray, fine: np.ndarray, box: Box, margin: int,
               device: str = "cpu", gray: bool = False) -> None:
    """Decode tile `box` of `out` `(H, W, C)` from the index grids of the whole image, the tile's
    and `margin` coarse cells around it; gray for C <= 2 or `gray` (alpha is filled elsewhere), uint8 or uint16."""
    import torch

    wy0, wy1, wx0, wx1 = cell_window(box, margin, (coarse.shape[1], coarse.shape[2]), STRIDE)
    idx = [coarse[None, :, wy0:wy1, wx0:wx1]] + [f[None, :, 2 * wy0 : 2 * wy1, 2 * wx0 : 2 * wx1] for f in fine]
    with torch.inference_mode(), one_thread():  # the same pixels for any thread count
        ts = [torch.from_numpy(i.astype(np.int64)).to(device) for i in idx]
        x = net.decompress(ts, 1 + fine.shape[0], (STRIDE * (wy1 - wy0), STRIDE * (wx1 - wx0)))[0]
        put_pixels(out, x, box, (STRIDE * wy0, STRIDE * wx0), gray)
