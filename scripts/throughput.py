"""Throughput of `nmc batch` (the library's `batch.run`) for scripts/device_throughput.sh and the CPU rows.

Each run codes a directory of copies (links) of the dev photos or clips and prints one JSON line:
files, wall seconds, files/s and media/s (megapixels or seconds of audio) over the whole run and
once started (first to last finished file: the workers' start-up left out), the mean rows per
call of the shared network, where the start-up went (seconds after the run's start: the first
file done, `server_s`: the server thread started, had CUDA and the networks ready, got its first
call), the seconds the server spent running batches, the CPU seconds of the run (this process
and its workers; `cpu_main_s`: this process alone, with its imports, planning and the server) and
the whole process's seconds (each run is a fresh process, as an `nmc batch` command is). Runs are
skipped, not cut, when fewer than `--min-left` seconds of the `--budget` remain, so the call that
runs this always returns.

    python -P scripts/throughput.py DATA OUT.jsonl --device cuda --budget 240 \
        --runs img-enc:16,img-dec:16,img-enc:4,img-enc:16:rows16,img-enc:16:cpu,...

`rowsN`: every GPU call has N rows (the codecs' own `gpu_rows` off), to compare with their sizes.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nmc.codec import batch as B
from nmc.codec import netcall
from nmc.codec.registry import available

KINDS = {"img": "images", "speech": "speech", "speechvar": "speech"}  # speechvar: copies of distinct lengths


def copies(data: Path, kind: str, n: int, root: Path, distinct: bool = False) -> Path:
    """`root/<kind>`: n links to every file of `data/<kind>`; `distinct`: n copies of every clip
    cut to n different lengths (k codec frames of 20 ms shorter, k < n, at most half the clip), as
    a real directory of clips has, where no two calls need share a shape."""
    out = root / (kind + "var" if distinct else kind)
    if not out.exists():
        out.mkdir(parents=True)
        for f in sorted((data / kind).iterdir()):
            if distinct:
                import soundfile as sf

                x, rate = sf.read(f, dtype="float32", always_2d=True)
                step = rate // 50
                for k in range(n):
                    sf.write(out / f"c{k:03d}_{f.stem}.flac", x[: len(x) - min(k * step, len(x) // 2)], rate)
            else:
                for k in range(n):
                    (out / f"c{k:03d}_{f.name}").symlink_to(f.resolve())
    return out


def run(label: str, src: Path, dst: Path, workers: int, device: str, rows: int | None, share: bool | None = None) -> dict[str, object]:
    shutil.rmtree(dst, ignore_errors=True)
    if rows is not None:  # every GPU call `rows` rows, the codecs' own sizes off (the server runs in this process)
        netcall.GPU_ROWS = rows
        for cls in available().values():
            cls.gpu_rows = {}  # type: ignore[attr-defined]
    jobs, stats = B.plan(src, dst), {"calls": 0.0, "batches": 0.0}
    t0, stamps, amount, failed = time.perf_counter(), [], 0.0, []
    for r in B.run(jobs, workers=workers, device=device, batch_size=max(rows or 0, netcall.GPU_ROWS), share_network=share, stats=stats):
        stamps.append(time.perf_counter())
        if r.status != "done" or r.summary is None:
            failed.append(f"{r.job.src.name}: {r.error}")
            continue
        s = r.summary
        amount += 8 * s.bytes / s.rate / (1e6 if s.unit == "bpp" else 1e3)  # megapixels or seconds of audio
    wall = time.perf_counter() - t0
    started = stamps[-1] - stamps[0] if len(stamps) > 1 else float("nan")
    unit = "MP/s" if label.startswith("img") else "x realtime"
    usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]  # the workers are reaped by now
    server = {k[:-2]: round(stats[k], 2) for k in ("started_s", "warm_s", "first_call_s") if k in stats}  # seconds after the start
    return {
        "run": label, "workers": workers, "device": device, "rows": rows or ("codec" if device != "cpu" else 1), "files": len(stamps), "failed": len(failed), "errors": failed[:3],
        "wall_s": round(wall, 2), "files_per_s": round(len(stamps) / wall, 2), "speed": round(amount / wall, 1),
        "files_per_s_started": round((len(stamps) - 1) / started, 2), "speed_started": round(amount * (len(stamps) - 1) / len(stamps) / started, 1),
        "unit": unit, "mean_rows_per_call": round(stats["calls"] / stats["batches"], 2) if stats["batches"] else None,
        "first_file_s": round(stamps[0] - t0, 2) if stamps else None, "cpu_s": round(sum(u.ru_utime + u.ru_stime for u in usage), 1), "cpu_main_s": round(usage[0].ru_utime + usage[0].ru_stime, 1),
        "server_s": server, "server_busy_s": round(stats["busy_s"], 2) if "busy_s" in stats else None,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, help="a folder with images/ and speech/")
    ap.add_argument("out", type=Path)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--img-copies", type=int, default=32, help="copies of each photo (8 dev photos: 256)")
    ap.add_argument("--speech-copies", type=int, default=64, help="copies of each clip (18 dev clips, 61 s: 1152 files, 65 min)")
    ap.add_argument("--budget", type=float, default=240, help="seconds for all runs")
    ap.add_argument("--min-left", type=float, default=25, help="start no run with less time left")
    ap.add_argument("--runs", default="img-enc:16,img-dec:16,speech-enc:16,speech-dec:16", help="KIND-enc|dec:WORKERS[:cpu][:rowsN][:xK], KIND img, speech or speechvar (xK: K times the copies), comma-separated")
    ap.add_argument("--tmp", type=Path, default=Path("/tmp/nmc_throughput"))
    ap.add_argument("--share", action="store_true", help="share one network on the CPU too (a dry run of the GPU path)")
    ap.add_argument("--tag", default="", help="appended to every run's label (e.g. which CPUs the runs had)")
    ap.add_argument("--one", nargs=6, metavar=("LABEL", "SRC", "DST", "WORKERS", "DEVICE", "ROWS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:  # one run in this fresh process, as one `nmc batch` command would be
        label, src, dst, workers, device, rows = args.one
        print(json.dumps(run(label, Path(src), Path(dst), int(workers), device, int(rows) if rows != "codec" else None, True if args.share else None)))
        return
    start = time.perf_counter()
    encoded: dict[str, Path] = {}  # kind (and xK) -> the .nmc tree of its last encode run, for the decode runs
    for spec in args.runs.split(","):
        kind_dir, workers, *opts = spec.split(":")
        kind, direction = kind_dir.split("-")
        device = "cpu" if "cpu" in opts else args.device
        rows = next((o[4:] for o in opts if o.startswith("rows")), "codec")
        times = next((int(o[1:]) for o in opts if o.startswith("x")), 1)
        label = f"{kind_dir}-{'cpu' if device == 'cpu' else 'gpu'}-w{workers}" + (f"-rows{rows}" if rows != "codec" else "") + (f"-x{times}" if times > 1 else "") + args.tag
        key = kind + (f"x{times}" if times > 1 else "")
        left = args.budget - (time.perf_counter() - start)
        if left < args.min_left:
            row: dict[str, object] = {"run": label, "skipped": f"{left:.0f} s of the budget left"}
        else:
            n = times * (args.img_copies if kind == "img" else args.speech_copies)
            src = copies(args.data, KINDS[kind], n, args.tmp / f"src{n}", kind == "speechvar") if direction == "enc" else encoded.get(key)
            if src is None:
                row = {"run": label, "skipped": "no encode run before it"}
            else:
                # Each run in a fresh process (workers are forked from a process without CUDA, as in
                # `nmc batch`); process_s is its whole wall time, importing torch included.
                dst = args.tmp / f"{kind_dir}-{len(encoded)}-{spec.replace(':', '_')}"
                t0, cmd = time.perf_counter(), [sys.executable, "-P", __file__, str(args.data), str(args.out), "--one", label, str(src), str(dst), workers, device, str(rows)] + ["--share"] * args.share
                try:
                    done = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, left), check=False)
                    lines = done.stdout.strip().splitlines()
                    row = json.loads(lines[-1]) if done.returncode == 0 and lines else {"run": label, "failed_run": done.stderr[-600:]}
                except subprocess.TimeoutExpired:
                    row = {"run": label, "failed_run": f"cut after {left:.0f} s (the budget)"}
                row["process_s"] = round(time.perf_counter() - t0, 2)
                if direction == "enc" and rows == "codec" and not row.get("failed", 1):
                    encoded[key] = dst
        row["at_s"] = round(time.perf_counter() - start, 1)
        with open(args.out, "a") as fo:
            fo.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
