"""The cross-device check of scripts/device_crossdevice.sh (needs a CUDA device).

Every photo and speech clip in DATA is coded on the CPU and on the GPU, and each file is decoded on
both. Against the CPU-only path (encode and decode on the CPU) it reports per file the PSNR or
PESQ-WB difference, the largest pixel or sample difference and whether the bytes are the same; with
`--batched DIR` (the output of `nmc batch DATA DIR --device cuda`) also whether the GPU's
one-file-at-a-time bytes equal the batched ones. Limits (issue 13): 0.05 dB PSNR, 0.02 PESQ.

    python -P scripts/crossdevice.py DATA OUT.json [--batched DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from nmc.codec import api
from nmc.codec import media as M
from nmc.codec.metrics import pesq_wb, psnr

SETTING = {"image": ("mcquic", "q2"), "audio": ("hificodec", "2kbps")}


def coded(kind: str, media: M.Image | M.Audio, device: str) -> bytes:
    api.use_device(device)
    codec, setting = SETTING[kind]
    return api.compress(codec, media, setting)


def decoded(data: bytes, device: str) -> np.ndarray:
    api.use_device(device)
    media = api.decompress(data)
    return media.pixels if isinstance(media, M.Image) else media.to_array()


def quality(kind: str, ref: np.ndarray, rate: int, out: np.ndarray) -> float:
    return psnr(M.to_rgb8(M.Image(ref))[0], M.to_rgb8(M.Image(out))[0]) if kind == "image" else pesq_wb(ref, rate, out, 16000)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--batched", type=Path)
    ap.add_argument("--gpu", default="cuda", help="the device to compare with the CPU (cpu: a dry run)")
    args = ap.parse_args()
    found = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in M.IMAGE_SUFFIXES | M.AUDIO_SUFFIXES)
    kinds = [[p for p in found if p.suffix.lower() in M.IMAGE_SUFFIXES], [p for p in found if p.suffix.lower() in M.AUDIO_SUFFIXES]]
    files = [p for pair in itertools.zip_longest(*kinds) for p in pair if p is not None]  # photos and clips alternate
    rows: list[dict] = []
    summary: dict[str, dict] = {}
    for path in files:
        kind, media = api.load_media(path)
        if isinstance(media, M.Audio):
            media = M.Audio.from_array(media.to_array(), media.sample_rate)
        ref, rate = (media.pixels, 0) if isinstance(media, M.Image) else (media.to_array(), media.sample_rate)
        t = time.perf_counter()
        data = {"cpu": coded(kind, media, "cpu"), "cuda": coded(kind, media, args.gpu)}
        base = decoded(data["cpu"], "cpu")
        base_q = quality(kind, ref, rate, base)
        row = {"file": str(path.relative_to(args.data)), "kind": kind, "cpu_quality": base_q, "same_bytes": data["cpu"] == data["cuda"], "pairs": {}}
        for enc in ("cpu", "cuda"):
            for dec in ("cpu", "cuda"):
                out = base if (enc, dec) == ("cpu", "cpu") else decoded(data[enc], dec if dec == "cpu" else args.gpu)
                q = quality(kind, ref, rate, out)
                row["pairs"][f"{enc}->{dec}"] = {
                    "quality": q, "delta": q - base_q,
                    "max_diff": float(np.abs(out.astype(np.float64) - base.astype(np.float64)).max()) * (1 if kind == "image" else 32768),
                }  # fmt: skip
        if args.batched is not None:
            batched = args.batched / (path.relative_to(args.data).as_posix() + ".nmc")
            row["batched_equals_single"] = batched.read_bytes() == data["cuda"] if batched.exists() else None
        row["seconds"] = round(time.perf_counter() - t, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
        summary = summarize(rows, args.batched is not None)
        args.out.write_text(json.dumps({"summary": summary, "files": rows}, indent=1))  # after each file: a time limit keeps the rows so far
    print(json.dumps(summary, indent=1))


def summarize(rows: list[dict], batched: bool) -> dict[str, dict]:
    summary = {}
    for kind, limit in (("image", 0.05), ("audio", 0.02)):
        mine = [r for r in rows if r["kind"] == kind]
        deltas = [abs(p["delta"]) for r in mine for p in r["pairs"].values() if np.isfinite(p["delta"])]
        summary[kind] = {
            "files": len(mine), "metric": "psnr" if kind == "image" else "pesq", "limit": limit,
            "max_abs_delta": max(deltas, default=None), "within_limit": all(d <= limit for d in deltas),
            "max_diff": max((p["max_diff"] for r in mine for p in r["pairs"].values()), default=None),
            "max_diff_unit": "8-bit levels" if kind == "image" else "16-bit LSB",
            "gpu_cpu_same_bytes": sum(r["same_bytes"] for r in mine),
            "batched_equals_single": sum(bool(r.get("batched_equals_single")) for r in mine) if batched else None,
        }  # fmt: skip
    return summary


if __name__ == "__main__":
    main()
