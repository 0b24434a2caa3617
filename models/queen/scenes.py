"""Procedural animated 3DGS scenes: seeded, streamable, with the truth of which Gaussians are static.

No dynamic 3DGS capture can be downloaded, so the codec is developed on scenes made here.
They follow the statistics of fitted splats: flat disks lying on surfaces (two large scales,
one small, oriented by the surface frame), bimodal opacity logits (most Gaussians nearly
opaque, a tail of faint ones), textured colours in the DC term, small heavy-tailed
view-dependent SH coefficients up to degree 3, unnormalised quaternions, and a small
re-fitting jitter on every attribute of every frame (fitted sequences never repeat a static
Gaussian exactly).

    ground disk + dome ........ static background (a patch of the dome is a lamp that pulses)
    body (ellipsoid) .......... rigid motion: yaw + translation along a loop, a colour band
                                sweeping over it, slow breathing of its scales
    tail (cylinder) ........... non-rigid: bends more towards its tip; the tip fades in and out

    python -m nmc.models.queen.scenes OUT_DIR --gaussians 100000 --frames 30 --seed 0

writes OUT_DIR/frame_0000.ply ... (standard 3DGS vertex properties, normals as zeros),
OUT_DIR/static.npy (bool per Gaussian: True where the position never changes beyond jitter) and
OUT_DIR/cameras.json (the held-out cameras, in the 3DGS format, from which `nmc eval` renders).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from nmc.codec.media import REST_COUNTS, GaussianLayout, Gaussians, Matrix, write_gaussians
from nmc.codec.splatting import Camera, orbit, write_cameras

SH_C0 = 0.28209479177387814
PARTS = ("ground", "dome", "body", "tail")
SHARES = (0.35, 0.35, 0.2, 0.1)  # of the Gaussians per part


@dataclass(frozen=True)
class SceneConfig:
    gaussians: int = 2000
    frames: int = 8
    sh_degree: int = 3
    seed: int = 0
    jitter_pos: float = 2e-4  # std of the per-frame re-fitting noise on positions (scene units)
    jitter_attr: float = 1e-3  # ... on colour, opacity, scale and rotation parameters (raw units)


@dataclass
class Base:
    """Time-independent state: surface samples, their frames, and the appearance at rest."""

    part: npt.NDArray[np.int8]  # index into PARTS
    pos: np.ndarray  # (N, 3) rest position (object parts in object coordinates)
    frame: np.ndarray  # (N, 3, 3) columns: tangent, bitangent, normal
    log_scale: np.ndarray  # (N, 3)
    quat_norm: np.ndarray  # (N,) raw quaternions of fitted splats are not unit length
    rgb: np.ndarray  # (N, 3) albedo in [0, 1]
    rest: np.ndarray  # (N, 3 * k) f_rest in 3DGS order (all red coefficients, then green, then blue)
    opacity: np.ndarray  # (N,) logit
    lamp: np.ndarray  # (N,) bool: the pulsing dome patch
    u: np.ndarray  # (N,) position along the tail, 0 at the body, 1 at the tip (0 elsewhere)


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _frames_from_normals(n: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Orthonormal frames `(N, 3, 3)` with the normal as third column and a random in-plane twist."""
    helper = np.where(np.abs(n[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
    t = _normalize(np.cross(helper, n))
    b = np.cross(n, t)
    phi = rng.uniform(0, 2 * np.pi, len(n))[:, None]
    t, b = np.cos(phi) * t + np.sin(phi) * b, -np.sin(phi) * t + np.cos(phi) * b
    return np.stack([t, b, n], axis=2)


def _surface(part: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Positions, normals, surface area and the tail coordinate of n samples on one part."""
    u = np.zeros(n)
    if part == "ground":  # disk of radius 4.5 at z = -1
        r, th = 4.5 * np.sqrt(rng.uniform(size=n)), rng.uniform(0, 2 * np.pi, n)
        p = np.stack([r * np.cos(th), r * np.sin(th), -np.ones(n)], axis=1)
        return p, np.tile([0.0, 0.0, 1.0], (n, 1)), np.pi * 4.5**2, u
    if part == "dome":  # upper hemisphere of radius 5 around (0, 0, -1), normals inwards
        d = _normalize(rng.normal(size=(n, 3)))
        d[:, 2] = np.abs(d[:, 2])
        return np.array([0.0, 0.0, -1.0]) + 5 * d, -d, 2 * np.pi * 25, u
    if part == "body":  # ellipsoid
        radii = np.array([0.6, 0.45, 0.4])
        d = _normalize(rng.normal(size=(n, 3)))
        return d * radii, _normalize(d / radii), 4 * np.pi * 0.48**2, u
    u = rng.uniform(size=n)  # tail: cylinder along +x from the body's side
    phi = rng.uniform(0, 2 * np.pi, n)
    p = np.stack([0.55 + 0.9 * u, 0.12 * np.cos(phi), 0.12 * np.sin(phi)], axis=1)
    return p, np.stack([np.zeros(n), np.cos(phi), np.sin(phi)], axis=1), 2 * np.pi * 0.12 * 0.9, u


def _albedo(part: str, p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Textures: a checkerboard floor, a sky gradient, a striped body, a plain tail; plus noise."""
    noise = rng.normal(0, 0.04, (len(p), 3))
    if part == "ground":
        check = (np.floor(p[:, 0] * 1.5) + np.floor(p[:, 1] * 1.5)) % 2
        rgb = np.where(check[:, None] > 0, [[0.75, 0.7, 0.6]], [[0.25, 0.3, 0.35]])
    elif part == "dome":
        h = (p[:, 2:3] + 1) / 5
        rgb = (1 - h) * np.array([[0.85, 0.8, 0.7]]) + h * np.array([[0.3, 0.5, 0.85]])
    elif part == "body":
        stripe = 0.5 + 0.5 * np.sin(14 * p[:, 0:1])
        rgb = stripe * np.array([[0.9, 0.45, 0.1]]) + (1 - stripe) * np.array([[0.2, 0.15, 0.1]])
    else:
        rgb = np.tile([[0.2, 0.6, 0.3]], (len(p), 1))
    return np.clip(rgb + noise, 0.02, 0.98)


def build_base(cfg: SceneConfig) -> Base:
    """Sample every part once (seeded); the frames are deterministic functions of this and t."""
    rng = np.random.default_rng(cfg.seed)
    counts = np.floor(np.array(SHARES) * cfg.gaussians).astype(int)
    counts[0] += cfg.gaussians - counts.sum()
    fields: dict[str, list[np.ndarray]] = {k: [] for k in ("part", "pos", "frame", "log_scale", "rgb", "u")}
    for k, (part, n) in enumerate(zip(PARTS, counts)):
        p, nrm, area, u = _surface(part, int(n), rng)
        spacing = np.sqrt(area / max(int(n), 1))
        s = spacing * 0.7 * np.exp(rng.normal(0, 0.3, n))  # in-plane extent
        scales = np.stack([s * np.exp(rng.normal(0, 0.2, n)), s * np.exp(rng.normal(0, 0.2, n)), s * rng.uniform(0.05, 0.2, n)], 1)
        fields["part"].append(np.full(n, k, np.int8))
        fields["pos"].append(p)
        fields["frame"].append(_frames_from_normals(nrm, rng))
        fields["log_scale"].append(np.log(scales))
        fields["rgb"].append(_albedo(part, p, rng))
        fields["u"].append(u)
    b = {k: np.concatenate(v) for k, v in fields.items()}
    n_total = cfg.gaussians
    k = REST_COUNTS[cfg.sh_degree] // 3
    degree_of = np.concatenate([np.full(2 * d + 1, d) for d in range(1, cfg.sh_degree + 1)]) if k else np.zeros(0)
    std = np.array([0.0, 0.04, 0.025, 0.015])[degree_of.astype(int)]
    rest = rng.laplace(0, 1, (n_total, 3, k)) * std * np.exp(rng.normal(0, 0.5, (n_total, 1, 1)))
    opaque = rng.uniform(size=n_total) < 0.75
    opacity = np.where(opaque, rng.normal(4.0, 1.5, n_total), rng.normal(-1.0, 1.5, n_total))
    dome_dir = _normalize(b["pos"] - [0.0, 0.0, -1.0])
    lamp = (b["part"] == 1) & (dome_dir @ _normalize(np.array([-1.0, 0.3, 0.35])) > 0.93)
    return Base(b["part"], b["pos"], b["frame"], b["log_scale"], np.exp(rng.normal(0, 0.2, n_total)),
                b["rgb"], rest.reshape(n_total, 3 * k), opacity, lamp, b["u"])


def static_mask(base: Base) -> npt.NDArray[np.bool_]:
    """True for Gaussians whose position never moves (the background, the lamp included)."""
    return base.part <= 1


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_y(a: np.ndarray) -> np.ndarray:
    """Rotations `(N, 3, 3)` about y by the angles a."""
    c, s, z, o = np.cos(a), np.sin(a), np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def quat_from_matrix(m: np.ndarray) -> np.ndarray:
    """Unit quaternions (w, x, y, z) of rotation matrices `(N, 3, 3)` (Shepperd's method)."""
    tr = np.trace(m, axis1=1, axis2=2)
    cand = np.stack([
        np.stack([1 + tr, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], 1),
        np.stack([m[:, 2, 1] - m[:, 1, 2], 1 + 2 * m[:, 0, 0] - tr, m[:, 0, 1] + m[:, 1, 0], m[:, 0, 2] + m[:, 2, 0]], 1),
        np.stack([m[:, 0, 2] - m[:, 2, 0], m[:, 0, 1] + m[:, 1, 0], 1 + 2 * m[:, 1, 1] - tr, m[:, 1, 2] + m[:, 2, 1]], 1),
        np.stack([m[:, 1, 0] - m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1], 1 + 2 * m[:, 2, 2] - tr], 1),
    ], 1)  # (N, 4 candidates, 4): the one with the largest pivot is well conditioned
    pivot = np.stack([1 + tr, 1 + 2 * m[:, 0, 0] - tr, 1 + 2 * m[:, 1, 1] - tr, 1 + 2 * m[:, 2, 2] - tr], 1)
    q = cand[np.arange(len(m)), pivot.argmax(1)]
    q = _normalize(q)
    return q * np.where(q[:, :1] < 0, -1.0, 1.0)


def frame_matrix(base: Base, t: int, cfg: SceneConfig, prev_quat: np.ndarray | None = None) -> tuple[Matrix, np.ndarray]:
    """Frame t as a layout matrix, and its unit quaternions (for sign continuity at t + 1)."""
    pos, frame = base.pos.copy(), base.frame.copy()
    log_scale, rgb, opacity = base.log_scale.copy(), base.rgb.copy(), base.opacity.copy()
    body, tail = base.part == 2, base.part == 3
    # non-rigid tail: bends about the y axis through its root, more towards the tip
    bend = _rot_y(0.6 * np.sin(0.25 * t) * base.u[tail] ** 2)
    root = np.array([0.55, 0.0, 0.0])
    pos[tail] = root + np.einsum("nij,nj->ni", bend, pos[tail] - root)
    frame[tail] = bend @ frame[tail]
    opacity[tail] -= 3.0 * (base.u[tail] > 0.8) * (0.5 - 0.5 * np.cos(0.15 * t))
    # appearance of the body: a bright band sweeps over it; its scales breathe
    rgb[body] = np.clip(rgb[body] * (1 + 0.5 * np.maximum(0, np.sin(0.3 * t - 4 * pos[body][:, 1:2]))), 0, 1)
    log_scale[body] += 0.08 * np.sin(0.2 * t)
    # rigid motion of the whole object (body and tail): yaw plus a translation along a loop
    obj = body | tail
    r = _rot_z(0.05 * t)
    shift = np.array([0.3 * np.sin(0.07 * t), 0.3 * np.cos(0.07 * t) - 0.3, 0.05 * np.sin(0.2 * t)])
    pos[obj] = pos[obj] @ r.T + shift
    frame[obj] = r @ frame[obj]
    # the lamp on the dome pulses
    rgb[base.lamp] = np.clip(rgb[base.lamp] * (0.6 + 0.8 * (0.5 + 0.5 * np.sin(0.4 * t))), 0, 1)

    quat = quat_from_matrix(frame)
    if prev_quat is not None:  # q and -q are one rotation: keep the sign that continues the sequence
        quat *= np.where((quat * prev_quat).sum(1, keepdims=True) < 0, -1.0, 1.0)
    rng = np.random.default_rng([cfg.seed, 1 + t])
    n = len(pos)
    cols = [pos + rng.normal(0, cfg.jitter_pos, (n, 3)), (rgb - 0.5) / SH_C0, base.rest, opacity[:, None],
            log_scale, quat * base.quat_norm[:, None]]
    m = np.concatenate(cols, axis=1)
    m[:, 3:] += rng.normal(0, cfg.jitter_attr, (n, m.shape[1] - 3))
    return m.astype(np.float32), quat


def generate(cfg: SceneConfig) -> Iterator[Matrix]:
    """The frames one at a time (memory stays at one frame whatever the length)."""
    base, quat = build_base(cfg), None
    for t in range(cfg.frames):
        m, quat = frame_matrix(base, t, cfg, quat)
        yield m


def held_out_cameras(size: tuple[int, int] = (96, 72), n: int = 4) -> list[Camera]:
    """Cameras for quality: at other azimuths and a higher ring than the views of `fitting_cameras`."""
    return orbit(n, 3.2, 1.2, size, phase=math.pi / 8)


def fitting_cameras(size: tuple[int, int] = (96, 72), n: int = 8) -> list[Camera]:
    """Cameras a fitting run (GPU, next phase) trains on: a ring at radius 3.5, height 0.8."""
    return orbit(n, 3.5, 0.8, size)


def write_scene(cfg: SceneConfig, out: Path) -> list[Path]:
    """Write the frames as `frame_NNNN.ply` to `out`, with `static.npy` (the truth) and `cameras.json`
    (the held-out cameras, which `nmc eval` renders); returns the frame paths."""
    out.mkdir(parents=True, exist_ok=True)
    seq = Gaussians(GaussianLayout(cfg.sh_degree), [f"frame_{t:04d}.ply" for t in range(cfg.frames)], [cfg.gaussians] * cfg.frames, lambda: generate(cfg))
    write_gaussians(out, seq)
    np.save(out / "static.npy", static_mask(build_base(cfg)))
    write_cameras(out / "cameras.json", held_out_cameras())
    return [out / n for n in seq.names]


def main(
    out: Path,
    gaussians: int = 2000,  # Gaussians per frame (constant)
    frames: int = 8,
    sh_degree: int = 3,
    seed: int = 0,
    jitter_pos: float = 2e-4,  # per-frame re-fitting noise on positions
    jitter_attr: float = 1e-3,  # ... on the other raw parameters
) -> None:
    cfg = SceneConfig(gaussians, frames, sh_degree, seed, jitter_pos, jitter_attr)
    paths = write_scene(cfg, out)
    size = sum(p.stat().st_size for p in paths)
    print(f"{len(paths)} frames of {gaussians} Gaussians (SH degree {sh_degree}) in {out}: {size / 2**20:.2f} MiB")


if __name__ == "__main__":
    import typer

    typer.run(main)
