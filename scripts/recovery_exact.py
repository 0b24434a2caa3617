"""The expected quality of a vqgan fill under independent packet loss, exactly rather than by seeded draws.

    python -P scripts/recovery_exact.py OUT.json [SETTING] [FILL ...]       (default s1024 recovery nearest)
    python -P scripts/recovery_exact.py OUT.json --report RATE [RATE ...]   (the expectations from OUT.json)

Each dev photo is coded once (CONCEAL_CHECK=1: as `nmc compress --conceal-check` makes it), then decoded with every
pattern of up to MAX_LOST (default 4) of its 8 packets lost, with each fill; the ST-LPIPS and PSNR of every decode go to
OUT.json (kept and extended: a run resumes). Under independent loss at rate p a pattern of k lost packets has the
probability p^k (1 - p)^(8 - k), so any rate's expectation is a weighted sum of these scores; the patterns of more than
MAX_LOST lost packets (1.0 % of the probability at p = 0.2 with MAX_LOST 4) are given the mean score of those with
MAX_LOST lost. `nmc eval --loss` estimates the same expectation from seeded draws (RECOVERY.md "Session 22": 8 draws per
photo lose 1.62 of 8 packets on average, the next 8 draws 1.80, where 1.6 is expected). WORKER=i/n does every n-th
photo from the i-th (run n of them side by side, each with its own OUT.json, then merge with --report A.json B.json).
DEVCHECK_DIR=FOLDER scores that folder's PNGs instead of dev.
"""

import hashlib
import io
import itertools
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

DEV = Path(os.environ.get("DEVCHECK_DIR") or Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dev" / "images")


def expectation(rows: list[dict], n: int, p: float) -> float:
    """The expected ST-LPIPS of one photo and fill under independent loss at rate `p`: each scored pattern weighs its
    probability; the patterns beyond the most lost packets scored take the mean score of those."""
    top = max(len(r["lost"]) for r in rows)
    total = 0.0
    for k in range(n + 1):
        w = p**k * (1 - p) ** (n - k)  # the probability of one pattern of k lost packets
        scores = [r["st_lpips"] for r in rows if len(r["lost"]) == min(k, top)]
        total += w * (sum(scores) if k <= top else math.comb(n, k) * float(np.mean(scores)))
    return total


def report(paths: list[Path], rates: list[float]) -> None:
    records = [r for p in paths for r in json.loads(p.read_text())]
    fills = sorted({r["fill"] for r in records})
    files = sorted(f for f in {r["file"] for r in records} if {r["fill"] for r in records if r["file"] == f} == set(fills))  # complete ones
    print(f"{len(files)} photos: {', '.join(files)}")
    for p in rates:
        means = {}
        for fill in fills:
            per_file = [expectation([r for r in records if r["file"] == f and r["fill"] == fill], records[0]["packets"], p) for f in files]
            means[fill] = float(np.mean(per_file))
        print(f"independent loss {p}: expected ST-LPIPS " + ", ".join(f"{k} {v:.5f}" for k, v in means.items()))
        for fill in (f for f in fills if {"nearest", "lossfree"} <= means.keys() and f not in ("nearest", "lossfree")):
            share = (means["nearest"] - means[fill]) / (means["nearest"] - means["lossfree"])
            print(f"  {fill}: {100 * share:.1f} % of the gap between the nearest copy and the loss-free decode")


def main() -> None:
    from nmc.codec import api
    from nmc.codec import loss as L
    from nmc.codec.container import read_header
    from nmc.codec.evaluate import Scorer, load_reference
    from nmc.models.vqgan.codec import VQGANCodec

    out = Path(sys.argv[1])
    setting, fills = (sys.argv[2:3] or ["s1024"])[0], sys.argv[3:] or ["recovery", "nearest"]
    records = json.loads(out.read_text()) if out.exists() else []
    done = {(r["file"], r["fill"], tuple(r["lost"])) for r in records}
    worker, workers = (int(x) for x in os.environ.get("WORKER", "0/1").split("/"))
    codec = VQGANCodec(conceal_check=os.environ.get("CONCEAL_CHECK") == "1")
    for path in sorted(DEV.glob("*.png"))[worker::workers]:
        ref = load_reference(path, "image")
        scorer = Scorer("image", lambda: ref, ["st_lpips", "psnr"], "cpu")  # noqa: B023 (used in this iteration only)
        data = api.compress(codec, ref, setting)
        header = read_header(io.BytesIO(data), api.header_dictionary)
        n = header.packets or 0
        sha = hashlib.sha256(data).hexdigest()[:16]
        patterns = [c for k in range(int(os.environ.get("MAX_LOST", "4")) + 1) for c in itertools.combinations(range(n), k)]
        for fill in ["lossfree", *fills]:
            for lost in patterns if fill != "lossfree" else [()]:
                if (path.name, fill, lost) in done:
                    continue
                mask = np.zeros(n, bool)
                mask[list(lost)] = True
                codec.concealment = "recovery" if fill == "lossfree" else fill
                s = scorer.scores([api.decompress(L.with_lost(data, mask, api.header_dictionary), recover=True, codec=codec)])[0]
                records.append({"file": path.name, "file_sha": sha, "fill": fill, "lost": list(lost), "packets": n, "own_blocks": header.extra.get("own_blocks", ""),
                                "st_lpips": s["st_lpips"], "psnr": s["psnr"]})  # fmt: skip
            out.write_text(json.dumps(records))
            print(f"{path.name} {fill}: {len(patterns)} patterns", flush=True)


if __name__ == "__main__":
    if "--report" in sys.argv:
        i = sys.argv.index("--report")
        report([Path(a) for a in sys.argv[1:i]], [float(r) for r in sys.argv[i + 1 :]])
    else:
        main()
