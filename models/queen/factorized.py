"""Learned factorized prior (Ballé et al. 2018, "Variational image compression with a scale
hyperprior", appendix 6.1): one univariate density per latent channel.

The cumulative is sigmoid(f(x)) with f a small monotone network (softplus-positive matrices,
tanh-gated nonlinearities), so the probability of an integer bin is a difference of two
sigmoids; during fitting, latents get uniform noise and the rate term is -log2 of that mass.
It only shapes the latents while the decoders are fitted: the tables sent are the counts of
the integer latents (`latent.fit_group`), so the decoder never runs this.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class FactorizedPrior(nn.Module):
    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0) -> None:
        super().__init__()
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for k in range(len(filters) + 1):
            init = float(np.log(np.expm1(1 / scale / dims[k + 1])))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[k + 1], dims[k]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[k + 1], 1) - 0.5))
            if k < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[k + 1], 1)))

    def logits_cdf(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) for `(C, M)` inputs, one row per channel."""
        h = x[:, None, :]
        for k, (m, b) in enumerate(zip(self.matrices, self.biases)):
            h = F.softplus(m) @ h + b
            if k < len(self.factors):
                h = h + torch.tanh(self.factors[k]) * torch.tanh(h)
        return h[:, 0, :]

    def likelihood(self, y: torch.Tensor) -> torch.Tensor:
        """Probability mass of the unit bins around `y` `(n, C)`."""
        x = y.T
        lower, upper = self.logits_cdf(torch.cat([x - 0.5, x + 0.5], 1)).chunk(2, 1)  # one pass of the network
        sign = -torch.sign(lower + upper).detach()  # evaluate in the tail that keeps precision
        return (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs().T.clamp_min(1e-9)

    def bits(self, y: torch.Tensor) -> torch.Tensor:
        """-log2 of the mass, `(n, C)`."""
        return -torch.log2(self.likelihood(y))
