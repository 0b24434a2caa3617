#!/usr/bin/env python3
"""Where a `nmc batch` worker's CPU time goes, per file and stage (issue 13: the H200 runs are CPU-bound).

    python -P scripts/worker_profile.py SPEECH_DIR IMAGES_DIR OUT [--reps 3]

Runs `batch.run_job` on every file as a worker of a shared network does: the network runs in a
`netcall.Server` thread of this process (CPU, one torch thread), the jobs in the main thread, and
each stage is charged the main thread's CPU time (`time.thread_time`) spent in it and not in a
nested stage. So "network call" is what a GPU worker pays for a call (sending the arrays, waiting
costs nothing), and the server's own work is left out. Four cases: hificodec encode of the clips
and decode of those files, mcquic encode of the photos and decode. Prints one JSON line per case
and repetition (ms per file, by stage; `total` = the whole `run_job`), then the median over the
repetitions as a table. The outputs stay in OUT/<case> (to compare bytes between two versions).
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import shutil
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable


class Stages:
    """Exclusive CPU time of this thread per stage: a nested stage's time is not its caller's."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)
        self.stack: list[str] = []
        self.mark = 0.0

    def enter(self, name: str) -> None:
        now = time.thread_time()
        if self.stack:
            self.ms[self.stack[-1]] += 1e3 * (now - self.mark)
        self.stack.append(name)
        self.mark = now

    def leave(self) -> None:
        now = time.thread_time()
        self.ms[self.stack.pop()] += 1e3 * (now - self.mark)
        self.mark = now

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        """Charge `owner.attr` (and every step of a generator it returns) to stage `name`; one that
        `owner` lacks (another version of the code) is left out."""
        if not hasattr(owner, attr):
            return
        fn: Callable[..., Any] = inspect.getattr_static(owner, attr)
        static = isinstance(fn, staticmethod)
        fn = fn.__func__ if static else fn

        def steps(gen: Any) -> Any:
            while True:
                self.enter(name)
                try:
                    item = next(gen)
                except StopIteration:
                    return
                finally:
                    self.leave()
                yield item

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.enter(name)
            try:
                out = fn(*args, **kwargs)
            finally:
                self.leave()
            return steps(out) if inspect.isgenerator(out) else out

        setattr(owner, attr, staticmethod(timed) if static else timed)


def instrument(stages: Stages) -> None:
    from nmc.codec import api, batch, container, dsp, entropy, files, media, netcall, prior, wavefront
    from nmc.models.hificodec import codec as hc, index_coding as hi
    from nmc.models.mcquic import codec as mc, index_coding as mi

    for owner, attr, name in [
        (batch, "run_job", "other (run_job, paths, Python glue)"),
        (media, "read_audio", "read input (soundfile, Pillow)"),
        (media, "finite_blocks", "read input (soundfile, Pillow)"),
        (media, "read_image", "read input (soundfile, Pillow)"),
        (media, "resample_blocks", "resample (soxr)"),
        (media, "to_rgb8", "to rgb8 / tile window"),
        (mc, "tile_indices", "to rgb8 / tile window"),
        (hc.HiFiCodecCodec, "encode_indices", "encoder windows / silence"),
        (netcall, "call", "network call (send + receive)"),
        (hc, "silent_frames", "encoder windows / silence"),
        (hc.HiFiCodecCodec, "decoder_rows", "decoder rows / synthesis glue"),
        (mc, "synthesise", "decoder rows / synthesis glue"),
        (hc, "encode_indices", "index coding (contexts, Python)"),
        (hc, "decode_indices", "index coding (contexts, Python)"),
        (mc, "encode_tile", "index coding (contexts, Python)"),
        (mc, "decode_tile", "index coding (contexts, Python)"),
        (mi, "static_contexts", "index coding (contexts, Python)"),
        (wavefront, "context_rows", "index coding (contexts, Python)"),
        (wavefront, "decode_grid", "index coding (contexts, Python)"),
        (prior.ContextPrior, "scores", "prior scores / term rows"),
        (prior.ContextPrior, "term_rows", "prior scores / term rows"),
        (prior.ContextPrior, "term", "prior scores / term rows"),
        (prior.ContextPrior, "add_terms", "prior scores / term rows"),
        (hi, "tables_from_scores", "tables from scores"),
        (wavefront, "tables_from_scores", "tables from scores"),
        (hi, "coder_tables_from_scores", "tables from scores"),
        (wavefront, "coder_tables_from_scores", "tables from scores"),
        (prior, "coder_tables_from_scores", "tables from scores"),
        (prior.ContextPrior, "coder_tables", "tables from scores"),
        (entropy, "cross_entropy_bits", "bit estimates (unigram choice)"),
        (entropy.Encoder, "encode", "range coder (constriction + checks)"),
        (entropy.Decoder, "decode", "range coder (constriction + checks)"),
        (entropy.Encoder, "to_bytes", "range coder (constriction + checks)"),
        (entropy.Decoder, "__init__", "range coder (constriction + checks)"),
        (api, "open_file", "container (header, packets)"),
        (api, "write_header", "container (header, packets)"),
        (container.PacketWriter, "write", "container (header, packets)"),
        (container, "pack_streams", "container (header, packets)"),
        (container, "unpack_streams", "container (header, packets)"),
        (dsp.DCBlocker, "__call__", "dc blocker"),
        (media, "write_audio", "write output (soundfile, Pillow PNG)"),
        (media, "write_image", "write output (soundfile, Pillow PNG)"),
        (files, "check_target", "atomic output (checks, link, rename)"),
        (files, "_publish", "atomic output (checks, link, rename)"),
    ]:
        stages.wrap(owner, attr, name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("speech", type=Path)
    ap.add_argument("images", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from nmc.codec import batch as B, netcall

    server = netcall.Server("cpu", 1)
    netcall.connect(server.address, server.authkey)
    stages = Stages()
    instrument(stages)
    cases = [("hificodec-enc", args.speech, "hificodec"), ("hificodec-dec", None, "hificodec"),
             ("mcquic-enc", args.images, "mcquic"), ("mcquic-dec", None, "mcquic")]  # fmt: skip
    rows: dict[str, list[dict[str, float]]] = defaultdict(list)
    for rep in range(args.reps + 1):  # rep 0 warms up: models, priors' tables, imports (a worker has them after its first file)
        for case, src, codec in cases:
            dst = args.out / case
            shutil.rmtree(dst, ignore_errors=True)
            jobs = B.plan(src or args.out / case.replace("-dec", "-enc"), dst)
            stages.ms.clear()
            t0 = time.thread_time()
            for job in jobs:
                r = B.run_job(job, codec, None, False, False)
                assert r.status == "done", r.error
            total = 1e3 * (time.thread_time() - t0)
            n = len(jobs)
            row = {k: round(v / n, 2) for k, v in sorted(stages.ms.items(), key=lambda kv: -kv[1])}
            row["total"] = round(total / n, 2)
            print(json.dumps({"case": case, "rep": rep, "files": n, "ms_per_file": row}), flush=True)
            if rep:
                rows[case].append(row)
    server.close()
    for case, reps in rows.items():
        print(f"\n{case} ({args.reps} repetitions, median ms per file)\n\n| stage | ms per file |\n|---|---|")
        names = sorted({k for r in reps for k in r}, key=lambda k: (k == "total", -statistics.median(r.get(k, 0.0) for r in reps)))
        for k in names:
            print(f"| {k} | {statistics.median(r.get(k, 0.0) for r in reps):.1f} |")


if __name__ == "__main__":
    main()
