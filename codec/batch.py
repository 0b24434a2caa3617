"""`nmc batch`: mirror a directory tree, compressing media and decompressing .nmc files.

Each file is one job run in a worker process; a failing job is reported and the others go
on. Outputs are atomic, so with `resume` an existing output is a finished one and skipped.
Every output name is known when planning (a .nmc file's header gives its media kind), so
sources that would write the same file are refused before anything runs. Stopping the run
(Ctrl-C) stops the workers at once, and a worker that dies fails only the files in flight.

On a GPU the workers share one network: it runs in this process (`netcall.Server`), which
stacks the workers' concurrent network calls of equal shape into batches, while the workers
read, entropy-code and write their files in parallel. At most `workers` files are in flight, so
memory does not grow with the directory. `batch_ray.run` runs the same jobs on Ray.
"""

from __future__ import annotations

import multiprocessing
import sys
import os
import signal
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generator

from . import media as M
from .container import Header, read_header
from .errors import NmcError
from .netcall import Server
from .files import Summary, compress_path, decompress_path, default_output, exit_now, remove_stale_temps

STOP_SECONDS = 5  # how long a stopped worker may take to remove its temporary file before it is killed
WORKER_DIED = "the worker process coding this file died (killed, or out of memory?)"


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path  # the output file
    decode: bool  # True: .nmc -> media, False: media -> .nmc
    error: str = ""  # found when planning: the job fails without running


@dataclass
class Result:
    job: Job
    status: str  # "done", "skipped" or "failed"
    summary: Summary | None = None
    error: str = ""


def plan(src: Path, dst: Path) -> list[Job]:
    """Jobs for every supported file under `src`; a directory of .ply frames is one sequence."""
    jobs = []
    for root, dirs, files in os.walk(src):
        here = Path(root)
        dirs.sort()
        if here != src and any(f.endswith(".ply") for f in files):
            dirs.clear()
            out = dst / here.relative_to(src)
            jobs.append(Job(here, default_output(out), False))
            continue
        for name in sorted(files):
            path = here / name
            out = dst / path.relative_to(src)
            if name.endswith(".nmc"):
                jobs.append(_decode_job(path, out))
            elif path.suffix.lower() in M.IMAGE_SUFFIXES | M.AUDIO_SUFFIXES | {".ply"}:
                jobs.append(Job(path, default_output(out), False))
    return _refuse_shared_outputs(jobs)


def _header(path: Path) -> Header:
    """A .nmc file's header, read and checked as a container only: which codec, weights and media.
    Whether this nmc can decode it is the job's to find (planning loads no model)."""
    from .api import header_dictionary

    with open(path, "rb") as fo:
        return read_header(fo, header_dictionary)


def _decode_job(path: Path, out: Path) -> Job:
    """The decoded name depends on the media kind in the header (x.png.nmc -> x.png, talk.nmc -> talk.wav)."""
    try:
        kind = _header(path).media["kind"]
    except (NmcError, OSError) as err:
        return Job(path, out, True, str(err))
    return Job(path, default_output(out, kind), True)


def _refuse_shared_outputs(jobs: list[Job]) -> list[Job]:
    """Fail every job whose output another job would write too (a.png.nmc and a.jpg.nmc -> a.png)."""
    sources: dict[Path, list[Path]] = {}
    for j in jobs:
        if not j.error:
            sources.setdefault(j.dst, []).append(j.src)
    out = []
    for j in jobs:
        others = [str(s) for s in sources.get(j.dst, []) if s != j.src]
        out.append(replace(j, error=f"{j.dst} would also be written from {', '.join(others)}; rename one of them") if others and not j.error else j)
    return out


def run_job(job: Job, codec: str, quality: str | None, resume: bool, force: bool) -> Result:
    if job.error:
        return Result(job, "failed", error=job.error)
    try:
        if resume and job.dst.exists():
            return Result(job, "skipped")
        job.dst.parent.mkdir(parents=True, exist_ok=True)
        if job.decode:
            summary = decompress_path(job.src, job.dst, force=force)
        else:
            summary = compress_path(job.src, job.dst, codec=codec, quality=quality, force=force)
        return Result(job, "done", summary)
    except NmcError as err:
        return Result(job, "failed", error=str(err))
    except Exception as err:  # noqa: BLE001 - one bad file must not stop the batch
        return Result(job, "failed", error=f"{type(err).__name__}: {err}")


def _init_worker(server: tuple[str, bytes] | None = None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the main process decides
    signal.signal(signal.SIGTERM, exit_now)  # how the main process stops a worker (first: importing torch takes seconds)
    import torch

    torch.set_num_threads(1)
    if server is not None:
        from .netcall import connect

        connect(*server)


def _probe(job: Job, codec: str) -> tuple[str | None, tuple[int, ...]]:
    """The codec that will code `job` (None: unknown) and what decides the shape of its network
    calls, from its header: (1, height, width) of a photo, (0, frames at 50 Hz) of a clip, else
    (-1, bytes). Sorting by the shape puts files of one size in flight together."""
    name = None
    try:
        if job.decode:
            header = _header(job.src)
            name, m = header.codec, header.media
            if m.get("kind") == "image":
                return name, (1, int(m["height"]), int(m["width"]))
            if m.get("kind") == "audio":
                return name, (0, int(m["frames"]) * 50 // int(m["sample_rate"]))
            return name, (-1, job.src.stat().st_size)
        from .registry import codec_for_media

        kind = M.media_kind(job.src)
        name = codec_for_media(kind) if codec == "auto" else codec
        if kind == "image":
            from PIL import Image

            with Image.open(job.src) as im:  # reads the header only
                return name, (1, im.height, im.width)
        if kind == "audio":
            import soundfile as sf

            with sf.SoundFile(str(job.src)) as f:  # sf.info also formats every field: 1.4-1.6x slower
                return name, (0, f.frames * 50 // f.samplerate)
        return name, (-1, job.src.stat().st_size if job.src.is_file() else 0)
    except Exception:  # noqa: BLE001 - an unreadable file fails when it runs, not here
        return name, (-1, 0)


def _load(names: tuple[str, ...]) -> None:
    """Load the networks and priors of codecs `names` in this process, so that forked workers have
    them (and the shared network only moves them to its device); an error is left to the jobs."""
    from .interface import NeuralCodec
    from .registry import get_codec

    for name in names:
        try:
            codec = get_codec(name)
            if isinstance(codec, NeuralCodec):
                codec.model  # noqa: B018
        except Exception:  # noqa: BLE001
            pass


def _result(f: Future[Result], job: Job) -> Result:
    try:
        return f.result()
    except BrokenProcessPool:
        return Result(job, "failed", error=WORKER_DIED)


class _Workers:
    """A process pool that can be stopped at once (ProcessPoolExecutor can only wait for its
    running jobs before Python 3.14): its workers are this process's new children."""

    def __init__(self, n: int, server: Server | None = None) -> None:
        self.others = set(multiprocessing.active_children())
        # Forked children start at once with torch already imported (a spawned one imports it again:
        # 5-6 s for 16 workers on the H200 machine, before the first file). But a forked child of a
        # process that has started CUDA cannot use torch safely, and one forked while the server's
        # thread runs a network could inherit a lock that thread holds: then fresh interpreters.
        cuda = "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized()
        fork = not cuda and (server is None or not server.started)
        if fork:
            import torch  # noqa: F401  (imported once here, inherited by every worker)
        context = multiprocessing.get_context("fork" if fork else "spawn")
        initargs = ((server.address, server.authkey),) if server is not None else ()
        self.pool = ProcessPoolExecutor(n, context, initializer=_init_worker, initargs=initargs)
        self.pool.submit(int)  # forks all n workers now (ProcessPoolExecutor does with fork), before the server's threads start

    def stop(self) -> None:
        workers = [p for p in multiprocessing.active_children() if p not in self.others]
        for p in workers:
            p.terminate()
        for p in workers:
            p.join(STOP_SECONDS)
            if p.is_alive():
                p.kill()
                p.join()
        self.pool.shutdown(wait=True, cancel_futures=True)


def run(
    jobs: list[Job],
    codec: str = "auto",
    quality: str | None = None,
    workers: int = 1,
    resume: bool = False,
    force: bool = False,
    device: str = "cpu",
    batch_size: int = 16,
    share_network: bool | None = None,
    stats: dict[str, float] | None = None,
) -> Generator[Result, None, None]:
    """Run jobs, yielding results as they finish (in completion order).

    At most `workers` jobs are in flight, so a worker that dies (killed, out of memory) fails
    only the jobs in flight (the pool breaks with it); a new pool takes the rest. Closing the
    iterator early (Ctrl-C) stops the workers at once; what they leave is removed, as are stale
    temporary files with `resume`.

    Args:
        device (str): where the networks run (a resolved `--device`: cpu, cuda or cuda:N).
        batch_size (int): most rows (photos, tiles, audio windows) per call of a shared network.
        share_network (bool): workers send their network calls to this process, which batches
            them (default: when the device is a GPU and there are several workers).
        stats (dict): filled with the shared network's `calls`, `batches` and `busy_s` (seconds
            running batches) when it ends, and the seconds after this call when it started
            (`started_s`), had CUDA and the networks ready (`warm_s`) and got its first call
            (`first_call_s`).
    """
    from .api import use_device

    start = time.perf_counter()
    dirs = {j.dst.parent for j in jobs}
    if resume:
        remove_stale_temps(dirs)
    args = (codec, quality, resume, force)
    if workers <= 1:
        use_device(device)
        for job in jobs:
            yield run_job(job, *args)
        return
    todo = deque(jobs)
    server = None
    if device != "cpu" if share_network is None else share_network:
        # Files of one size are in flight together, so their calls have one shape and share
        # batches (calls of other shapes run one after another); largest first. The codecs' models
        # are loaded before the workers fork (they inherit them), and the server moves them to
        # its device as soon as it starts, while the workers read their first files. Without a shared
        # network each worker loads its own model: the loads overlap, where one load here before the
        # fork would be serial (measured no faster on 2 cores, BENCHMARKS "Session 10").
        probes = {job: _probe(job, codec) for job in jobs}
        todo = deque(sorted(jobs, key=lambda job: probes[job][1], reverse=True))
        names = tuple(sorted({c for c, _ in probes.values() if c}))
        _load(names)
        server = Server(device, batch_size, start=False, codecs=names)
    inflight: dict[Future[Result], Job] = {}
    pool: _Workers | None = None
    try:
        while todo or inflight:
            pool = pool or _Workers(workers, server)
            try:
                while todo and len(inflight) < workers:
                    inflight[pool.pool.submit(run_job, todo[0], *args)] = todo[0]
                    todo.popleft()
            except BrokenProcessPool:  # a worker died between two jobs
                if not inflight:
                    pool.stop()
                    pool = None
                    continue
            if server is not None:
                server.start()  # after the first fork (a child gets no copy of a running thread) and the first jobs
            done, _ = wait(inflight, return_when=FIRST_COMPLETED)
            results = [_result(f, inflight.pop(f)) for f in done]
            if any(r.error == WORKER_DIED for r in results):
                pool.stop()  # now every in-flight job has finished, or failed with the pool
                pool = None
                results += [_result(f, job) for f, job in inflight.items()]
                inflight.clear()
                remove_stale_temps(dirs)
            yield from results
    finally:
        if pool is not None:
            pool.stop()
            remove_stale_temps(dirs)
        if server is not None:
            server.close()
            if stats is not None:
                stats.update(calls=server.calls, batches=server.batches, busy_s=round(server.busy, 3))
                stats.update({f"{k}_s": round(t - start, 3) for k, t in server.times.items()})
