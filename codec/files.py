"""Path-level operations shared by the CLI and `batch`: compress or decompress one input.

Outputs are atomic (temporary sibling, renamed on success), nothing is overwritten without
`force`, and '-' means stdin/stdout; stdout gets only complete files. A Gaussian sequence
decodes to a directory of frames, written as a whole into a temporary directory and renamed;
it holds a marker (`FRAMES_MARKER`) listing its frames. `force` replaces a file, or a frame
directory that nmc wrote and nobody changed since (its marker and the files it lists, nothing
else): never any other directory.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

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
    recovered: str | None = None  # decompress --recover: what was filled in for lost packets

    def line(self) -> str:
        return f"{self.input} -> {self.output}: {self.codec} {self.setting}, {self.bytes} B, {self.rate:.4g} {self.unit}, {self.seconds:.2f} s"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


TEMP_NAME = re.compile(r"^\..+\.(\d+)\.nmctmp(\.[^.]*)?$")  # .NAME.PID.nmctmp.SUFFIX
FRAMES_MARKER = ".nmc-frames"  # in each frame directory nmc writes: {"frames": [names]}
_live_temps: set[Path] = set()  # this process's temporary outputs, for remove_live_temps()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def temp_path(target: Path) -> Path:
    """Hidden sibling of `target` with its suffix (writers pick the format by suffix) and our pid."""
    return target.with_name(f".{target.name}.{os.getpid()}.nmctmp{target.suffix}")


def nmc_frame_directory(path: Path) -> bool:
    """A frame directory nmc wrote and nobody changed: a real directory holding its marker and
    only plain files that the marker lists."""
    if path.name in ("", ".", ".."):  # the working directory or a parent: never
        return False
    try:
        listed = json.loads((path / FRAMES_MARKER).read_text())["frames"]
        entries = list(path.iterdir())
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return not path.is_symlink() and isinstance(listed, list) and all(
        e.name == FRAMES_MARKER or (e.name in listed and e.is_file() and not e.is_symlink()) for e in entries)


def check_target(target: Path, force: bool) -> None:
    """Refuse before any work: a directory that nmc did not write (even with `force`), an existing
    output without `force`."""
    if target.is_dir() and not nmc_frame_directory(target):
        raise MediaError(f"{target} is a directory that nmc did not write, or that holds other files since "
                         "(--force replaces files and nmc's frame directories, never other directories)")
    if (target.exists() or target.is_symlink()) and not force:
        raise MediaError(f"{target} already exists (use --force to overwrite)")
    if not target.parent.is_dir():
        raise MediaError(f"{target.parent}: output directory does not exist")


def _publish(tmp: Path, target: Path, force: bool) -> None:
    """Move the finished `tmp` to `target`: with `force` it may replace a file or an nmc frame
    directory, without it the rename must not replace anything that appeared meanwhile (another writer)."""
    if tmp.is_dir():
        (tmp / FRAMES_MARKER).write_text(json.dumps({"frames": sorted(p.name for p in tmp.iterdir())}) + "\n")
    if force and (target.exists() or target.is_symlink()):
        check_target(target, force)
        if not (tmp.is_dir() or target.is_dir()):
            os.replace(tmp, target)  # fails (EISDIR) rather than replace a directory created since the check
            return
        aside = target.with_name(f".{target.name}.{os.getpid()}.nmctmp.old")  # a rename cannot replace a full directory
        os.rename(target, aside)
        try:
            _move_exclusive(tmp, target)
        except BaseException:
            os.rename(aside, target)
            raise
        _remove(aside)
        return
    _move_exclusive(tmp, target)


def _move_exclusive(tmp: Path, target: Path) -> None:
    """`tmp` becomes `target` unless something exists there (then MediaError, `tmp` is left)."""
    appeared = MediaError(f"{target} appeared while nmc was writing it; not replaced (use --force to overwrite)")
    if tmp.is_dir():
        try:  # fails on a file or a non-empty directory there; an empty one is replaced (nothing is lost)
            os.rename(tmp, target)
        except OSError as err:
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise appeared from None
            raise
        return
    try:
        os.link(tmp, target)  # atomic and exclusive: fails if the target exists
    except FileExistsError:
        raise appeared from None
    except OSError as err:  # no hard links (FAT, some network file systems)
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if target.exists() or target.is_symlink():
            raise appeared from None
        os.rename(tmp, target)  # best effort: exclusive only up to the check above


@contextmanager
def atomic_output(target: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path with the target's suffix; it becomes `target` only on success.

    Nothing is left behind on failure, Ctrl-C or SIGTERM (`remove_live_temps`); a process killed
    outright leaves a temporary file that `remove_stale_temps` recognises by its dead pid.
    """
    target = Path(target)
    check_target(target, force)
    tmp = temp_path(target)
    _live_temps.add(tmp)
    try:
        yield tmp
        _publish(tmp, target, force)
    finally:
        _remove(tmp)
        _live_temps.discard(tmp)


def remove_live_temps() -> None:
    """Remove this process's unfinished outputs (from a signal handler that then exits)."""
    for tmp in list(_live_temps):
        _remove(tmp)


def exit_now(signum: int, frame: object) -> None:
    """SIGTERM handler of a worker process: its unfinished outputs removed, then out at once, without a traceback (a
    forked worker would otherwise inherit the CLI's handler and print one when its pool is stopped)."""
    remove_live_temps()
    os._exit(128 + signum)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_stale_temps(dirs: Iterable[Path]) -> int:
    """Remove temporary outputs in `dirs` whose writer no longer runs (a killed worker, a crash).

    Another nmc process that is still writing keeps its files: its pid is alive.
    """
    removed = 0
    for d in set(dirs):
        if d.is_dir():
            for p in d.iterdir():
                m = TEMP_NAME.match(p.name)
                if m and not _alive(int(m[1])):
                    _remove(p)
                    removed += 1
    return removed


@contextmanager
def stdout_spool() -> Iterator[IO[bytes]]:
    """A seekable anonymous file copied to stdout only when complete: a failed run writes nothing
    there, and writers that seek (WAV headers) work even when stdout is a pipe."""
    with tempfile.TemporaryFile() as spool:
        yield spool
        spool.seek(0)
        shutil.copyfileobj(spool, sys.stdout.buffer)
        sys.stdout.buffer.flush()


@contextmanager
def _binary_output(target: str | Path, force: bool) -> Iterator[IO[bytes]]:
    if str(target) == "-":
        with stdout_spool() as fo:
            yield fo
        return
    with atomic_output(target, force) as tmp, open(tmp, "wb") as fo:
        yield fo


@contextmanager
def _binary_input(input: str | Path) -> Iterator[IO[bytes]]:
    """The .nmc input; stdin is spooled to an anonymous file so that its size is known."""
    if str(input) == "-":
        with tempfile.TemporaryFile() as spool:
            shutil.copyfileobj(sys.stdin.buffer, spool)
            spool.seek(0)
            yield spool
        return
    if not Path(input).is_file():
        raise MediaError(f"{input}: no such file")
    with open(input, "rb") as fo:
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
    packets: int | None = None,
    conceal_check: bool = False,
) -> Summary:
    start = time.perf_counter()
    if str(input) == "-" and codec == "auto":
        raise MediaError("reading stdin needs an explicit --codec (the media type cannot be guessed)")
    if output is None:
        if str(input) == "-":
            raise MediaError("compressing stdin needs -o (a path or '-')")
        output = default_output(input)
    if str(output) != "-":
        check_target(Path(output), force)  # before reading and coding the input
    kind = api.get_codec(codec).media if str(input) == "-" else M.media_kind(input)
    c = api.resolve_codec(codec, kind, target_bpp if target_bpp is not None else bitrate)
    if packets is not None:
        c = c.with_packets(packets)
    if conceal_check:
        c = c.with_conceal_check()
    _, media = api.load_media(input, kind)
    notes = {}
    if mono:
        if not isinstance(media, M.Audio):
            raise MediaError("--mono applies to audio input")
        if media.channels > 1:
            media, notes = media.downmix(), {"downmixed_from": media.channels}
    with _binary_output(output, force) as fo:
        if target_bpp is not None:
            header = api.compress_to_target(c, media, fo, target_bpp)
        else:
            header = api.compress_to_file(c, media, fo, api.choose_setting(c, quality, bitrate), progress, notes)
        summary = _summary(input, output, header, fo.tell(), start)
    return summary


def decompress_path(
    input: str | Path, output: str | Path | None = None, recover: bool = False, force: bool = False, sample_rate: int | None = None
) -> Summary:
    """Decode one .nmc file; the output is checked (name, format, overwrite) before decoding."""
    start = time.perf_counter()
    with _binary_input(input) as src:
        opened = api.open_file(src, recover)
        header, kind = opened.header, opened.header.media["kind"]
        if sample_rate is not None and kind != "audio":
            raise MediaError("--sample-rate applies to audio files")
        if output is None:
            if str(input) == "-":
                raise MediaError("decompressing stdin needs -o (a path or '-')")
            output = default_output(input, kind)
        if str(output) != "-":
            check_target(Path(output), force)
            M.check_output_suffix(kind, output)
        media = api.decode(opened)
        if sample_rate is not None:
            media = media.resampled(sample_rate)
        with stdout_spool() if str(output) == "-" else atomic_output(output, force) as target:
            api.save_media(target, media)
            summary = _summary(input, output, header, src.tell(), start)
    summary.recovered = opened.recovery_line()
    return summary


def _summary(input: str | Path, output: str | Path, header: Header, nbytes: int, start: float) -> Summary:
    rate, unit = M.real_rate(nbytes, header.media)
    return Summary(str(input), str(output), header.codec, header.setting, nbytes, rate, unit, time.perf_counter() - start)
