"""Measure the coding core on a `.ply` sequence: rate, render quality, gate, speed (CPU).

    python -m nmc.models.queen.scenes .data/gaussians/g20k --gaussians 20000 --frames 12
    python -m nmc.models.queen.measure .data/gaussians/g20k --group 12 --lam 1e-6 --json out.json

Frames are read one group at a time (as the adapter will stream them), coded, decoded by a
separate decoder, and compared: bits per Gaussian and MB per frame count every byte of the
streams (group headers included, not the container's few bytes); PSNR is between renders of
the decoded and the original frames from held-out cameras (codec/splatting.py); when the folder holds
`static.npy` (the generator's truth), the share of static Gaussians whose decoded position
never changes after the keyframe is reported. Decoding is timed frame by frame (wall clock and
process CPU seconds), first as the frames are coded, then `decodes - 1` more times over the whole
stream with fresh decoders; `*_best` is the fastest pass (the figure on a shared machine).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nmc.codec import media as M
from nmc.codec import splatting as render

from .core import GroupDecoder, GroupEncoder, Settings
from .scenes import held_out_cameras


@dataclass
class DecodeTimes:
    """Seconds of one decoding pass: all frames (wall, CPU), keyframes, residual frames."""

    wall: float = 0.0
    cpu: float = 0.0
    keyframe: float = 0.0
    residual: float = 0.0
    residual_frames: int = 0

    def frames(self, dec: GroupDecoder, header: bytes, packets: list[bytes], keyframe: bool) -> Iterator[np.ndarray]:
        """The group's decoded frames, each timed."""
        out = dec.decode_group(header, packets)
        for k in range(len(packets)):
            t0, c0 = time.perf_counter(), time.process_time()
            frame = next(out)
            dt = time.perf_counter() - t0
            self.wall, self.cpu = self.wall + dt, self.cpu + time.process_time() - c0
            if k or not keyframe:
                self.residual, self.residual_frames = self.residual + dt, self.residual_frames + 1
            else:
                self.keyframe += dt
            yield frame

    def summary(self, frames: int, suffix: str = "") -> dict[str, float | None]:
        return {f"decode_frames_per_s{suffix}": frames / self.wall, f"decode_keyframe_s{suffix}": self.keyframe,
                f"decode_residual_frames_per_s{suffix}": self.residual_frames / self.residual if self.residual_frames else None,
                f"decode_cpu_s_per_frame{suffix}": self.cpu / frames}


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
    decodes: int = 1,  # decoding passes over the whole stream (the first as the frames are coded)
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
    total_bytes, enc_s, psnrs, fit_s, first, coded_groups = 0, 0.0, [], 0.0, DecodeTimes(), []
    moved = np.zeros(n, bool)
    key_pos = None
    for g0 in range(0, len(files), group):
        originals = [next(stream) for _ in files[g0 : g0 + group]]
        t0 = time.perf_counter()
        coded = enc.encode_group(originals)
        enc_s += time.perf_counter() - t0
        fit_s += coded.meta["fit_seconds"]
        total_bytes += len(coded.header) + sum(len(p) for p in coded.packets)
        coded_groups.append((coded.header, coded.packets, coded.meta["keyframe"]))
        # each decoded frame is compared and dropped before the next is decoded (as `nmc decompress`
        # writes and drops it): holding a group of them made every frame's copy fault in new memory
        for k, (orig, out) in enumerate(zip(originals, first.frames(dec, *coded_groups[-1]))):
            key_pos = out[:, :3].copy() if key_pos is None else key_pos
            moved |= np.any(out[:, :3] != key_pos, axis=1)
            if (g0 + k) % psnr_every == 0:
                psnrs += [render.psnr(render.render(orig, layout, c), render.render(out, layout, c)) for c in cams]
        print(f"frames {g0}..{g0 + len(originals) - 1}: {coded.meta['packet_bytes']} bytes, header {len(coded.header)}, "
              f"positions updated {coded.meta['positions_updated']}", flush=True)
    t = len(files)
    passes = [first]
    for _ in range(decodes - 1):
        passes.append(DecodeTimes())
        again = GroupDecoder(layout, n)
        for group_packets in coded_groups:
            for _ in passes[-1].frames(again, *group_packets):
                pass
    result: dict[str, float | int | str | None] = {
        "folder": str(folder), "gaussians": n, "frames": t, "sh_degree": layout.sh_degree, "lam": lam, "group": group,
        "bits_per_gaussian": 8 * total_bytes / (n * t), "mb_per_frame": total_bytes / t / 1e6,
        "ply_mb_per_frame": sum(f.stat().st_size for f in files) / t / 1e6,
        "psnr_mean": float(np.mean(psnrs)), "psnr_min": float(np.min(psnrs)),
        "static_without_update": None if static is None else float(1 - moved[static].mean()),
        "encode_s_per_frame": enc_s / t, "encode_fit_s": fit_s, **first.summary(t),
        "decodes": decodes, **min(passes, key=lambda p: p.wall).summary(t, "_best"), "threads": threads, "device": device,
    }
    result["ratio_to_ply"] = sum(f.stat().st_size for f in files) / total_bytes
    print(json.dumps(result, indent=1))
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    import typer

    typer.run(main)
