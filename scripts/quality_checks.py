"""Checks of what a person sees and hears in decoded output (issue 12's targets beyond PSNR/PESQ).

    python scripts/quality_checks.py images ../shared/data/dev/images --codec mcquic
    python scripts/quality_checks.py images ../shared/data/dev/images --codec webp --settings q50,q80   # an anchor
    python scripts/quality_checks.py speech ../shared/data/dev/speech --codec hificodec

Images, per setting over the folder:
- specks: clusters of >= 9 pixels (8-connected) that differ by > 80 levels (any channel) from both
  the original and the decoded image's local 5x5 median: isolated blotches of wrong colour;
- border/interior: MSE of the outer 2 pixels over the MSE of the rest (1 = no border penalty);
- detail kept: energy of the Laplacian of the decoded image over that of the original (texture
  and fine detail; 1 = all kept);
- gray drift: the photo turned to gray (R=G=B) is coded and decoded; max |R-G|, |G-B| of the output
  (0 = gray stays gray).
Speech, per setting:
- DC: |mean| of each decoded clip in dBFS (worst clip);
- near-silence cost: kbit/s of 5 s of noise at -60 dBFS RMS (a quiet room between sentences).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import typer
from scipy import ndimage

from nmc.codec import anchors, api
from nmc.codec import media as M
from nmc.codec.registry import available, get_codec

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def speck_clusters(ref: np.ndarray, dec: np.ndarray, min_size: int = 9, level: int = 80) -> int:
    """Clusters of >= min_size pixels far (> level) from both the original and the local median."""
    d = dec.astype(np.int16)
    med = np.stack([ndimage.median_filter(d[..., c], size=5, mode="nearest") for c in range(3)], axis=-1)
    far = (np.abs(d - ref.astype(np.int16)).max(-1) > level) & (np.abs(d - med).max(-1) > level)
    labels, n = ndimage.label(far, structure=np.ones((3, 3)))
    if n == 0:
        return 0
    sizes = np.bincount(labels.ravel())[1:]
    return int((sizes >= min_size).sum())


def border_ratio(ref: np.ndarray, dec: np.ndarray, width: int = 2) -> float:
    err = (ref.astype(np.float64) - dec.astype(np.float64)) ** 2
    inner = np.zeros(err.shape[:2], bool)
    inner[width:-width, width:-width] = True
    return float(err[~inner].mean() / max(err[inner].mean(), 1e-12))


def detail_kept(ref: np.ndarray, dec: np.ndarray) -> float:
    lap = lambda x: ndimage.laplace(x.astype(np.float64).mean(-1))  # noqa: E731
    return float((lap(dec) ** 2).mean() / max((lap(ref) ** 2).mean(), 1e-12))


def image_coder(name: str) -> tuple[list[str], Callable[[M.Image, str], bytes], Callable[[bytes], M.Image]]:
    """Settings, encode and decode of a learned codec or a classical anchor."""
    if name in available():
        def decode(data: bytes) -> M.Image:
            out = api.decompress(data)
            assert isinstance(out, M.Image)
            return out

        return [s.name for s in get_codec(name).settings()], lambda m, s: api.compress(name, m, s), decode
    a = anchors.get_anchor(name)
    return a.settings(), a.encode, a.decode


@app.command()
def images(folder: Path, codec: str = "mcquic", settings: str = "") -> None:
    names, encode, decode = image_coder(codec)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    print("setting  bpp     specks  border/interior  detail kept  gray drift (max |R-G|,|G-B|)")
    for s in settings.split(",") if settings else names:
        specks, border, detail, drift, bits, pixels = 0, [], [], 0, 0, 0
        for f in files:
            _, media = api.load_media(f)
            assert isinstance(media, M.Image)
            ref = media.pixels[..., :3].astype(np.uint8)
            data = encode(media, s)
            out = decode(data).pixels[..., :3].astype(np.uint8)
            specks += speck_clusters(ref, out)
            border.append(border_ratio(ref, out))
            detail.append(detail_kept(ref, out))
            bits += 8 * len(data)
            pixels += ref.shape[0] * ref.shape[1]
            gray = np.repeat(ref.mean(-1, keepdims=True).round().astype(np.uint8), 3, axis=-1)
            gp = decode(encode(M.Image(gray), s)).pixels[..., :3].astype(np.int16)
            drift = max(drift, int(np.abs(gp[..., 0] - gp[..., 1]).max()), int(np.abs(gp[..., 1] - gp[..., 2]).max()))
        print(f"{s:8} {bits / pixels:.4f}  {specks:6d}  {np.mean(border):15.2f}  {np.mean(detail):11.2f}  {drift}",
              flush=True)


@app.command()
def speech(folder: Path, codec: str = "hificodec") -> None:
    c = get_codec(codec)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".flac", ".wav", ".opus", ".ogg"))
    rng = np.random.default_rng(0)
    quiet = (rng.standard_normal(5 * 16000) * 10 ** (-60 / 20)).astype(np.float32)
    print("setting  worst DC (dBFS)  mean DC (dBFS)  near-silence kbit/s")
    for s in c.settings():
        dcs = []
        for f in files:
            _, media = api.load_media(f)
            dec = api.decompress(api.compress(codec, media, s.name))
            assert isinstance(dec, M.Audio)
            mean = float(np.abs(dec.to_array().mean(axis=0)).max())
            dcs.append(20 * np.log10(max(mean, 1e-12)))
        silence = api.compress(codec, M.Audio.from_array(quiet[:, None], 16000), s.name)
        print(f"{s.name:8} {max(dcs):15.1f}  {np.mean(dcs):14.1f}  {8 * len(silence) / 5 / 1000:19.3f}", flush=True)


if __name__ == "__main__":
    app()
