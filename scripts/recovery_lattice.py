"""How the interleave lattice (packets per tile) changes a fill's quality under independent packet loss, with little noise.

    python -P scripts/recovery_lattice.py SETTING HOW PACKETS [PACKETS ...]      [WEIGHTS=vqgan weights file]

For each dev photo and each packet count, the photo is coded once; then k = 1 .. 5 of its packets are lost, every
single packet and a few seeded random sets for k > 1, decoded with the fill HOW (mean | nearest | frequent | recovery)
under --recover and scored (ST-LPIPS, PSNR). The expected score at 20 % independent loss weights the mean score of k
lost packets by the binomial probability of k (nothing lost: the loss-free decode), so lattices with different packet
counts are compared at the same loss rate without the luck of 2 draws per photo. Also prints the real bpp.
"""

import hashlib
import io
import os
import sys
from math import comb
from pathlib import Path

import numpy as np

from nmc.codec import api
from nmc.codec import loss as L
from nmc.codec import media as M
from nmc.codec.container import read_header
from nmc.codec.evaluate import Scorer, load_reference
from nmc.models.vqgan.codec import RECOVERY, VQGANCodec

DEV = Path(os.environ.get("DEVCHECK_DIR") or Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dev" / "images")
SETS = {2: 6, 3: 4, 4: 2, 5: 1}  # random sets of k lost packets per photo (k = 1: every packet)
RATE = 0.2

setting, how, counts = sys.argv[1], sys.argv[2], [int(a) for a in sys.argv[3:]]
weights = Path(os.environ["WEIGHTS"]) if os.environ.get("WEIGHTS") else None
for n in counts:
    codec = VQGANCodec(weights, recovery_path=RECOVERY, concealment=how, packets=n)
    by_k: dict[int, list[tuple[float, float]]] = {}
    bpp = []
    for path in sorted(DEV.glob("*.png")):
        ref = load_reference(path, "image")
        scorer = Scorer("image", lambda: ref, ["st_lpips", "psnr"], "cpu")  # noqa: B023 (used in this iteration only)
        fo = io.BytesIO()
        api.compress_to_file(codec, ref, fo, codec.setting(setting))
        data = fo.getvalue()
        bpp.append(M.real_rate(len(data), M.metadata(ref))[0])
        rng = np.random.default_rng(int(hashlib.sha256(path.read_bytes()).hexdigest()[:8], 16))
        total = read_header(io.BytesIO(data), api.header_dictionary).packets
        sets = [[i] for i in range(total)] + [list(rng.choice(total, k, replace=False)) for k, m in SETS.items() for _ in range(m)]
        s0 = scorer.scores([api.decompress(data, codec=codec)])[0]
        by_k.setdefault(0, []).append((s0["st_lpips"], s0["psnr"]))
        for lost_ids in sets:
            lost = np.zeros(total, bool)
            lost[lost_ids] = True
            s = scorer.scores([api.decompress(L.with_lost(data, lost, api.header_dictionary), recover=True, codec=codec)])[0]
            by_k.setdefault(len(lost_ids), []).append((s["st_lpips"], s["psnr"]))
        print(f"{path.name} {n} packets: {len(sets)} decodes", flush=True)
    means = {k: np.mean(v, axis=0) for k, v in by_k.items()}
    p = {k: comb(n, k) * RATE**k * (1 - RATE) ** (n - k) for k in means}
    expected = sum(p[k] * means[k] for k in means) / sum(p.values())
    rows = ", ".join(f"k={k}: {means[k][0]:.4f}" for k in sorted(means))
    print(f"{setting} {how} {n} packets ({codec.lattice[0]}x{codec.lattice[1]}), {np.mean(bpp):.5f} bpp: {rows}; "
          f"expected at {RATE:.0%} (k <= 5): ST-LPIPS {expected[0]:.4f}, PSNR {expected[1]:.2f}", flush=True)
