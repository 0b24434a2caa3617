"""mcquic's tiles: the network run on one tile of an image with a margin of context around it.

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

if TYPE_CHECKING:
    from .network import McQuic

STRIDE = 16  # pixels per coarse cell; fine cells are 8 pixels
Box = tuple[int, int, int, int]  # y0, y1, x0, x1 in pixels of the padded image
IntArray = npt.NDArray[np.int64]


def tiles(height: int, width: int, tile: int) -> list[Box]:
    """Tiles `(y0, y1, x0, x1)` of the image padded to the stride, in pixels, raster order."""
    ph, pw = -(-height // STRIDE) * STRIDE, -(-width // STRIDE) * STRIDE
    return [(y, min(y + tile, ph), x, min(x + tile, pw)) for y in range(0, ph, tile) for x in range(0, pw, tile)]


def tile_indices(net: McQuic, rgb: npt.NDArray[np.uint8], box: Box, stages: int, margin: int, device: str = "cpu") -> list[IntArray]:
    """Index grids of one tile (coarse codebooks, then fine) from `rgb` `(H, W, 3)`.

    The network sees the tile plus `margin` pixels of the (replicate-padded) image around it.
    """
    import torch

    y0, y1, x0, x1 = box
    wy0, wx0 = max(0, y0 - margin), max(0, x0 - margin)
    ph, pw = -(-rgb.shape[0] // STRIDE) * STRIDE, -(-rgb.shape[1] // STRIDE) * STRIDE
    rows = np.minimum(np.arange(wy0, min(ph, y1 + margin)), rgb.shape[0] - 1)
    cols = np.minimum(np.arange(wx0, min(pw, x1 + margin)), rgb.shape[1] - 1)
    window = rgb[rows[:, None], cols[None, :]]
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

    y0, y1, x0, x1 = (v // STRIDE for v in box)
    wy0, wx0 = max(0, y0 - margin), max(0, x0 - margin)
    wy1, wx1 = min(coarse.shape[1], y1 + margin), min(coarse.shape[2], x1 + margin)
    idx = [coarse[None, :, wy0:wy1, wx0:wx1]] + [f[None, :, 2 * wy0 : 2 * wy1, 2 * wx0 : 2 * wx1] for f in fine]
    with torch.inference_mode(), one_thread():  # the same pixels for any thread count
        ts = [torch.from_numpy(i.astype(np.int64)).to(device) for i in idx]
        x = net.decompress(ts, 1 + fine.shape[0], (STRIDE * (wy1 - wy0), STRIDE * (wx1 - wx0)))[0]
        if out.shape[2] <= 2 or gray:  # the three output planes differ slightly: their mean is the gray
            x = x.mean(0, keepdim=True)
        pixels = x.mul(255).round_().to(torch.uint8).cpu().numpy()
    py0, px0 = STRIDE * y0, STRIDE * x0
    py1, px1 = min(STRIDE * y1, out.shape[0]), min(STRIDE * x1, out.shape[1])
    core = pixels[:, py0 - STRIDE * wy0 : py1 - STRIDE * wy0, px0 - STRIDE * wx0 : px1 - STRIDE * wx0].transpose(1, 2, 0)
    color = 1 if out.shape[2] <= 2 else 3
    out[py0:py1, px0:px1, :color] = core.astype(out.dtype) * (257 if out.dtype == np.uint16 else 1)
