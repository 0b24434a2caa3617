"""Packet-loss simulation for `nmc eval --loss`: files with lost packets, decoded with each concealment.

Two channels lose packets of a coded file (seeded; the seeds go into the report):

- `independent`: each packet is lost with probability `rate`;
- `burst`: a Gilbert-Elliott channel (Gilbert's special case: every packet sent in the bad state is
  lost, none in the good one) with mean burst length `BURST` packets and stationary loss `rate`:
  P(good -> bad) = rate / (BURST (1 - rate)), P(bad -> good) = 1 / BURST, the first state drawn from
  the stationary distribution.

A lost packet is written with a wrong CRC (its bytes kept), which the decoder under `--recover` treats
as lost. Each codec that `can_recover` decodes every damaged file once per concealment it offers
(`Codec.concealments`; the first is its own, e.g. a learned recovery model, the rest baselines).
"""

from __future__ import annotations

import hashlib
import io
import math
from typing import Any, Callable

import numpy as np

from .container import read_frame, read_header

CHANNELS = ("independent", "burst")
BURST = 3.0  # mean packets per burst of the Gilbert-Elliott channel


def lost_packets(n: int, rate: float, channel: str, seed: int) -> np.ndarray:
    """Which of `n` packets the channel loses: bool `(n,)`, from a generator seeded by `seed`."""
    if not 0 <= rate < 1:
        raise ValueError(f"loss rate must be in [0, 1), got {rate}")
    rng = np.random.default_rng(seed)
    if channel == "independent":
        return rng.random(n) < rate
    if channel != "burst":
        raise ValueError(f"unknown loss channel {channel!r} (choose from {CHANNELS})")
    to_bad, to_good = rate / (BURST * (1 - rate)), 1 / BURST
    u = rng.random(n)
    bad = np.zeros(n, bool)
    state = u[0] < rate if n else False
    for i in range(n):
        if i:
            state = u[i] >= to_good if state else u[i] < to_bad
        bad[i] = state
    return bad


def with_lost(data: bytes, lost: np.ndarray, dictionary: Callable[[str], bytes]) -> bytes:
    """`data` (a whole .nmc file) with the CRC of each packet marked in `lost` made wrong."""
    fo = io.BytesIO(data)
    header = read_header(fo, dictionary)
    out = bytearray(data)
    for i in range(len(lost)):
        length, crc = read_frame(fo, i, header.version)
        if length is None:
            raise ValueError(f"the file has {i} packets, {len(lost)} were given")
        if lost[i]:
            out[fo.tell() - 4 : fo.tell()] = (crc ^ 0xFFFFFFFF).to_bytes(4, "little")  # the frame's last 4 bytes
        fo.seek(length, io.SEEK_CUR)
    return bytes(out)


def seed_of(*parts: Any) -> int:
    """A seed from the file's hash, the channel, the rate and the draw (stable across runs and machines)."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def means(records: list[dict[str, Any]], metrics: list[str]) -> list[dict[str, Any]]:
    """Mean of each metric per (codec, setting, channel, rate, concealment), over files and draws."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["codec"], r["setting"], r["channel"], r["loss"], r["concealment"]), []).append(r)
    rows = []
    for (codec, setting, channel, rate, how), rs in groups.items():
        row: dict[str, Any] = {"codec": codec, "setting": setting, "channel": channel, "loss": rate, "concealment": how, "decodes": len(rs)}
        row["lost_share"] = float(np.mean([r["lost"] / r["packets"] for r in rs]))
        for m in metrics:
            vals = [r[m] for r in rs if r.get(m) is not None and math.isfinite(r[m])]
            row[m] = float(np.mean(vals)) if vals else math.nan
        rows.append(row)
    return rows


def gap_closed(loss: dict[str, Any], higher_is_better: dict[str, bool]) -> list[dict[str, Any]]:
    """Per codec, setting, channel, rate and concealment other than the codec's baselines (`loss["baselines"]`), for each
    metric: the share of the gap between the better baseline there and the loss-free decode that it closes, (b - x) / (b -
    loss-free); nan where no baseline or loss-free mean is known or the two agree. `higher_is_better`: per metric."""
    means = {(m["codec"], m["setting"], m["channel"], m["loss"], m["concealment"]): m for m in loss["means"]}
    rows = []
    for (codec, setting, channel, rate, how), m in means.items():
        baselines = loss.get("baselines", {}).get(codec, [])
        if not baselines or how in baselines:
            continue
        free = loss["loss_free"].get(f"{codec} {setting}", {})
        row: dict[str, Any] = {"codec": codec, "setting": setting, "channel": channel, "loss": rate, "concealment": how}
        for metric in loss["metrics"]:
            vals = [v for b in baselines if (v := means.get((codec, setting, channel, rate, b), {}).get(metric)) is not None and math.isfinite(v)]
            best = (max if higher_is_better[metric] else min)(vals) if vals else math.nan
            f, x = free.get(metric), m.get(metric)
            ok = f is not None and x is not None and math.isfinite(best) and best != f
            row[metric] = (best - x) / (best - f) if ok else math.nan
        rows.append(row)
    return rows


def write_plots(loss: dict[str, Any], out: Any, labels: dict[str, str]) -> list[str]:
    """One figure per metric: mean quality against loss rate, a panel per codec setting (shared axes), a colour per
    concealment (the same in every panel), solid for independent drops and dashed for bursts, the loss-free decode
    at rate 0; PNG names."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "nmc"
    import matplotlib.pyplot as plt

    names = []
    rows = loss["means"]
    panels = list(dict.fromkeys((r["codec"], r["setting"]) for r in rows))
    colours = {how: f"C{i}" for i, how in enumerate(dict.fromkeys(r["concealment"] for r in rows))}
    for metric in loss["metrics"]:
        fig, axes = plt.subplots(1, len(panels), figsize=(1 + 4.2 * len(panels), 4.2), dpi=100, sharey=True, squeeze=False)
        for ax, (codec, setting) in zip(axes[0], panels):
            free = loss["loss_free"].get(f"{codec} {setting}", {}).get(metric)
            for channel, how in dict.fromkeys((r["channel"], r["concealment"]) for r in rows if (r["codec"], r["setting"]) == (codec, setting)):
                pts = sorted((r["loss"], r[metric]) for r in rows if (r["codec"], r["setting"], r["channel"], r["concealment"]) == (codec, setting, channel, how))
                if free is not None:
                    pts = [(0.0, free), *pts]
                style = "-o" if channel == "independent" else "--s"
                ax.plot(*zip(*pts), style, color=colours[how], ms=3, lw=1.2, label=f"{how}, {channel}")
            ax.set_title(f"{codec} {setting}", fontsize=9)
            ax.set_xlabel("packet loss rate")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel(labels.get(metric, metric))
        fig.tight_layout()
        names.append(f"loss_{metric}.png")
        fig.savefig(out / names[-1])
        fig.savefig(out / f"loss_{metric}.svg", metadata={"Date": None})
        plt.close(fig)
    return names
