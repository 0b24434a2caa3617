"""Bits per Gaussian of each codec at given render PSNRs, from an `nmc eval` report of Gaussian sequences.

    python scripts/rate_at_psnr.py docs/benchmarks/fitted-gaussians/report.json 40 45

Interpolated linearly in log rate between the two settings whose PSNRs bracket the target (the
settings sorted by rate); "-" where no two settings bracket it. Then each anchor's rate over queen's.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict


def rate_at(points: list[tuple[float, float]], psnr: float) -> float | None:
    """`points` are (bits, PSNR); the rate where the curve first reaches `psnr`."""
    pts = sorted(p for p in points if math.isfinite(p[1]))
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if q0 <= psnr <= q1 and q1 > q0:
            return math.exp(math.log(r0) + (psnr - q0) / (q1 - q0) * (math.log(r1) - math.log(r0)))
    return None


def main(report: str, targets: list[float]) -> None:
    curves: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in json.load(open(report))["records"]:
        if r.get("view_psnr") is not None:
            curves[r["codec"]].append((r["bits_per_gaussian"], r["view_psnr"]))
    for t in targets:
        rates = {c: rate_at(p, t) for c, p in curves.items()}
        base = rates.get("queen")
        cells = [f"{c} {v:.1f}" + (f" ({v / base:.1f}x queen)" if base and c != "queen" else "") if v else f"{c} -" for c, v in rates.items()]
        print(f"{t:g} dB: " + ", ".join(cells))


if __name__ == "__main__":
    main(sys.argv[1], [float(v) for v in sys.argv[2:]])
