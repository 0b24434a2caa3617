"""The position gate: a learned hard-concrete (L0) gate per Gaussian (Louizos et al. 2018, "Learning
sparse neural networks through L0 regularization"), as QUEEN gates its position residuals.

Each Gaussian has a log-odds `log_alpha` (started from the log ratio of what its update saves to
what it costs); training samples the stretched, clipped concrete
gate, so the gate is exactly 0 or 1 with positive probability, and pays, in expectation, the
bits of its quantized residual whenever it is open (P(gate != 0) is differentiable). The
distortion is that of the gated residual in render units, less a noise floor: a squared
displacement the frame-to-frame re-fitting noise of fitted splats explains costs nothing (see
`noise_floor`), so static Gaussians keep their position instead of having that noise coded. At
the end a Gaussian is updated when its gate is more open than shut (log_alpha > 0); the mask and
the values are coded. Only Gaussians whose update gains anything are trained; the rest stay shut
(with no gain, the L0 term alone would shut them).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import torch

from .adam import Adam

BETA, GAMMA, ZETA = 0.3, -0.1, 1.1  # temperature of QUEEN's N3DV config; the paper's stretch interval
# The noise floor: squared displacements below FLOOR_CHI2 times the noise variance per coordinate
# (chi-square, 3 degrees of freedom: exceeded by pure noise once in 1000 frames), the variance
# read from the 10 % quantile of all squared displacements (CHI2_Q10 for 3 degrees), which
# static Gaussians dominate as long as a tenth of the scene holds still (and if not, the slowest
# motions set it, so the floor stays below what moves).
FLOOR_CHI2, QUANTILE, CHI2_Q10 = 16.27, 0.1, 0.5844


def noise_floor(residual: npt.NDArray[np.float64]) -> float:
    """Squared displacement (raw units) that the re-fitting noise explains, from residuals `(n, 3)`."""
    if len(residual) == 0:
        return 0.0
    return FLOOR_CHI2 * float(np.quantile((residual**2).sum(1), QUANTILE)) / CHI2_Q10


def open_probability(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(gate != 0): the L0 term."""
    return torch.sigmoid(log_alpha - BETA * math.log(-GAMMA / ZETA))


def sample(log_alpha: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand(log_alpha.shape, generator=gen, device=log_alpha.device).clamp(1e-6, 1 - 1e-6)
    s = torch.sigmoid((torch.log(u) - torch.log(1 - u) + log_alpha) / BETA)
    return (s * (ZETA - GAMMA) + GAMMA).clamp(0, 1)


def fit_gate(
    residual: npt.NDArray[np.float64],
    update: npt.NDArray[np.float64],
    cost: npt.NDArray[np.float64],
    bits_open: npt.NDArray[np.float64],
    lam: float,
    steps: int = 150,
    seed: int = 0,
    device: str = "cpu",
    floor: float = 0.0,
) -> npt.NDArray[np.bool_]:
    """Which Gaussians get a position update.

    Args:
        residual (ndarray): `(n, 3)` target minus the previous decoded position.
        update (ndarray): `(n, 3)` the quantized update an open gate sends.
        cost (ndarray): `(n,)` render-MSE weight of a squared position error of each Gaussian.
        bits_open (ndarray): `(n,)` bits an open gate costs (values, plus the mask's difference).
        lam (float): rate weight (render MSE per bit).
        device (str): where the gate trains.
        floor (float): squared displacement that costs nothing (`noise_floor`).
    """
    mask = np.zeros(len(residual), bool)
    excess = lambda d2: np.maximum(d2 - floor, 0.0)  # noqa: E731
    gain_np = cost * (excess((residual**2).sum(1)) - excess(((residual - update) ** 2).sum(1)))
    # Without a gain an open gate only pays (the gated error is within the floor for every gate
    # value, being convex in it): those stay shut untrained.
    rows = np.flatnonzero(gain_np > 0)
    if rows.size == 0:
        return mask
    gen = torch.Generator(device).manual_seed(seed)
    r, q = torch.as_tensor(residual[rows], device=device), torch.as_tensor(update[rows], device=device)
    w, bits = torch.as_tensor(cost[rows], device=device), torch.as_tensor(bits_open[rows], device=device)
    gain = torch.as_tensor(gain_np[rows], device=device)
    # The expected loss has a bump between "always shut" and "always open" (gates at fractions
    # pay the whole L0 price), so where training starts decides the basin: start from the log
    # ratio of what an update saves to what it costs (QUEEN, too, can start from update odds).
    start = torch.log(gain.clamp_min(1e-30) / (lam * bits).clamp_min(1e-30)).clamp(-6, 6)
    log_alpha = start.clone().requires_grad_(True)
    opt = Adam([log_alpha], lr=0.2)
    for _ in range(steps):
        g = sample(log_alpha, gen)
        dist = w * (((g[:, None] * q - r) ** 2).sum(1) - floor).clamp_min(0)
        opt.step((dist + lam * open_probability(log_alpha) * bits).sum())
    mask[rows] = (log_alpha.detach() > 0).cpu().numpy()
    return mask
