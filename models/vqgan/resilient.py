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
import torch.nn.functional as F
from torch import Tensor

from .recovery import SLOT_WEIGHTS, SLOTS

WEIGHT = 0.5  # dev, s16-s8192 (vqgan CARD "Session 19"): of 0.5, 0.75, 1, 1.5 and 2 the best rate-quality trade
CANDIDATES = 8  # 16 chose the same decodes on dev
SWEEPS = 3  # 6 gave the same quality


def shifted(t: Tensor, dy: int, dx: int) -> Tensor:
    """`[B, h, w, ...]` -> out[:, y, x] = t[:, y + dy, x + dx], zero outside the map."""
    h, w = t.shape[1:3]
    pad = [0, 0] * (t.dim() - 3) + [1, 1, 1, 1]  # F.pad pads the last axes first: none for the trailing ones
    return F.pad(t, pad)[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def neighbour_sum(t: Tensor) -> Tensor:
    """`[B, h, w, ...]` -> each cell's `SLOT_WEIGHTS`-weighted sum of its in-map neighbours' values."""
    out = torch.zeros_like(t)
    for (dy, dx), wt in zip(SLOTS, SLOT_WEIGHTS):
        out = out + wt * shifted(t, dy, dx)
    return out


def resilient_indices(z: Tensor, codes: Tensor, weight: float = WEIGHT, candidates: int = CANDIDATES, sweeps: int = SWEEPS) -> Tensor:
    """Unit latents `z` `[B, h, w, d]` and unit codes `codes` `[S, d]` -> indices `[B, h, w]` minimising `J` (module
    docstring). Deterministic on one thread; traceable (fixed shapes, no data-dependent control flow)."""
    cos = z @ codes.t()  # [B, h, w, S]
    k = min(candidates, codes.shape[0])
    top = cos.topk(k, dim=-1).indices  # [B, h, w, k], nearest first
    choice = torch.zeros_like(top[..., 0])  # position in `top`
    if weight == 0 or k == 1:
        return top[..., 0]
    own = 2 - 2 * cos.gather(-1, top)  # |z - e|^2 of each candidate
    cand = codes[top]  # [B, h, w, k, d]
    inside = torch.ones_like(z[..., 0])
    total = neighbour_sum(inside)  # m_j's denominator
    b, h, w = z.shape[:3]
    rows, cols = torch.arange(h, device=z.device)[:, None] % 3, torch.arange(w, device=z.device)[None] % 3
    for _ in range(sweeps):
        for cls in range(9):
            chosen = cand.gather(3, choice[..., None, None].expand(b, h, w, 1, z.shape[-1]))[..., 0, :]  # [B, h, w, d]
            sums = neighbour_sum(chosen)  # [B, h, w, d]
            cost = own
            for (dy, dx), wt in zip(SLOTS, SLOT_WEIGHTS):  # neighbour j = i + (dy, dx); i is j's neighbour in the mirrored
                # slot, whose weight is the same
                m = (shifted(sums, dy, dx)[..., None, :] + wt * (cand - chosen[..., None, :])) / shifted(total, dy, dx).clamp(min=1e-6)[..., None, None]
                cost = cost + weight * shifted(inside, dy, dx)[..., None] * (shifted(z, dy, dx)[..., None, :] - m).square().sum(-1)
            visit = (rows == cls // 3) & (cols == cls % 3)
            choice = torch.where(visit, cost.argmin(-1), choice)
    return top.gather(-1, choice[..., None])[..., 0]
