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

from .adam import Adam
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

    def choose(self, r: F64, weight: F64, lam: float, grid: float, sweeps: int = 2, device: str = "cpu") -> I64:
        """Integer latents `(n, L)` for residuals `r` `(n, D)` (raw units); `weight` `(n,)` is the
        render weight of a squared error of each Gaussian, `lam` the rate weight. Runs in float64
        on `device` (the encoder's choice: any device gives latents the decoder reads the same way)."""
        n = len(r)
        if self.latent_dim == 0:
            return np.zeros((n, 0), np.int64)
        def f64(a: npt.ArrayLike) -> torch.Tensor:
            return torch.as_tensor(np.asarray(a, np.float64), device=device)

        w_np = self.weight.astype(np.float64) * grid
        w_q, rr = f64(w_np), f64(r)
        lo, hi = f64([t.lo for t in self.tables]), f64([t.hi for t in self.tables])
        z_all = torch.clamp(torch.round(rr @ f64(np.linalg.pinv(w_np))), lo, hi)
        # a row of zeros has only zeros to choose from: refine the others
        rows = torch.nonzero(z_all.any(1))[:, 0]
        z, err = z_all[rows], rr[rows] - z_all[rows] @ w_q
        bits = [f64(t.symbol_bits()) for t in self.tables]
        norms, wt = (w_q**2).sum(1), f64(weight)[rows]
        for _ in range(sweeps):
            for j in range(self.latent_dim):
                zj = z[:, j]
                cands = torch.stack([zj, zj - torch.sign(zj), torch.zeros_like(zj)], 1)  # keep, one step to 0, 0
                delta = cands - zj[:, None]
                # |err - d w|^2 - |err|^2 = d^2 |w|^2 - 2 d (err . w): no (n, 3, D) temporary
                e2 = delta * (delta * norms[j] - 2 * (err @ w_q[j])[:, None])
                cost = wt[:, None] * e2 + lam * bits[j][(cands - lo[j]).long()]
                best = cands.gather(1, cost.argmin(1, keepdim=True))[:, 0]
                err -= (best - zj)[:, None] * w_q[j]
                z[:, j] = best
        z_all[rows] = z
        return z_all.long().cpu().numpy()

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
    same Gaussians and frames), block-diagonal matrices, one factorized prior whose channels are
    all blocks' latents (independent densities), one Adam (per element, so each block's parameters
    move as in a fit of its own). One step is then a few kernels for all blocks, not a few per
    block: on a GPU, where these small steps are launch-bound, that is most of the fit's time."""
    n = len(blocks[0][0])
    if any(len(r) != n or len(w) != n for r, w, _ in blocks):
        raise ValueError("every block needs the same rows")
    dims = [min(d, r.shape[1]) if n else 0 for r, _, d in blocks]
    live = [k for k, d in enumerate(dims) if d > 0]
    coders = [LatentCoder(np.zeros((0, r.shape[1]), np.int64), []) for r, _, _ in blocks]
    if not live:
        return coders
    # All blocks as one: residual columns side by side, a block-diagonal encoder and decoder (the
    # masks keep the blocks apart: their gradients are zero off the blocks, so Adam leaves those
    # entries at 0), each column weighted by its block's render weight.
    widths, lat = [blocks[k][0].shape[1] for k in live], [dims[k] for k in live]
    r = torch.as_tensor(np.concatenate([blocks[k][0] for k in live], 1), dtype=torch.float32, device=device)
    col_w = torch.as_tensor(np.repeat(np.stack([blocks[k][1] for k in live], 1), widths, axis=1), dtype=torch.float32, device=device)
    enc0 = torch.zeros(sum(widths), sum(lat), dtype=torch.float64, device=device)
    dec0, mask = enc0.T.clone(), torch.zeros_like(enc0, dtype=torch.float32)
    col, row = np.cumsum([0, *widths]), np.cumsum([0, *lat])
    for k, d in enumerate(lat):
        rk, wk = r[:, col[k] : col[k + 1]].double(), col_w[:, col[k]].double()
        # start from the weighted principal directions with the high-rate optimal step per direction
        _, evecs = torch.linalg.eigh((rk * wk[:, None]).T @ rk / wk.sum().clamp_min(1e-12))
        basis = evecs[:, -d:].flip(1)  # (D, L)
        step = max(float(np.sqrt(6 * lam / max(float(wk.mean()), 1e-12) / np.log(2))), 2 * grid)
        enc0[col[k] : col[k + 1], row[k] : row[k + 1]] = basis / step
        dec0[row[k] : row[k + 1], col[k] : col[k + 1]] = basis.T * step
        mask[col[k] : col[k + 1], row[k] : row[k + 1]] = 1
    enc, dec = enc0.float().requires_grad_(True), dec0.float().requires_grad_(True)
    torch.manual_seed(seed)  # the prior's initial biases
    prior = FactorizedPrior(sum(lat)).to(device)
    gen = torch.Generator(device).manual_seed(seed)
    batch = min(BATCH, n)
    opt = Adam([enc, dec, *prior.parameters()], LR, cosine_steps=steps)
    for _ in range(steps):
        i = torch.randint(0, n, (batch,), generator=gen, device=device)
        ri = r[i]
        y = ri @ (enc * mask)
        y_hat = y + (torch.round(y) - y).detach()  # straight-through rounding for the distortion
        dist = (col_w[i] * (y_hat @ (dec * mask.T) - ri) ** 2).sum(1).mean()
        noise = torch.rand(y.shape, generator=gen, device=device) - 0.5
        rate = prior.bits(y + noise).sum(1).mean()  # uniform noise for the rate
        opt.step(dist + lam * rate)
    # The tables model the integer latents themselves: their counts on the fitting rows (the
    # maximum-likelihood table; half a count on every symbol of the support, which covers what
    # was seen, one more each side, and 0). The noise-trained density would put 0.5 bit on an
    # all-zero latent where it costs 0.02.
    with torch.no_grad():
        z = torch.round(r @ (enc * mask)).clamp(-MAX_LATENT, MAX_LATENT)
    z_np = z.cpu().numpy().astype(np.int64)
    tables = []
    for j in range(z_np.shape[1]):
        lo, hi = max(min(int(z_np[:, j].min()) - 1, 0), -MAX_LATENT), min(max(int(z_np[:, j].max()) + 1, 0), MAX_LATENT)
        tables.append(Table.from_pmf(np.bincount(z_np[:, j] - lo, minlength=hi - lo + 1) + 0.5, lo))
    dec_np = (dec * mask.T).detach().double().cpu().numpy()
    for j, k in enumerate(live):
        weight_int = np.round(dec_np[row[j] : row[j + 1], col[j] : col[j + 1]] / grid).astype(np.int64)
        coders[k] = LatentCoder(np.clip(weight_int, -MAX_WEIGHT + 1, MAX_WEIGHT - 1), tables[row[j] : row[j + 1]])
    return coders
