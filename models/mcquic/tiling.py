"""mcquic's tiles: the network run on one tile of an image with a margin of context around it.

The encoder sees each tile plus `margin` pixels of the (replicate-padded) image; the decoder
synthesises each tile from the index grids of the whole image, the tile's plus `margin` coarse
cells around it (more than the decoder's receptive field), so tiles meet without seams and
memory stays bounded by the tile size. The network runs through `NeuralCodec.run` (`net_compress`,
`net_decompress`): on one thread, or batched with other files' tiles of the same size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import numpy.typing as npt

from nmc.codec.netcall import Runner, run_on
from nmc.codec.tiling import encoder_window

if TYPE_CHECKING:
    import torch

    from .network import McQuic

STRIDE = 16  # pixels per coarse cell; fine cells are 8 pixels
Box = tuple[int, int, int, int]  # y0, y1, x0, x1 in pixels of the padded image
IntArray = npt.NDArray[np.int64]


def tiles(height: int, width: int, tile: int) -> list[Box]:
    """Tiles `(y0, y1, x0, x1)` of the image padded to the stride, in pixels, raster order."""
    ph, pw = -(-height // STRIDE) * STRIDE, -(-width // STRIDE) * STRIDE
    return [(y, min(y + tile, ph), x, min(x + tile, pw)) for y in range(0, ph, tile) for x in range(0, pw, tile)]


def tile_indices(run: Runner, rgb: npt.NDArray[np.uint8], box: Box, stages: int, margin: int) -> list[IntArray]:
    """Index grids of one tile (coarse codebooks, then fine) from `rgb` `(H, W, 3)`.

    The network (`run("compress")`: `NeuralCodec.run` or `local`) sees the tile plus `margin` pixels of the
    (replicate-padded) image around it.
    """
    y0, y1, x0, x1 = box
    window, (wy0, wx0) = encoder_window(rgb, box, margin, STRIDE)
    grids = []
    for s, idx in enumerate(run("compress", window[None], stages=stages)):
        f = STRIDE if s == 0 else STRIDE // 2
        part = idx[0, :, (y0 - wy0) // f : (y1 - wy0) // f, (x0 - wx0) // f : (x1 - wx0) // f]
        grids += list(part.astype(np.int64))
    return grids


def synthesise(run: Runner, out: np.ndarray, coarse: np.ndarray, fine: np.ndarray, box: Box, margin: int, gray: bool = False) -> None:
    """Decode tile `box` of `out` `(H, W, C)` from the index grids of the whole image, the tile's
    and `margin` coarse cells around it (`run("decompress")`); gray for C <= 2 or `gray`
    (alpha is filled elsewhere), uint8 or uint16."""
    y0, y1, x0, x1 = (v // STRIDE for v in box)
    wy0, wx0 = max(0, y0 - margin), max(0, x0 - margin)
    wy1, wx1 = min(coarse.shape[1], y1 + margin), min(coarse.shape[2], x1 + margin)
    idx = [coarse[None, :, wy0:wy1, wx0:wx1]] + [f[None, :, 2 * wy0 : 2 * wy1, 2 * wx0 : 2 * wx1] for f in fine]
    shape = (STRIDE * (wy1 - wy0), STRIDE * (wx1 - wx0))
    (pixels,) = run("decompress", *idx, shape=shape, gray=out.shape[2] <= 2 or gray)
    py0, px0 = STRIDE * y0, STRIDE * x0
    py1, px1 = min(STRIDE * y1, out.shape[0]), min(STRIDE * x1, out.shape[1])
    core = pixels[0, :, py0 - STRIDE * wy0 : py1 - STRIDE * wy0, px0 - STRIDE * wx0 : px1 - STRIDE * wx0].transpose(1, 2, 0)
    color = 1 if out.shape[2] <= 2 else 3
    out[py0:py1, px0:px1, :color] = core.astype(out.dtype) * (257 if out.dtype == np.uint16 else 1)


def net_compress(net: McQuic, windows: torch.Tensor, stages: int) -> tuple[torch.Tensor, ...]:
    """Index grids of uint8 windows `(B, H, W, 3)`: coarse `(B, 4, h, w)`, then per fine stage `(B, 2, 2h, 2w)`."""
    x = windows.permute(0, 3, 1, 2).float().div_(255).contiguous()  # NCHW: the kernels these bytes were first made with
    return tuple(net.compress(x, stages).indices)


def net_decompress(net: McQuic, coarse: torch.Tensor, *fine: torch.Tensor, shape: tuple[int, int], gray: bool) -> torch.Tensor:
    """uint8 pixels `(B, 3 or 1, H, W)` from index grids (uint8) of the coarse and the fine stages;
    gray: the mean of the three output planes, which differ slightly."""
    import torch

    x = net.decompress([coarse.long(), *(f.long() for f in fine)], 1 + len(fine), shape)
    if gray:
        x = x.mean(1, keepdim=True)
    return x.mul(255).round_().to(torch.uint8)


def local(net: McQuic, device: str = "cpu") -> Runner:
    """A `run` for a bare network (fit_prior.py, tests): the functions above on `device`."""
    fns: dict[str, Callable[..., Any]] = {"compress": net_compress, "decompress": net_decompress}
    return lambda fn, *arrays, **static: run_on(net, device, fns[fn], arrays, static)
