#!/usr/bin/env python3
"""`python -P scripts/batch_start.py SRC DST WORKERS`: one `nmc batch` run with a shared network forced on
the CPU (the path of a GPU run) in this fresh process, as one JSON line: seconds from `batch.run` to its first
result and to its end (planning before), and the CPU seconds of the process and its reaped workers; run it
with two checkouts (PYTHONPATH) in turn to compare how they start."""
import json, resource, shutil, sys, time
from pathlib import Path

import nmc.codec
from nmc.codec import batch as B

src, dst, w = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
shutil.rmtree(dst, ignore_errors=True)
jobs = B.plan(src, dst)
t0, first, n = time.perf_counter(), 0.0, 0
for r in B.run(jobs, workers=w, device="cpu", share_network=True):
    first, n = first or time.perf_counter() - t0, n + (r.status == "done")
wall = time.perf_counter() - t0
cpu = sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))
print(json.dumps({"code": str(Path(nmc.codec.__file__).parent.parent), "src": src.name, "files": n, "first_s": round(first, 2),
                  "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "load": open("/proc/loadavg").read().split()[0]}))
