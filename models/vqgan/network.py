"""VQGAN for extreme-rate image coding: f16 encoder, factorized unit-vector VQ, generative decoder.

Papers:
    Esser, Rombach, Ommer, "Taming Transformers for High-Resolution Image Synthesis", CVPR 2021,
    https://arxiv.org/abs/2012.09841 (VQGAN: a VQ autoencoder trained with perceptual and patch-GAN losses).
    Mao, Yang, Zhang, Wang, Wang, Wang, Jin, Ma, "Extreme Image Compression using Fine-tuned VQGANs",
    DCC 2024, https://arxiv.org/abs/2307.08265 (reference code: github.com/CUC-MIPG/VQGAN-Compression):
    k-means of the codebook into smaller codebooks, each fine-tuned with the 1x1 convolutions around it.
    Factorized, l2-normalised codes (lookup in a low-dimensional space by cosine similarity): Yu et al.,
    "Vector-quantized Image Modeling with Improved VQGAN", ICLR 2022, as DAC and models/hificodec use them.

Written for nmc from the papers; no code is copied. Differences from taming's VQGAN: fully
convolutional (no attention, no GroupNorm: normalisation is per position, so a tile decodes the same
whatever surrounds it), nearest-neighbour upsampling + conv computed as a sub-pixel conv, widths
sized for CPU decoding, 8-dimensional unit codes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .resilient import resilient_indices

__all__ = [
    "ChannelNorm", "FactorizedVQ", "ForwardResult", "Ladder", "PatchDiscriminator", "Rung", "VQGAN", "VQGANArgs", "VQResult",
    "args_from_dict", "base_of", "export_tensors",
]


# helpers


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2)


class ChannelNorm(nn.Module):
    """LayerNorm over the channels at each position (HiFiC's ChannelNorm, Mentzer et al. 2020).

    No statistic spans positions, so the output at a pixel depends only on its receptive field:
    tiles coded apart decode like the whole image.
    """

    def __init__(self, c: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x: Tensor) -> Tensor:  # b c h w -> b h w c -> norm -> b c h w
        return F.layer_norm(x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias).permute(0, 3, 1, 2)


class ResBlock(nn.Sequential):
    """`x + conv(act(conv(act(norm(x)))))`; the last conv starts small so deep stacks begin near identity."""

    def __init__(self, c: int):
        super().__init__(ChannelNorm(c), nn.SiLU(), _conv(c, c), nn.SiLU(), _conv(c, c))
        with torch.no_grad():
            self[-1].weight.mul_(0.1)  # type: ignore[operator]
            nn.init.zeros_(self[-1].bias)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:
        return x + super().forward(x)


class Upsample(nn.Conv2d):
    """Nearest-neighbour x2 followed by a 3x3 conv, computed at the low resolution.

    Each of the four output phases of `conv3x3(nearest(x))` is a 3x3 conv of `x` whose taps are sums
    of the kernel's taps, so one conv to `4 cout` channels and a pixel shuffle give the same result
    (zero padding included) with a quarter of the memory traffic. Nearest + conv rather than a free
    sub-pixel conv: a quarter of the parameters, and less prone to checkerboard patterns (Odena et al. 2016).
    """

    # _TAPS[phase, low-resolution tap, kernel tap]: phase 0 (even output row) sees rows i-1, i, i;
    # phase 1 (odd) sees rows i, i, i+1
    _TAPS = torch.tensor([[[1, 0, 0], [0, 1, 1], [0, 0, 0]], [[0, 0, 0], [1, 1, 0], [0, 0, 1]]], dtype=torch.float32)

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self._TAPS.to(self.weight)
        w = torch.einsum("pak,qbl,oikl->opqiab", a, a, self.weight).reshape(-1, self.in_channels, 3, 3)
        b = self.bias.repeat_interleave(4) if self.bias is not None else None
        return F.pixel_shuffle(F.conv2d(x, w, b, padding=1), 2)


# factorized vector quantizer


@dataclass
class VQResult:
    """One training call of the quantizer. `y_hat` keeps the straight-through gradient to the encoder."""

    y_hat: Tensor  # `[B, C_dec, h, w]` decoder input, out_proj of the chosen unit codes
    indices: Tensor  # `[B, h, w]` int64
    commit: Tensor  # scalar, |z - sg(q)|^2 (z and q unit vectors), pulls the encoder to its codes
    codebook_loss: Tensor  # scalar, |sg(z) - q|^2, pulls the codes to the encoder
    z: Tensor  # `[B, d, h, w]` l2-normalised latent, the vectors dead codes restart from


class FactorizedVQ(nn.Module):
    """Project to `code_dim`, l2-normalise, take the code with the highest cosine similarity, project back.

    The lookup happens in a low-dimensional space on the unit sphere, which keeps a large codebook in
    use without EMA updates (ViT-VQGAN, DAC; the 1-D version is models/hificodec's FactorizedVQ). The two
    1x1 convolutions are the ones the paper fine-tunes with each smaller (k-means) codebook.

    Shapes (einops notation): the search is `b d h w -> (b h w) d` against `codebook` `[K, d]`.
    """

    def __init__(self, dim_in: int, dim_out: int, codebook_size: int, code_dim: int):
        super().__init__()
        self.in_proj = nn.Conv2d(dim_in, code_dim, 1)
        self.out_proj = nn.Conv2d(code_dim, dim_out, 1)
        self.codebook = nn.Parameter(F.normalize(torch.randn(codebook_size, code_dim), dim=-1))

    @property
    def size(self) -> int:
        return self.codebook.shape[0]

    def unit_codes(self) -> Tensor:
        """The codebook on the unit sphere `[K, d]` (what the lookup and the decoder see)."""
        return F.normalize(self.codebook.float(), dim=-1)

    def latent(self, y: Tensor) -> Tensor:
        """Encoder features `[B, C, h, w]` -> l2-normalised latent `[B, d, h, w]` (fp32)."""
        return F.normalize(self.in_proj(y).float(), dim=1)

    def codes_to_indices(self, z: Tensor) -> Tensor:
        """Unit latent `[B, d, h, w]` -> `[B, h, w]` index of the code with the highest cosine similarity."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        return (flat @ self.unit_codes().t()).argmax(dim=1).reshape(b, h, w)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """`[B, h, w]` int64 -> unit codes `[B, d, h, w]` (a gather, no arithmetic on the indices)."""
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.size):
            raise ValueError(f"indices outside [0, {self.size}): min {int(indices.min())}, max {int(indices.max())}")
        return F.embedding(indices, self.unit_codes()).permute(0, 3, 1, 2)

    def forward(self, y: Tensor) -> VQResult:
        with torch.autocast(y.device.type, enabled=False):
            z = self.latent(y.float())
            indices = self.codes_to_indices(z.detach())
            q = F.embedding(indices, self.unit_codes()).permute(0, 3, 1, 2)
            commit = F.mse_loss(z, q.detach())
            codebook_loss = F.mse_loss(q, z.detach())
            q = z + (q - z).detach()  # straight-through
        return VQResult(self.out_proj(q.to(y.dtype)), indices, commit, codebook_loss, z)

    @torch.no_grad()
    def swap_codebook(self, codebook: Tensor) -> None:
        """Use `codebook` `[S, d]` from now on (a k-means rung: each old index maps to its cluster's centroid)."""
        if codebook.dim() != 2 or codebook.shape[1] != self.codebook.shape[1]:
            raise ValueError(f"codebook of shape {tuple(codebook.shape)} does not fit code_dim {self.codebook.shape[1]}")
        self.codebook = nn.Parameter(F.normalize(codebook.to(self.codebook).clone(), dim=-1))


# the network


@dataclass
class VQGANArgs:
    """Constructor arguments (`model_args`); stored in checkpoints and in exported weights."""

    enc_channels: tuple[int, int, int, int] = (32, 64, 128, 192)  # g_a widths at f2, f4, f8, f16
    enc_blocks: tuple[int, int, int, int] = (1, 1, 2, 1)  # residual blocks of g_a at f2, f4, f8, f16
    dec_channels: tuple[int, int, int, int] = (64, 96, 160, 192)  # g_s widths at f2, f4, f8, f16
    dec_blocks: tuple[int, int, int, int] = (1, 2, 2, 3)  # residual blocks of g_s at f2, f4, f8, f16
    codebook_size: int = 8192  # base codebook: 13 bits per 16x16 block, 0.051 bpp before entropy coding
    code_dim: int = 8  # dimension of the unit codes


@dataclass
class ForwardResult:
    """Training forward: the reconstruction and the quantizer's result."""

    x_hat: Tensor  # `[B, 3, H, W]`, not clamped
    vq: VQResult


class VQGAN(nn.Module):
    r"""f16 VQ autoencoder: one index of `log2(codebook_size)` bits per 16x16 pixels.

    .. code-block:: none

        x ──g_a──► y (f16) ──in_proj (1x1)──► l2 ──► nearest unit code ──► out_proj (1x1) ──g_s──► x_hat
                                                          │
                                                 indices [B, H/16, W/16]

    `g_a`: a 5x5 stride-2 stem, then residual blocks and stride-2 convs down to f16; `g_s`:
    residual blocks at f16, then nearest x2 + conv and residual blocks at each scale up to f2,
    and a last nearest x2 + conv to RGB.
    Fixed-length rate: `log2(K) / 256` bits per pixel (0.051 bpp for K = 8192).

    Args:
        args (VQGANArgs): widths, depths and codebook size.
    """

    stride = 16

    def __init__(self, args: VQGANArgs | None = None):
        super().__init__()
        self.args = a = args or VQGANArgs()
        e, d = a.enc_channels, a.dec_channels
        g_a: list[nn.Module] = [_conv(3, e[0], 5, 2)]
        for i, (c, n) in enumerate(zip(e, a.enc_blocks)):
            g_a += [ResBlock(c) for _ in range(n)]
            if i + 1 < len(e):
                g_a.append(_conv(c, e[i + 1], 3, 2))
        self.g_a = nn.Sequential(*g_a, ChannelNorm(e[-1]), nn.SiLU())
        self.vq = FactorizedVQ(e[-1], d[-1], a.codebook_size, a.code_dim)
        self.g_s = synthesis(a)

    def bits(self, height: int, width: int) -> float:
        """Fixed-length bits of an image (padded to the stride)."""
        return -(-height // self.stride) * -(-width // self.stride) * math.log2(self.vq.size)

    @staticmethod
    def pad(x: Tensor, stride: int = 16) -> Tensor:
        """Replicate-pad `[B, C, H, W]` at the bottom/right to a multiple of `stride`."""
        h, w = x.shape[-2:]
        ph, pw = (-h) % stride, (-w) % stride
        return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x

    def forward(self, x: Tensor) -> ForwardResult:
        """Training pass: `x` `[B, 3, H, W]` in [0, 1] with H, W multiples of 16."""
        vq = self.vq(self.g_a(x))
        return ForwardResult(self.g_s(vq.y_hat), vq)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Image `[B, 3, H, W]` in [0, 1], any size -> indices `[B, ceil(H/16), ceil(W/16)]` int64."""
        return self.vq.codes_to_indices(self.vq.latent(self.g_a(self.pad(x))))

    @torch.no_grad()
    def decode(self, indices: Tensor, shape: tuple[int, int] | None = None) -> Tensor:
        """Indices `[B, h, w]` -> image `[B, 3, 16h, 16w]` clamped to [0, 1], cropped to `shape` (H, W) if given."""
        x_hat = self.g_s(self.vq.out_proj(self.vq.indices_to_codes(indices))).clamp(0, 1)
        return x_hat if shape is None else x_hat[..., : shape[0], : shape[1]]

    def swap_codebook(self, codebook: Tensor) -> None:
        """Replace the codebook by a smaller (k-means) one `[S, d]`; `args.codebook_size` follows."""
        self.vq.swap_codebook(codebook)
        self.args = replace(self.args, codebook_size=codebook.shape[0])

    def rung_parameters(self, decoder: bool = False) -> list[nn.Parameter]:
        """What a ladder rung fine-tunes: the codebook and the two 1x1 convs (and `g_s` if `decoder`)."""
        return [*self.vq.parameters(), *(self.g_s.parameters() if decoder else [])]

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, Tensor], model_args: dict) -> VQGAN:
        """Build from a state dict and the stored `model_args`; fp32, eval mode."""
        net = cls(args_from_dict(model_args))
        net.load_state_dict({k: v.float() for k, v in state_dict.items()})
        return net.eval()


def synthesis(a: VQGANArgs) -> nn.Sequential:
    """`g_s`: residual blocks at f16, then nearest x2 + conv and residual blocks at each scale up to f2, then RGB."""
    d = a.dec_channels
    g_s: list[nn.Module] = []
    for i in range(len(d) - 1, -1, -1):  # f16 -> f2
        g_s += [ResBlock(d[i]) for _ in range(a.dec_blocks[i])]
        if i > 0:
            g_s.append(Upsample(d[i], d[i - 1]))
    out = Upsample(d[0], 3)
    nn.init.constant_(out.bias, 0.5)  # type: ignore[arg-type]  # start at mid-gray
    return nn.Sequential(*g_s, ChannelNorm(d[0]), nn.SiLU(), out)


# the shipped network: the base and its ladder


class Rung(nn.Module):
    """One ladder rung: a k-means codebook of `size` entries with its own (fine-tuned) 1x1 convolutions,
    and its own fine-tuned decoder when `decoder` (else the base's). The base's operating point may have a rung
    entry too, holding only its own decoder (`vq` None: it quantizes with the base's codebook)."""

    def __init__(self, a: VQGANArgs, size: int, decoder: bool):
        super().__init__()
        base = size == a.codebook_size
        self.vq = None if base else FactorizedVQ(a.enc_channels[-1], a.dec_channels[-1], size, a.code_dim)
        self.g_s = synthesis(a) if decoder else None


class Ladder(VQGAN):
    r"""The codec's network: the base VQGAN and its ladder rungs (Mao et al. 2024), one file.

    .. code-block:: none

        x ──g_a (shared)──► y ──rung S: in_proj, nearest of S unit codes, out_proj──► g_s (the rung's or the base's) ──► x_hat

    Codebook sizes (`sizes`) name the operating points: each rung's, and the base's. The state holds the
    base network's tensors as `train.py --export` writes them, then `rungs.{S}.vq.*` (and `rungs.{S}.g_s.*`).
    The base's operating point may decode with a decoder of its own, `rungs.{base}.g_s.*`: outside the base
    network's tensors (`base_of`), so the base network, its hash and every index stay as they were.

    Args:
        args (VQGANArgs): the base network.
        rungs (dict[int, bool]): codebook size of each rung -> whether it has its own decoder (the base's size:
            True, its own decoder).
    """

    def __init__(self, args: VQGANArgs, rungs: dict[int, bool]):
        super().__init__(args)
        base = args.codebook_size
        if any(s > base or s < 2 or (s == base and not dec) for s, dec in rungs.items()):
            raise ValueError(f"rungs {sorted(rungs)} must have 2 to {base - 1} codes (the base has {base}; it may have a decoder of its own)")
        self.rungs = nn.ModuleDict({str(s): Rung(args, s, dec) for s, dec in sorted(rungs.items())})
        self.concealers: dict[int, nn.Module] = {}  # size -> a decoder trained to conceal lost cells (`set_concealer`)

    def set_concealer(self, size: int, g_s: nn.Module) -> None:
        """Decode code maps with lost cells at `size` with `g_s` (`tiling.net_decode_concealed`): a copy of that
        operating point's decoder fine-tuned on filled maps (`train_recovery.py --tune-decoder`); not part of the
        network's tensors or hashes (it ships in the recovery file)."""
        self.parts(size)  # a known size
        self.concealers[size] = g_s.to(next(self.g_s.parameters()).device).eval()

    @property
    def sizes(self) -> list[int]:
        """Codebook sizes of the operating points, ascending: the rungs', then the base's."""
        return [int(s) for s in self.rungs if int(s) != self.vq.size] + [self.vq.size]

    def parts(self, size: int) -> tuple[FactorizedVQ, nn.Module]:
        """The quantizer and decoder of the operating point with `size` codes."""
        rung = cast(Rung | None, self.rungs[str(size)] if str(size) in self.rungs else None)
        if size == self.vq.size:
            return self.vq, rung.g_s if rung is not None and rung.g_s is not None else self.g_s
        if rung is None or rung.vq is None:
            raise ValueError(f"no rung of {size} codes (sizes: {self.sizes})")
        return rung.vq, rung.g_s or self.g_s

    def unit_codes(self, size: int) -> Tensor:
        """The codebook of `size` codes on the unit sphere `[size, d]`, detached (what priors and recovery key on)."""
        return self.parts(size)[0].unit_codes().detach()

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        """Image `[B, 3, H, W]` in [0, 1], any size -> encoder features `[B, C, ceil(H/16), ceil(W/16)]` (every rung's input)."""
        return self.g_a(self.pad(x))

    @torch.no_grad()
    def quantize(self, y: Tensor, size: int) -> Tensor:
        """Encoder features -> indices `[B, h, w]` into the codebook of `size` codes: the encoder's choice, which
        weighs each cell's distortion against its neighbours' concealment (`resilient.resilient_indices`)."""
        vq = self.parts(size)[0]
        return resilient_indices(vq.latent(y).permute(0, 2, 3, 1), vq.unit_codes())

    @torch.no_grad()
    def decode_at(self, indices: Tensor, size: int) -> Tensor:
        """Indices `[B, h, w]` into the codebook of `size` codes -> image `[B, 3, 16h, 16w]` in [0, 1]."""
        return self.synthesize(self.parts(size)[0].indices_to_codes(indices), size)

    def synthesize(self, codes: Tensor, size: int, decoder: nn.Module | None = None) -> Tensor:
        """Unit codes `[B, d, h, w]` (the codebook of `size` codes', or mixtures of them) -> image `[B, 3, 16h, 16w]`
        in [0, 1] through that operating point's out_proj and g_s, or `decoder` in place of g_s (a concealing decoder);
        differentiable in `codes` and `decoder` (the recovery pointer's decoded loss trains through it, `train_recovery.py
        --decoded-loss`, and `--tune-decoder` a decoder)."""
        vq, g_s = self.parts(size)
        return (g_s if decoder is None else decoder)(vq.out_proj(codes)).clamp(0, 1)

    def model_args(self) -> dict:
        """`model_args` of the weights file (`from_state_dict`'s)."""
        return {**asdict(self.args), "rungs": self.sizes[:-1],
                "rung_decoders": sorted(int(s) for s, r in self.rungs.items() if r.g_s is not None)}  # fmt: skip

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, Tensor], model_args: dict) -> Ladder:
        """Build from the weights file's tensors and `model_args`; fp32, eval mode."""
        args = dict(model_args)
        rungs, decoders = args.pop("rungs"), set(args.pop("rung_decoders"))
        base = {args["codebook_size"]: True} if args["codebook_size"] in decoders else {}  # the base's own decoder
        net = cls(args_from_dict(args), {int(s): s in decoders for s in rungs} | base)
        net.load_state_dict({k: v.float() for k, v in state_dict.items()})
        return net.eval()


def args_from_dict(d: dict) -> VQGANArgs:
    """`VQGANArgs` from its JSON form (lists back to tuples)."""
    return VQGANArgs(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})  # type: ignore[arg-type]


def is_base(name: str) -> bool:
    """Whether a weights file's tensor `name` belongs to the base network (not to a rung: its codebook, 1x1 convolutions
    or own decoder, the base point's own decoder included): what `network_hash` binds a recovery file to."""
    return not name.startswith("rungs.")


def base_of(state_dict: dict[str, Tensor], model_args: dict) -> tuple[dict[str, Tensor], dict]:
    """The base network's tensors and `model_args` in a weights file: a base export's as they are, an
    assembled file's (`Ladder`: the codec's, the installed one) without its rungs."""
    return ({k: v for k, v in state_dict.items() if is_base(k)},
            {k: v for k, v in model_args.items() if k not in ("rungs", "rung_decoders")})  # fmt: skip


def export_tensors(net: VQGAN) -> dict[str, Tensor]:
    """Inference tensors for shipping (`codec.weights` writes them): convolutions in fp16, codebooks
    in fp32 (their argmax decides indices)."""
    return {k: v.detach().to("cpu", torch.float32 if k.endswith("vq.codebook") else torch.float16).contiguous()
            for k, v in net.state_dict().items()}  # fmt: skip


# discriminator (training only)


class PatchDiscriminator(nn.Sequential):
    """PatchGAN (Isola et al. 2017, as taming's NLayerDiscriminator): one real/fake logit per ~70x70 patch.

    GroupNorm instead of BatchNorm: no running statistics, nothing that DDP ranks must keep in sync.
    """

    def __init__(self, channels: int = 64, layers: int = 3):
        mods: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, layers + 1):
            c_next = channels * min(2**i, 8)
            mods += [nn.Conv2d(c, c_next, 4, 2 if i < layers else 1, 1), nn.GroupNorm(min(32, c_next // 4), c_next),
                     nn.LeakyReLU(0.2)]  # fmt: skip
            c = c_next
        super().__init__(*mods, nn.Conv2d(c, 1, 4, 1, 1))
