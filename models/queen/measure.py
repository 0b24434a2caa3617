"""Measure the coding core on a `.ply` sequence: rate, render quality, gate, speed (CPU).

    python -m nmc.models.queen.scenes .data/gaussians/g20k --gaussians 20000 --frames 12
    python -m nmc.models.queen.measure .data/gaussians/g20k --group 12 --lam 1e-6 --json out.json

Frames are read one group at a time (as the adapter will stream them), coded, decoded by a
separate decoder, and compared: bits per Gaussian and MB per frame count every byte of the
streams (group headers included, not the container's few bytes); PSNR is between renders of
the decoded and the original frames from held-out cameras (codec/splatting.py); when the folder holds
`static.npy` (the generator's truth), the share of static Gaussians whose decoded position
never changes after the keyframe is reported.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from nmc.codec import media as M
from nmc.codec import splatting as render

from .core import GroupDecoder, GroupEncoder, Settings
from .scenes import held_out_cameras


def main(
    folder: Path,
    lam: float = 1e-6,  # Settings.lam
    group: int = 10,  # frames per group (decoders are fitted once per group)
    frames: int = 0,  # 0: all
    fit_steps: int = 300,
    gate_steps: int = 150,
    fit_rows: int = 20_000,
    size: str = "96x72",  # render size of the held-out views
    cameras: int = 4,
    psnr_every: int = 1,  # render every n-th frame
    threads: int = 1,
    device: str = "cpu",  # where the encoder fits its decoders and gate (cuda on a GPU machine)
    json_out: str = "",  # also write the result here
) -> None:
    torch.set_num_threads(threads)
    if device != "cpu":
        torch.zeros(1, device=device)  # the device's context starts once per process, outside the timing
    seq = M.read_gaussians(folder)
    files = [folder / name for name in seq.names][: frames or None]
    static_path = folder / "static.npy"
    static = np.load(static_path) if static_path.exists() else None
    layout, n = seq.layout, seq.counts[0]
    settings = Settings(lam=lam, fit_steps=fit_steps, gate_steps=gate_steps, fit_rows=fit_rows, device=device)
    enc, dec = GroupEncoder(layout, settings), GroupDecoder(layout, n)
    w, h = (int(v) for v in size.split("x"))
    cams = held_out_cameras((w, h), cameras)
    stream = seq.frames()
    total_bytes, enc_s, dec_s, delta_s, delta_n, psnrs, fit_s, key_s = 0, 0.0, 0.0, 0.0, 0, [], 0.0, 0.0
    moved = np.zeros(n, bool)
    key_pos = None
    for g0 in range(0, len(files), group):
        originals = [next(stream) for _ in files[g0 : g0 + group]]
        t0 = time.perf_counter()
        coded = enc.encode_group(originals)
        enc_s += time.perf_counter() - t0
        fit_s += coded.meta["fit_seconds"]
        total_bytes += len(coded.header) + sum(len(p) for p in coded.packets)
        decoded, frames_out = [], dec.decode_group(coded.header, coded.packets)
        for k in range(len(coded.packets)):
            t0 = time.perf_counter()
            decoded.append(next(frames_out))
            dt = time.perf_counter() - t0
            dec_s += dt
            if k or not coded.meta["keyframe"]:
                delta_s, delta_n = delta_s + dt, delta_n + 1
            else:
                key_s += dt
        for k, (orig, out) in enumerate(zip(originals, decoded)):
            key_pos = out[:, :3].copy() if key_pos is None else key_pos
            moved |= np.any(out[:, :3] != key_pos, axis=1)
            if (g0 + k) % psnr_every == 0:
                psnrs += [render.psnr(render.render(orig, layout, c), render.render(out, layout, c)) for c in cams]
        print(f"frames {g0}..{g0 + len(originals) - 1}: {coded.meta['packet_bytes']} bytes, header {len(coded.header)}, "
              f"positions updated {coded.meta['positions_updated']}", flush=True)
    t = len(files)
    result: dict[str, float | int | str | None] = {
        "folder": str(folder), "gaussians": n, "frames": t, "sh_degree": layout.sh_degree, "lam": lam, "group": group,
        "bits_per_gaussian": 8 * total_bytes / (n * t), "mb_per_frame": total_bytes / t / 1e6,
        "ply_mb_per_frame": sum(f.stat().st_size for f in files) / t / 1e6,
        "psnr_mean": float(np.mean(psnrs)), "psnr_min": float(np.min(psnrs)),
        "static_without_update": None if static is None else float(1 - moved[static].mean()),
        "encode_s_per_frame": enc_s / t, "encode_fit_s": fit_s, "decode_frames_per_s": t / dec_s, "decode_keyframe_s": key_s,
        "decode_residual_frames_per_s": delta_n / delta_s if delta_n else None, "threads": threads, "device": device,
    }
    result["ratio_to_ply"] = sum(f.stat().st_size for f in files) / total_bytes
    print(json.dumps(result, indent=1))
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    import typer

    typer.run(main)
