"""Speed of `nmc eval`'s points (coding + metrics), for the CPU rows and scripts/device_crossdevice.sh.

Runs `evaluate.run` on PHOTOS with the given codecs and anchors into a fresh report folder and prints
one JSON line: points, seconds, seconds per point, and the means. Without matplotlib (the GPU image),
the report files fail at the plots; the points are computed and cached by then, and are counted.

    python -P scripts/eval_speed.py PHOTOS OUT.json --device cuda --workers 4 --anchors jpeg --codec mcquic
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from nmc.codec import evaluate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("photos", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--codec", default="")
    ap.add_argument("--anchors", default="jpeg")
    ap.add_argument("--report", type=Path, default=Path("/tmp/nmc_eval_speed"))
    args = ap.parse_args()
    shutil.rmtree(args.report, ignore_errors=True)
    names = [c for c in args.codec.split(",") if c]
    anchors = [a for a in args.anchors.split(",") if a]
    t = time.perf_counter()
    note = ""
    try:
        report = evaluate.run([args.photos], names, anchors, args.report, device=args.device, workers=args.workers)
        means = report["means"]
    except ModuleNotFoundError as err:  # matplotlib, for the plots
        note, means = f"report files not written: {err}", []
    seconds = time.perf_counter() - t
    points = len((args.report / "cache.jsonl").read_text().splitlines())
    row: dict[str, object] = {"device": args.device, "workers": args.workers, "codecs": names, "anchors": anchors, "points": points,
           "seconds": round(seconds, 1), "s_per_point": round(seconds / max(points, 1), 3), "note": note, "means": means}  # fmt: skip
    row["metrics_vs_cpu"] = metrics_vs_cpu(args.photos, args.device)
    args.out.write_text(json.dumps(row, indent=1) + "\n")
    print(json.dumps({k: v for k, v in row.items() if k != "means"}))


def metrics_vs_cpu(photos: Path, device: str) -> dict[str, float]:
    """Largest difference between MS-SSIM and ST-LPIPS on `device` and on the CPU (JPEG q10..q90 of one photo)."""
    import io

    import numpy as np
    from PIL import Image

    from nmc.codec.reference import ImageReference

    rgb = np.asarray(Image.open(sorted(photos.iterdir())[0]).convert("RGB"))
    decoded = []
    for q in (10, 50, 90):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=q)
        decoded.append(np.asarray(Image.open(buf).convert("RGB")))
    here, there = ImageReference(rgb, "cpu"), ImageReference(rgb, device)
    return {m: float(np.max(np.abs(np.subtract(getattr(here, m)(decoded), getattr(there, m)(decoded))))) for m in ("ms_ssim", "st_lpips")}


if __name__ == "__main__":
    main()
