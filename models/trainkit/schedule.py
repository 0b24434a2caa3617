"""Learning rate as a function of the global step alone, so a run split over many calls and
sessions follows one schedule (wall-time schedules drift with machine speed and restarts)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    lr: float                  # peak learning rate
    warmup: int = 300          # linear warm-up steps, counted from `warm_from`
    total_steps: int = 100_000 # cosine: end of the decay; later steps stay at the floor
    min_frac: float = 0.1      # final lr as a fraction of the peak
    kind: str = "cosine"       # cosine | exp | constant | wsd
    half_life: int = 35_000    # exp: steps per halving (down to min_frac)
    decay_steps: int = 20_000  # wsd: the peak holds until total_steps - decay_steps, then falls linearly to the floor

    def __post_init__(self) -> None:
        if self.kind not in ("cosine", "exp", "constant", "wsd"):
            raise ValueError(f"unknown schedule kind {self.kind!r}: use cosine, exp, constant or wsd")

    def __call__(self, step: int, warm_from: int = 0) -> float:
        """lr at `step`; `warm_from` is the step where Adam's moments started from zero (warm-up again)."""
        warm = min(1.0, (step - warm_from + 1) / self.warmup) if self.warmup > 0 else 1.0
        if self.kind == "cosine":
            p = min(1.0, step / max(1, self.total_steps))
            decay = self.min_frac + (1 - self.min_frac) * 0.5 * (1 + math.cos(math.pi * p))
        elif self.kind == "wsd":  # warm-up, stable, decay: a long run split over calls can be extended (a larger
            # total_steps) at any step before the decay starts without the lr jumping; decay ends it when it ships
            p = min(1.0, max(0.0, (step - self.total_steps + self.decay_steps) / max(1, self.decay_steps)))
            decay = 1 - (1 - self.min_frac) * p
        elif self.kind == "exp":
            decay = max(self.min_frac, 0.5 ** (step / self.half_life))
        else:
            decay = 1.0
        return self.lr * warm * decay
