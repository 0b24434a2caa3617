"""Image tiles for convolutional codecs: each tile is coded with a margin of its surroundings, so
that tiles meet without seams while memory stays bounded by the tile size (the image analogue of
`windows.py`).

The image is replicate-padded at the bottom and right to a multiple of the network's `stride`
(pixels per index cell) and cut into square tiles in raster order. The encoder runs on a tile
plus `margin` pixels of the padded image (`encoder_window`); the decoder synthesises a tile from
the index cells of the whole image, the tile's plus `margin` cells around it (`cell_window`),
and keeps the tile's pixels (`put_pixels`). Colour handling for the image codecs that use this
module (one older codec keeps its own copy in its folder): R=G=B
sources (`is_gray`), 1- and 2-channel sources decoded as the mean of the three output planes,
16-bit sources at 8-bit precision (x 257), alpha planes coded elsewhere (`new_canvas`, `put_alpha`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Box = tuple[int, int, int, int]  # y0, y1, x0, x1
MAX_SIDE = 1 << 20  # pixels; a header claiming more is damaged (keeps the decoder's allocations sane)


def check_geometry(tile: int, enc_margin: int, dec_margin: int, stride: int) -> None:
    """ValueError unless `tile` and `enc_margin` (pixels) are multiples of `stride` that fit the header
    fields (tile 16..65535, decoder margin 0..64 cells)."""
    if tile % stride or not stride <= tile <= 0xFFFF:
        raise ValueError(f"tile={tile} is not a multiple of {stride} in [{stride}, 65535]")
    if enc_margin % stride or enc_margin < 0 or not 0 <= dec_margin <= 64:
        raise ValueError(f"enc_margin={enc_margin} (a multiple of {stride}) or dec_margin={dec_margin} (0..64 cells) out of range")


def tiles(height: int, width: int, tile: int, stride: int) -> list[Box]:
    """Tiles `(y0, y1, x0, x1)` in pixels of the image padded to `stride`, raster order."""
    ph, pw = -(-height // stride) * stride, -(-width // stride) * stride
    return [(y, min(y + tile, ph), x, min(x + tile, pw)) for y in range(0, ph, tile) for x in range(0, pw, tile)]


def encoder_window(rgb: npt.NDArray[np.uint8], box: Box, margin: int, stride: int) -> tuple[npt.NDArray[np.uint8], tuple[int, int]]:
    """Tile `box` of `rgb` `(H, W, 3)` plus `margin` pixels of the padded image around it (clipped to
    it), and the window's top-left pixel. Multiples of `stride` in, multiples of `stride` out."""
    y0, y1, x0, x1 = box
    wy0, wx0 = max(0, y0 - margin), max(0, x0 - margin)
    ph, pw = -(-rgb.shape[0] // stride) * stride, -(-rgb.shape[1] // stride) * stride
    wy1, wx1 = min(ph, y1 + margin), min(pw, x1 + margin)
    h, w = rgb.shape[:2]  # a tile starts inside the image (wy0 < h, wx0 < w); beyond it, its last row and column repeat
    pad = ((0, max(0, wy1 - h)), (0, max(0, wx1 - w))) + ((0, 0),) * (rgb.ndim - 2)
    return np.pad(rgb[wy0 : min(wy1, h), wx0 : min(wx1, w)], pad, mode="edge"), (wy0, wx0)  # a new array


def cell_window(box: Box, margin: int, cells: tuple[int, int], stride: int) -> Box:
    """The cells `(y0, y1, x0, x1)` of tile `box` (pixels) plus `margin` cells, clipped to the grid `cells` (h, w)."""
    y0, y1, x0, x1 = (v // stride for v in box)
    return max(0, y0 - margin), min(cells[0], y1 + margin), max(0, x0 - margin), min(cells[1], x1 + margin)


def is_gray(image_channels: int, rgb: npt.NDArray[np.uint8]) -> bool:
    """A colour source whose every pixel has R = G = B (decoded as one plane copied to all three)."""
    return image_channels >= 3 and bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def new_canvas(media: dict[str, Any], alpha: bool) -> np.ndarray:
    """The decoded image `(H, W, C)` of the header's `media`, uint8 or uint16; an opaque alpha plane
    when the source has one but the file codes none."""
    out = np.empty((media["height"], media["width"], media["channels"]), np.uint16 if media["bit_depth"] == 16 else np.uint8)
    if media["channels"] in (2, 4) and not alpha:
        out[..., -1] = np.iinfo(out.dtype).max
    return out


def put_pixels(out: np.ndarray, pixels: npt.NDArray[np.uint8], box: Box, origin: tuple[int, int]) -> None:
    """Write tile `box` of `out` `(H, W, C)` from `pixels` `(3 or 1, h, w)` uint8, the decoded window
    whose top-left pixel is `origin` (one plane: gray), x 257 for uint16; the alpha plane is left alone."""
    y0, y1, x0, x1 = box[0], min(box[1], out.shape[0]), box[2], min(box[3], out.shape[1])
    core = pixels[:, y0 - origin[0] : y1 - origin[0], x0 - origin[1] : x1 - origin[1]].transpose(1, 2, 0)
    color = 1 if out.shape[2] <= 2 else 3  # a gray plane fills all three of a colour image
    out[y0:y1, x0:x1, :color] = core.astype(out.dtype) * (257 if out.dtype == np.uint16 else 1)


def put_alpha(out: np.ndarray, a: npt.NDArray[np.uint8], box: Box) -> None:
    """Write the 8-bit alpha plane `a` of tile `box` (its part of the unpadded image) into `out`."""
    out[box[0] : box[0] + a.shape[0], box[2] : box[2] + a.shape[1], -1] = a.astype(out.dtype) * (257 if out.dtype == np.uint16 else 1)


def alpha_of(alpha: npt.NDArray[np.uint8], box: Box) -> npt.NDArray[np.uint8]:
    """The part of the (unpadded) alpha plane that tile `box` covers."""
    return alpha[box[0] : min(box[1], alpha.shape[0]), box[2] : min(box[3], alpha.shape[1])]
