"""vqgan's encoder choice of indices (`resilient.resilient_indices`): the objective it descends, checked against a
direct computation of it; the nearest code without weight; batches; the fill it models is the codec's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nmc.models.vqgan.recovery import SLOT_WEIGHTS, SLOTS, fill_mean
from nmc.models.vqgan.resilient import resilient_indices


def problem(seed: int, h: int = 5, w: int = 6, size: int = 12, d: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    codes = F.normalize(torch.randn(size, d, generator=g), dim=-1)
    # smooth latents: neighbours alike, as in photos, so that the neighbour term has something to gain
    z = torch.randn(1, d, h // 2 + 1, w // 2 + 1, generator=g)
    z = F.interpolate(z, size=(h, w), mode="bilinear", align_corners=False) + 0.3 * torch.randn(1, d, h, w, generator=g)
    return F.normalize(z, dim=1).permute(0, 2, 3, 1), codes


def objective(z: torch.Tensor, codes: torch.Tensor, idx: torch.Tensor, weight: float) -> float:
    """J written out cell by cell: own distortion plus, for every cell j, |z_j - m_j|^2, m_j the weighted mean of its
    in-map neighbours' codes."""
    h, w = idx.shape[1:]
    e = codes[idx[0]]
    total = float((z[0] - e).square().sum())
    for y in range(h):
        for x in range(w):
            num, den = torch.zeros(codes.shape[1]), 0.0
            for (dy, dx), wt in zip(SLOTS, SLOT_WEIGHTS):
                if 0 <= y + dy < h and 0 <= x + dx < w:
                    num, den = num + wt * e[y + dy, x + dx], den + wt
            total += weight * float((z[0, y, x] - num / den).square().sum())
    return total


def test_without_weight_it_is_the_nearest_code() -> None:
    z, codes = problem(0)
    assert torch.equal(resilient_indices(z, codes, weight=0.0), (z @ codes.t()).argmax(-1))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_it_lowers_the_objective_to_a_local_minimum(seed: int) -> None:
    """Never above the nearest codes' J; with enough sweeps, no single cell can lower J by another candidate."""
    z, codes = problem(seed)
    weight, k = 1.0, 4
    nearest = (z @ codes.t()).argmax(-1)
    idx = resilient_indices(z, codes, weight=weight, candidates=k, sweeps=12)
    best = objective(z, codes, idx, weight)
    assert best < objective(z, codes, nearest, weight) - 1e-4  # smooth latents: something to gain
    assert not torch.equal(idx, nearest)
    top = (z @ codes.t()).topk(k, dim=-1).indices[0]
    for y in range(idx.shape[1]):
        for x in range(idx.shape[2]):
            for c in top[y, x]:
                other = idx.clone()
                other[0, y, x] = c
                assert objective(z, codes, other, weight) >= best - 1e-5, (y, x, int(c))
    assert all(int(idx[0, y, x]) in top[y, x].tolist() for y in range(idx.shape[1]) for x in range(idx.shape[2]))


def test_a_batch_chooses_as_its_items_alone() -> None:
    (z1, codes), (z2, _) = problem(4), problem(5)
    batch = resilient_indices(torch.cat([z1, z2]), codes)
    assert torch.equal(batch, torch.cat([resilient_indices(z1, codes), resilient_indices(z2, codes)]))


def test_its_model_of_a_lost_cell_is_the_codecs_fill() -> None:
    """m_j, the mean that J scores, is what `fill_mean` decodes a lost cell to when all its neighbours arrived."""
    z, codes = problem(6)
    idx = resilient_indices(z, codes)[0]
    e = codes[idx]
    masked = np.zeros(idx.shape, bool)
    masked[2, 3] = True
    num = sum(wt * e[2 + dy, 3 + dx] for (dy, dx), wt in zip(SLOTS, SLOT_WEIGHTS))
    filled = fill_mean(idx.numpy(), masked, codes)
    np.testing.assert_allclose(filled[2, 3], (num / sum(SLOT_WEIGHTS)).numpy(), atol=1e-6)
