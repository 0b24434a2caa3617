"""`nmc eval`: every file x coder x rate point -> rate and quality, then reports and BD-rate.

Learned codecs and classical anchors are run through the same `Coder` view. Each finished
point is appended to `DIR/cache.jsonl` at once, keyed by file content, coder identity
(weights hash or library version) and setting, so an interrupted run resumes where it
stopped.

A Gaussian sequence (a directory of `.ply` frames) is one "file": its rate is MB per frame and
bits per Gaussian, its quality that of renders of every frame from `SCENE_VIEWS` cameras (the
sequence's `cameras.json`, else a ring around it) against renders of the original. The report
directory then gets:

- `report.json`: `{"meta": {...}, "records": [...], "means": [...], "bd_rate": [...]}`;
  a record is `{file, codec, setting, bytes, bpp | kbps | mb_per_frame (+ bits_per_gaussian),
  <metric>: value, encode_s, decode_s}`,
  a mean has the same keys (averaged over files, NaN skipped) plus `files`, and a
  BD-rate entry is `{codec, anchor, metric, percent}`. Non-finite numbers are `null`.
- `report.csv` (the records), `report.md` (tables and plots), `rd_<metric>.png` and `.svg`,
  `report.html` with the decoded media of each point (`report_media`, `report_html`).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import itertools
import json
import math
import os
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np
import numpy.typing as npt

from . import media as M
from .anchors import get_anchor
from .container import format_id, read_header
from .errors import MediaError
from .reference import ImageReference
from .report_media import FileMedia, point_name, select_points
from .threads import torch_threads
from .metrics import BD_METRICS, DEFAULT_METRICS, METRICS, bd_rate, ms_ssim_db

if TYPE_CHECKING:
    from .splatting import Camera

RATE_KEY = {"image": "bpp", "audio": "kbps", "gaussians": "mb_per_frame"}
MORE_RATES = {"gaussians": ["bits_per_gaussian"]}  # reported beside the rate, in records and means
KINDS = tuple(RATE_KEY)
SCENE_VIEWS, SCENE_WIDTH = 4, 160  # quality views of a Gaussian sequence: cameras per frame, pixels wide
Progress = Callable[[int, int, str], None]


@dataclass
class Coder:
    """What the evaluator runs: a learned codec or an anchor, through the same four calls."""

    name: str
    media: str
    settings: list[str]
    identity: str  # changes whenever the coder's output may change
    encode: Callable[[Any, str], bytes]
    decode: Callable[[bytes], Any]
    is_anchor: bool
    default: str = ""  # the setting used when none is named (bench); "" = the middle one


def learned_coder(name: str) -> Coder:
    """A registered codec; its rate is the whole .nmc file (header included)."""
    from . import api
    from .registry import get_codec

    codec = get_codec(name)
    identity = f"{codec.model_id} {codec.weights_hash()} {codec.code_hash()} {format_id(codec.header_dict)}"  # the header's size counts in the rate
    return Coder(
        name, codec.media, [s.name for s in codec.settings()], identity,
        lambda media, setting: api.compress(name, media, setting), api.decompress, False, codec.default().name,
    )  # fmt: skip


def anchor_coder(name: str) -> Coder:
    anchor = get_anchor(name)
    return Coder(name, anchor.media, anchor.settings(), anchor.version(), anchor.encode, anchor.decode, True)


def find_files(datasets: Iterable[str | Path]) -> list[Path]:
    """Image and audio files and Gaussian sequences (directories of `.ply` frames): the paths
    given, and those under the directories given (sorted)."""
    files: list[Path] = []
    for d in map(Path, datasets):
        if d.is_dir() and is_sequence(d):
            files.append(d)
        elif d.is_dir():
            found = sorted(p for p in d.rglob("*") if (p.suffix.lower() in M.IMAGE_SUFFIXES | M.AUDIO_SUFFIXES and p.is_file()) or (p.is_dir() and is_sequence(p)))
            if not found:
                raise MediaError(f"{d}: no image or audio files or .ply sequences")
            files += found
        elif d.is_file():
            M.media_kind(d)  # raises on unsupported types
            files.append(d)
        else:
            raise MediaError(f"{d}: no such file or directory")
    return files


def is_sequence(d: Path) -> bool:
    """A directory that holds `.ply` frames is one Gaussian sequence."""
    return any(M.is_frame_name(f.name) and f.is_file() for f in d.iterdir())


def content_sha(path: Path) -> str:
    """sha256 of a file, or of a sequence's frame names and bytes (and its cameras.json, which sets the views)."""
    if not path.is_dir():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    h = hashlib.sha256()
    for f in sorted(f for f in path.iterdir() if f.is_file() and (M.is_frame_name(f.name) or f.name == "cameras.json")):
        h.update(f"{f.name}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as fo:
            while block := fo.read(1 << 20):
                h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- running


@dataclass
class SceneViews:
    """The quality cameras of a Gaussian sequence and the original's renders (made once per sequence)."""

    cameras: list[Camera]
    views: list[npt.NDArray[np.float32]]

    @classmethod
    def of(cls, seq: M.Gaussians) -> SceneViews:
        from . import splatting  # torch: only when a sequence is evaluated

        cameras = splatting.quality_cameras(seq.source, next(seq.frames()), SCENE_VIEWS, SCENE_WIDTH)
        return cls(cameras, splatting.render_views(seq, cameras))


class PointCache:
    """Finished points, one JSON line each; a torn last line (a killed run) is ignored. A line keeps the
    revision of each metric it holds (`Metric.revision`, absent = 1), so a point scored by an older
    definition of a metric asked for is computed again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.points: dict[str, dict[str, Any]] = {}
        self.revisions: dict[str, dict[str, int]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    self.points[entry["key"]] = entry["record"]
                    self.revisions[entry["key"]] = dict(entry.get("revisions", {}))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue

    @staticmethod
    def key(source_sha: str, coder: Coder, setting: str) -> str:
        return f"{source_sha}|{coder.name}|{coder.identity}|{setting}"

    def get(self, key: str, metrics: list[str]) -> dict[str, Any] | None:
        record, revisions = self.points.get(key), self.revisions.get(key, {})
        if record is None or any(m not in record or revisions.get(m, 1) != METRICS[m].revision for m in metrics):
            return None
        return record

    def put(self, key: str, record: dict[str, Any]) -> None:
        revisions = {m: METRICS[m].revision for m in record if m in METRICS and METRICS[m].revision != 1}
        self.points[key], self.revisions[key] = record, revisions
        entry = {"key": key, "record": _finite(record)} | ({"revisions": revisions} if revisions else {})
        with open(self.path, "a") as fo:
            fo.write(json.dumps(entry) + "\n")
            fo.flush()


def run(
    datasets: list[str | Path],
    codecs: list[str],
    anchors: list[str],
    report_dir: str | Path,
    metrics: dict[str, list[str]] | None = None,
    progress: Progress | None = None,
    threads: int = 1,
    media_at: list[float] | None = None,
    device: str = "cpu",
    workers: int = 1,
    loss: list[float] | None = None,
    loss_settings: list[str] | None = None,
    loss_draws: int = 4,
    loss_seed: int = 0,
    conceal_check: bool = False,
) -> dict[str, Any]:
    """Evaluate, write every report file into `report_dir`, and return the report.

    Args:
        datasets (list): files and/or directories of images and audio.
        codecs (list): registered codec names; anchors (list): anchor names.
        metrics (dict): metric names per media kind; default `DEFAULT_METRICS`.
        progress (callable): `progress(done, total, label)` after each point.
        threads (int): torch threads for codecs and metrics. One by default: the work is
            many small tensor ops, and torch's thread pool slows down many times over
            when other processes share the cores.
        media_at (list): keep decoded media (for report.html) only of each codec's setting
            closest to these rates, in bpp or kbit/s; None keeps every point's.
        loss (list): packet loss rates to simulate (`codec/loss.py`) for the codecs that can recover,
            at `loss_settings` (default: each codec's default setting), `loss_draws` seeded draws
            per file, channel and rate, seeds derived from `loss_seed`; `conceal_check`: the files that lose packets
            are compressed as `nmc compress --conceal-check` makes them.
        device (str): where the codecs' networks and the ST-LPIPS and MS-SSIM networks run.
        workers (int): files evaluated in parallel processes (each with `threads` threads), on the CPU
            those of `loss` too. This process's allocator keeps freed memory (`keep_freed_memory`).
    """
    from . import api
    from .metrics import use_device

    api.use_device(device)
    use_device(device)
    coders = [learned_coder(c) for c in codecs] + [anchor_coder(a) for a in anchors]
    if not coders:
        raise MediaError("nothing to evaluate: give --codec and/or --anchors")
    metrics = {**DEFAULT_METRICS, **(metrics or {})}
    for kind, names in metrics.items():
        wrong = [n for n in names if n not in METRICS or METRICS[n].media != kind]
        if wrong:
            raise MediaError(f"unknown {kind} metric(s) {wrong} (choose from {[n for n, m in METRICS.items() if m.media == kind]})")
    files = find_files(datasets)
    jobs = [(f, c) for f in files for c in coders if c.media == M.media_kind(f)]
    if not jobs:
        raise MediaError("no file matches the media kind of the chosen codecs/anchors")
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = PointCache(out / "cache.jsonl")
    keep_freed_memory()
    if loss and not any(get_codec_class(c.name).can_recover for c in coders if not c.is_anchor):
        raise MediaError("--loss: none of the chosen codecs can recover lost packets")
    with torch_threads(threads):
        records, sources = _run_points(files, jobs, cache, metrics, progress, out, media_at, workers, threads, device)
        report = build_report(records, coders, metrics, [str(d) for d in datasets], sources)
        if loss:
            report["loss"] = _loss_points(files, coders, cache, metrics, report["means"], loss, loss_settings or [], loss_draws, loss_seed, progress, device,
                                          workers, conceal_check)  # fmt: skip
    write_report(report, out)
    return report


@dataclass(frozen=True)
class FileTask:
    """One source file's points: what a worker needs to compute them (picklable: coders by name)."""

    path: Path
    kind: str
    source_sha: str
    coders: tuple[tuple[str, bool], ...]  # (name, is_anchor)
    cached: dict[str, dict[str, Any]]  # cache key -> finished record, this file's only
    metrics: tuple[str, ...]
    out: Path
    media_at: tuple[float, ...] | None
    device: str


Report = Callable[[str, dict[str, Any], bool, str], None]  # report(cache key, record, new, label) after each point


def _run_points(
    files: list[Path], jobs: list[tuple[Path, Coder]], cache: PointCache, metrics: dict[str, list[str]], progress: Progress | None, out: Path,
    media_at: list[float] | None, workers: int, threads: int, device: str,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every point's record (in file, coder, setting order), from the cache or computed; and each
    file's content hash. Files run in `workers` processes, each point cached as soon as it is done."""
    total, done = sum(len(c.settings) for _, c in jobs), 0
    sources: dict[str, str] = {}
    tasks: list[FileTask] = []
    todo: list[int] = []  # the tasks with points to compute
    for path in files:
        kind = M.media_kind(path)
        sources[str(path)] = sha = content_sha(path)
        coders = [c for f, c in jobs if f == path]
        keys = [PointCache.key(sha, c, s) for c in coders for s in c.settings]
        cached = {k: r for k in keys if (r := cache.get(k, metrics[kind])) is not None}
        if len(cached) < len(keys):
            todo.append(len(tasks))
        media = tuple(media_at) if media_at is not None else None
        tasks.append(FileTask(path, kind, sha, tuple((c.name, c.is_anchor) for c in coders), cached, tuple(metrics[kind]), out, media, device))

    def report(key: str, record: dict[str, Any], new: bool, label: str) -> None:
        nonlocal done
        if new:
            cache.put(key, record)
        done += 1
        if progress:
            progress(done, total, label)

    results: dict[int, list[dict[str, Any]]] = {}
    if workers > 1 and len(todo) > 1:
        results = _run_parallel([tasks[i] for i in todo], todo, report, min(workers, len(todo)), threads)
    for i, task in enumerate(tasks):
        if i not in results:
            results[i] = evaluate_file(task, report, {c.name: c for _, c in jobs})
    return [r for i in range(len(tasks)) for r in results[i]], sources


def get_codec_class(name: str) -> Any:
    from .registry import available

    return available()[name]


def _loss_points(files: list[Path], coders: list[Coder], cache: PointCache, metrics: dict[str, list[str]], means: list[dict[str, Any]],
                 rates: list[float], settings: list[str], draws: int, seed: int, progress: Progress | None, device: str,
                 workers: int = 1, conceal_check: bool = False) -> dict[str, Any]:  # fmt: skip
    """Every codec that can recover, on every file of its kind, at the chosen settings (compressed with its
    `with_conceal_check` under `conceal_check`): each channel x rate x draw loses packets (`loss.lost_packets`),
    and the damaged file is decoded with each of the codec's concealments. On the CPU with `workers` > 1 the files run in forked processes, in order; the cache is
    written here. Returns the loss section of the report (records, means, the loss-free means)."""
    import multiprocessing
    import signal

    from . import loss as L
    from .registry import get_codec

    chosen: dict[str, list[str]] = {}
    units: list[tuple[Coder, Path, list[str]]] = []  # a file and the settings it is coded at
    for coder in (c for c in coders if not c.is_anchor and get_codec_class(c.name).can_recover):
        chosen[coder.name] = [s for s in settings if s in coder.settings] or [coder.default or get_codec(coder.name).default().name]
        units += [(coder, path, chosen[coder.name]) for path in files if M.media_kind(path) == coder.media]
    _loss_job.update(units=units, cache=cache, metrics=metrics, rates=rates, draws=draws, seed=seed, device=device, conceal_check=conceal_check)
    sizes = [len(u[2]) * len(L.CHANNELS) * len(rates) * draws for u in units]  # damaged files per unit, for the progress
    records: list[dict[str, Any]] = []

    def keep(i: int, points: list[tuple[str, dict[str, Any], bool]]) -> None:
        """Unit i's records; its new points go to the cache here, in one process."""
        for key, record, new in points:
            if new:
                cache.put(key, record)
            records.append(record)
        if progress:
            progress(sum(sizes[: i + 1]), sum(sizes), f"loss {units[i][1].name}")

    try:
        if workers > 1 and device == "cpu" and len(units) > 1:
            # fork: the loaded models are shared; Ctrl-C reaches the main process, which stops the pool
            with multiprocessing.get_context("fork").Pool(min(workers, len(units)), signal.signal, (signal.SIGINT, signal.SIG_IGN)) as pool:
                for i, points in enumerate(pool.imap(_loss_unit, range(len(units)))):
                    keep(i, points)
        else:
            for i in range(len(units)):
                keep(i, _loss_unit(i))
    finally:
        _loss_job.clear()
    names = [m for c in chosen for m in metrics[get_codec_class(c).media]]
    free = {f"{m['codec']} {m['setting']}": {k: m.get(k) for k in names} for m in means if m["codec"] in chosen}
    return {"rates": rates, "channels": list(L.CHANNELS), "burst": L.BURST, "draws": draws, "seed": seed, "conceal_check": conceal_check, "settings": chosen,
            "metrics": list(dict.fromkeys(names)), "records": records, "means": L.means(records, list(dict.fromkeys(names))), "loss_free": free,
            "baselines": {c: list(get_codec_class(c).baseline_concealments) for c in chosen}}  # fmt: skip


_loss_job: dict[str, Any] = {}  # what `_loss_unit` works on: set before the pool forks, so only unit numbers travel


def _loss_unit(i: int) -> list[tuple[str, dict[str, Any], bool]]:
    """Unit `i` of `_loss_job`: one file coded at each of its settings, each channel x rate x draw x concealment decoded
    and scored (cached points reused); (cache key, record, new) in a fixed order."""
    from . import api
    from . import loss as L
    from .registry import get_codec

    job = _loss_job
    coder, path, settings = job["units"][i]
    cache, metrics = job["cache"], job["metrics"][coder.media]
    codec = get_codec(coder.name)
    ref, sha = load_reference(path, coder.media), hashlib.sha256(path.read_bytes()).hexdigest()
    scorer = Scorer(coder.media, lambda: ref, metrics, job["device"])
    encode, checked = coder.encode, " conceal-check" if job["conceal_check"] else ""
    if checked:
        encode = functools.partial(api.compress, codec.with_conceal_check())
    out = []
    for setting in settings:
        data = encode(ref, setting)
        packets = read_header(io.BytesIO(data), api.header_dictionary).packets or 0
        for channel, rate, draw in itertools.product(L.CHANNELS, job["rates"], range(job["draws"])):
            s = L.seed_of(job["seed"], sha, channel, rate, draw)
            lost = L.lost_packets(packets, rate, channel, s)
            damaged = L.with_lost(data, lost, api.header_dictionary)
            same: dict[str, Any] | None = None  # nothing lost: every concealment decodes the same
            for how in codec.concealments:
                key = f"{sha}|{coder.name}|{coder.identity}{checked}|{codec.concealment_identity()}|{setting}|loss {channel} {rate} {draw} {job['seed']} {how}"
                record = cache.get(key, metrics)
                if record is not None:
                    out.append((key, record, False))
                    continue
                if same is None or lost.any():
                    codec.concealment = how
                    try:
                        decoded = api.decompress(damaged, recover=True, codec=codec)
                    finally:
                        codec.concealment = codec.concealments[0]
                    same = scorer.scores([decoded])[0]
                record = {"file": str(path), "codec": coder.name, "setting": setting, "channel": channel, "loss": rate,
                          "draw": draw, "seed": s, "lost": int(lost.sum()), "packets": packets, "concealment": how,
                          **{m: same[m] for m in metrics}}  # fmt: skip
                out.append((key, record, True))
    return out


def _run_parallel(tasks: list[FileTask], index: list[int], report: Report, workers: int, threads: int) -> dict[int, list[dict[str, Any]]]:
    """`evaluate_file` of each task in a pool of processes; their points come back through a queue."""
    import multiprocessing
    import queue
    from concurrent.futures import Future, ProcessPoolExecutor

    # fork shares the loaded models; a process that may start CUDA needs fresh interpreters
    context = multiprocessing.get_context("fork" if tasks[0].device == "cpu" else "spawn")
    points: Any = context.Queue()
    before = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(workers, context, initializer=_init_worker, initargs=(points, threads, tasks[0].device))
    results: dict[int, list[dict[str, Any]]] = {}
    reported: set[str] = set()

    def drain(timeout: float) -> None:
        try:
            while True:
                key, record, new, label = points.get(timeout=timeout)
                timeout = 0
                if key not in reported:  # else its file's result came first
                    reported.add(key)
                    report(key, record, new, label)
        except queue.Empty:
            pass

    finished = False
    try:
        futures = {pool.submit(_evaluate_in_worker, t): (i, t) for t, i in zip(tasks, index)}
        while futures:
            drain(0.2)
            for f in [f for f in futures if f.done()]:
                i, task = futures.pop(f)
                points_of_file, records = f.result()  # a worker's error ends the run, as it would without workers
                for key, record, new in points_of_file:  # those whose queue message is still on its way
                    if key not in reported:
                        reported.add(key)
                        report(key, record, new, task.path.name)
                results[i] = records
        finished = True
    finally:
        if not finished:  # an error or Ctrl-C: stop the workers now, not after their files
            for p in set(multiprocessing.active_children()) - before:
                p.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
    return results


_worker_points: Any = None  # the queue of a worker process
_worker_coders: dict[str, Coder] = {}


def _init_worker(points: Any, threads: int, device: str) -> None:
    import signal

    from .files import exit_now

    global _worker_points
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the main process stops the pool
    signal.signal(signal.SIGTERM, exit_now)  # how the main process stops the pool after an error
    _worker_points = points
    import torch

    torch.set_num_threads(threads)
    keep_freed_memory()
    from . import api
    from .metrics import use_device

    api.use_device(device)
    use_device(device)


def _evaluate_in_worker(task: FileTask) -> tuple[list[tuple[str, dict[str, Any], bool]], list[dict[str, Any]]]:
    """The file's reported points (for the main process's cache and progress) and its records, which
    `evaluate_file` gives this run's path (a cached point may come from a copy of the file elsewhere)."""
    points: list[tuple[str, dict[str, Any], bool]] = []

    def report(key: str, record: dict[str, Any], new: bool, label: str) -> None:
        points.append((key, record, new))
        _worker_points.put((key, record, new, label))

    for name, is_anchor in task.coders:  # built once per worker
        if name not in _worker_coders:
            _worker_coders[name] = anchor_coder(name) if is_anchor else learned_coder(name)
    records = evaluate_file(task, report, _worker_coders)
    return points, records


def evaluate_file(task: FileTask, report: Report, coders: dict[str, Coder]) -> list[dict[str, Any]]:
    """One file's records for every coder (by name in `coders`) and setting, in order; `report` after each point.

    What depends only on the original is computed once (its pixels, ST-LPIPS features and MS-SSIM
    statistics; decoded audio; a Gaussian sequence's cameras and renders), and decoded images are scored in batches on a GPU. Decoded media
    are written once per point: at once for a new point when every point keeps them, else (with
    `media_at`, which needs the rates first) by coding the chosen points again.
    """
    path, kind = task.path, task.kind
    loaded: list[Any] = []

    def reference() -> Any:
        if not loaded:
            loaded.append(load_reference(path, kind))
        return loaded[0]

    scorer = Scorer(kind, reference, list(task.metrics), task.device)
    media = FileMedia.open(task.out, str(path), task.source_sha, kind, reference)
    records: list[dict[str, Any]] = []
    for coder in (coders[name] for name, _ in task.coders):
        group: list[dict[str, Any]] = []
        pending: list[tuple[str, dict[str, Any], Any]] = []  # new points waiting for their scores

        def flush() -> None:
            scores = scorer.scores([decoded for _, _, decoded in pending])
            for (key, record, decoded), score in zip(pending, scores):
                record.update(score)
                report(key, record, True, f"{path.name} {coder.name} {record['setting']}")
                if task.media_at is None:
                    media.write(point_name(coder.name, record["setting"], coder.identity), decoded)
            pending.clear()

        for setting in coder.settings:
            key = PointCache.key(task.source_sha, coder, setting)
            record = task.cached.get(key)
            if record is None:
                fields, decoded = _point(kind, reference(), coder, setting)
                record = {"file": str(path), "codec": coder.name, "setting": setting, **fields}
                pending.append((key, record, decoded))
                if len(pending) >= scorer.batch:
                    flush()
            else:
                report(key, record, False, f"{path.name} {coder.name} {setting}")
            group.append(record)
        flush()
        group = [{**r, "file": str(path)} for r in group]
        keep = select_points(group, RATE_KEY[kind], list(task.media_at) if task.media_at is not None else None)
        for r in (r for r in group if r["setting"] in keep):
            name = point_name(coder.name, r["setting"], coder.identity)
            if not media.has(name):
                data = coder.encode(reference(), r["setting"])
                if len(data) != r["bytes"]:  # the media would not be what the metrics measured
                    raise MediaError(f"{coder.name} {r['setting']} on {path}: coding again gave {len(data)} bytes, the cache has {r['bytes']} (delete {task.out / 'cache.jsonl'})")
                media.write(name, coder.decode(data))
        records += group
    return records


class Scorer:
    """The metrics of one file's decoded versions against its original, computed in batches."""

    def __init__(self, kind: str, reference: Callable[[], Any], metrics: list[str], device: str) -> None:
        self.kind, self.reference, self.metrics = kind, reference, metrics
        self.batch = 1 if device == "cpu" else 8  # on a CPU, batches only add memory traffic
        self.device = device
        self._image: ImageReference | None = None
        self._scene: SceneViews | None = None

    def scores(self, decoded: list[Any]) -> list[dict[str, float]]:
        if not decoded:
            return []
        if self.kind == "audio":
            ref = self.reference()
            x = ref.to_array()
            return [{m: METRICS[m].fn(x, ref.sample_rate, d.to_array(), d.sample_rate) for m in self.metrics} for d in decoded]
        if self.kind == "gaussians":
            return [self._scene_scores(d) for d in decoded]
        if self._image is None:
            self._image = ImageReference(M.to_rgb8(self.reference())[0], self.device)
        rgb = [M.to_rgb8(d)[0] for d in decoded]
        batched = {"ms_ssim": self._image.ms_ssim, "st_lpips": self._image.st_lpips}
        columns = {m: batched[m](rgb) if m in batched else [METRICS[m].fn(self._image.rgb, b) for b in rgb] for m in self.metrics}
        return [{m: columns[m][i] for m in self.metrics} for i in range(len(rgb))]

    def _scene_scores(self, decoded: M.Gaussians) -> dict[str, float]:
        """A Gaussian sequence's metrics: renders of every frame from the quality cameras (on the CPU)."""
        ref = self.reference()
        if decoded.counts != ref.counts:
            raise MediaError(f"decoded sequence has {len(decoded.counts)} frames of {decoded.counts[:3]}... Gaussians, the original {len(ref.counts)} of {ref.counts[:3]}...")
        from .splatting import render_views

        if self._scene is None:
            self._scene = SceneViews.of(ref)
        views = render_views(decoded, self._scene.cameras)
        return {m: METRICS[m].fn(self._scene.views, views) for m in self.metrics}


def keep_freed_memory() -> None:
    """Let glibc keep freed memory for the next point instead of returning it to the kernel.

    The metric networks allocate and free the same few hundred MB for every point; by default
    glibc maps large blocks afresh each time and trims the heap, and each page is then faulted
    in again (hundreds of thousands of page faults and most of a second of system time per
    point). Large allocations up to glibc's maximum of 32 MB now come from the heap, and up
    to 512 MB of free heap stays mapped.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    libc.mallopt(-1, 512 << 20)  # M_TRIM_THRESHOLD
    libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD


def load_reference(path: Path, kind: str) -> M.Image | M.Audio | M.Gaussians:
    """The media a coder gets; audio is decoded to memory once and reused for every point, a
    Gaussian sequence is streamed from its files each time."""
    if kind == "image":
        return M.read_image(path)
    if kind == "gaussians":
        return M.read_gaussians(path)
    audio = M.read_audio(path)
    return M.Audio.from_array(audio.to_array(), audio.sample_rate)


def _point(kind: str, ref: Any, coder: Coder, setting: str) -> tuple[dict[str, Any], Any]:
    """A point's size, rate and coding times, and the decoded media (scored later, in a batch)."""
    t0 = time.perf_counter()
    data = coder.encode(ref, setting)
    t1 = time.perf_counter()
    decoded = coder.decode(data)
    if kind == "gaussians":  # frames decode as they are read: read them once for the time
        for _ in decoded.frames():
            pass
    t2 = time.perf_counter()
    rate = {RATE_KEY[kind]: M.real_rate(len(data), M.metadata(ref))[0]}
    if kind == "gaussians":
        rate["bits_per_gaussian"] = 8 * len(data) / sum(ref.counts)
    return {"bytes": len(data), **rate, "encode_s": round(t1 - t0, 4), "decode_s": round(t2 - t1, 4)}, decoded


# ---------------------------------------------------------------- aggregation and BD-rate


def build_report(records: list[dict[str, Any]], coders: list[Coder], metrics: dict[str, list[str]], datasets: list[str], sources: dict[str, str] | None = None) -> dict[str, Any]:
    means = []
    for coder in coders:
        kind, rate_key = coder.media, RATE_KEY[coder.media]
        for setting in coder.settings:
            rows = [r for r in records if r["codec"] == coder.name and r["setting"] == setting]
            if rows:
                keys = ["bytes", rate_key, *MORE_RATES.get(kind, []), *metrics[kind], "encode_s", "decode_s"]
                mean = {k: _nanmean([r.get(k, math.nan) for r in rows]) for k in keys}
                means.append({"codec": coder.name, "setting": setting, "media": kind, "files": len(rows), **mean})
    meta = {**_meta(datasets, coders), "sources": sources or {}}  # file -> sha256: finds its media
    return {"meta": meta, "records": records, "means": means, "bd_rate": bd_table(means, coders)}


def bd_table(means: list[dict[str, Any]], coders: list[Coder]) -> list[dict[str, Any]]:
    """BD-rate of each learned codec against each anchor of its media kind.

    With no learned codec, each anchor is compared with the first anchor of its kind. MS-SSIM
    enters in dB, -10 log10(1 - MS-SSIM). Computed on the per-setting mean curves.
    """
    rows = []
    for kind in KINDS:
        learned = [c for c in coders if c.media == kind and not c.is_anchor]
        anchors = [c for c in coders if c.media == kind and c.is_anchor]
        pairs = [(c, a) for c in learned for a in anchors] or [(c, anchors[0]) for c in anchors[1:]]
        for coder, anchor in pairs:
            for metric in BD_METRICS[kind]:
                a, b = (_curve(means, x.name, RATE_KEY[kind], metric) for x in (anchor, coder))
                rows.append({"codec": coder.name, "anchor": anchor.name, "metric": metric, "percent": _round(bd_rate(*a, *b), 2)})
    return rows


def _curve(means: list[dict[str, Any]], name: str, rate_key: str, metric: str) -> tuple[list[float], list[float]]:
    rows = [m for m in means if m["codec"] == name and m.get(metric) is not None]
    quality = [ms_ssim_db(m[metric]) if metric == "ms_ssim" else m[metric] for m in rows]
    return [m[rate_key] for m in rows], quality


AT_RATES = {"image": [0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0], "audio": [0.75, 1.0, 1.5, 2.0, 3.0, 6.0, 8.0, 12.0],
            "gaussians": [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]}


def quality_at_rates(means: list[dict[str, Any]], codec: str, rate_key: str, metric: str, rates: list[float]) -> list[float | None]:
    """A codec's mean quality at given rates, linear in log rate; None outside its range."""
    rows = sorted((m[rate_key], m[metric]) for m in means if m["codec"] == codec and _finite(m.get(metric)) is not None)
    if len(rows) < 2:
        return [None] * len(rates)
    log_r, q = np.log([r for r, _ in rows]), np.array([v for _, v in rows])
    return [float(np.interp(lr, log_r, q)) if log_r[0] <= lr <= log_r[-1] else None for lr in np.log(rates)]


def _nanmean(values: list[Any]) -> float:
    finite = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return float(np.mean(finite)) if finite else math.nan


def _round(x: float, digits: int) -> float | None:
    return round(x, digits) if math.isfinite(x) else None


def _finite(obj: Any) -> Any:
    """JSON-safe copy: NaN and infinities become None (null)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _meta(datasets: list[str], coders: list[Coder]) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
        "datasets": datasets,
        "coders": {c.name: {"media": c.media, "anchor": c.is_anchor, "identity": c.identity} for c in coders},
    }


# ---------------------------------------------------------------- report files


def write_report(report: dict[str, Any], out: Path) -> None:
    from .report_html import write_page  # it imports this module

    (out / "report.json").write_text(json.dumps(_finite(report), indent=1) + "\n")
    _write_csv(report["records"], out / "report.csv")
    plots = write_plots(report, out)
    (out / "report.md").write_text(markdown(report, plots) + loss_markdown(report.get("loss"), write_loss_plots(report, out)))
    write_page(report, out, plots)


def write_loss_plots(report: dict[str, Any], out: Path) -> list[str]:
    """The `--loss` plots (`loss.write_plots`) of a report that has a loss section; their PNG names."""
    if not report.get("loss"):
        return []
    from .loss import write_plots as loss_plots_of

    return loss_plots_of(report["loss"], out, {k: m.label for k, m in METRICS.items()})


def rebuild_page(report_dir: str | Path) -> Path:
    """`nmc eval --html-only`: the plots and report.html again from report.json; nothing is recomputed."""
    from .report_html import write_page

    out = Path(report_dir)
    try:
        report = json.loads((out / "report.json").read_text())
    except FileNotFoundError:
        raise MediaError(f"{out}: no report.json (write one with nmc eval DATASET --report {out})") from None
    except json.JSONDecodeError as err:
        raise MediaError(f"{out / 'report.json'}: not valid JSON ({err})") from None
    if not isinstance(report, dict) or not {"meta", "records", "means", "bd_rate"} <= report.keys():
        raise MediaError(f"{out / 'report.json'}: not a report written by nmc eval")
    write_loss_plots(report, out)
    return write_page(report, out, write_plots(report, out))


def _write_csv(records: list[dict[str, Any]], path: Path) -> None:
    columns: list[str] = []
    for r in records:
        columns += [k for k in r if k not in columns]
    with open(path, "w", newline="") as fo:
        writer = csv.DictWriter(fo, columns)
        writer.writeheader()
        writer.writerows(_finite(records))


def write_plots(report: dict[str, Any], out: Path) -> list[str]:
    """One rate-distortion plot per metric, PNG and SVG (mean curves, log rate axis); returns the PNG names."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "nmc"  # the same SVG for the same report
    import matplotlib.pyplot as plt

    names = []
    for kind in KINDS:
        rows = [m for m in report["means"] if m["media"] == kind]
        metrics = [k for k in METRICS if METRICS[k].media == kind and any(_finite(m.get(k)) is not None for m in rows)]
        for metric in metrics:
            fig, ax = plt.subplots(figsize=(6, 4.2), dpi=100)
            for codec in dict.fromkeys(m["codec"] for m in rows):
                rate, quality = _curve(rows, codec, RATE_KEY[kind], metric)
                pts = sorted((r, q) for r, q in zip(rate, quality) if math.isfinite(q) and r > 0)
                if pts:
                    anchor = report["meta"]["coders"][codec]["anchor"]
                    ax.plot(*zip(*pts), "--o" if anchor else "-s", ms=3, lw=1.2, label=codec)
            ax.set_xscale("log")
            lo, hi = ax.get_xlim()
            ax.set_xticks([t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 4, 8, 16, 32) if lo <= t <= hi])
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel({"image": "bits per pixel", "audio": "kbit/s", "gaussians": "MB per frame"}[kind])
            ax.set_ylabel(METRICS[metric].label + (" (dB)" if metric == "ms_ssim" else ""))
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            names.append(f"rd_{metric}.png")
            fig.savefig(out / names[-1])
            fig.savefig(out / f"rd_{metric}.svg", metadata={"Date": None})
            plt.close(fig)
    return names


def markdown(report: dict[str, Any], plots: list[str]) -> str:
    meta = report["meta"]
    lines = ["# Evaluation report", "", f"{meta['date']} on {meta['machine']}  ", f"Datasets: {', '.join(meta['datasets'])}", ""]
    for kind in KINDS:
        rows = [m for m in report["means"] if m["media"] == kind]
        if not rows:
            continue
        cols = [RATE_KEY[kind], *MORE_RATES.get(kind, []), *[k for k in METRICS if METRICS[k].media == kind and k in rows[0]]]
        lines += [f"## Means per rate point ({kind})", "", _md_table(["codec", "setting", "files", *cols], [[m["codec"], m["setting"], m["files"], *(m[c] for c in cols)] for m in rows]), ""]
    if report["bd_rate"]:
        lines += ["## BD-rate (%, negative = fewer bits than the anchor at equal quality)", ""]
        lines += ["Over the per-setting mean curves; MS-SSIM in dB. – : the curves share no quality range.", ""]
        lines += [_md_table(["codec", "anchor", "metric", "BD-rate %"], [[b["codec"], b["anchor"], b["metric"], b["percent"]] for b in report["bd_rate"]]), ""]
    lines += [f"![{p}]({p})" for p in plots] + [""]
    for kind in KINDS:
        if floors := lowest_rates(report, kind):
            rk = RATE_KEY[kind]
            lines += [f"## Lowest rate each codec reaches ({kind})", "", "Its setting of the lowest mean rate: quality at fixed rates below it is –.", ""]
            lines += [_md_table(["codec", "setting", f"mean {rk}", f"lowest file {rk}", f"highest file {rk}"], floors), ""]
    for kind in KINDS:
        rows = [m for m in report["means"] if m["media"] == kind]
        coders = list(dict.fromkeys(m["codec"] for m in rows))
        for metric in [k for k in METRICS if rows and k in rows[0]]:
            head = [f"{r:g} {RATE_KEY[kind]}" for r in AT_RATES[kind]]
            body = [[c, *quality_at_rates(report["means"], c, RATE_KEY[kind], metric, AT_RATES[kind])] for c in coders]
            lines += [f"## {METRICS[metric].label} at fixed rates (interpolated in log rate)", "", _md_table(["codec", *head], body), ""]
    for kind in KINDS:
        records = [r for r in report["records"] if meta["coders"][r["codec"]]["media"] == kind]
        if records:
            cols = [k for k in records[0] if k not in ("file", "codec", "setting")]
            body = [[Path(r["file"]).name, r["codec"], r["setting"], *(r.get(c) for c in cols)] for r in records]
            lines += [f"## Per file ({kind})", "", _md_table(["file", "codec", "setting", *cols], body), ""]
    return "\n".join(lines)


def loss_markdown(loss: dict[str, Any] | None, plots: list[str]) -> str:
    """The packet-loss section of report.md: how the losses were drawn, the mean table, the share of the gap each
    concealment closes (`loss.gap_closed`), the plots."""
    from .loss import gap_closed

    if not loss:
        return ""
    lines = ["", "## Packet loss (`--loss`)", "",
             f"Channels: independent drops, and Gilbert-Elliott bursts (mean burst {loss['burst']:g} packets); {loss['draws']} draws per "
             f"file, channel and rate, seeds from `--loss-seed {loss['seed']}` (each record holds its seed). Settings: "
             + ", ".join(f"{c} {'/'.join(s)}" for c, s in loss["settings"].items()) + ". Loss-free means: "
             + "; ".join(f"{k}: " + ", ".join(f"{m} {v:.4g}" for m, v in vals.items() if isinstance(v, float)) for k, vals in loss["loss_free"].items()), ""]  # fmt: skip
    cols = ["lost_share", *loss["metrics"]]
    rows = [[m["codec"], m["setting"], m["channel"], m["loss"], m["concealment"], m["decodes"], *(m[c] for c in cols)] for m in loss["means"]]
    lines += [_md_table(["codec", "setting", "channel", "loss", "concealment", "decodes", *cols], rows), ""]
    gaps = gap_closed(loss, {k: m.higher_is_better for k, m in METRICS.items()})
    if gaps:
        lines += ["### Share of the gap closed", "",
                  "Per metric, how much of the gap between the better of the codec's simple concealments ("
                  + "; ".join(f"{c}: {', '.join(b)}" for c, b in loss["baselines"].items() if b)
                  + ") and the loss-free decode each other concealment closes: 100 % decodes as if nothing were lost, 0 % as the "
                  "better baseline.", "",
                  _md_table(["codec", "setting", "channel", "loss", "concealment", *loss["metrics"]],
                            [[*(g[k] for k in ("codec", "setting", "channel", "loss", "concealment")),
                              *(f"{100 * g[m]:.1f} %" if math.isfinite(g[m]) else "–" for m in loss["metrics"])] for g in gaps]), ""]  # fmt: skip
    return "\n".join(lines + [f"![{p}]({p})" for p in plots] + [""])


def lowest_rates(report: dict[str, Any], kind: str) -> list[list[Any]]:
    """Per codec of `kind`: its setting of the lowest mean rate, that mean, and the lowest and highest file's rate there."""
    rk, rows = RATE_KEY[kind], []
    for codec in dict.fromkeys(m["codec"] for m in report["means"] if m["media"] == kind):
        low = min((m for m in report["means"] if m["codec"] == codec and _finite(m.get(rk)) is not None), key=lambda m: m[rk], default=None)
        if low is not None:
            files = [r[rk] for r in report["records"] if r["codec"] == codec and r["setting"] == low["setting"] and _finite(r.get(rk)) is not None]
            rows.append([codec, low["setting"], low[rk], min(files), max(files)])
    return rows


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "–" if not math.isfinite(v) else f"{v:.4g}"
        return "–" if v is None else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])
