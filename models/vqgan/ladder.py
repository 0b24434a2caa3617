"""The codebook ladder: k-means of a trained vqgan codebook into smaller codebooks (Mao et al., DCC 2024).

    python models/vqgan/ladder.py --network vqgan.safetensors --out ladder.safetensors            # rungs 16..512
    python models/vqgan/ladder.py --network vqgan.safetensors --out ladder.safetensors --data .data/images
    python models/vqgan/ladder.py --from-weights models/vqgan/weights/vqgan.safetensors --out ladder.safetensors

Each rung clusters the base codebook's unit codes into S clusters with spherical k-means (cosine
similarity, the quantizer's own lookup) and keeps the unit centroids: a base index maps to its
cluster's centroid, and a rung of S entries costs log2(S) bits per 16x16 pixels before entropy coding.
With `--data`, each code weighs as often as the base network picks it on those photos (unused codes
then pull on no centroid), so the centroids follow the data rather than the codebook's layout.
Deterministic: k-means++ seeding and Lloyd iterations in float64 on the CPU from a seeded generator.
train.py `--rung S --ladder FILE` then fine-tunes each rung.

`--from-weights` writes the ladder already in an assembled weights file (fit_prior.py's, the installed
one) instead: each rung's codebook as stored, numbered as there, so that the priors, recovery maps and
fine-tunes made for those rungs still fit (a new k-means would renumber the codes). Its labels are
what the codec's lookup gives each base code among the rung's codes. Rungs that were fine-tuned
(their own 1x1 convolutions or decoder) are left out (said on stdout): a ladder holds codebooks only.

The file (safetensors): `rung.S.codebook` `[S, d]` fp32 and `rung.S.labels` `[K]` int64 (base index
-> cluster) for every rung, `base.counts` `[K]` with `--data`; metadata: format, the network file's
sha256, rungs, seed (or `from_weights`).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
import typer
from safetensors.torch import save_file

from nmc.models.trainkit.images import load_images
from nmc.codec.weights import read_weights
from nmc.models.vqgan.network import VQGAN, Ladder, base_of

FORMAT = "nmc-vqgan-ladder-v1"


def spherical_kmeans(codes: torch.Tensor, k: int, weights: torch.Tensor | None = None, seed: int = 0,
                     iters: int = 200) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Cluster unit vectors `[K, d]` into `k` by cosine similarity; returns unit centroids `[k, d]` and labels `[K]`.

    k-means++ seeding, then Lloyd iterations until no label changes. A cluster left empty restarts
    at the (weighted) point worst served by its centroid, so every centroid stays in use.

    Args:
        codes (torch.Tensor): `[K, d]` vectors, l2-normalised here (in float64).
        k (int): number of clusters, at most the number of codes with positive weight.
        weights (torch.Tensor | None): `[K]` non-negative weight per code (default: all 1).
        seed (int): seed of the k-means++ draws.
        iters (int): the most Lloyd iterations.
    """
    x = F.normalize(codes.detach().to("cpu", torch.float64), dim=1)
    w = torch.ones(len(x), dtype=torch.float64) if weights is None else weights.detach().to("cpu", torch.float64)
    if (w < 0).any() or w.shape != (len(x),):
        raise ValueError(f"weights must be {len(x)} non-negative numbers, got shape {tuple(w.shape)}")
    if not 1 <= k <= int((w > 0).sum()):
        raise ValueError(f"cannot make {k} clusters of {int((w > 0).sum())} codes with positive weight")
    gen = torch.Generator().manual_seed(seed)
    centroids = x[torch.multinomial(w, 1, generator=gen)]
    d2 = torch.full((len(x),), 4.0, dtype=torch.float64)  # squared distance to the nearest centroid so far
    for _ in range(1, k):  # k-means++: draw proportional to weight x squared distance
        d2 = torch.minimum(d2, (2 - 2 * x @ centroids[-1]).clamp_min(0))
        centroids = torch.cat([centroids, x[torch.multinomial(d2 * w, 1, generator=gen)]])
    labels = torch.full((len(x),), -1, dtype=torch.long)
    for _ in range(iters):
        sim = x @ centroids.t()
        new = sim.argmax(dim=1)
        served = sim.gather(1, new[:, None]).squeeze(1)  # cosine to the own centroid
        empty = torch.ones(k, dtype=torch.bool)
        empty[new[w > 0]] = False
        for j in empty.nonzero().flatten().tolist():  # move the worst-served point there
            worst = int(((1 - served) * w).argmax())
            new[worst], served[worst] = j, 1.0
        centroids = F.normalize(torch.zeros_like(centroids).index_add_(0, new, x * w[:, None]), dim=1)
        if torch.equal(new, labels):
            break
        labels = new
    return centroids.float(), (x @ centroids.double().t()).argmax(dim=1)


@torch.no_grad()
def code_counts(net: VQGAN, data: Path, device: str = "cpu") -> torch.Tensor:
    """How often the base network picks each code `[K]` on the photos under `data` (whole images)."""
    counts = torch.zeros(net.vq.size, dtype=torch.long)
    images, _ = load_images(data, 0)
    net = net.to(device)
    for im in images:
        counts += torch.bincount(net.encode(im[None].to(device).float() / 255).flatten(), minlength=net.vq.size).cpu()
    return counts


def k_means_ladder(network: Path, sizes: list[int], data: Path | None, seed: int, device: str) -> dict[str, torch.Tensor]:
    """The ladder file's tensors: k-means of `network`'s base codebook into each of `sizes` (weighted by use on `data`)."""
    start = read_weights(network)
    net = VQGAN.from_state_dict(*base_of(start.state, start.args))
    codes = net.vq.unit_codes().detach().cpu()
    weights = code_counts(net, data, device) if data is not None else None
    tensors: dict[str, torch.Tensor] = {} if weights is None else {"base.counts": weights}
    if weights is not None:
        print(f"{int((weights > 0).sum())} of {net.vq.size} codes used on {data} ({int(weights.sum())} indices)")
    for s in sizes:
        if s >= net.vq.size:
            raise typer.BadParameter(f"rung {s} is not smaller than the base codebook ({net.vq.size})")
        centroids, labels = spherical_kmeans(codes, s, weights, seed)
        tensors[f"rung.{s}.codebook"], tensors[f"rung.{s}.labels"] = centroids.contiguous(), labels
        w = torch.ones(len(codes)) if weights is None else weights.float()
        fit = float((w * (codes * centroids[labels]).sum(1)).sum() / w.sum())
        print(f"rung {s}: {len(labels.unique())} clusters in use, weighted mean cosine to the centroid {fit:.4f}, "
              f"{math.log2(s) / 256:.4f} bpp uniform")  # fmt: skip
    return tensors


def ladder_of(path: Path) -> dict[str, torch.Tensor]:
    """The ladder file's tensors for the rungs of the assembled weights file `path`: codebooks as stored,
    labels as the codec's lookup maps each base code to the rung's codes."""
    w = read_weights(path)
    if not w.args.get("rungs"):
        raise typer.BadParameter(f"--from-weights {path}: no ladder rungs in it (a base export: give it as --network)")
    net = Ladder.from_state_dict(w.state, w.args)
    codes = net.vq.unit_codes().detach()
    base = net.vq.state_dict()
    tensors = {}
    for s in net.sizes[:-1]:
        vq, g_s = net.parts(s)
        if g_s is not net.g_s or any(not torch.equal(v, base[k]) for k, v in vq.state_dict().items() if k != "codebook"):
            # a ladder rung is a codebook for the base's 1x1 convolutions and decoder; this one has its own
            print(f"rung {s}: fine-tuned (its 1x1 convolutions or decoder are not the base's): left out of the ladder")
            continue
        labels = vq.codes_to_indices(codes.t()[None, :, :, None]).flatten()  # the K base codes as a latent `[1, d, K, 1]`
        tensors[f"rung.{s}.codebook"], tensors[f"rung.{s}.labels"] = w.state[f"rungs.{s}.vq.codebook"].float().contiguous(), labels
        fit = float((codes * vq.unit_codes().detach()[labels]).sum(1).mean())
        print(f"rung {s}: {len(labels.unique())} codes in use, mean cosine of a base code to its rung code {fit:.4f}")
    if not tensors:
        raise typer.BadParameter(f"--from-weights {path}: every rung was fine-tuned; a ladder holds untuned rungs only")
    return tensors


def main(
    network: Path | None = None,  # exported base network (train.py --export; of an assembled file, its base)
    out: Path = typer.Option(..., help="ladder file to write"),
    rungs: str = "16,32,64,128,256,512",  # codebook sizes, comma-separated
    data: Path | None = None,  # weight the codes by their use on these photos (never the dev set)
    seed: int = 0,
    device: str = "cpu",  # where the base network counts the codes (cuda on the GPU machine)
    from_weights: Path | None = None,  # instead of --network: the rungs of this assembled weights file, numbered as there
) -> None:
    if (network is None) == (from_weights is None):
        raise typer.BadParameter("give --network (a new k-means ladder) or --from-weights (the ladder of a weights file)")
    if from_weights is not None:
        source, tensors, meta = from_weights, ladder_of(from_weights), {"from_weights": str(from_weights)}
        sizes = sorted(int(k.split(".")[1]) for k in tensors if k.endswith(".codebook"))
    else:
        assert network is not None
        sizes = sorted({int(s) for s in rungs.split(",")})
        source, tensors, meta = network, k_means_ladder(network, sizes, data, seed, device), {"seed": str(seed), "weighted": str(data is not None)}
    meta |= {"format": FORMAT, "network_sha256": hashlib.sha256(source.read_bytes()).hexdigest(), "rungs": json.dumps(sizes)}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata=meta)
    print(f"wrote {out}")


if __name__ == "__main__":
    typer.run(main)
