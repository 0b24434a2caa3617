"""One prior-fitting driver for every codec's `fit_prior.py`: a network export and training files
in, the shipped weights file (network + integer priors + report, `codec/weights.py`) out.

A codec supplies an `IndexSource`: how files become index packets (a packet is one array of
indices per codebook, as the codec codes them), the contexts of codebook k in a packet, and how
it entropy-codes the codebooks of a packet that a setting codes. The driver splits the files (never the dev set), caches the packets,
fits one `ContextPrior` and one unigram table per codebook, reports held-out bits per index and
what the codec writes at each setting, and writes the weights file.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nmc.codec import entropy as E
from nmc.codec.prior import ContextPrior, PriorSet, ideal_bits
from nmc.codec.weights import Weights, write_weights

from .corpus import training_files

Packet = list[np.ndarray]  # one index array per codebook


@dataclass
class IndexSource:
    """What a codec gives the driver."""

    alphabets: list[int]  # per codebook
    packets: Callable[[list[Path]], list[Packet]]  # index packets of files, all codebooks
    contexts: Callable[[Packet, int], np.ndarray]  # context rows of codebook k, in `packet[k].ravel()` order
    sizes: Callable[[int], list[int]]  # alphabet of each context of codebook k
    code: Callable[[PriorSet, Packet, list[int]], bytes]  # codebooks `ks` of a packet, coded as the codec does
    settings: dict[str, list[int]]  # setting name -> the codebooks it codes
    codes: Callable[[int], np.ndarray] | None = None  # codebook k's code vectors `[K, d]`: its tables are fitted as functions of them


@dataclass(frozen=True)
class FitConfig:
    dim: int = 32  # ContextPrior embedding size
    steps: int = 3000  # Adam steps per codebook
    batch: int = 4096
    lr: float = 3e-3
    seed: int = 0
    device: str = "cpu"
    hidden: int = 128  # with code vectors: width of the MLPs that map a code to its table rows
    resid_decay: float = 1.0  # with code vectors: weight of the mean square of the free per-index part of the tables


class _Tables(torch.nn.Module):
    """The float tables of one context: `embed` `(n + 1, dim)` and `proj` `(dim, K)`.

    Free tables, or, given the code vectors of the codebook, tables that are functions of the codes
    (`mlp(code)`) plus a small free part: with thousands of codes and ~200 k training indices each
    index is seen a few dozen times, and a free row per index over-fits, while similar codes (neighbours
    on the unit sphere) share statistics through the MLP. A 4096-code rung of vqgan: 8 % -> 20 % saving
    on held-out photos (models/vqgan/CARD.md). The export quantizes the resulting tables as usual, so the
    coded format and the integer decoder do not change."""

    def __init__(self, embed: torch.Tensor, proj: torch.Tensor, fit: FitConfig, codes: torch.Tensor | None):
        super().__init__()
        self.codes = codes  # (K, d) or None
        self.e_mlp: torch.nn.Module | None
        self.p_mlp: torch.nn.Module | None
        self.e_res: torch.nn.Parameter | None = None  # the free parts next to the MLPs
        self.p_res: torch.nn.Parameter | None = None
        n, alphabet = embed.shape[0] - 1, proj.shape[1]
        if codes is None or n != alphabet:  # a context of another alphabet (another codebook, a position): free rows
            self.embed = torch.nn.Parameter(embed)
            self.e_mlp = None
        else:  # the context is an index of this codebook (or "not available": a zero code with a flag)
            self.e_res = torch.nn.Parameter(torch.zeros(n + 1, fit.dim))
            self.e_mlp = torch.nn.Sequential(torch.nn.Linear(codes.shape[1] + 1, fit.hidden), torch.nn.GELU(), torch.nn.Linear(fit.hidden, fit.dim))
        if codes is None:
            self.proj = torch.nn.Parameter(proj)
            self.p_mlp = None
        else:
            self.p_res = torch.nn.Parameter(torch.zeros(fit.dim, alphabet))
            self.p_mlp = torch.nn.Sequential(torch.nn.Linear(codes.shape[1], fit.hidden), torch.nn.GELU(), torch.nn.Linear(fit.hidden, fit.dim))

    def tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.e_mlp is None:
            embed = self.embed
        else:
            assert self.codes is not None
            c = self.codes
            feats = torch.cat([torch.cat([c, c.new_zeros(1, c.shape[1])]), torch.cat([c.new_zeros(len(c), 1), c.new_ones(1, 1)])], 1)
            embed = self.e_mlp(feats) + self.e_res
        proj = self.proj if self.p_mlp is None else self.p_mlp(self.codes).T + self.p_res
        return embed, proj

    def residual_penalty(self) -> torch.Tensor:
        return sum(((r**2).mean() for r in (self.e_res, self.p_res) if r is not None), torch.zeros(()))


def split_files(root: Path, exts: tuple[str, ...], held_out: float, seed: int, budget: Callable[[Path], float] | None = None,
                limit: float = 0.0) -> tuple[list[Path], list[Path]]:
    """Training files in a seeded random order, up to `limit` of `budget(file)` (e.g. seconds) when
    given; the first `held_out` fraction (at least one file) is kept for the report."""
    files = training_files(root, exts)
    random.Random(seed).shuffle(files)
    if budget is not None and limit > 0:
        picked, total = [], 0.0
        for f in files:
            if total >= limit:
                break
            picked.append(f)
            total += budget(f)
        files = picked
    n_test = max(1, round(held_out * len(files)))
    return files[n_test:], files[:n_test]


def cached_packets(cache: Path | None, make: Callable[[], tuple[list[Packet], list[Packet]]]) -> tuple[list[Packet], list[Packet]]:
    """`make()` (train and held-out packets), or what an earlier run saved in `cache` (.npz)."""
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            if "codebooks" not in z:
                raise ValueError(f"{cache}: written by an older fit_prior.py (delete it to encode again)")
            n = int(z["codebooks"])
            train, test = ([[z[f"{part}{i}_{k}"].astype(np.int64) for k in range(n)] for i in range(int(z[f"n_{part}"]))] for part in ("train", "test"))
            return train, test
    train, test = make()
    if cache is not None:
        arrays = {f"{part}{i}_{k}": a.astype(np.uint16) for part, ps in (("train", train), ("test", test)) for i, p in enumerate(ps) for k, a in enumerate(p)}
        np.savez(cache, n_train=len(train), n_test=len(test), codebooks=len(train[0]), **arrays)  # type: ignore[arg-type]
    return train, test


def fit_context_prior(symbols: np.ndarray, contexts: np.ndarray, alphabet: int, sizes: list[int], fit: FitConfig, seed: int,
                      codes: np.ndarray | None = None) -> ContextPrior:
    """Train the float model by maximum likelihood (Adam, cosine decay), then quantize it. With `codes`
    (the codebook's code vectors `[alphabet, d]`) the tables are functions of the codes (`_Tables`)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.as_tensor(np.asarray(symbols), dtype=torch.long).ravel().to(fit.device)
    x = torch.as_tensor(np.asarray(contexts), dtype=torch.long).reshape(len(y), len(sizes)).to(fit.device)
    c = None if codes is None else torch.as_tensor(np.asarray(codes), dtype=torch.float32).to(fit.device)
    embed = [torch.randn(n + 1, fit.dim, generator=gen) * 0.1 for n in sizes]  # free tables' start (drawn in this order since the first fits)
    proj = [torch.randn(fit.dim, alphabet, generator=gen) * 0.1 for _ in sizes]
    with torch.random.fork_rng(devices=[]):  # the MLPs' initialisation, seeded, leaving the caller's generator alone
        torch.manual_seed(seed)
        parts = [_Tables(e, p, fit, c).to(fit.device) for e, p in zip(embed, proj)]
    counts = torch.bincount(y, minlength=alphabet).double() + 0.5
    bias = torch.nn.Parameter((counts / counts.sum()).log().float())
    opt = torch.optim.Adam([bias, *(q for t in parts for q in t.parameters())], lr=fit.lr)
    for step in range(fit.steps):
        i = torch.randint(0, len(y), (min(fit.batch, len(y)),), generator=gen).to(fit.device)
        tables = [t.tables() for t in parts]
        logits = bias + sum(e[x[i, k]] @ p for k, (e, p) in enumerate(tables))
        loss = torch.nn.functional.cross_entropy(logits, y[i])
        if c is not None:
            loss = loss + fit.resid_decay * sum(t.residual_penalty().to(loss.device) for t in parts)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for g in opt.param_groups:
            g["lr"] = fit.lr * 0.5 * (1 + np.cos(np.pi * (step + 1) / fit.steps))
    with torch.no_grad():
        tables = [t.tables() for t in parts]
    as_np = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
    return ContextPrior.quantize(as_np(bias), [as_np(e) for e, _ in tables], [as_np(p) for _, p in tables])


def examples(src: IndexSource, packets: list[Packet], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Symbols `(N,)` and context rows `(N, n_ctx)` of codebook k over all packets."""
    return np.concatenate([p[k].ravel() for p in packets]), np.concatenate([src.contexts(p, k) for p in packets])


def fit_priors(src: IndexSource, train: list[Packet], test: list[Packet], fit: FitConfig, say: Callable[[str], None] = print) -> tuple[PriorSet, list[dict]]:
    """One context prior and one unigram table per codebook, with held-out bits per index; then
    the bits per index the codec writes at each setting (per packet the cheaper table)."""
    t0 = time.time()
    priors: list[ContextPrior] = []
    unigram: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    for k, K in enumerate(src.alphabets):
        y, ctx = examples(src, train, k)
        prior = fit_context_prior(y, ctx, K, src.sizes(k), fit, fit.seed + k, None if src.codes is None else src.codes(k))
        uni = E.freqs_from_counts(np.bincount(y, minlength=K) + 0.5)
        yt, ct = examples(src, test, k)
        ctx_bits, uni_bits = ideal_bits(prior, yt, ct) / len(yt), E.cross_entropy_bits(yt, uni) / len(yt)
        used = np.count_nonzero(np.bincount(y, minlength=K)) / K
        priors.append(prior)
        unigram.append(uni)
        rows.append({"codebook": k, "context_bits": round(ctx_bits, 4), "unigram_bits": round(uni_bits, 4), "used": round(used, 4)})
        say(f"codebook {k}: context {ctx_bits:.3f} bit/index, unigram {uni_bits:.3f}, fixed {np.log2(K):.0f}, "
            f"codes used {100 * used:.1f} % ({len(y)} train indices, {time.time() - t0:.0f} s)")
    prior_set = PriorSet(priors, unigram)
    say("setting  bits/index  saving vs fixed length  (held-out packets, range-coded)")
    for name, ks in src.settings.items():
        nbytes = sum(len(src.code(prior_set, p, ks)) for p in test)
        n = sum(p[k].size for p in test for k in ks)
        bits, fixed = 8 * nbytes / n, sum(p[k].size * np.log2(src.alphabets[k]) for p in test for k in ks) / n
        rows.append({"setting": name, "codebooks": len(ks), "coded_bits": round(bits, 4)})
        say(f"{name:8s} {bits:10.3f}  {100 * (1 - bits / fixed):21.1f} %")
    return prior_set, rows


def write(out: Path, export: Weights, prior: PriorSet, report: dict[str, Any], say: Callable[[str], None] = print) -> None:
    """The shipped weights file: the export's network tensors as they are, the priors, the report."""
    write_weights(out, Weights(export.state, export.args, prior, {"network": export.report, **report}))
    say(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
