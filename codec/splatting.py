"""A small pure-PyTorch 3DGS renderer for the CPU: tests, quality of Gaussian codecs, small scenes.

It follows the rasteriser of Kerbl et al. (3DGS, 2023): each Gaussian's 3D covariance
R S S^T R^T is projected with the Jacobian of the perspective map (EWA splatting, Zwicker et
al. 2002) plus a 0.3 px low-pass, its colour is the SH expansion (degree <= 3) in the
direction from the camera, and pixels composite the depth-sorted splats front to back with
alpha = min(0.99, sigmoid(opacity) * exp(-d^T S2^-1 d / 2)), skipping alpha < 1/255 and
stopping once the transmittance would fall below 1e-4. The image is cut into tiles and each
tile composites, densely, only the splats whose 3-sigma boxes touch it.

Everything is deterministic for a given input and device. The same code runs on a GPU
(`device="cuda"`) as a slow fallback; `composite_dense` is the differentiable form that fitting uses on a GPU.

Quality views (`quality_cameras`) come from the sequence's `cameras.json` (the file 3DGS training
writes: camera centre, camera-to-world rotation, focal lengths, image size) when there is one,
else from a ring around the first frame's Gaussians.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from .errors import MediaError
from .media import GaussianLayout, Gaussians, Matrix

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
         1.445305721320277, -0.5900435899266435)
TILE = 16
NEAR = 0.2
CHUNK = 1024  # splats composited at once per tile (bounds memory: CHUNK x TILE^2 floats)


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: world-to-camera rotation and translation (x right, y down, z forward)."""

    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)
    fx: float
    fy: float
    width: int
    height: int

    @property
    def center(self) -> np.ndarray:
        return -self.rotation.T @ self.translation

    @classmethod
    def look_at(cls, eye: np.ndarray, target: np.ndarray, width: int, height: int, fov_deg: float = 60.0) -> Camera:
        """A camera at `eye` looking at `target`, world z up, horizontal field of view `fov_deg`."""
        forward = (target - eye) / np.linalg.norm(target - eye)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        rot = np.stack([right, down, forward])
        f = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
        return cls(rot, -rot @ eye, f, f, width, height)


def orbit(n: int, radius: float, height: float, size: tuple[int, int], phase: float = 0.0,
          target: tuple[float, float, float] = (0.0, 0.0, -0.2), fov_deg: float = 60.0) -> list[Camera]:
    """n cameras evenly spaced on a circle around the z axis, looking at `target`."""
    w, h = size
    return [Camera.look_at(np.array([radius * math.cos(a), radius * math.sin(a), height]), np.array(target), w, h, fov_deg)
            for a in phase + 2 * math.pi * np.arange(n) / n]


def ring_around(m: Matrix, n: int, width: int) -> list[Camera]:
    """n cameras (4:3, 60 degrees wide) on a ring around z that see a frame's Gaussians: at twice
    the distance within which 90 % of them lie from their median, a third of it above."""
    pos = np.asarray(m[:, :3], np.float64)
    center = np.median(pos, axis=0)
    extent = max(float(np.quantile(np.linalg.norm(pos - center, axis=1), 0.9)), 1e-6)
    return orbit(n, 2 * extent, center[2] + 0.7 * extent, (width, max(1, width * 3 // 4)), target=tuple(center))


def write_cameras(path: Path, cameras: list[Camera]) -> None:
    """A `cameras.json` in the 3DGS format (centre, camera-to-world rotation, focal lengths, size)."""
    rows = [{"id": i, "img_name": f"view_{i:02d}", "width": c.width, "height": c.height, "position": c.center.tolist(),
             "rotation": c.rotation.T.tolist(), "fx": c.fx, "fy": c.fy} for i, c in enumerate(cameras)]
    path.write_text(json.dumps(rows, indent=1) + "\n")


def read_cameras(path: Path, width: int) -> list[Camera]:
    """The cameras of a 3DGS `cameras.json`, scaled to `width` pixels (the aspect ratio kept)."""
    try:
        cams = []
        for row in json.loads(path.read_text()):
            w, h, c2w = int(row["width"]), int(row["height"]), np.asarray(row["rotation"], np.float64).reshape(3, 3)
            s = width / w
            rot, center = c2w.T, np.asarray(row["position"], np.float64).reshape(3)
            cams.append(Camera(rot, -rot @ center, float(row["fx"]) * s, float(row["fy"]) * s, width, max(1, round(h * s))))
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise MediaError(f"{path}: not a 3DGS cameras.json ({err})") from None
    if not cams or not all(np.isfinite(c.rotation).all() and np.isfinite(c.translation).all() and c.fx > 0 and c.fy > 0 for c in cams):
        raise MediaError(f"{path}: no usable camera")
    return cams


def quality_cameras(source: Path | None, first: Matrix, n: int = 4, width: int = 96) -> list[Camera]:
    """Up to n views (evenly picked) of the sequence's `cameras.json` beside its frames, else a ring around `first`."""
    folder = source if source is None or source.is_dir() else source.parent
    path = folder / "cameras.json" if folder is not None else None
    if path is None or not path.is_file():
        return ring_around(first, n, width)
    cams = read_cameras(path, width)
    return [cams[i] for i in np.unique(np.linspace(0, len(cams) - 1, min(n, len(cams))).round().astype(int))]


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices `(N, 3, 3)` of quaternions (w, x, y, z), normalised first (as 3DGS does)."""
    q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], 1).reshape(-1, 3, 3)


def eval_sh(degree: int, sh: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Colour `(N, 3)` of SH coefficients `(N, 3, (degree + 1)^2)` in unit directions `(N, 3)` (3DGS basis)."""
    out = SH_C0 * sh[..., 0]
    if degree < 1:
        return out
    x, y, z = (d[:, None] for d in dirs.unbind(1))
    out = out - SH_C1 * y * sh[..., 1] + SH_C1 * z * sh[..., 2] - SH_C1 * x * sh[..., 3]
    if degree < 2:
        return out
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    out = (out + SH_C2[0] * xy * sh[..., 4] + SH_C2[1] * yz * sh[..., 5] + SH_C2[2] * (2 * zz - xx - yy) * sh[..., 6]
           + SH_C2[3] * xz * sh[..., 7] + SH_C2[4] * (xx - yy) * sh[..., 8])
    if degree < 3:
        return out
    return (out + SH_C3[0] * y * (3 * xx - yy) * sh[..., 9] + SH_C3[1] * xy * z * sh[..., 10]
            + SH_C3[2] * y * (4 * zz - xx - yy) * sh[..., 11] + SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[..., 12]
            + SH_C3[4] * x * (4 * zz - xx - yy) * sh[..., 13] + SH_C3[5] * z * (xx - yy) * sh[..., 14]
            + SH_C3[6] * x * (xx - 3 * yy) * sh[..., 15])


@dataclass
class Splats:
    """Screen-space splats of one view, sorted front to back."""

    mean: torch.Tensor  # (M, 2) pixel coordinates
    conic: torch.Tensor  # (M, 3) inverse 2D covariance (a, b, c) of [[a, b], [b, c]]
    opacity: torch.Tensor  # (M,)
    color: torch.Tensor  # (M, 3)
    box: torch.Tensor  # (M, 4) x0, y0, x1, y1 in pixels (3 sigma)


def project(m: Matrix | torch.Tensor, layout: GaussianLayout, cam: Camera, device: str | torch.device = "cpu") -> Splats:
    """EWA projection of a frame's Gaussians into `cam`, culled and depth-sorted."""
    x = torch.as_tensor(m, dtype=torch.float32, device=device)
    sl = layout.slices()
    rot = torch.as_tensor(cam.rotation, dtype=torch.float32, device=device)
    pc = x[:, sl["pos"]] @ rot.T + torch.as_tensor(cam.translation, dtype=torch.float32, device=device)
    z = pc[:, 2]
    keep = z > NEAR
    x, pc, z = x[keep], pc[keep], z[keep]
    # 3D covariance in camera space: (W R S)(W R S)^T
    rs = quat_to_matrix(x[:, sl["rot"]]) * torch.exp(x[:, sl["scale"]])[:, None, :]
    m_cam = rot @ rs
    # Jacobian of the perspective map, with the 3DGS clamp of x/z, y/z just outside the view
    lim_x, lim_y = 1.3 * 0.5 * cam.width / cam.fx, 1.3 * 0.5 * cam.height / cam.fy
    tx, ty = (pc[:, 0] / z).clamp(-lim_x, lim_x) * z, (pc[:, 1] / z).clamp(-lim_y, lim_y) * z
    zeros = torch.zeros_like(z)
    jac = torch.stack([torch.stack([cam.fx / z, zeros, -cam.fx * tx / z**2], 1),
                       torch.stack([zeros, cam.fy / z, -cam.fy * ty / z**2], 1)], 1)
    jm = jac @ m_cam
    cov = jm @ jm.transpose(1, 2) + 0.3 * torch.eye(2, device=device)
    a, b, c = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    det = a * c - b * b
    conic = torch.stack([c / det, -b / det, a / det], 1)
    radius = 3 * torch.sqrt(0.5 * (a + c) + torch.sqrt((0.25 * (a - c) ** 2 + b * b).clamp_min(0)))
    mean = torch.stack([cam.fx * pc[:, 0] / z + 0.5 * cam.width, cam.fy * pc[:, 1] / z + 0.5 * cam.height], 1)
    box = torch.stack([mean[:, 0] - radius, mean[:, 1] - radius, mean[:, 0] + radius, mean[:, 1] + radius], 1)
    on_screen = (box[:, 2] >= 0) & (box[:, 0] <= cam.width) & (box[:, 3] >= 0) & (box[:, 1] <= cam.height)
    # colour from the SH expansion in the viewing direction
    sh = torch.cat([x[:, sl["dc"]][:, :, None], x[:, sl["rest"]].reshape(len(x), 3, -1)], 2)
    center = torch.as_tensor(cam.center, dtype=torch.float32, device=device)
    dirs = x[:, sl["pos"]] - center
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    color = (eval_sh(layout.sh_degree, sh, dirs) + 0.5).clamp_min(0)
    order = torch.argsort(z[on_screen], stable=True)
    pick = torch.nonzero(on_screen).squeeze(1)[order]
    return Splats(mean[pick], conic[pick], torch.sigmoid(x[pick, sl["opacity"].start]), color[pick], box[pick])


def composite(s: Splats, width: int, height: int, background: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> torch.Tensor:
    """Front-to-back alpha compositing of sorted splats into an `(H, W, 3)` image, tile by tile."""
    dev = s.mean.device
    image = torch.empty(height, width, 3, device=dev)
    bg = torch.tensor(background, device=dev)
    for y0 in range(0, height, TILE):
        for x0 in range(0, width, TILE):
            y1, x1 = min(y0 + TILE, height), min(x0 + TILE, width)
            hit = (s.box[:, 0] < x1) & (s.box[:, 2] >= x0) & (s.box[:, 1] < y1) & (s.box[:, 3] >= y0)
            idx = torch.nonzero(hit).squeeze(1)
            py, px = torch.meshgrid(torch.arange(y0, y1, device=dev) + 0.5, torch.arange(x0, x1, device=dev) + 0.5, indexing="ij")
            pix = torch.stack([px.reshape(-1), py.reshape(-1)], 1)
            color, trans = torch.zeros(len(pix), 3, device=dev), torch.ones(len(pix), device=dev)
            done = torch.zeros(len(pix), dtype=torch.bool, device=dev)
            for k in range(0, len(idx), CHUNK):
                j = idx[k : k + CHUNK]
                d = pix[None, :, :] - s.mean[j][:, None, :]  # (G, P, 2)
                con = s.conic[j]
                power = -0.5 * (con[:, 0:1] * d[..., 0] ** 2 + con[:, 2:3] * d[..., 1] ** 2) - con[:, 1:2] * d[..., 0] * d[..., 1]
                alpha = (s.opacity[j][:, None] * torch.exp(power.clamp(max=0))).clamp(max=0.99)
                alpha = torch.where(alpha < 1 / 255, torch.zeros_like(alpha), alpha)
                keep = torch.cumprod(1 - alpha, 0)
                after = trans * keep  # transmittance behind each splat
                before = trans * torch.cat([torch.ones(1, len(pix), device=dev), keep[:-1]])
                valid = (after >= 1e-4) & ~done  # 3DGS stops a pixel before the splat that would pass 1e-4
                w = torch.where(valid, before * alpha, torch.zeros_like(alpha))
                color += (w[:, :, None] * s.color[j][:, None, :]).sum(0)
                trans = trans * torch.where(valid, 1 - alpha, torch.ones_like(alpha)).prod(0)
                done |= (~valid).any(0)
                if bool(done.all()):
                    break
            image[y0:y1, x0:x1] = (color + trans[:, None] * bg).reshape(y1 - y0, x1 - x0, 3)
    return image


def composite_dense(s: Splats, width: int, height: int, background: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> torch.Tensor:
    """Differentiable compositing of every splat at every pixel (no tiles, no 3-sigma cut, no early
    stop): for fitting on a GPU, where memory holds a few (splats x pixels) floats per view."""
    dev = s.mean.device
    py, px = torch.meshgrid(torch.arange(height, device=dev) + 0.5, torch.arange(width, device=dev) + 0.5, indexing="ij")
    pix = torch.stack([px.reshape(-1), py.reshape(-1)], 1)
    d = pix[None, :, :] - s.mean[:, None, :]  # (M, P, 2)
    power = -0.5 * (s.conic[:, 0:1] * d[..., 0] ** 2 + s.conic[:, 2:3] * d[..., 1] ** 2) - s.conic[:, 1:2] * d[..., 0] * d[..., 1]
    alpha = (s.opacity[:, None] * torch.exp(power.clamp(max=0))).clamp(max=0.99)
    alpha = alpha * (alpha >= 1 / 255)
    trans = torch.cumprod(torch.cat([torch.ones(1, len(pix), device=dev), 1 - alpha]), 0)  # transmittance before each splat, and after all
    color = (trans[:-1] * alpha).T @ s.color + trans[-1][:, None] * torch.tensor(background, device=dev)
    return color.reshape(height, width, 3)


def render_views(seq: Gaussians, cameras: list[Camera], device: str | torch.device = "cpu") -> list[npt.NDArray[np.float32]]:
    """Every camera's view of every frame (frame-major), frames streamed: the inputs of the render metrics."""
    return [render(m, seq.layout, cam, device=device).cpu().numpy() for m in seq.frames() for cam in cameras]


def render(m: Matrix | torch.Tensor, layout: GaussianLayout, cam: Camera, background: tuple[float, float, float] = (0.0, 0.0, 0.0),
           device: str | torch.device = "cpu") -> torch.Tensor:
    """The `(H, W, 3)` float image (linear, not clamped to 1) of a frame matrix seen from `cam`."""
    with torch.no_grad():
        return composite(project(m, layout, cam, device), cam.width, cam.height, background)


def psnr(ref: torch.Tensor, test: torch.Tensor, peak: float = 1.0) -> float:
    """PSNR in dB of float images clamped to [0, peak]; infinite when they are identical."""
    mse = float(((ref.clamp(0, peak) - test.clamp(0, peak)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)
