"""`nmc batch --executor ray`: the jobs of `batch.plan` run by Ray Data actors (the `nmc[ray]` extra).

Each actor is a process that keeps its codecs' models loaded across files and runs the same
per-file function as the local executor (`batch.run_job`), so outputs are atomic, `resume` skips
finished files and a bad file fails alone. Results stream back to this process in completion
order, for the same progress bar and summary. On a cluster, SRC and DST must be one shared
filesystem at the same path on every node; with a GPU each actor takes a share of one.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Generator

import numpy as np

from .batch import WORKER_DIED, Job, Result, run_job
from .errors import MediaError
from .files import Summary, remove_stale_temps


class _Coder:
    """One Ray actor: codes the files it is given, one per call, with models loaded once."""

    def __init__(self, codec: str, quality: str | None, resume: bool, force: bool, device: str) -> None:
        import torch

        from .api import use_device
        from .device import resolve
        from .registry import get_codec

        torch.set_num_threads(1)
        use_device(resolve(device))
        if codec != "auto":
            _ = get_codec(codec).model  # type: ignore[attr-defined]  # loaded now, not with the first file
        self.args = (codec, quality, resume, force)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        out = []
        for src, dst, decode, error in zip(batch["src"], batch["dst"], batch["decode"], batch["error"]):
            r = run_job(Job(Path(src), Path(dst), bool(decode), str(error)), *self.args)
            out.append(json.dumps({"status": r.status, "error": r.error, "summary": r.summary.as_dict() if r.summary else None}))
        return {"index": list(batch["index"]), "result": out}


def run(
    jobs: list[Job],
    codec: str = "auto",
    quality: str | None = None,
    workers: int = 1,
    resume: bool = False,
    force: bool = False,
    device: str = "cpu",
    address: str | None = None,
) -> Generator[Result, None, None]:
    """Like `batch.run`, on Ray: `workers` actors (each with 1 CPU, or 1/workers of a GPU when
    `device` is not the CPU) on the cluster at `address` (default: the running Ray instance of
    this process, else a new local one). A file whose actor dies (killed, out of memory) fails
    alone; if the Ray job fails as a whole, every file it has not reported fails with it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise MediaError("--executor ray needs Ray: pip install 'nmc[ray]'") from None
    dirs = {j.dst.parent for j in jobs}
    if resume:
        remove_stale_temps(dirs)
    started = not ray.is_initialized()
    if started:  # quiet: the summary reports what went wrong
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its notes on progress bars and start-up, not ours to show
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours is the one the CLI shows
    context.print_on_execution_start = False
    context.max_errored_blocks = -1  # a file whose actor died is reported below; the others go on
    gpu = device not in ("cpu", "auto") or (device == "auto" and bool(ray.cluster_resources().get("GPU")))
    rows = [{"index": i, "src": str(j.src), "dst": str(j.dst), "decode": j.decode, "error": j.error} for i, j in enumerate(jobs)]
    reported: set[int] = set()
    try:
        if jobs:
            with warnings.catch_warnings():  # max_task_retries has no named parameter yet
                warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
                ds = ray.data.from_items(rows).map_batches(
                    _Coder, fn_constructor_args=(codec, quality, resume, force, device), batch_size=1, concurrency=workers,
                    num_cpus=1, num_gpus=1 / workers if gpu else 0, max_task_retries=0,  # a file that kills its actor is not retried
                )  # fmt: skip
            for row in ds.iter_rows():
                i, r = int(row["index"]), json.loads(row["result"])
                reported.add(i)
                yield Result(jobs[i], r["status"], Summary(**r["summary"]) if r["summary"] else None, r["error"])
            for i in sorted(set(range(len(jobs))) - reported):  # their actor died (Ray restarts it for the others)
                reported.add(i)
                yield Result(jobs[i], "failed", error=WORKER_DIED)
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except Exception as err:  # noqa: BLE001 - Ray's own failures: every file not reported fails with it
        message = f"the Ray job stopped: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        for i, job in enumerate(jobs):
            if i not in reported:
                yield Result(job, "failed", error=message)
    finally:
        if started:
            ray.shutdown()
            remove_stale_temps(dirs)
