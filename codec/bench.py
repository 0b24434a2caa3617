"""`nmc bench`: encode/decode speed, peak memory, model size and entropy-coder overhead.

Memory comes from the first, cold encode + decode of each coder (so the model load is
included): the peak resident-set growth of this process and its child processes (psutil,
sampled every 2 ms; ffmpeg runs as a child) and tracemalloc's peak of Python/numpy
allocations (torch's own allocator is invisible to tracemalloc, hence both). Speed is then
the median of `repeat` timed runs per device and thread count, after a warm-up; on CUDA
the peak of torch's allocator during the warm-up is added.

Coder overhead needs nothing from the codecs: during the cold run every `entropy.Encoder`
call is tallied (`entropy_tally`), giving the model's cross-entropy (ideal bits of exactly
the symbols coded, under exactly the tables used) and the bytes the range coder produced.
`container_bytes` is the rest of the file: header, packet framing, stream-length prefixes.

Learned codecs run on a GPU when the codec object has a `to(device)` method (returning
the codec or None); codecs without one, and the anchors, are measured on the CPU only.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
import tracemalloc
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from . import media as M
from .device import resolve
from .errors import MediaError
from .evaluate import Coder, anchor_coder, learned_coder, load_reference
from .threads import torch_threads


@dataclass
class BenchRow:
    codec: str
    setting: str
    input: str
    device: str
    threads: int | None  # torch threads; None for anchors (their libraries decide)
    encode_s: float
    decode_s: float
    encode_speed: float
    decode_speed: float
    speed_unit: str  # "MP/s" (images), "x realtime" (audio) or "frames/s" (Gaussian sequences)
    peak_rss_mb: float
    peak_python_mb: float
    peak_gpu_mb: float | None
    parameters: int | None  # values stored in the weights file
    weights_mb: float | None
    file_bytes: int
    container_bytes: int | None  # file bytes that are not entropy-coded payload
    coded_bytes: int | None
    ideal_bytes: float | None  # the model's cross-entropy of the coded symbols
    coder_overhead_pct: float | None  # coded / ideal - 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def entropy_tally() -> Iterator[dict[str, float]]:
    """Count ideal bits and produced bytes of every `entropy.Encoder` while active."""
    from . import entropy as E

    tally = {"ideal_bits": 0.0, "coded_bytes": 0}
    encode, to_bytes = E.Encoder.encode, E.Encoder.to_bytes

    def counting_encode(self: Any, symbols: Any, freqs: Any) -> None:
        tally["ideal_bits"] += E.cross_entropy_bits(symbols, freqs)
        encode(self, symbols, freqs)

    def counting_to_bytes(self: Any) -> bytes:
        data = to_bytes(self)
        tally["coded_bytes"] += len(data)
        return data

    E.Encoder.encode, E.Encoder.to_bytes = counting_encode, counting_to_bytes  # type: ignore[method-assign]
    try:
        yield tally
    finally:
        E.Encoder.encode, E.Encoder.to_bytes = encode, to_bytes  # type: ignore[method-assign]


class PeakRSS:
    """Peak resident-set growth (bytes) of this process and its children in the `with` block."""

    def __init__(self, interval: float = 0.002) -> None:
        import psutil

        self._proc, self._interval = psutil.Process(), interval
        self._stop = threading.Event()
        self.base = self.peak = 0

    def _rss(self) -> int:
        import psutil

        total = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return int(total)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self._interval)

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = self._rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def growth(self) -> int:
        return self.peak - self.base


@dataclass
class ColdRun:
    """What the first encode + decode of a coder shows: memory, sizes, coder overhead."""

    peak_rss: int
    peak_python: int
    data: bytes
    coded_bytes: int
    ideal_bits: float


def cold_run(coder: Coder, setting: str, media: Any) -> ColdRun:
    tracemalloc.start()
    try:
        with PeakRSS() as rss, entropy_tally() as tally:
            data = coder.encode(media, setting)
            decoded(coder, data)
        peak_python = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return ColdRun(rss.growth, peak_python, data, int(tally["coded_bytes"]), tally["ideal_bits"])


def decoded(coder: Coder, data: bytes) -> Any:
    """Decode `data` completely: Gaussian frames are decoded lazily, as they are iterated."""
    media = coder.decode(data)
    if isinstance(media, M.Gaussians):
        for _ in media.frames():
            pass
    return media


def _model_size(name: str) -> tuple[int | None, float | None]:
    """Number of values and size in MB of a learned codec's shipped weights file."""
    from .registry import available

    path = getattr(available().get(name), "weights_path", None)
    if path is None or not Path(path).exists():
        return None, None
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        count = sum(int(_prod(f.get_slice(k).get_shape())) for k in f.keys())  # noqa: SIM118 (safe_open is not a dict)
    return count, Path(path).stat().st_size / 1e6


def _prod(shape: list[int]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def _on_device(name: str, device: str) -> bool:
    """Move a learned codec to `device`; False if it cannot be moved."""
    from .registry import get_codec

    codec = get_codec(name)
    if hasattr(codec, "to"):
        codec.to(device)
        return True
    return device == "cpu"


def bench_one(coder: Coder, setting: str, path: Path, media: Any, cold: ColdRun, device: str, threads: int | None, repeat: int) -> BenchRow:
    """Speed of one coder at one setting on one input, with the cold run's other numbers."""
    import torch

    def timed(fn: Callable[[], Any]) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t

    with torch_threads(threads or torch.get_num_threads()):
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        decoded(coder, coder.encode(media, setting))  # warm-up on this device
        gpu = torch.cuda.max_memory_allocated() / 1e6 if device.startswith("cuda") else None
        enc = statistics.median(timed(lambda: coder.encode(media, setting)) for _ in range(repeat))
        dec = statistics.median(timed(lambda: decoded(coder, cold.data)) for _ in range(repeat))
    if isinstance(media, M.Image):
        amount, unit = media.width * media.height / 1e6, "MP/s"
    elif isinstance(media, M.Gaussians):
        amount, unit = len(media.names), "frames/s"
    else:
        amount, unit = media.frames / media.sample_rate, "x realtime"
    coded = cold.coded_bytes or None
    ideal = cold.ideal_bits / 8 if coded else None
    params, weights_mb = (None, None) if coder.is_anchor else _model_size(coder.name)
    return BenchRow(
        coder.name, setting, str(path), device, threads, round(enc, 5), round(dec, 5),
        round(amount / enc, 3), round(amount / dec, 3), unit,
        round(cold.peak_rss / 1e6, 2), round(cold.peak_python / 1e6, 2), None if gpu is None else round(gpu, 2),
        params, None if weights_mb is None else round(weights_mb, 3),
        len(cold.data), None if coded is None else len(cold.data) - coded, coded,
        None if ideal is None else round(ideal, 1),
        None if coded is None or not ideal else round(100 * (coded / ideal - 1), 4),
    )  # fmt: skip


def synthetic_inputs(folder: Path) -> list[Path]:
    """A photo-like image (384x256) and a speech-like clip (3 s at 16 kHz) written to `folder`:
    the default inputs where the repository's samples/ are not at hand (an installed wheel)."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:256, 0:384] / 384.0
    base = np.stack([0.5 + 0.4 * np.sin(6 * x + 2 * y), 0.4 + 0.3 * np.cos(9 * y), 0.3 + 0.3 * (x > 0.4 + 0.2 * y)], axis=-1)
    pixels = np.clip(255 * base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)
    M.write_image(folder / "synthetic_photo.png", M.Image(pixels))
    t = np.arange(3 * 16000) / 16000
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.5 * t)  # a gliding voice with harmonics, syllables at 4 Hz
    voice = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / 16000) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2
    sf.write(folder / "synthetic_speech.wav", (0.1 * voice + 0.002 * rng.normal(size=t.size)).astype(np.float32), 16000)
    return [folder / "synthetic_photo.png", folder / "synthetic_speech.wav"]


def run(
    inputs: Sequence[str | Path],
    codecs: list[str],
    anchors: list[str],
    settings: dict[str, str] | None = None,
    threads: list[int] | None = None,
    devices: list[str] | None = None,
    repeat: int = 3,
    progress: Callable[[str], None] | None = None,
) -> list[BenchRow]:
    """Bench every coder on every input of its media kind.

    Args:
        inputs (list): media files (the first of each kind is used per coder).
        settings (dict): coder name -> setting; default the codec's default setting (anchors: the middle one).
        threads (list): CPU thread counts; default `[1, os.cpu_count()]`.
        devices (list): `--device` names (auto, cpu, cuda, cuda:N); default CPU plus CUDA when available.
    """
    import os

    import torch

    threads = threads or sorted({1, os.cpu_count() or 1})
    devices = list(dict.fromkeys(resolve(d) for d in devices)) if devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    coders = [learned_coder(c) for c in codecs] + [anchor_coder(a) for a in anchors]
    if not coders:
        raise MediaError("nothing to bench: give --codec and/or --anchors")
    loaded: dict[str, tuple[Path, M.Image | M.Audio | M.Gaussians]] = {}
    for p in map(Path, inputs):
        kind = M.media_kind(p)
        if kind not in loaded:
            loaded[kind] = (p, load_reference(p, kind))
    rows = []
    for coder in coders:
        if coder.media not in loaded:
            raise MediaError(f"{coder.name} codes {coder.media}: give an {coder.media} input")
        path, media = loaded[coder.media]
        setting = (settings or {}).get(coder.name) or coder.default or coder.settings[len(coder.settings) // 2]
        if progress:
            progress(f"{coder.name} {setting} cold run")
        cold = cold_run(coder, setting, media)
        for device in devices if not coder.is_anchor else ["cpu"]:
            if not coder.is_anchor and not _on_device(coder.name, device):
                continue
            # Anchors thread (or not) inside their own libraries: one row, threads None.
            for n in [None] if coder.is_anchor else threads if device == "cpu" else [threads[-1]]:
                if progress:
                    progress(f"{coder.name} {setting} {device} {n or 'library'} thread(s)")
                rows.append(bench_one(coder, setting, path, media, cold, device, n, repeat))
        if not coder.is_anchor and len(devices) > 1:
            _on_device(coder.name, "cpu")
    return rows
