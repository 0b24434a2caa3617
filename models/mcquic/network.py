"""McQuic-style image network: multi-stage latents, multi-codebook VQ, variable rate.

Paper: Xiaosu Zhu, Jingkuan Song, Lianli Gao, Feng Zheng, Heng Tao Shen,
"Unified Multivariate Gaussian Mixture for Efficient Neural Image Compression", CVPR 2022,
https://arxiv.org/abs/2203.10897 (reference code: github.com/xiaosu-zhu/McQuic).

Written for nmc from the paper's idea; no code is copied. Differences from McQuic: one coarse
f16 stage plus *residual* multi-codebook stages at f8 (one model, several qualities), EMA
codebooks with dead-codeword restarts instead of learned Gumbel codebooks, latents bounded by
`tanh` before quantization (v2; v1 weights, unbounded, still load), simplified GDN gates (v3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["ARCHS", "CompressResult", "ForwardResult", "McQuic", "McQuicArgs", "MultiCodebookVQ", "export_tensors"]


# helpers


def _dist_on() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.1)


class ResBlock(nn.Module):
    """`x + conv(act(conv(x)))`, second conv scaled down at init so deep stacks start near identity."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.act, self.conv2 = _conv(c, c), _act(), _conv(c, c)
        with torch.no_grad():
            self.conv2.weight.mul_(0.1)
            nn.init.zeros_(self.conv2.bias)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


def _up(cin: int, cout: int) -> nn.Sequential:
    """Sub-pixel x2 upsampling: conv to `4 * cout` channels at low resolution, then pixel shuffle."""
    return nn.Sequential(_conv(cin, 4 * cout), nn.PixelShuffle(2))


class GDN(nn.Conv2d):
    """Simplified GDN (Johnston et al., "Computationally Efficient Neural Image Compression", 2019,
    https://arxiv.org/abs/1912.08771): `x / (beta + gamma |x|)`, `gamma >= 0` a 1x1 mixing across
    channels; `inverse` multiplies instead (IGDN, for the synthesis). A learned divisive gain
    control between the resolutions (v3), c^2 MACs per position (a ninth of a 3x3 conv's).

    A 1x1 `Conv2d` whose `weight` is gamma and `bias` beta, used through their absolute values
    (the norm stays >= 1e-3, no reparametrisation to undo at export); as a Conv2d, the MAC hooks
    (`trainkit.runtime.conv_macs`) count it."""

    def __init__(self, c: int, inverse: bool = False):
        super().__init__(c, c, 1)
        self.inverse = inverse
        with torch.no_grad():  # near the identity map at init: x_i / (1 + 0.1 |x_i| + 1e-4 sum_j |x_j|)
            # no entry exactly 0: abs() has a zero gradient there, and the cross-channel terms would never learn
            self.weight.copy_((0.1 * torch.eye(c) + 1e-4)[..., None, None])
            self.bias.fill_(1.0)  # type: ignore[union-attr]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = F.conv2d(x.abs(), self.weight.abs(), self.bias.abs() + 1e-3)  # type: ignore[union-attr]
        return x * norm if self.inverse else x / norm


# multi-codebook vector quantizer


@dataclass
class VQResult:
    """One quantizer call. `codes` keeps the straight-through gradient to the input."""

    codes: torch.Tensor  # `[B, M * d, H, W]`
    indices: torch.Tensor  # `[B, M, H, W]` int64
    commit: torch.Tensor  # scalar, relative commitment error `|x - sg(q)|^2 / var(x)`


class MultiCodebookVQ(nn.Module):
    """M independent codebooks of K entries; channel group m of the latent uses codebook m.

    Codebooks follow the encoder by exponential moving averages of assigned vectors (k-means
    style, no gradients). Statistics are all-reduced over DDP ranks, and codewords whose EMA
    count falls below `dead_frac` of the uniform share are re-assigned to random latent vectors
    every `restart_every` training calls. Rank 0 picks them and broadcasts its buffers, always
    on the same calls on every rank, so no rank-dependent random choice changes the collectives.
    The distance search runs in fp32 with autocast off.

    Shapes (einops notation): `b (m d) h w -> m (b h w) d` for the search.
    """

    embed: torch.Tensor  # `[M, K, d]` codewords
    embed_sum: torch.Tensor  # `[M, K, d]` EMA of assigned vector sums
    cluster_size: torch.Tensor  # `[M, K]` EMA of assignment counts
    calls: torch.Tensor  # training calls so far (restart schedule)
    hits: torch.Tensor
    perplexity: torch.Tensor

    def __init__(self, m: int, k: int, dim: int, decay: float = 0.99, dead_frac: float = 0.03, restart_every: int = 50):
        super().__init__()
        self._calls: int | None = None  # host mirror of `calls`, avoids a device sync per step
        self._keep = False  # the first training call keeps the codebook (`keep_codebook`) instead of drawing one
        self.m, self.k, self.dim = m, k, dim
        self.decay, self.dead_frac, self.restart_every, self.eps = decay, dead_frac, restart_every, 1e-5
        self.register_buffer("embed", torch.randn(m, k, dim) * 0.1)
        self.register_buffer("embed_sum", self.embed.clone(), persistent=True)
        self.register_buffer("cluster_size", torch.ones(m, k))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("hits", torch.ones(m), persistent=False)  # share of codewords hit by the last batch
        self.register_buffer("perplexity", torch.full((m,), float(k)), persistent=False)  # exp(entropy) of its assignments

    @property
    def bits(self) -> float:
        """Fixed-length bits per latent position."""
        return self.m * math.log2(self.k)

    def _flatten(self, x: torch.Tensor) -> torch.Tensor:  # b (m d) h w -> m (b h w) d
        b, _, h, w = x.shape
        return x.reshape(b, self.m, self.dim, h, w).permute(1, 0, 3, 4, 2).reshape(self.m, -1, self.dim)

    def _unflatten(self, flat: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:  # m (b h w) d -> b (m d) h w
        return flat.reshape(self.m, b, h, w, self.dim).permute(1, 0, 4, 2, 3).reshape(b, self.m * self.dim, h, w)

    def codes_to_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest codeword per group: `[B, M*d, H, W]` float -> `[B, M, H, W]` int64."""
        b, _, h, w = x.shape
        idx = self._search(self._flatten(x.float()))
        return idx.reshape(self.m, b, h, w).transpose(0, 1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Gather codewords: `[B, M, H, W]` int64 -> `[B, M*d, H, W]` fp32 (exact, no arithmetic)."""
        b, _, h, w = indices.shape
        flat = indices.transpose(0, 1).reshape(self.m, -1)
        q = torch.gather(self.embed, 1, flat[..., None].expand(-1, -1, self.dim))
        return self._unflatten(q, b, h, w)

    def _search(self, flat: torch.Tensor) -> torch.Tensor:
        e = self.embed
        d = (e * e).sum(-1)[:, None, :] - 2 * torch.bmm(flat, e.transpose(1, 2))  # |x|^2 is constant per row
        return d.argmin(-1)

    def max_norm(self) -> torch.Tensor:
        """Largest codeword norm over all codebooks (a scalar tensor): bounded latents keep it small."""
        return self.embed.norm(dim=-1).max()

    def usage(self) -> torch.Tensor:
        """Share of codewords per codebook `[M]` that the last training batch (all ranks) assigned to."""
        return self.hits

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._calls = None
        super()._load_from_state_dict(*args, **kwargs)

    def _dead_threshold(self) -> torch.Tensor:
        return self.dead_frac * self.cluster_size.sum(-1, keepdim=True) / self.k

    def forward(self, x: torch.Tensor) -> VQResult:
        b, _, h, w = x.shape
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            flat = self._flatten(x)
            if self.training and self._calls is None:
                self._calls = int(self.calls)
            if self.training and self._calls == 0:
                self._adopt(flat) if self._keep else self._init_from(flat)
            idx = self._search(flat)
            if self.training:
                self._ema_update(flat.detach(), idx)
            q = self._unflatten(torch.gather(self.embed, 1, idx[..., None].expand(-1, -1, self.dim)), b, h, w)
            commit = F.mse_loss(x, q.detach()) / (x.detach().var() + 1e-6)
            codes = x + (q - x).detach()
        return VQResult(codes, idx.reshape(self.m, b, h, w).transpose(0, 1), commit)

    @torch.no_grad()
    def _random_rows(self, flat: torch.Tensor, n: int) -> torch.Tensor:
        """`n` random latent vectors per codebook `[M, n, d]`, chosen on rank 0 and broadcast."""
        pick = torch.randint(0, flat.shape[1], (self.m, n), device=flat.device)
        rows = torch.gather(flat, 1, pick[..., None].expand(-1, -1, self.dim)).contiguous()
        if _dist_on():
            dist.broadcast(rows, 0)
        return rows

    def keep_codebook(self) -> None:
        """Fine-tune from an export, which holds only `embed`: the first training call then keeps the codewords
        and sets the EMA state to agree with them (counts of that batch's assignments), instead of drawing a
        new codebook from the batch, which would throw the trained one away."""
        self._keep, self._calls = True, None
        self.calls.zero_()

    @torch.no_grad()
    def _adopt(self, flat: torch.Tensor) -> None:
        counts = torch.zeros(self.m, self.k, device=flat.device).scatter_add_(1, self._search(flat), torch.ones_like(flat[..., 0]))
        if _dist_on():
            dist.all_reduce(counts)
        self.cluster_size.copy_(counts + 1.0)
        self.embed_sum.copy_(self.embed * self.cluster_size[..., None])

    @torch.no_grad()
    def _init_from(self, flat: torch.Tensor) -> None:
        rows = self._random_rows(flat, self.k)
        self.embed.copy_(rows)
        self.embed_sum.copy_(rows)
        self.cluster_size.fill_(1.0)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, idx: torch.Tensor) -> None:
        counts = torch.zeros(self.m, self.k, device=flat.device).scatter_add_(1, idx, torch.ones_like(idx, dtype=flat.dtype))
        sums = torch.zeros_like(self.embed).scatter_add_(1, idx[..., None].expand(-1, -1, self.dim), flat)
        stats = torch.cat([counts[..., None], sums], -1)
        if _dist_on():
            dist.all_reduce(stats)
        p = stats[..., 0] / stats[..., 0].sum(-1, keepdim=True)
        self.hits.copy_((p > 0).float().mean(-1))
        self.perplexity.copy_(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum(-1)))
        self.cluster_size.mul_(self.decay).add_(stats[..., 0], alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(stats[..., 1:], alpha=1 - self.decay)
        n = self.cluster_size.sum(-1, keepdim=True)
        smoothed = (self.cluster_size + self.eps) / (n + self.k * self.eps) * n
        self.embed.copy_(self.embed_sum / smoothed[..., None])
        self._calls = (self._calls or 0) + 1
        self.calls.fill_(self._calls)
        if self._calls % self.restart_every == 0:
            self._restart_dead(flat)

    @torch.no_grad()
    def _restart_dead(self, flat: torch.Tensor) -> None:
        thresh = self._dead_threshold()
        dead = self.cluster_size < thresh  # identical on all ranks (all-reduced stats), rank 0 decides anyway
        rows = self._random_rows(flat, self.k)
        size = (2 * thresh).expand_as(self.cluster_size)
        self.embed.copy_(torch.where(dead[..., None], rows, self.embed))
        self.cluster_size.copy_(torch.where(dead, size, self.cluster_size))
        self.embed_sum.copy_(self.embed * self.cluster_size[..., None])
        if _dist_on():
            for buf in (self.embed, self.embed_sum, self.cluster_size):
                dist.broadcast(buf, 0)


# the network


@dataclass
class McQuicArgs:
    """Constructor arguments (`model_args`); stored in checkpoints and in exported weights."""

    channels: tuple[int, int, int, int] = (32, 64, 160, 192)  # widths at f2, f4, f8, f16 (v1: 32, 64, 128, 128)
    enc_blocks: tuple[int, int, int] = (1, 2, 2)  # residual blocks of g_a at f4, f8, f16
    dec_blocks: tuple[int, int, int] = (1, 3, 2)  # residual blocks of g_s at f4, f8, f16 (f16: in g_c; v1: 1, 2, 2)
    dec_f2_blocks: int = 0  # residual blocks of g_s at f2 (full-resolution detail)
    bounded: bool = True  # latents pass through tanh before VQ: codebooks stay within [-1, 1]^d
    # v3 fields (files without them are v1/v2 and mean these defaults)
    dec_channels: tuple[int, int] | None = None  # widths of g_s at f2, f4 (None: `channels[:2]`, as g_a)
    gdn: bool = False  # GDN after g_a's strided convs to f8 and f16, IGDN after g_c's upsampling (v1/v2: none)
    coarse_m: int = 4  # codebooks of the f16 stage
    coarse_k: int = 256  # entries per codebook (8 bits)
    coarse_dim: int = 16  # channels per coarse codebook
    fine_stages: int = 3  # residual f8 stages; quality q uses the coarse stage + q-1 of them
    fine_m: int = 2
    fine_k: int = 256
    fine_dim: int = 16
    decay: float = 0.99  # EMA decay of the codebooks
    dead_frac: float = 0.03  # a codeword is dead below this share of the uniform count
    restart_every: int = 50  # training calls between dead-codeword restarts

    @property
    def qualities(self) -> int:
        return 1 + self.fine_stages


@dataclass
class ForwardResult:
    """Training forward: every sample decoded at every requested quality level."""

    x_hat: torch.Tensor  # `[len(qualities), B, 3, H, W]`, same padding as the input
    commit: torch.Tensor  # scalar, sum over stages of relative commitment errors
    indices: list[torch.Tensor] = field(default_factory=list)  # per stage `[B, M, h, w]`


@dataclass
class CompressResult:
    """Indices per stage (coarse first) and what `decompress` needs to crop."""

    indices: list[torch.Tensor]  # stage 0: `[B, coarse_m, H/16, W/16]`, stage s>0: `[B, fine_m, H/8, W/8]`
    shape: tuple[int, int]  # original (H, W)
    quality: int


class McQuic(nn.Module):
    r"""Variable-rate image autoencoder with multi-codebook VQ at f16 (coarse) and f8 (residual).

    The coarse code alone gives quality 1; each residual f8 stage adds one quality level.
    The f8 stages code what the decoder's coarse prediction `c8` misses: `g_r` sees both
    the encoder features and `c8`, so finer indices are always decodable given coarser ones.

    .. code-block:: none

              x ──g_a──► y8 (f8) ───────────┐
                          │                  ▼
                          └─► y16 ──VQ_0──► z_hat ──g_c──► c8 ─────┐──► g_r ──► r ──RVQ_1..S──► r_hat_1..q-1
                                                            │      │                                   │
                                                            ▼      │                                   │
                 x_hat ◄──g_s── FiLM_q( c8 + E(sum r_hat) ) ◄──────┘◄──────────────────────────────────┘

    `g_a`: strided convs + residual blocks down to f8 and f16, `tanh` on the latents (`bounded`)
    so that codebook entries stay in [-1, 1]; `g_c`: coarse synthesis f16->f8
    (run by the encoder too); `g_r`: residual analysis at f8; `g_s`: synthesis f8->f1 with
    sub-pixel upsampling. Fixed-length rate: `H W / 256 * coarse_m log2 coarse_k` bits, plus
    `H W / 64 * fine_m log2 fine_k` per fine stage. v3 (`gdn`, `dec_channels`): simplified GDN
    after g_a's downsamplings to f8 and f16, IGDN at the end of `g_c`, and g_s widths at f2/f4
    of their own (`ARCHS`).

    Args:
        args (McQuicArgs): architecture and codebook sizes.
    """

    stride = 16

    def __init__(self, args: McQuicArgs | None = None):
        super().__init__()
        self.args = a = args or McQuicArgs()
        c1, c2, c3, c4 = a.channels
        e4, e8, e16 = a.enc_blocks
        d4, d8, d16 = a.dec_blocks
        dc, df = a.coarse_m * a.coarse_dim, a.fine_m * a.fine_dim
        s1, s2 = a.dec_channels or (c1, c2)

        def gdn(c: int, inverse: bool = False) -> list[nn.Module]:  # v3, at f8/f16 only: at f2/f4 its passes cost more than its MACs
            return [GDN(c, inverse)] if a.gdn else []

        self.g_a8 = nn.Sequential(
            _conv(3, c1, 5, 2), _act(), _conv(c1, c2, 3, 2), *[ResBlock(c2) for _ in range(e4)],
            _conv(c2, c3, 3, 2), *gdn(c3), *[ResBlock(c3) for _ in range(e8)],
        )  # fmt: skip
        self.g_a16 = nn.Sequential(_conv(c3, c4, 3, 2), *gdn(c4), *[ResBlock(c4) for _ in range(e16)], _conv(c4, dc, 1))
        self.bound = nn.Tanh() if a.bounded else nn.Identity()  # breaks the scale symmetry of convs + LeakyReLU
        self.g_c = nn.Sequential(_conv(dc, c4, 1), *[ResBlock(c4) for _ in range(d16)], _up(c4, c3), *gdn(c3, inverse=True))
        self.g_r = nn.Sequential(_conv(2 * c3, c3, 1), _act(), _conv(c3, df, 3))
        self.expand = _conv(df, c3, 1)
        self.film = nn.Embedding(a.qualities, 2 * c3)
        nn.init.zeros_(self.film.weight)
        self.g_s = nn.Sequential(
            *[ResBlock(c3) for _ in range(d8)], _up(c3, s2), _act(), *[ResBlock(s2) for _ in range(d4)],
            _up(s2, s1), _act(), *[ResBlock(s1) for _ in range(a.dec_f2_blocks)], _conv(s1, 12, 3), nn.PixelShuffle(2),
        )  # fmt: skip
        nn.init.constant_(self.g_s[-2].bias, 0.5)  # type: ignore[arg-type]  # start at mid-gray
        self.vq: list[MultiCodebookVQ] = nn.ModuleList(  # type: ignore[assignment]
            [MultiCodebookVQ(a.coarse_m, a.coarse_k, a.coarse_dim, a.decay, a.dead_frac, a.restart_every)]
            + [MultiCodebookVQ(a.fine_m, a.fine_k, a.fine_dim, a.decay, a.dead_frac, a.restart_every) for _ in range(a.fine_stages)]
        )

    # rate bookkeeping

    def bits(self, quality: int, height: int, width: int) -> float:
        """Fixed-length bits for an image of `height x width` (padded to the stride) at `quality`."""
        self._check_quality(quality)
        ph, pw = -(-height // self.stride) * self.stride, -(-width // self.stride) * self.stride
        bits = ph * pw / 256 * self.vq[0].bits
        return bits + sum(ph * pw / 64 * vq.bits for vq in self.vq[1:quality])

    def bpp(self, quality: int, height: int = 512, width: int = 768) -> float:
        return self.bits(quality, height, width) / (height * width)

    def _check_quality(self, quality: int) -> None:
        if not 1 <= quality <= self.args.qualities:
            raise ValueError(f"quality must be in 1..{self.args.qualities}, got {quality!r}")

    # shared pieces

    def _decode(self, c8: torch.Tensor, r_sum: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
        """`g_s` on `c8 + E(r_sum)` modulated by `film` `[B, 2 C]` (the rows of the decoded levels)."""
        u = c8 + self.expand(r_sum)
        gamma, beta = film[..., None, None].chunk(2, dim=1)
        return self.g_s(u * (1 + gamma) + beta)

    @staticmethod
    def pad(x: torch.Tensor, stride: int = 16) -> torch.Tensor:
        """Replicate-pad `[B, C, H, W]` at the bottom/right to a multiple of `stride`."""
        h, w = x.shape[-2:]
        ph, pw = (-h) % stride, (-w) % stride
        return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x

    # training

    def forward(self, x: torch.Tensor, qualities: list[int] | None = None) -> ForwardResult:
        """Encode, quantize the stages, decode every sample at each quality in `qualities` (default: all).

        One `g_s` pass over the stacked levels: every level gets a gradient from every crop, and
        level q's loss pushes fine stage q-1 to carry what the coarser levels miss.

        Args:
            x (torch.Tensor): `[B, 3, H, W]` in [0, 1], H and W multiples of 16.
            qualities (list[int] | None): levels in 1..qualities to decode.
        """
        qs = list(qualities or range(1, self.args.qualities + 1))
        for q in qs:
            self._check_quality(q)
        y8 = self.g_a8(x)
        coarse = self.vq[0](self.bound(self.g_a16(y8)))
        c8 = self.g_c(coarse.codes)
        r = self.bound(self.g_r(torch.cat([y8, c8], 1)))
        sums, commit, indices = [torch.zeros_like(r, dtype=torch.float32)], coarse.commit, [coarse.indices]
        for vq in self.vq[1 : max(qs)]:
            res = vq(r)
            sums.append(sums[-1] + res.codes)
            r = r - res.codes.detach()
            commit = commit + res.commit
            indices.append(res.indices)
        n, b = len(qs), x.shape[0]
        film = torch.stack([self.film.weight[q - 1] for q in qs]).repeat_interleave(b, 0)  # no host-to-device copy
        x_hat = self._decode(c8.repeat(n, 1, 1, 1), torch.cat([sums[q - 1] for q in qs]), film)
        return ForwardResult(x_hat.unflatten(0, (n, b)), commit, indices)

    # inference

    @torch.no_grad()
    def compress(self, x: torch.Tensor, quality: int) -> CompressResult:
        """Image `[B, 3, H, W]` in [0, 1] -> indices of the coarse stage and `quality - 1` fine stages."""
        self._check_quality(quality)
        h, w = x.shape[-2:]
        y8 = self.g_a8(self.pad(x))
        z = self.bound(self.g_a16(y8))
        indices = [self.vq[0].codes_to_indices(z)]
        c8 = self.g_c(self.vq[0].indices_to_codes(indices[0]))
        r = self.bound(self.g_r(torch.cat([y8, c8], 1)))
        for vq in self.vq[1:quality]:
            indices.append(vq.codes_to_indices(r))
            r = r - vq.indices_to_codes(indices[-1])
        return CompressResult(indices, (h, w), quality)

    @torch.no_grad()
    def decompress(self, indices: list[torch.Tensor], quality: int, shape: tuple[int, int]) -> torch.Tensor:
        """Indices (coarse first, at least `quality` stages) -> image `[B, 3, H, W]` clamped to [0, 1]."""
        self._check_quality(quality)
        if len(indices) < quality:
            raise ValueError(f"quality {quality} needs {quality} index stages, got {len(indices)}")
        c8 = self.g_c(self.vq[0].indices_to_codes(indices[0]))
        r_sum = torch.zeros(c8.shape[0], self.expand.in_channels, *c8.shape[-2:], device=c8.device)
        for vq, idx in zip(self.vq[1:quality], indices[1:quality]):
            r_sum = r_sum + vq.indices_to_codes(idx)
        x_hat = self._decode(c8, r_sum, self.film.weight[quality - 1].expand(c8.shape[0], -1))
        return x_hat[..., : shape[0], : shape[1]].clamp(0, 1)

    def codebook_usage(self) -> list[list[float]]:
        """Per stage, per codebook: share of codewords the last training batch used."""
        return [vq.usage().tolist() for vq in self.vq]

    def codebook_max_norm(self) -> list[float]:
        """Per stage: the largest codeword norm (one device sync)."""
        return torch.stack([vq.max_norm() for vq in self.vq]).tolist()

    def codebook_perplexity(self) -> list[float]:
        """Per stage: mean over codebooks of exp(entropy) of the last batch's assignments, as a share of K."""
        return [(vq.perplexity / vq.k).mean().item() for vq in self.vq]

    # weights

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights and codebooks needed to code, without the EMA training statistics."""
        return {k: v for k, v in self.state_dict().items() if not k.endswith(("embed_sum", "cluster_size", "calls"))}

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor], model_args: dict) -> McQuic:
        """Build from an (inference) state dict and the stored `model_args`."""
        net = cls(args_from_dict(model_args))
        own = net.state_dict()
        shapes = [k for k, v in state_dict.items() if k in own and own[k].shape != v.shape]
        if shapes:  # load_state_dict would raise a RuntimeError of many lines
            raise ValueError(f"state dict does not match McQuic{tuple(model_args.items())}: other shapes for {shapes}")
        missing, unexpected = net.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=False)
        missing = [k for k in missing if not k.endswith(("embed_sum", "cluster_size", "calls"))]
        if missing or unexpected:
            raise ValueError(f"state dict does not match McQuic{tuple(model_args.items())}: missing {missing}, unexpected {unexpected}")
        return net.eval()


V1_ARGS = {"dec_f2_blocks": 0, "bounded": False}  # fields added after v1: v1 files lack them and mean these
V3 = McQuicArgs(gdn=True, dec_channels=(32, 96), dec_blocks=(1, 2, 2))  # CARD "v3": one f8 ResBlock of g_s moved to a 96-wide f4
ARCHS = {  # named architectures (train.py --arch, bench_cpu.py); a file's own `model_args` decide how it loads
    "v1": McQuicArgs(channels=(32, 64, 128, 128), enc_blocks=(1, 2, 2), dec_blocks=(1, 2, 2), **V1_ARGS),  # type: ignore[arg-type]
    "v2": McQuicArgs(),
    "v3": V3,
}


def args_from_dict(d: dict) -> McQuicArgs:
    """`McQuicArgs` from its JSON form (lists back to tuples); fields a v1 file lacks take their v1 values."""
    d = {**V1_ARGS, **d}
    return McQuicArgs(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})  # type: ignore[arg-type]


def export_tensors(net: McQuic) -> dict[str, torch.Tensor]:
    """Inference tensors for shipping: conv weights in fp16, codebooks (`vq.*.embed`) in fp32.

    The network is positively homogeneous (convs, LeakyReLU, residual sums), so training is free
    to grow the latent scale, and it does: trained codebook entries reach ~1e11, beyond fp16.
    """
    sd = net.inference_state_dict()
    return {k: v.detach().to("cpu", torch.float32 if k.endswith(".embed") else torch.float16).contiguous() for k, v in sd.items()}
