"""Fitted Gaussian sequences (issue 11, data b): Gaussians fitted to multi-view renders of a
generated scene, frame by frame, on a GPU, the way dynamic 3DGS methods train (3DGStream, QUEEN).

No dynamic 3DGS capture can be downloaded; fitted splats have statistics the generator only
imitates (every attribute of every Gaussian moves a little each frame, opacities and scales
spread as the optimiser leaves them). So: render a generated scene (`scenes.py`, no jitter,
the "teacher") from `cameras` views on a ring, and fit a "student" set of Gaussians to them:

    frame 0 ... student initialised like 3DGS from a point cloud (teacher positions + noise,
                their colours, isotropic scales from the 3 nearest neighbours, opacity 0.1,
                identity rotations, zero higher SH), then `steps0` Adam steps, L1 loss on one
                random view per step (3DGS learning rates; no densification: the count is
                constant, as the codec needs)
    frame t ... warm start from frame t-1, fresh Adam, `steps` steps (time-budgeted)

Renders use `splatting.composite_dense` (differentiable, dense) at `size`. The held-out cameras
(`scenes.held_out_cameras`, never trained on) go to cameras.json for `nmc eval`. Frames come
back losslessly packed (float32 bits XOR the previous frame, byte planes, lzma), so that a
sequence fits the 16 MiB files a device call returns:

    python -P -m nmc.models.queen.fit run OUT --minutes 6          # GPU: OUT/fitted_NN.xz, fit.json
    python -m nmc.models.queen.fit unpack OUT DEST                  # here: DEST/frame_NNNN.ply, cameras.json
"""

from __future__ import annotations

import json
import lzma
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import typer

from nmc.codec.media import GaussianLayout, Gaussians, write_gaussians
from nmc.codec.splatting import composite_dense, project, write_cameras
from nmc.codec.splatting import psnr as psnr_db

from .scenes import SceneConfig, build_base, fitting_cameras, generate, held_out_cameras, static_mask

app = typer.Typer(add_completion=False)
CHUNK_BYTES = 15 << 20  # packed frames per returned file (a device call returns files up to 16 MiB)
TOTAL_BYTES = 56 << 20  # all files (a call returns 64 MiB at most): later frames are dropped beyond it
LR = {"pos": 1.6e-4, "dc": 2.5e-3, "rest": 2.5e-3 / 20, "opacity": 0.05, "scale": 5e-3, "rot": 1e-3}  # 3DGS (pos x extent)


def init_student(first: np.ndarray, layout: GaussianLayout, n: int, rng: np.random.Generator, device: str) -> tuple[torch.Tensor, np.ndarray]:
    """3DGS-style initial Gaussians from a noisy point cloud of the teacher's first frame; and the teacher rows used."""
    sl, pick = layout.slices(), rng.choice(len(first), n, replace=False)
    pos = torch.tensor(first[pick, sl["pos"]] + rng.normal(0, 0.01, (n, 3)), dtype=torch.float32, device=device)
    knn = torch.cat([torch.cdist(pos[i : i + 4096], pos).topk(4, largest=False).values[:, 1:] for i in range(0, n, 4096)])
    m = torch.zeros(n, layout.channels, device=device)
    m[:, sl["pos"]] = pos
    m[:, sl["dc"]] = torch.tensor(first[pick, sl["dc"]], device=device)  # the point cloud's colours
    m[:, sl["opacity"]] = math.log(0.1 / 0.9)
    m[:, sl["scale"]] = torch.log(knn.pow(2).mean(1).sqrt().clamp_min(1e-4))[:, None]
    m[:, sl["rot"].start] = 1.0
    return m, pick


def fit_frame(m: torch.Tensor, layout: GaussianLayout, cams: list, targets: torch.Tensor, steps: int, extent: float,
              lr_scale: float, rng: np.random.Generator, deadline: float) -> tuple[torch.Tensor, int, float]:
    """Adam on every attribute (per-group 3DGS rates, all but positions times `lr_scale`) for `steps`
    steps or until `deadline`; the new frame, steps done, last loss."""
    sl = layout.slices()
    params = {g: m[:, s].clone().requires_grad_(True) for g, s in sl.items()}
    opt = torch.optim.Adam([{"params": [p], "lr": LR[g] * (extent if g == "pos" else lr_scale)} for g, p in params.items()], eps=1e-15)
    last, done = torch.tensor(math.nan), 0
    for done in range(1, steps + 1):
        k = int(rng.integers(len(cams)))
        x = torch.cat([params[g] for g in sl], 1)
        image = composite_dense(project(x, layout, cams[k], x.device), cams[k].width, cams[k].height)
        loss = (image - targets[k]).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last = loss.detach()
        if time.monotonic() > deadline:
            break
    return torch.cat([params[g].detach() for g in sl], 1), done, float(last)


def pack(m: np.ndarray, previous: np.ndarray | None) -> bytes:
    """Lossless: a frame's float32 bits XOR the previous frame's, as four byte planes (lzma'd by the caller)."""
    bits = m.view(np.uint32)
    delta = bits ^ previous.view(np.uint32) if previous is not None else bits
    return np.stack([(delta >> s).astype(np.uint8) for s in (24, 16, 8, 0)]).tobytes()


def unpack_frame(data: bytes, previous: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """The frame `pack` packed (after lzma), given the frame before it."""
    planes = np.frombuffer(data, np.uint8).reshape(4, -1).astype(np.uint32)
    bits = (planes[0] << 24) | (planes[1] << 16) | (planes[2] << 8) | planes[3]
    bits = bits ^ previous.view(np.uint32).ravel() if previous is not None else bits
    return bits.view(np.float32).reshape(shape)


@app.command()
def run(out: Path, teacher: int = 20000, student: int = 8000, frames: int = 30, cameras: int = 12, size: str = "160x120",
        steps0: int = 5000, steps: int = 300, minutes: float = 6.0, seed: int = 11, device: str = "cuda") -> None:
    """Fit a sequence (GPU) and write packed frames + fit.json to `out`."""
    start = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = SceneConfig(gaussians=teacher, frames=frames, seed=seed, jitter_pos=0.0, jitter_attr=0.0)
    layout, (w, h) = GaussianLayout(cfg.sh_degree), (int(v) for v in size.split("x"))
    cams = fitting_cameras((w, h), cameras)
    teach = list(generate(cfg))
    with torch.no_grad():
        targets = [torch.stack([composite_dense(project(f, layout, c, device), w, h) for c in cams]) for f in teach]
    extent = float(np.quantile(np.linalg.norm(teach[0][:, :3] - teach[0][:, :3].mean(0), axis=1), 0.9))
    m, pick = init_student(teach[0], layout, student, rng, device)
    held = held_out_cameras((w, h))  # never trained on: how well the student reproduces the scene
    fitted, log = [], []
    for t in range(frames):
        left = minutes * 60 - (time.monotonic() - start)
        share = 0.3 if t == 0 else 1 / (frames - t)  # frame 0 takes 30 % of the budget at most
        deadline = time.monotonic() + max(1.0, left * share)
        m, done, loss = fit_frame(m, layout, cams, targets[t], steps0 if t == 0 else steps, extent, 1.0 if t == 0 else 0.3, rng, deadline)
        fitted.append(m.cpu().numpy().astype(np.float32))
        with torch.no_grad():
            views = [(composite_dense(project(m, layout, c, device), w, h), composite_dense(project(teach[t], layout, c, device), w, h)) for c in held]
        psnr = float(np.mean([psnr_db(a, b) for a, b in views]))
        log.append({"frame": t, "steps": done, "l1": loss, "held_out_psnr": round(psnr, 2), "s": round(time.monotonic() - start, 1)})
        print(json.dumps(log[-1]), flush=True)
    with ThreadPoolExecutor(8) as pool:  # lzma drops the GIL
        blobs = list(pool.map(lambda t: lzma.compress(pack(fitted[t], fitted[t - 1] if t else None), preset=6), range(frames)))
    files: list[list[int]] = []
    current: list[int] = []
    size_now = 0
    kept = len(blobs)
    while sum(map(len, blobs[:kept])) > TOTAL_BYTES:
        kept -= 1
    for t, blob in enumerate(blobs[:kept]):
        if size_now + len(blob) > CHUNK_BYTES and current:
            files.append(current)
            current, size_now = [], 0
        current.append(t)
        size_now += len(blob)
    files.append(current)
    for k, ts in enumerate(files):
        (out / f"fitted_{k:02d}.xz").write_bytes(b"".join(len(blobs[t]).to_bytes(4, "little") + blobs[t] for t in ts))
    meta = {"teacher": teacher, "student": student, "frames": frames, "cameras": cameras, "size": size, "seed": seed, "extent": extent,
            "sh_degree": cfg.sh_degree, "log": log, "static_truth": static_mask(build_base(cfg))[pick].tolist(),
            "frames_returned": kept, "packed_bytes": sum(map(len, blobs)), "raw_bytes": sum(f.nbytes for f in fitted), "seconds": round(time.monotonic() - start, 1),
            "device": torch.cuda.get_device_name() if device == "cuda" else device}
    (out / "fit.json").write_text(json.dumps(meta))
    print(f"{kept} of {frames} frames of {student} Gaussians in {len(files)} files, {meta['packed_bytes'] / 2**20:.1f} MiB "
          f"(raw {meta['raw_bytes'] / 2**20:.1f}), {meta['seconds']} s", flush=True)


@app.command()
def unpack(src: Path, dest: Path) -> None:
    """The `.ply` frames (+ cameras.json with the held-out cameras, static.npy) of a fitted run in `src`."""
    meta = json.loads((src / "fit.json").read_text())
    layout, frames, previous = GaussianLayout(meta["sh_degree"]), [], None
    for path in sorted(src.glob("fitted_*.xz")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            n = int.from_bytes(data[pos : pos + 4], "little")
            previous = unpack_frame(lzma.decompress(data[pos + 4 : pos + 4 + n]), previous, (meta["student"], layout.channels))
            frames.append(previous)
            pos += 4 + n
    write_gaussians(dest, Gaussians.from_matrices(layout, frames))
    np.save(dest / "static.npy", np.array(meta["static_truth"], bool))  # students initialised on the static background
    write_cameras(dest / "cameras.json", held_out_cameras())
    print(f"{len(frames)} frames of {meta['student']} Gaussians in {dest}")


if __name__ == "__main__":
    app()
