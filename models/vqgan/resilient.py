"""The encoder's choice of indices: the nearest code of each cell, traded for one of its few nearest where that lets
its neighbours be concealed better if they are lost (issue 10), and, as measured on dev, decodes better even when
nothing is lost.

A lost cell is filled with the weighted mean of its received neighbours' codes (`recovery.continuous_codes`,
`SLOT_WEIGHTS`). So the encoder, which knows every latent, picks the index map `I` that minimises

    J(I) = sum_i |z_i - e(I_i)|^2 + WEIGHT * sum_j |z_j - m_j(I)|^2

over unit latents `z` and unit codes `e`, where `m_j` is the `SLOT_WEIGHTS` mean of the codes of cell j's neighbours
inside the map (as if j alone were lost). Each cell picks from its `CANDIDATES` nearest codes; coordinate descent
visits the cells in 9 classes (row mod 3, column mod 3): cells of one class share no neighbour, so a class is updated
at once, exactly. `SWEEPS` passes over the 9 classes; the first starts from the nearest codes, so with WEIGHT 0 the
choice is the plain nearest code.

Only the encoder changes: the format, the decoder and files written before decode as before. It runs inside the
codec's `indices` network call (`tiling.net_indices` -> `Ladder.quantize`), so ONNX Runtime's graph holds it too.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .recovery import neighbour_sum

WEIGHT = 0.5  # dev, s16-s8192 (vqgan CARD "Session 19"): of 0.5, 0.75, 1, 1.5 and 2 the best rate-quality trade
CANDIDATES = 8  # 16 chose the same decodes on dev
SWEEPS = 3  # 6 gave the same quality


def resilient_indices(z: Tensor, codes: Tensor, weight: float = WEIGHT, candidates: int = CANDIDATES, sweeps: int = SWEEPS) -> Tensor:
    """Unit latents `z` `[B, h, w, d]` and unit codes `codes` `[S, d]` -> indices `[B, h, w]` minimising `J` (module
    docstring). Deterministic on one thread; traceable (fixed shapes, no data-dependent control flow).

    Changing cell i from its code q to a candidate c moves each neighbour j's fill by `beta (c - q)`, `beta` = i's slot
    weight (the same in both directions) over j's weight total `W_j`, so j's term `|a_j - beta (c - q)|^2` (`a_j = z_j -
    m_j`, j's fill residual now) grows by `beta^2 |c - q|^2 - 2 beta a_j . (c - q)`. Summed over i's in-map neighbours:
    `curv |c - q|^2 - 2 pull . (c - q)`, with `curv` the weighted sum of `1 / W_j^2` (squared weights) and `pull` that of
    `a_j / W_j`, two convolutions: a small graph for ONNX Runtime."""
    cos = z @ codes.t()  # [B, h, w, S]
    k = min(candidates, codes.shape[0])
    top = cos.topk(k, dim=-1).indices  # [B, h, w, k], nearest first
    if weight == 0 or k == 1:
        return top[..., 0]
    own = 2 - 2 * cos.gather(-1, top)  # |z - e|^2 of each candidate
    cand = codes[top]  # [B, h, w, k, d]
    total = neighbour_sum(torch.ones_like(z[..., :1])).clamp(min=1e-6)  # W_j, [B, h, w, 1] (0 only in a 1 x 1 map)
    curv = neighbour_sum(total.reciprocal().square(), power=2)  # [B, h, w, 1]
    b, h, w, d = z.shape
    rows, cols = torch.arange(h, device=z.device)[:, None] % 3, torch.arange(w, device=z.device)[None] % 3
    choice = torch.zeros_like(top[..., 0])  # position in `top`
    for _ in range(sweeps):
        for cls in range(9):
            chosen = cand.gather(3, choice[..., None, None].expand(b, h, w, 1, d))  # [B, h, w, 1, d]
            residual = z - neighbour_sum(chosen[..., 0, :]) / total  # a_j, [B, h, w, d]
            pull = neighbour_sum(residual / total)
            step = cand - chosen  # c - q, [B, h, w, k, d]
            cost = own + weight * (curv * step.square().sum(-1) - 2 * (step * pull[..., None, :]).sum(-1))
            visit = (rows == cls // 3) & (cols == cls % 3)
            choice = torch.where(visit, cost.argmin(-1), choice)
    return top.gather(-1, choice[..., None])[..., 0]
