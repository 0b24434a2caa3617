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
        norms = (w_q**2).sum(1)
        for _ in range(sweeps):
            for j in range(self.latent_dim):
                zj = z[:, j]
                cands = np.stack([zj, zj - np.sign(zj), np.zeros_like(zj)], 1)  # keep, one step to 0, 0
                delta = (cands - zj[:, None]).astype(np.float64)
                # |err - d w|^2 - |err|^2 = d^2 |w|^2 - 2 d (err . w): no (n, 3, D) temporary
                e2 = delta * (delta * norms[j] - 2 * (err @ w_q[j])[:, None])
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


class _Adam:
    """Adam with a cosine learning rate over `steps`, on foreach kernels (torch.optim's first use
    imports torch._dynamo, ~3 s of an encoder's start, and steps with more checks than these fits need)."""

    def __init__(self, params: list[torch.Tensor], steps: int, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params, self.steps, self.betas, self.eps, self.k = params, steps, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def step(self, loss: torch.Tensor) -> None:
        grads = torch.autograd.grad(loss, self.params)
        b1, b2 = self.betas
        lr = LR * 0.5 * (1 + np.cos(np.pi * self.k / self.steps))
        self.k += 1
        with torch.no_grad():
            torch._foreach_lerp_(self.m, grads, 1 - b1)
            torch._foreach_mul_(self.v, b2)
            torch._foreach_addcmul_(self.v, grads, grads, 1 - b2)
            denom = torch._foreach_sqrt(self.v)
            torch._foreach_div_(denom, float(np.sqrt(1 - b2**self.k)))
            torch._foreach_add_(denom, self.eps)
            torch._foreach_addcdiv_(self.params, self.m, denom, -lr / (1 - b1**self.k))


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
    """One latent decoder (`fit_group` of one block)."""
    return fit_group([(residuals, weight, latent_dim)], lam, grid, steps, seed, device)[0]


def fit_group(
    blocks: list[tuple[F64, F64, int]],
    lam: float,
    grid: float,
    steps: int = 300,
    seed: int = 0,
    device: str = "cpu",
) -> list[LatentCoder]:
    """Fit W and the priors of several attribute groups at once, each on its residual rows `(n, D)`
    with render weights `(n,)` and its latent count (see the module doc), on `device` (a GPU fits
    faster; the exported integers are what the decoder uses, wherever they came from).

    The blocks share nothing but the loop: one batch of rows (the same n rows in every block: the
    same Gaussians and frames), one factorized prior whose channels are all blocks' latents (its
    channels are independent densities), one Adam (per element, so each block's parameters move
    as in a fit of its own). That is one step of small kernels for all blocks instead of one each."""
    n = len(blocks[0][0])
    if any(len(r) != n or len(w) != n for r, w, _ in blocks):
        raise ValueError("every block needs the same rows")
    dims = [min(d, r.shape[1]) if n else 0 for r, _, d in blocks]
    live = [k for k, d in enumerate(dims) if d > 0]
    coders = [LatentCoder(np.zeros((0, r.shape[1]), np.int64), []) for r, _, _ in blocks]
    if not live:
        return coders
    rs = [torch.as_tensor(blocks[k][0], dtype=torch.float32, device=device) for k in live]
    ws = [torch.as_tensor(blocks[k][1], dtype=torch.float32, device=device) for k in live]
    encs, decs = [], []
    for r, w, d in zip(rs, ws, [dims[k] for k in live]):
        # start from the weighted principal directions with the high-rate optimal step per direction
        cov = (r * w[:, None]).T @ r / w.sum().clamp_min(1e-12)
        _, evecs = torch.linalg.eigh(cov.double())
        basis = evecs[:, -d:].flip(1).float()  # (D, L)
        step = max(float(np.sqrt(6 * lam / max(float(w.mean()), 1e-12) / np.log(2))), 2 * grid)
        encs.append((basis / step).requires_grad_(True))
        decs.append((basis.T * step).contiguous().requires_grad_(True))
    torch.manual_seed(seed)  # the prior's initial biases
    prior = FactorizedPrior(sum(dims)).to(device)
    gen = torch.Generator(device).manual_seed(seed)
    batch = min(BATCH, n)
    opt = _Adam([*encs, *decs, *prior.parameters()], steps)
    for _ in range(steps):
        i = torch.randint(0, n, (batch,), generator=gen, device=device)
        ys, dist = [], torch.zeros((), device=device)
        for r, w, enc, dec in zip(rs, ws, encs, decs):
            y = r[i] @ enc
            y_hat = y + (torch.round(y) - y).detach()  # straight-through rounding for the distortion
            dist = dist + (w[i] * ((y_hat @ dec - r[i]) ** 2).sum(1)).mean()
            ys.append(y)
        y = torch.cat(ys, 1)
        noise = torch.rand(y.shape, generator=gen, device=device) - 0.5
        rate = prior.bits(y + noise).sum(1).mean()  # uniform noise for the rate
        opt.step(dist + lam * rate)
    # the tables model the integer latents themselves: refit the prior to them by maximum likelihood
    with torch.no_grad():
        z = torch.cat([torch.round(r @ enc) for r, enc in zip(rs, encs)], 1).clamp(-MAX_LATENT, MAX_LATENT)
    opt = _Adam(list(prior.parameters()), steps // 2)
    for _ in range(steps // 2):
        i = torch.randint(0, n, (batch,), generator=gen, device=device)
        opt.step(prior.bits(z[i]).sum(1).mean())
    z_np, prior = z.cpu().numpy(), prior.cpu()
    lo_all = np.maximum(np.minimum(z_np.min(0) - 1, 0), -MAX_LATENT).astype(int)  # the support covers what
    hi_all = np.minimum(np.maximum(z_np.max(0) + 1, 0), MAX_LATENT).astype(int)  # was seen, one more each side, and 0
    tables = [prior.table(j, int(lo_all[j]), int(hi_all[j])) for j in range(z_np.shape[1])]
    first = 0
    for k, dec in zip(live, decs):
        weight_int = np.round(dec.detach().double().cpu().numpy() / grid).astype(np.int64)
        coders[k] = LatentCoder(np.clip(weight_int, -MAX_WEIGHT + 1, MAX_WEIGHT - 1), tables[first : first + dims[k]])
        first += dims[k]
    return coders
