"""Path-level operations shared by the CLI and `batch`: compress or decompress one input.

Outputs are atomic (temporary sibling, renamed on success), nothing is overwritten without
`force`, and '-' means stdin/stdout.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from . import api
from . import media as M
from .container import Header
from .errors import MediaError

DECODED_SUFFIX = {"image": ".png", "audio": ".wav", "gaussians": ""}


@dataclass
class Summary:
    """One line of output per file: what was written and at what real rate."""

    input: str
    output: str
    codec: str
    setting: str
    bytes: int
    rate: float  # real rate of the .nmc file, header included
    unit: str  # "bpp" or "kbps" (per frame for Gaussians: "MB/frame")
    seconds: float

    def line(self) -> str:
        return f"{self.input} -> {self.output}: {self.codec} {self.setting}, {self.bytes} B, {self.rate:.4g} {self.unit}, {self.seconds:.2f} s"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def real_rate(nbytes: int, media: dict[str, Any]) -> tuple[float, str]:
    """Rate from the file size and the header's media metadata."""
    if media["kind"] == "image":
        return 8 * nbytes / (media["width"] * media["height"]), "bpp"
    if media["kind"] == "audio":
        seconds = media["frames"] / media["sample_rate"]
        return (8 * nbytes / seconds / 1000 if seconds else 0.0), "kbps"
    return nbytes / 1e6 / max(1, media["frame_count"]), "MB/frame"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_output(target: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path with the target's suffix; it replaces `target` only on success."""
    target = Path(target)
    if target.exists() and not force:
        raise MediaError(f"{target} already exists (use --force to overwrite)")
    if not target.parent.is_dir():
        raise MediaError(f"{target.parent}: output directory does not exist")
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp{target.suffix}")
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        _remove(tmp)


@contextmanager
def _binary_output(target: str | Path, force: bool) -> Iterator[IO[bytes]]:
    if str(target) == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with atomic_output(target, force) as tmp, open(tmp, "wb") as fo:
        yield fo


def default_output(input: str | Path, decoded_kind: str | None = None) -> Path:
    """photo.png -> photo.png.nmc; photo.jpg.nmc -> photo.png; talk.flac.nmc -> talk.wav."""
    p = Path(input)
    if decoded_kind is None:
        return p.with_name(p.name + ".nmc")
    stem = p.name[: -len(".nmc")] if p.name.endswith(".nmc") else p.name
    base = Path(stem).stem if Path(stem).suffix.lower() in M.IMAGE_SUFFIXES | M.AUDIO_SUFFIXES | {".ply"} else stem
    return p.with_name(base + DECODED_SUFFIX[decoded_kind])


def compress_path(
    input: str | Path,
    output: str | Path | None = None,
    codec: str = "auto",
    quality: str | None = None,
    bitrate: float | None = None,
    target_bpp: float | None = None,
    force: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    mono: bool = False,
) -> Summary:
    start = time.perf_counter()
    if str(input) == "-" and codec == "auto":
        raise MediaError("reading stdin needs an explicit --codec (the media type cannot be guessed)")
    kind = api.get_codec(codec).media if str(input) == "-" else M.media_kind(input)
    c = api.resolve_codec(codec, kind)
    _, media = api.load_media(input, kind)
    notes = {}
    if mono:
        if not isinstance(media, M.Audio):
            raise MediaError("--mono applies to audio input")
        if media.channels > 1:
            media, notes = media.downmix(), {"downmixed_from": media.channels}
    if output is None:
        if str(input) == "-":
            raise MediaError("compressing stdin needs -o (a path or '-')")
        output = default_output(input)
    with _binary_output(output, force) as fo:
        if target_bpp is not None:
            header = api.compress_to_target(c, media, fo, target_bpp)
        else:
            header = api.compress_to_file(c, media, fo, api.choose_setting(c, quality, bitrate), progress, notes)
        nbytes = fo.tell() if fo.seekable() else -1
    return _summary(input, output, header, nbytes, start)


def decompress_path(
    input: str | Path, output: str | Path | None = None, recover: bool = False, force: bool = False, sample_rate: int | None = None
) -> Summary:
    start = time.perf_counter()
    if str(input) == "-":
        src: IO[bytes] = sys.stdin.buffer
    else:
        if not Path(input).is_file():
            raise MediaError(f"{input}: no such file")
        src = open(input, "rb")
    with src:
        decoded = api.decompress_from_file(src, recover)
        kind = decoded.header.media["kind"]
        if sample_rate is not None:
            if not isinstance(decoded.media, M.Audio):
                raise MediaError("--sample-rate applies to audio files")
            decoded.media = decoded.media.resampled(sample_rate)
        if output is None:
            if str(input) == "-":
                raise MediaError("decompressing stdin needs -o (a path or '-')")
            output = default_output(input, kind)
        if str(output) == "-":
            api.save_media(sys.stdout.buffer, decoded.media)
        else:
            with atomic_output(output, force) as tmp:
                api.save_media(tmp, decoded.media)
        nbytes = src.tell() if src.seekable() else -1
    return _summary(input, output, decoded.header, nbytes, start)


def _summary(input: str | Path, output: str | Path, header: Header, nbytes: int, start: float) -> Summary:
    rate, unit = real_rate(nbytes, header.media) if nbytes >= 0 else (float("nan"), "")
    return Summary(str(input), str(output), header.codec, header.setting, nbytes, rate, unit, time.perf_counter() - start)
