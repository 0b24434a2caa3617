"""vqgan's tiles (`codec/tiling.py`): the network run on one tile of an image with a margin of context around it.

The encoder sees each tile plus `margin` pixels of the (replicate-padded) image; the decoder
synthesises each tile from the index map of the whole image, the tile's plus `margin` cells
around it. Both margins exceed the network's reach (an encoder cell sees ~6 cells of pixels, a
decoded pixel ~6.5 cells of indices: models/vqgan/CARD.md), and normalisation is per position,
so tiles meet without seams. Every network call goes through a `Runner` (`codec/netcall.py`: one
thread, the same bytes and pixels anywhere, batched across files by `nmc batch`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import numpy.typing as npt

from nmc.codec.netcall import Runner, run_on
from nmc.codec.tiling import Box, cell_window, encoder_window, put_pixels

if TYPE_CHECKING:
    import torch

    from .network import Ladder

STRIDE = 16  # pixels per index cell
IntArray = npt.NDArray[np.int64]


def tile_indices(run: Runner, rgb: npt.NDArray[np.uint8], box: Box, sizes: list[int], margin: int) -> list[IntArray]:
    """Index grids of tile `box` of `rgb` `(H, W, 3)`, one per codebook size in `sizes` (the encoder
    runs once, through `run("indices")`: `NeuralCodec.run` or `local`)."""
    y0, y1, x0, x1 = box
    window, (wy0, wx0) = encoder_window(rgb, box, margin, STRIDE)
    grids = run("indices", window[None], sizes=tuple(sizes))
    cells = (slice((y0 - wy0) // STRIDE, (y1 - wy0) // STRIDE), slice((x0 - wx0) // STRIDE, (x1 - wx0) // STRIDE))
    return [g[0][cells].astype(np.int64) for g in grids]


def synthesise(run: Runner, out: np.ndarray, grid: np.ndarray, box: Box, size: int, margin: int, gray: bool = False,
               masked: np.ndarray | None = None) -> None:  # fmt: skip
    """Decode tile `box` of `out` `(H, W, C)` from `grid`, the index map `(h, w)` of the whole image into the
    codebook of `size` codes (`run("decode")`), or its code map `(h, w, d)` fp32 (`run("decode_codes")`: a
    continuous recovery fill): the tile's cells and `margin` cells around it. With `masked` (the lost cells of a
    code map, `(h, w)` bool), a window that holds one is decoded by the concealing decoder where the network has
    one for `size` (`run("decode_concealed")`, `Ladder.set_concealer`); the other windows decode as without loss."""
    wy0, wy1, wx0, wx1 = cell_window(box, margin, (grid.shape[0], grid.shape[1]), STRIDE)
    fn = "decode_codes" if grid.ndim == 3 else "decode"
    if grid.ndim == 3 and masked is not None and masked[wy0:wy1, wx0:wx1].any():
        fn = "decode_concealed"
    (pixels,) = run(fn, grid[None, wy0:wy1, wx0:wx1], size=size, gray=out.shape[2] <= 2 or gray)
    put_pixels(out, pixels[0], box, (STRIDE * wy0, STRIDE * wx0))


def net_indices(net: Ladder, windows: torch.Tensor, sizes: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """Index grids `(B, h, w)` into each codebook of `sizes` from uint8 windows `(B, H, W, 3)`."""
    y = net.features(windows.permute(0, 3, 1, 2).float().div_(255))  # channels_last strides
    return tuple(net.quantize(y, s) for s in sizes)


def net_decode(net: Ladder, indices: torch.Tensor, size: int, gray: bool) -> torch.Tensor:
    """uint8 pixels `(B, 3 or 1, 16h, 16w)` from indices `(B, h, w)` into the codebook of `size` codes;
    gray: the mean of the three output planes, which differ slightly."""
    return _pixels(net.decode_at(indices.long(), size), gray)


def net_decode_codes(net: Ladder, codes: torch.Tensor, size: int, gray: bool) -> torch.Tensor:
    """`net_decode` from a code map `(B, h, w, d)` fp32 (lost cells filled with vectors, not indices): the
    permuted view has the strides of `decode_at`'s gathered codes, so the convolutions run as there."""
    return _pixels(net.synthesize(codes.permute(0, 3, 1, 2), size), gray)


def net_decode_concealed(net: Ladder, codes: torch.Tensor, size: int, gray: bool) -> torch.Tensor:
    """`net_decode_codes` through the concealing decoder of `size` where the network has one (else its own)."""
    return _pixels(net.synthesize(codes.permute(0, 3, 1, 2), size, net.concealers.get(size)), gray)


def _pixels(x: torch.Tensor, gray: bool) -> torch.Tensor:
    """Decoded `(B, 3, H, W)` in [0, 1] -> uint8 (gray: the mean of the three planes)."""
    import torch

    if gray:
        x = x.mean(1, keepdim=True)
    return x.mul(255).round_().to(torch.uint8)


def local(net: Ladder, device: str = "cpu") -> Runner:
    """A `run` for a bare network (fit_prior.py, tests): the functions above on `device`."""
    fns: dict[str, Callable[..., Any]] = {"indices": net_indices, "decode": net_decode, "decode_codes": net_decode_codes,
                                          "decode_concealed": net_decode_concealed}  # fmt: skip
    return lambda fn, *arrays, **static: run_on(net, device, fns[fn], arrays, static)
