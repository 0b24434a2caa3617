"""Adam on foreach kernels for the encoder's small fits (latent decoders, position gate).

torch.optim's first use imports torch._dynamo (with sympy: ~3-4 s of an encoder's start on the
2-core box) and checks more per step than these fits need; this is the same update rule.
"""

from __future__ import annotations

import math

import torch


class Adam:
    """Adam with a constant learning rate, or a cosine decay to 0 over `cosine_steps`."""

    def __init__(self, params: list[torch.Tensor], lr: float, cosine_steps: int = 0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params, self.lr, self.cosine_steps, self.betas, self.eps, self.k = params, lr, cosine_steps, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def step(self, loss: torch.Tensor) -> None:
        """One update of the parameters down the gradient of `loss`."""
        grads = list(torch.autograd.grad(loss, self.params))
        b1, b2 = self.betas
        lr = self.lr * (0.5 * (1 + math.cos(math.pi * self.k / self.cosine_steps)) if self.cosine_steps else 1.0)
        self.k += 1
        with torch.no_grad():
            torch._foreach_lerp_(self.m, grads, 1 - b1)
            torch._foreach_mul_(self.v, b2)
            torch._foreach_addcmul_(self.v, grads, grads, 1 - b2)
            denom = torch._foreach_sqrt(self.v)
            torch._foreach_div_(denom, math.sqrt(1 - b2**self.k))
            torch._foreach_add_(denom, self.eps)
            torch._foreach_addcdiv_(self.params, self.m, denom, -lr / (1 - b1**self.k))
