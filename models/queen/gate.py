"""The position gate: a learned hard-concrete (L0) gate per Gaussian (Louizos et al. 2018, "Learning
sparse neural networks through L0 regularization"), as QUEEN gates its position residuals.

Each Gaussian has a log-odds `log_alpha` (started from the log ratio of what its update saves to
what it costs); training samples the stretched, clipped concrete
gate, so the gate is exactly 0 or 1 with positive probability, and pays, in expectation, the
bits of its quantized residual whenever it is open (P(gate != 0) is differentiable). The
distortion is that of the gated residual in render units. At the end a Gaussian is updated
when its gate is more open than shut (log_alpha > 0); the mask and the values are coded.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import torch

BETA, GAMMA, ZETA = 0.3, -0.1, 1.1  # temperature of QUEEN's N3DV config; the paper's stretch interval


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
) -> npt.NDArray[np.bool_]:
    """Which Gaussians get a position update.

    Args:
        residual (ndarray): `(n, 3)` target minus the previous decoded position.
        update (ndarray): `(n, 3)` the quantized update an open gate sends.
        cost (ndarray): `(n,)` render-MSE weight of a squared position error of each Gaussian.
        bits_open (ndarray): `(n,)` bits an open gate costs (values, plus the mask's difference).
        lam (float): rate weight (render MSE per bit).
        device (str): where the gate trains.
    """
    if len(residual) == 0:
        return np.zeros(0, bool)
    gen = torch.Generator(device).manual_seed(seed)
    r, q = torch.as_tensor(residual, device=device), torch.as_tensor(update, device=device)
    w, bits = torch.as_tensor(cost, device=device), torch.as_tensor(bits_open, device=device)
    # The expected loss has a bump between "always shut" and "always open" (gates at fractions
    # pay the whole L0 price), so where training starts decides the basin: start from the log
    # ratio of what an update saves to what it costs (QUEEN, too, can start from update odds).
    gain = w * ((r**2).sum(1) - ((r - q) ** 2).sum(1))
    start = torch.log(gain.clamp_min(1e-30) / (lam * bits).clamp_min(1e-30)).clamp(-6, 6)
    log_alpha = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([log_alpha], lr=0.2)
    for _ in range(steps):
        g = sample(log_alpha, gen)
        dist = w * ((g[:, None] * q - r) ** 2).sum(1)
        loss = (dist + lam * open_probability(log_alpha) * bits).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (log_alpha.detach() > 0).cpu().numpy()
