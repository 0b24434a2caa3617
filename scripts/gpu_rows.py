"""Does a row's result depend on the batch it runs in, on this device, and what does a call cost?

`nmc batch` pads every GPU call of a network function to its rows (`netcall.rows_per_call`: the
codec's `gpu_rows`, else `netcall.GPU_ROWS`) so that a row never depends on its batch (oneDNN and
cuDNN choose kernels by batch size; on the CPU a 64x96 crop differed in ULPs between batch 1 and
3). The padding costs a full call for a lone file. This probe runs each network function of the
shipped codecs on batches of 1, 2, 4, 8, 16 and 32 real rows (`--sizes`) (the dev photos and 2-s
windows of the dev clips) and reports, per batch size, how many rows equal the same rows of a
call of the function's rows bit for bit, the largest difference, and the median seconds per call
(3 runs after a warm-up), as JSON lines.

    python -P scripts/gpu_rows.py DATA OUT.jsonl --device cuda
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from nmc.codec import api, netcall
from nmc.codec import media as M
from nmc.codec.registry import get_codec



def photo_rows(folder: Path, n: int) -> np.ndarray:
    """n RGB photos of one size: the dev photos, then their mirror images."""
    photos = [M.to_rgb8(M.read_image(p))[0] for p in sorted(folder.iterdir())]
    shape = photos[0].shape
    photos = [p for p in photos if p.shape == shape]
    rows = [p if (i // len(photos)) % 2 == 0 else p[:, ::-1] for i, p in zip(range(n), photos * n)]
    return np.ascontiguousarray(np.stack(rows))


def clip_rows(folder: Path, n: int, seconds: float = 2.0) -> np.ndarray:
    """n windows `(n, 1, T)` of 16 kHz speech from the dev clips, as the encoder sees them."""
    rows: list[np.ndarray] = []
    for p in sorted(folder.iterdir()):
        _, audio = api.load_media(p)
        assert isinstance(audio, M.Audio)
        x = M.Audio.from_array(audio.to_array(), audio.sample_rate).to_array().mean(axis=1)
        if audio.sample_rate != 16000:
            continue
        step = int(seconds * 16000)
        rows += [x[i : i + step] for i in range(0, len(x) - step + 1, step)]
    rows = (rows * n)[:n]
    return np.stack(rows).astype(np.float32)[:, None]


def probe(name: str, fn: str, arrays: tuple[np.ndarray, ...], static: dict[str, Any], device: str, sizes: list[int]) -> dict[str, Any]:
    codec = get_codec(name)
    net, call = codec.model.net, getattr(codec, f"net_{fn}")  # type: ignore[attr-defined]
    rows = netcall.rows_per_call(codec, fn)  # type: ignore[arg-type]
    k = rows if rows in sizes else max(sizes)  # the reference batch: a call of `nmc batch`
    ref = netcall._run(net, device, call, tuple(a[:k] for a in arrays), static)
    out: dict[str, Any] = {"codec": name, "fn": fn, "row_shapes": [list(a.shape[1:]) for a in arrays], "device": device, "sizes": {}}
    for n in sizes:
        part = tuple(a[:n] for a in arrays)
        got = netcall._run(net, device, call, part, static)  # warm-up (cuDNN picks its kernels)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            got = netcall._run(net, device, call, part, static)
            times.append(time.perf_counter() - t)
        m = min(n, k)
        equal = [all(np.array_equal(g[i], r[i]) for g, r in zip(got, ref)) for i in range(m)]
        diff = max(float(np.abs(g[:m].astype(np.float64) - r[:m].astype(np.float64)).max()) for g, r in zip(got, ref))
        out["sizes"][n] = {f"rows_equal_to_batch{k}": f"{sum(equal)}/{m}", "max_diff": diff, "s_per_call": round(float(np.median(times)), 5)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, help="a folder with images/ and speech/")
    ap.add_argument("out", type=Path)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sizes", default="1,2,4,8,16,32", help="batch sizes (a CPU dry run: 1,2)")
    args = ap.parse_args()
    api.use_device(args.device)
    sizes = [int(v) for v in args.sizes.split(",")]
    n = max(sizes)
    photos = photo_rows(args.data / "images", n)
    clips = clip_rows(args.data / "speech", n)
    mcquic, hifi = get_codec("mcquic"), get_codec("hificodec")
    coarse, *fine = netcall.run_here(mcquic, "compress", (photos,), {"stages": 2})  # type: ignore[arg-type]
    (idx,) = netcall.run_here(hifi, "encode", (clips,), {"levels": 2})  # type: ignore[arg-type]
    cases = [
        ("mcquic", "compress", (photos,), {"stages": 2}),
        ("mcquic", "decompress", (coarse.astype(np.uint8), *(f.astype(np.uint8) for f in fine)), {"shape": photos.shape[1:3], "gray": False}),
        ("hificodec", "encode", (clips,), {"levels": 2}),
        ("hificodec", "decode", (idx,), {}),
    ]
    with open(args.out, "a") as fo:
        for case in cases:
            row = probe(*case, device=args.device, sizes=sizes)
            fo.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
