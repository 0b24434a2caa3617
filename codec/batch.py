"""`nmc batch`: mirror a directory tree, compressing media and decompressing .nmc files.

Each file is one job run in a worker process; a failing job is reported and the others go
on. Outputs are atomic, so with `resume` an existing output is a finished one and skipped.
"""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from . import media as M
from .errors import NmcError
from .files import DECODED_SUFFIX, Summary, compress_path, decompress_path, default_output


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path
    decode: bool  # True: .nmc -> media, False: media -> .nmc


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
                jobs.append(Job(path, out, True))  # decoded name is known only from the header
            elif path.suffix.lower() in M.IMAGE_SUFFIXES | M.AUDIO_SUFFIXES | {".ply"}:
                jobs.append(Job(path, default_output(out), False))
    return jobs


def _decoded_target(job: Job) -> Path | None:
    """The existing output of a decode job, if any (its suffix depends on the media kind)."""
    for kind in DECODED_SUFFIX:
        p = default_output(job.dst, kind)
        if p.exists():
            return p
    return None


def run_job(job: Job, codec: str, quality: str | None, resume: bool, force: bool) -> Result:
    try:
        finished = _decoded_target(job) is not None if job.decode else job.dst.exists()
        if resume and finished:
            return Result(job, "skipped")
        job.dst.parent.mkdir(parents=True, exist_ok=True)
        if job.decode:
            summary = decompress_path(job.src, _decode_output(job), force=force)
        else:
            summary = compress_path(job.src, job.dst, codec=codec, quality=quality, force=force)
        return Result(job, "done", summary)
    except NmcError as err:
        return Result(job, "failed", error=str(err))
    except Exception as err:  # noqa: BLE001 - one bad file must not stop the batch
        return Result(job, "failed", error=f"{type(err).__name__}: {err}")


def _decode_output(job: Job) -> Path:
    from .api import open_file

    with open(job.src, "rb") as fo:
        header, _, _ = open_file(fo)
    return default_output(job.dst, header.media["kind"])


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def run(jobs: list[Job], codec: str = "auto", quality: str | None = None, workers: int = 1, resume: bool = False, force: bool = False) -> Iterator[Result]:
    """Run jobs, yielding results as they finish (in completion order)."""
    if workers <= 1:
        for job in jobs:
            yield run_job(job, codec, quality, resume, force)
        return
    with ProcessPoolExecutor(workers, initializer=_init_worker) as pool:
        pending: set[Future[Result]] = {pool.submit(run_job, j, codec, quality, resume, force) for j in jobs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                yield f.result()
