#!/usr/bin/env python3
"""`python scripts/batch_cpu.py SRC REPS`: CPU seconds per file of nmc batch with 1 and 2 local workers (this process and its reaped workers):
on a shared box the wall time depends on the other jobs; the CPU time a file costs much less."""
import json, resource, shutil, sys, tempfile, time
from pathlib import Path
from nmc.codec import batch as B

def cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime

if __name__ == "__main__":
    src, reps, tmp = Path(sys.argv[1]), int(sys.argv[2]), Path(tempfile.mkdtemp())
    warm = B.plan(src, tmp / "warm")[:2]
    assert all(r.status == "done" for r in B.run(warm, workers=1))
    for rep in range(reps):
        for w in (1, 2):
            dst = tmp / f"w{w}"; shutil.rmtree(dst, ignore_errors=True)
            jobs = B.plan(src, dst)
            c0, t0 = cpu(), time.perf_counter()
            n = sum(r.status == "done" for r in B.run(jobs, workers=w))
            t, c = time.perf_counter() - t0, cpu() - c0
            print(json.dumps({"src": src.name, "workers": w, "rep": rep, "files": n, "wall": round(t, 2), "cpu": round(c, 2), "cpu_per_file": round(c / n, 4), "load": open("/proc/loadavg").read().split()[0]}), flush=True)
