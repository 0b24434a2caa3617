"""Decoded media for `report.html`: what a person looks at and listens to, written once per point.

Inside a report directory, one folder per source file (its stem and content hash), so that
`nmc eval --html-only` finds everything again from `report.json` alone:

    media/<stem>-<sha10>/info.json                      image size and detail-crop box, or audio length
    media/<stem>-<sha10>/original.crop.webp, .thumb.jpg image: detail crop (lossless), thumbnail
    media/<stem>-<sha10>/original.ogg, .spec.webp       audio: player clip, spectrogram
    media/<stem>-<sha10>/original.view.webp             Gaussian sequence: first frame, first quality camera (lossless)
    media/<stem>-<sha10>/<coder>.<setting>.<id8>.*      the same for each rate point
    full/<stem>-<sha10>/<original | point>.png | .flac  full-size lossless decoded media (linked)

`<id8>` hashes the coder's identity (weights hash or library version): new weights give new
files, as they give new cache entries. Crops and full images are lossless. Players get Ogg Opus
at `OPUS_KBPS` per channel, small and playable in every browser; the metrics are computed on
the decoded samples before that step. `full/` may be deleted (the committed dev reports do):
the page links only what exists.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import numpy.typing as npt

from . import media as M

CROP = 128  # side of the detail crop, px (the page zooms it)
THUMB_WIDTH = 320  # width of the original's thumbnail, px
OPUS_KBPS = 24  # per channel; near-transparent for the speech rates compared here
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # the rates Ogg Opus takes
SPECTROGRAM = (320, 100)  # width, height in px
SPECTROGRAM_DB = (-100.0, -10.0)  # dBFS range of the colour map
VIEW_WIDTH = 320  # px, the rendered view of a Gaussian sequence's first frame
PAGE_FILES = {"image": ("crop.webp",), "audio": ("ogg", "spec.webp"), "gaussians": ("view.webp",)}  # per point: what the page shows


def safe(name: str) -> str:
    """A file-name-safe version of a coder, setting or file stem."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip(".") or "_"


def folder_of(path: str, sha256: str) -> str:
    """The folder name of one source file under media/ and full/."""
    return f"{safe(Path(path).stem)}-{sha256[:10]}"


def point_name(coder: str, setting: str, identity: str) -> str:
    return f"{safe(coder)}.{safe(setting)}.{hashlib.sha256(identity.encode()).hexdigest()[:8]}"


def crop_box(rgb: npt.NDArray[np.uint8], side: int = CROP) -> tuple[int, int, int, int]:
    """`(x, y, w, h)` of the most detailed square of the image (largest summed |Laplacian|).

    Coding artefacts show most on edges and texture; the box depends on the original only,
    so every point of a file shows the same region and added codecs keep the old crops valid.
    """
    h, w = min(side, rgb.shape[0]), min(side, rgb.shape[1])
    g = rgb.astype(np.float32).mean(axis=2)
    lap = np.zeros_like(g)
    lap[1:-1, 1:-1] = np.abs(4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:])
    s = np.pad(lap, ((1, 0), (1, 0))).cumsum(0).cumsum(1)  # summed-area table
    window = s[h:, w:] - s[:-h, w:] - s[h:, :-w] + s[:-h, :-w]
    y, x = np.unravel_index(int(np.argmax(window)), window.shape)
    return int(x), int(y), int(w), int(h)


def select_points(records: list[dict[str, Any]], rate_key: str, targets: list[float] | None) -> set[str]:
    """The settings whose media are kept: all, or per target the one closest in log rate."""
    if targets is None:
        return {r["setting"] for r in records}
    rated = [(r["setting"], r[rate_key]) for r in records if (r.get(rate_key) or 0) > 0]
    if not rated:
        return set()
    return {min(rated, key=lambda sr: abs(math.log(sr[1] / t)))[0] for t in targets}


@dataclass
class FileMedia:
    """The media folder of one source file; the original's media are written on creation."""

    out: Path
    folder: str
    kind: str
    info: dict[str, Any]

    @classmethod
    def open(cls, out: Path, path: str, sha256: str, kind: str, reference: Callable[[], Any]) -> FileMedia:
        """Find or create the folder; `reference()` (the loaded original) is called only when needed."""
        folder = folder_of(path, sha256)
        info_path = out / "media" / folder / "info.json"
        fm = cls(out, folder, kind, json.loads(info_path.read_text()) if info_path.exists() else {})
        if fm.info and fm.has("original") and (kind != "image" or fm.path("original", "thumb.jpg").exists()):
            return fm
        ref = reference()
        if kind == "image":
            fm.info = {"width": ref.width, "height": ref.height, "crop": crop_box(M.to_rgb8(ref)[0])}
        elif kind == "gaussians":
            from .splatting import quality_cameras

            first = next(ref.frames())
            cam = quality_cameras(ref.source, first, 1, VIEW_WIDTH)[0]
            fm.info = {"frames": len(ref.names), "gaussians": int(first.shape[0]), "sh_degree": ref.layout.sh_degree,
                       "camera": {"rotation": cam.rotation.tolist(), "translation": cam.translation.tolist(), "fx": cam.fx, "fy": cam.fy,
                                  "width": cam.width, "height": cam.height}}
        else:
            fm.info = {"seconds": ref.frames / ref.sample_rate, "sample_rate": ref.sample_rate, "channels": ref.channels}
        fm.write("original", ref)
        if kind == "image":
            _write_thumbnail(M.to_rgb8(ref)[0], fm.path("original", "thumb.jpg"))
        _atomic_write(info_path, json.dumps(fm.info).encode())
        return fm

    def path(self, name: str, suffix: str) -> Path:
        return self.out / "media" / self.folder / f"{name}.{suffix}"

    def full_path(self, name: str) -> Path:
        return self.out / "full" / self.folder / f"{name}.{'png' if self.kind == 'image' else 'flac'}"

    def has(self, name: str) -> bool:
        return all(self.path(name, s).exists() for s in PAGE_FILES[self.kind])

    def write(self, name: str, decoded: Any) -> None:
        """The page's files for one decoded media, and its full-size lossless copy."""
        self.path(name, "x").parent.mkdir(parents=True, exist_ok=True)
        if self.kind != "gaussians":
            self.full_path(name).parent.mkdir(parents=True, exist_ok=True)
        if self.kind == "gaussians":  # no full copy: that is the .ply sequence itself
            from .splatting import Camera, render

            c = self.info["camera"]
            cam = Camera(np.array(c["rotation"]), np.array(c["translation"]), c["fx"], c["fy"], c["width"], c["height"])
            view = render(next(decoded.frames()), decoded.layout, cam).clamp(0, 1).numpy()
            _write_pil(np.round(view * 255).astype(np.uint8), self.path(name, "view.webp"), "WEBP", lossless=True, quality=50, method=4)
        elif self.kind == "image":
            rgb = M.to_rgb8(decoded)[0]
            x, y, w, h = self.info["crop"] if "crop" in self.info else crop_box(rgb)
            _write_pil(np.ascontiguousarray(rgb[y : y + h, x : x + w]), self.path(name, "crop.webp"), "WEBP", lossless=True, quality=50, method=4)
            _write_pil(rgb, self.full_path(name), "PNG", compress_level=1)  # 7x faster than the default level, 1.2x larger
        else:
            audio = decoded.to_array()
            _write_ogg(audio, decoded.sample_rate, self.path(name, "ogg"))
            _write_spectrogram(audio, decoded.sample_rate, self.info.get("sample_rate", decoded.sample_rate), self.path(name, "spec.webp"))
            _write_sound(audio, decoded.sample_rate, self.full_path(name), "FLAC")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)


def _write_pil(pixels: npt.NDArray[np.uint8], path: Path, fmt: str, **options: Any) -> None:
    import io

    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, fmt, **options)
    _atomic_write(path, buf.getvalue())


def _write_thumbnail(rgb: npt.NDArray[np.uint8], path: Path) -> None:
    from PIL import Image as PILImage

    im = PILImage.fromarray(rgb)
    if im.width > THUMB_WIDTH:
        im = im.resize((THUMB_WIDTH, max(1, round(im.height * THUMB_WIDTH / im.width))), PILImage.Resampling.LANCZOS)
    _write_pil(np.asarray(im), path, "JPEG", quality=85)


def _write_sound(samples: npt.NDArray[np.float32], rate: int, path: Path, fmt: str, **options: Any) -> None:
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(samples, -1, 1), rate, format=fmt, **options)
    _atomic_write(path, buf.getvalue())


def _write_ogg(samples: npt.NDArray[np.float32], rate: int, path: Path) -> None:
    """Ogg Opus at `OPUS_KBPS` per channel; rates Opus does not take are resampled to 48 kHz."""
    if rate not in OPUS_RATES:
        samples = M.Audio.from_array(samples, rate).resampled(48000).to_array()
        rate = 48000
    # libsndfile maps compression level 0..1 linearly onto 256..6 kbit/s per channel
    level = min(1.0, max(0.0, (256 - OPUS_KBPS) / 250))
    _write_sound(samples, rate, path, "OGG", subtype="OPUS", compression_level=level)


def _write_spectrogram(samples: npt.NDArray[np.float32], rate: int, ref_rate: int, path: Path) -> None:
    """Mono STFT magnitude in dBFS, 0 Hz at the bottom up to the original's Nyquist frequency.

    Every point of a file is resampled to the original's rate first, so all its images share
    the same axes and colour scale.
    """
    import matplotlib

    mono = samples.mean(axis=1)
    if rate != ref_rate:
        mono = M.Audio.from_array(mono, rate).resampled(ref_rate).to_array()[:, 0]
    n_fft = 1 << max(6, round(math.log2(0.032 * ref_rate)))  # about 32 ms
    hop = n_fft // 4
    mono = np.pad(mono, (0, max(0, n_fft - len(mono))))
    frames = np.lib.stride_tricks.sliding_window_view(mono, n_fft)[::hop]
    window = np.hanning(n_fft).astype(np.float32)
    magnitude = np.abs(np.fft.rfft(frames * window, axis=1)) * 2 / window.sum()
    lo, hi = SPECTROGRAM_DB
    level = (20 * np.log10(magnitude.T[::-1] + 1e-12) - lo) / (hi - lo)
    rgb = (matplotlib.colormaps["magma"](np.clip(level, 0, 1))[..., :3] * 255).astype(np.uint8)
    from PIL import Image as PILImage

    im = PILImage.fromarray(rgb).resize(SPECTROGRAM, PILImage.Resampling.BILINEAR)
    _write_pil(np.asarray(im), path, "WEBP", quality=60)  # a picture of the sound: lossy is fine
