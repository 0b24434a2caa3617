"""Attribute residuals through integer latents and a small learned decoder (QUEEN's latent decoders).

For one attribute group (colour DC, SH rest, opacity, scale, rotation) of width D, a frame's
residual r (target minus the previous *decoded* frame) is sent as integer latents z (L per
Gaussian) and rebuilt as z @ W. W (L x D) and one factorized prior per latent channel are fitted
once per group of frames with a rate-distortion loss

    s * w_i * |round_ste(r E) W - r|^2  +  lam * bits(r E + u),   u ~ U(-1/2, 1/2)

(E an encoder used only while fitting, w_i the Gaussian's importance, s the attribute's render
weight), then exported as integers: W in units of the state grid (so z @ W is exact integer
arithmetic on every machine, and static Gaussians with z = 0 stay exactly where they were, the
decoder having no bias) and the priors as `symbols.Table`s. At coding time the latents are the
least-squares solution for the integer decoder, rounded, then refined by a greedy rate-distortion
pass over the channels with the real tables (RDOQ).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from nmc.codec.errors import ContainerError

from .factorized import FactorizedPrior
from .symbols import Reader, Table, Writer

MAX_LATENT = 127  # |z| bound: tables stay under 256 symbols and z @ W stays exact in float64
MAX_WEIGHT = 1 << 24  # |W| bound in grid units
BATCH = 4096  # residual rows per fitting step
LR = 1e-2

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass
class LatentCoder:
    """The integer decoder of one attribute group for one group of frames."""

    weight: I64  # (L, D) in grid units
    tables: list[Table]  # one per latent channel

    @property
    def latent_dim(self) -> int:
        return int(self.weight.shape[0])

    def decode(self, z: I64) -> I64:
        """`(n, D)` integer update of integer latents `(n, L)`: exact (every partial sum < 2**53)."""
        if self.latent_dim == 0:
            return np.zeros((len(z), self.weight.shape[1]), np.int64)
        return (z.astype(np.float64) @ self.weight.astype(np.float64)).astype(np.int64)

    def choose(self, r: F64, weight: F64, lam: float, grid: float, sweeps: int = 2) -> I64:
        """Integer latents `(n, L)` for residuals `r` `(n, D)` (raw units); `weight` `(n,)` is the
        render weight of a squared error of each Gaussian, `lam` the rate weight."""
        n = len(r)
        if self.latent_dim == 0:
            return np.zeros((n, 0), np.int64)
        w_q = self.weight.astype(np.float64) * grid
        lo = np.array([t.lo for t in self.tables])
        hi = np.array([t.hi for t in self.tables])
        z = np.clip(np.round(r @ np.linalg.pinv(w_q)), lo, hi).astype(np.int64)
        err = r - z @ w_q
        bits = [t.symbol_bits() for t in self.tables]
        for _ in range(sweeps):
            for j in range(self.latent_dim):
                zj = z[:, j]
                cands = np.stack([zj, zj - np.sign(zj), np.zeros_like(zj)], 1)  # keep, one step to 0, 0
                delta = (cands - zj[:, None]).astype(np.float64)
                e2 = ((err[:, None, :] - delta[:, :, None] * w_q[j]) ** 2).sum(2)
                cost = weight[:, None] * e2 + lam * bits[j][cands - lo[j]]
                best = cands[np.arange(n), cost.argmin(1)]
                err -= (best - zj)[:, None] * w_q[j]
                z[:, j] = best
        return z

    def write(self, side: Writer) -> None:
        side.array(self.weight)
        for t in self.tables:
            side.table(t)

    @classmethod
    def read(cls, side: Reader, width: int) -> LatentCoder:
        weight = side.array(max_items=64 * width)
        if weight.ndim != 2 or weight.shape[1] != width or np.abs(weight).max(initial=0) >= MAX_WEIGHT:
            raise ContainerError(f"queen latent decoder of shape {weight.shape} for {width} attributes")
        tables = [side.table(max_size=2 * MAX_LATENT + 1) for _ in range(weight.shape[0])]
        if any(t.lo < -MAX_LATENT or t.hi > MAX_LATENT for t in tables):
            raise ContainerError("queen latent table outside the latent range")
        return cls(weight, tables)


def _cosine(opt: torch.optim.Optimizer, step: int, steps: int) -> None:
    for g in opt.param_groups:
        g["lr"] = LR * 0.5 * (1 + np.cos(np.pi * (step + 1) / steps))


def fit(
    residuals: F64,
    weight: F64,
    lam: float,
    latent_dim: int,
    grid: float,
    steps: int = 300,
    seed: int = 0,
    device: str = "cpu",
) -> LatentCoder:
    """Fit W and the priors on residual rows `(n, D)` with render weights `(n,)` (see the module doc),
    on `device` (a GPU fits faster; the exported integers are what the decoder uses, wherever they came from)."""
    n, width = residuals.shape
    latent_dim = min(latent_dim, width)
    if n == 0 or latent_dim == 0:
        return LatentCoder(np.zeros((0, width), np.int64), [])
    r = torch.as_tensor(residuals, dtype=torch.float32, device=device)
    w = torch.as_tensor(weight, dtype=torch.float32, device=device)
    # start from the weighted principal directions with the high-rate optimal step per direction
    cov = (r * w[:, None]).T @ r / w.sum().clamp_min(1e-12)
    evals, evecs = torch.linalg.eigh(cov.double())
    basis = evecs[:, -latent_dim:].flip(1).float()  # (D, L)
    step = float(np.sqrt(6 * lam / max(float(w.mean()), 1e-12) / np.log(2)))
    step = max(step, 2 * grid)
    enc = torch.nn.Parameter(basis / step)
    dec = torch.nn.Parameter(basis.T * step)
    torch.manual_seed(seed)  # the prior's initial biases
    prior = FactorizedPrior(latent_dim).to(device)
    gen = torch.Generator(device).manual_seed(seed)
    opt = torch.optim.Adam([enc, dec, *prior.parameters()], lr=LR)
    for k in range(steps):
        i = torch.randint(0, n, (min(BATCH, n),), generator=gen, device=device)
        y = r[i] @ enc
        y_hat = y + (torch.round(y) - y).detach()  # straight-through rounding for the distortion
        dist = (w[i] * ((y_hat @ dec - r[i]) ** 2).sum(1)).mean()
        noise = torch.rand(y.shape, generator=gen, device=device) - 0.5
        rate = prior.bits(y + noise).sum(1).mean()  # uniform noise for the rate
        opt.zero_grad()
        (dist + lam * rate).backward()
        opt.step()
        _cosine(opt, k, steps)
    # the tables model the integer latents themselves: refit the prior to them by maximum likelihood
    with torch.no_grad():
        z = torch.round(r @ enc).clamp(-MAX_LATENT, MAX_LATENT)
    opt = torch.optim.Adam(prior.parameters(), lr=LR)
    for k in range(steps // 2):
        i = torch.randint(0, n, (min(BATCH, n),), generator=gen, device=device)
        loss = prior.bits(z[i]).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        _cosine(opt, k, steps // 2)
    z_np, prior = z.cpu().numpy(), prior.cpu()
    weight_int = np.round(dec.detach().double().cpu().numpy() / grid).astype(np.int64)
    weight_int = np.clip(weight_int, -MAX_WEIGHT + 1, MAX_WEIGHT - 1)
    tables = []
    for j in range(latent_dim):  # the support covers what was seen, one more each side, and 0
        lo = int(max(min(z_np[:, j].min() - 1, 0), -MAX_LATENT))
        hi = int(min(max(z_np[:, j].max() + 1, 0), MAX_LATENT))
        tables.append(prior.table(j, lo, hi))
    return LatentCoder(weight_int, tables)
