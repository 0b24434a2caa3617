"""Do vqgan's tiles meet without seams on real photos? Each photo is coded at `--setting` twice: with
the codec's tiles (one tile for a photo up to 1024 pixels a side) and cut into `--tile`-pixel tiles.
Prints, per photo, the bytes of both files, PSNR of each against the source, and how far the tiled
decode is from the whole one (PSNR between them, the largest pixel difference, and its mean on the
tile borders against elsewhere); with `--out` it writes source | whole | tiled side by side as PNG.

    python models/vqgan/check_tiles.py ../shared/data/dev/images --setting s64 --tile 256 --out /tmp/tiles
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import typer
from PIL import Image

from nmc.codec import api
from nmc.codec import media as M
from nmc.codec.metrics import psnr
from nmc.codec.threads import torch_threads
from nmc.models.vqgan.codec import VQGANCodec


def code(codec: VQGANCodec, image: M.Image, setting: str) -> tuple[int, np.ndarray]:
    buf = io.BytesIO()
    api.compress_to_file(codec, image, buf, codec.setting(setting))
    return buf.tell(), api.decompress(buf.getvalue(), codec=codec).pixels


def main(
    photos: Path = typer.Argument(..., help="a photo or a folder of photos"),
    setting: str = "s64",
    tile: int = 256,  # tile side of the tiled coding (pixels, a multiple of 16)
    weights: Path | None = None,  # default: the installed weights
    out: Path | None = None,  # folder for side-by-side PNGs
) -> None:
    files = sorted(p for p in ([photos] if photos.is_file() else photos.iterdir()) if p.suffix.lower() in (".png", ".jpg", ".webp"))
    whole, tiled = VQGANCodec(weights), VQGANCodec(weights, tile=tile)
    print(f"photo  bytes whole/tiled  PSNR whole / tiled (dB)  tiled vs whole: PSNR (dB), max |diff|, mean |diff| on {tile}-px tile borders / elsewhere")
    with torch_threads(1):
        for path in files:
            image = M.read_image(path)
            src = M.to_rgb8(image)[0]
            (n_w, a), (n_t, b) = code(whole, image, setting), code(tiled, image, setting)
            diff = np.abs(a.astype(int) - b.astype(int)).max(axis=2)
            border = np.zeros(diff.shape, bool)
            for k in range(tile, max(diff.shape), tile):  # the 4 pixels each side of every tile edge
                border[max(0, k - 4) : k + 4, :], border[:, max(0, k - 4) : k + 4] = True, True
            far = psnr(a, b) if diff.any() else float("inf")
            print(f"{path.name}  {n_w}/{n_t}  {psnr(src, a):.2f} / {psnr(src, b):.2f}  {far:.2f}, {diff.max()}, "
                  f"{diff[border].mean():.3f} / {diff[~border].mean():.3f}")  # fmt: skip
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.concatenate([src, a, b], axis=1)).save(out / f"{path.stem}_{setting}_t{tile}.png")


if __name__ == "__main__":
    typer.run(main)
