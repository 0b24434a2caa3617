"""The `mcquic` codec: McQuic multi-codebook VQ indices of image tiles, range-coded with context priors.

The image is replicate-padded to a multiple of 16 and cut into square tiles of `TILE` pixels;
one packet holds one tile:

    packet = pack_streams([meta, indices] + [alpha])
    meta   = uint16 coarse rows | uint16 coarse cols | uint16 unigram mask
    indices: range-coded, codebook-major (4 coarse codebooks, then 2 per fine stage), each
             codebook in wavefront order so that it can use its own causal neighbours
    alpha:  range-coded planar-prediction residuals of the alpha plane (lossless), if any

The encoder runs the network on each tile with `ENC_MARGIN` pixels of the image around it; the
decoder gathers every packet's indices and synthesises each tile from its indices plus
`dec_margin` coarse cells of its neighbours' (more than the decoder's receptive field), so tiles
meet without seams and memory stays bounded by the tile size. Contexts restart in every tile,
so each packet is entropy-decodable on its own. Byte layout: docs/FORMAT.md.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from nmc.codec import entropy as E
from nmc.codec import media as M
from nmc.codec.container import Header, pack_streams, unpack_streams
from nmc.codec.errors import CodecNotFoundError, ContainerError, MediaError
from nmc.codec.fields import BOOL, Int, IntList
from nmc.codec.prior import PriorSet, tables_from_scores
from nmc.codec.registry import Encoded, NeuralCodec, Setting, one_thread, register_codec

if TYPE_CHECKING:
    import torch

    from .network import McQuic

WEIGHTS = Path(__file__).parent / "weights" / "mcquic.safetensors"
STRIDE = 16  # pixels per coarse cell; fine cells are 8 pixels
TILE = 1024  # pixels per tile side (packet), a multiple of STRIDE
ENC_MARGIN = 128  # pixels of image around a tile that the encoder sees
DEC_MARGIN = 10  # coarse cells of neighbouring indices the decoder sees (g_c + g_s reach ~9)
MAX_SIDE = 1 << 20  # pixels; a header claiming more is damaged (keeps the decoder's allocations sane)
SETTINGS = {"q1": 1, "q2": 2, "q3": 3, "q4": 4}  # name -> index stages (coarse + q-1 fine)
_META = struct.Struct("<HHH")

IntArray = npt.NDArray[np.int64]


# ---------------------------------------------------------------- index contexts

# Codebook k of a tile: k < 4 are the coarse codebooks (grid h x w), k = 4 + 2 (s - 1) + j is
# codebook j of fine stage s (grid 2h x 2w). Each is coded given `static_contexts` (codebooks
# coded before it) and, for the coarse codebooks and fine stage 1, its own left and upper
# neighbours; a context value equal to the alphabet K means "not available" (outside the tile).
# Fine stages 2 and 3 gain nothing from neighbours (measured), so they decode in one step.
COARSE_M, FINE_M = 4, 2
NEIGHBOURS = ((0, -1), (-1, 0))  # (dy, dx): left, up; decoded in wavefronts t = y + x
SUBPOS = 4  # alphabet of the sub-position context (which f8 cell of its f16 cell)


def neighbours(k: int) -> tuple[tuple[int, int], ...]:
    """Offsets of the causal neighbours that codebook k is conditioned on."""
    return NEIGHBOURS if k < COARSE_M + FINE_M else ()


def grid_shape(k: int, coarse: tuple[int, int]) -> tuple[int, int]:
    return coarse if k < COARSE_M else (2 * coarse[0], 2 * coarse[1])


def static_contexts(grids: list[IntArray], k: int) -> list[IntArray]:
    """Context planes of codebook k from codebooks coded before it (all in `grids[:k]`).

    Coarse codebook m: coarse codebooks 0..m-1 at the same cell. Fine codebook (s, j): the
    four coarse codebooks of the covering f16 cell, the sub-position, both codebooks of fine
    stage s-1 at the same cell, and codebook 0 of stage s when j = 1.
    """
    if k < COARSE_M:
        return [grids[m] for m in range(k)]
    s, j = divmod(k - COARSE_M, FINE_M)
    h, w = grids[0].shape
    planes = [np.repeat(np.repeat(grids[m], 2, 0), 2, 1) for m in range(COARSE_M)]
    planes.append(np.add.outer(np.arange(2 * h) % 2 * 2, np.arange(2 * w) % 2))
    if s > 0:
        planes += [grids[k - j - FINE_M], grids[k - j - FINE_M + 1]]
    if j > 0:
        planes.append(grids[k - 1])
    return planes


def context_sizes(k: int, K: int) -> list[int]:
    """Alphabet of each context of codebook k (static ones, then the neighbours)."""
    near = [K] * len(neighbours(k))
    if k < COARSE_M:
        return [K] * k + near
    s, j = divmod(k - COARSE_M, FINE_M)
    return [K] * COARSE_M + [SUBPOS] + [K] * (2 * (s > 0) + (j > 0)) + near


def neighbour_planes(grid: IntArray, k: int, K: int) -> list[IntArray]:
    """Codebook k's own value at each of its neighbour offsets (K outside the tile)."""
    h, w = grid.shape
    padded = np.full((h + 1, w + 1), K, np.int64)
    padded[1:, 1:] = grid
    return [padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in neighbours(k)]


def contexts(grids: list[IntArray], k: int, K: int) -> IntArray:
    """All context rows `(h * w, n_ctx)` of codebook k in raster order (training, encoding)."""
    planes = static_contexts(grids, k) + neighbour_planes(grids[k], k, K)
    return np.stack([p.ravel() for p in planes], axis=1)


def coding_order(k: int, h: int, w: int) -> IntArray:
    """Raster positions of codebook k in coding order: by wavefront `y + x` (then row) when it
    has neighbour contexts, else raster order."""
    if not neighbours(k):
        return np.arange(h * w)
    y, x = np.divmod(np.arange(h * w), w)
    return np.lexsort((y, y + x))


# ---------------------------------------------------------------- index prior


@dataclass
class IndexPrior(PriorSet):
    """The codebooks' priors (`PriorSet`); codes the indices of one tile."""

    def scores(self, k: int, ctx: IntArray) -> IntArray:
        """`ContextPrior.scores` of codebook k for context rows `(n, n_ctx)`."""
        return self.priors[k].scores(ctx)

    def encode(self, enc: E.Encoder, grids: list[IntArray]) -> int:
        """Code the tile's codebooks in order; returns the mask of codebooks coded with the unigram."""
        mask, K = 0, self.alphabet
        for k, grid in enumerate(grids):
            order = coding_order(k, *grid.shape)
            symbols = grid.ravel()[order]
            tables = tables_from_scores(self.scores(k, contexts(grids, k, K)[order]))
            ctx_bits = float((np.log2(tables.sum(1)) - np.log2(tables[np.arange(symbols.size), symbols])).sum())
            if E.cross_entropy_bits(grid, self.unigram[k]) < ctx_bits:
                enc.encode(grid.ravel(), self.unigram[k])
                mask |= 1 << k
            else:
                enc.encode(symbols, tables)
        return mask

    def decode(self, dec: E.Decoder, n_codebooks: int, coarse: tuple[int, int], mask: int) -> list[IntArray]:
        K, grids = self.alphabet, []
        for k in range(n_codebooks):
            h, w = grid_shape(k, coarse)
            if mask >> k & 1:
                grids.append(dec.decode(self.unigram[k], h * w).astype(np.int64).reshape(h, w))
                continue
            prior = self.priors[k]
            base, deltas = prior.bias.astype(np.int64), [prior.term(c) for c in range(len(prior.embed))]
            static = static_contexts(grids, k)
            s = np.tile(base, (h, w, 1))
            for plane, d in zip(static, deltas):
                s += d[plane]
            if not neighbours(k):
                grids.append(dec.decode(tables_from_scores(s.reshape(h * w, K))).astype(np.int64).reshape(h, w))
                continue
            near = deltas[len(static) :]
            padded = np.full((h + 1, w + 1), K, np.int64)  # the grid with a border of "not available"
            ys = np.arange(h)
            for t in range(h + w - 1):
                y = ys[max(0, t - w + 1) : t + 1]
                x = t - y
                st = s[y, x]
                for (dy, dx), d in zip(neighbours(k), near):
                    st += d[padded[1 + y + dy, 1 + x + dx]]
                padded[1 + y, 1 + x] = dec.decode(tables_from_scores(st))
            grids.append(padded[1:, 1:].copy())
        return grids


# ---------------------------------------------------------------- alpha (lossless)

ALPHA_BLOCK = 32  # pixels per side of the blocks that choose a residual table
ALPHA_SCALES = np.geomspace(0.05, 40.0, 15)  # Laplace scales of modes 1..15; mode 0: all residuals zero
with np.errstate(over="ignore"):  # exp() of the unused branch overflows for small scales
    _ALPHA_TABLES = E.quantized_laplace_tables(ALPHA_SCALES, 128)  # symbols 0..256, residual = symbol - 128
_MODE_TABLE = E.freqs_from_counts(np.array([15.0] + [1.0] * len(ALPHA_SCALES)))


def _blocks(a: np.ndarray) -> np.ndarray:
    """`(h, w)` -> `(n_blocks, ALPHA_BLOCK**2)`, blocks in raster order (padded with -1)."""
    h, w = a.shape
    B = ALPHA_BLOCK
    p = np.full((-(-h // B) * B, -(-w // B) * B), -1, np.int64)
    p[:h, :w] = a
    return p.reshape(p.shape[0] // B, B, p.shape[1] // B, B).transpose(0, 2, 1, 3).reshape(-1, B * B)


def _unblocks(b: np.ndarray, h: int, w: int) -> np.ndarray:
    B = ALPHA_BLOCK
    nby, nbx = -(-h // B), -(-w // B)
    return b.reshape(nby, nbx, B, B).transpose(0, 2, 1, 3).reshape(nby * B, nbx * B)[:h, :w]


def encode_alpha(alpha: npt.NDArray[np.uint8]) -> bytes:
    """Planar prediction (left + up - up-left, mod 256), a Laplace table chosen per 32x32 block."""
    a = np.pad(alpha.astype(np.int64), ((1, 0), (1, 0)))
    r = (a[1:, 1:] - a[1:, :-1] - a[:-1, 1:] + a[:-1, :-1] + 128) % 256  # symbols 0..255
    blocks = _blocks(r)
    valid = blocks >= 0
    counts = np.stack([np.bincount(b[v], minlength=257) for b, v in zip(blocks, valid)])
    cost = counts @ -np.log2(_ALPHA_TABLES / _ALPHA_TABLES.sum(1, keepdims=True)).T
    modes = np.where(counts[:, 128] == valid.sum(1), 0, 1 + cost.argmin(1))
    enc = E.Encoder()
    enc.encode(modes, _MODE_TABLE)
    coded = (modes > 0)[:, None] & valid
    enc.encode_indexed(blocks[coded], np.broadcast_to(modes[:, None] - 1, blocks.shape)[coded], _ALPHA_TABLES)
    return enc.to_bytes()


def decode_alpha(data: bytes, h: int, w: int) -> npt.NDArray[np.uint8]:
    dec = E.Decoder(data)
    valid = _blocks(np.zeros((h, w), np.int64)) >= 0
    modes = dec.decode(_MODE_TABLE, valid.shape[0]).astype(np.int64)
    coded = (modes > 0)[:, None] & valid
    r = np.full(valid.shape, 128, np.int64)
    r[coded] = dec.decode_indexed(np.broadcast_to(modes[:, None] - 1, valid.shape)[coded], _ALPHA_TABLES)
    if (r > 255).any():
        raise ValueError("alpha residual outside 0..255")
    return (np.cumsum(np.cumsum(_unblocks(r, h, w) - 128, 0), 1) % 256).astype(np.uint8)


# ---------------------------------------------------------------- tiles


def padded_size(height: int, width: int) -> tuple[int, int]:
    return -(-height // STRIDE) * STRIDE, -(-width // STRIDE) * STRIDE


def tiles(height: int, width: int, tile: int) -> list[tuple[int, int, int, int]]:
    """Tiles `(y0, y1, x0, x1)` of the padded image in pixels, raster order."""
    ph, pw = padded_size(height, width)
    return [(y, min(y + tile, ph), x, min(x + tile, pw)) for y in range(0, ph, tile) for x in range(0, pw, tile)]


def tile_indices(
    net: McQuic, rgb: npt.NDArray[np.uint8], box: tuple[int, int, int, int], stages: int, margin: int = ENC_MARGIN, device: str = "cpu"
) -> list[IntArray]:
    """Index grids of one tile (coarse codebooks, then fine) from `rgb` `(H, W, 3)`.

    The network sees the tile plus `margin` pixels of the (replicate-padded) image around it.
    """
    import torch

    y0, y1, x0, x1 = box
    wy0, wx0 = max(0, y0 - margin), max(0, x0 - margin)
    ph, pw = padded_size(*rgb.shape[:2])
    rows = np.minimum(np.arange(wy0, min(ph, y1 + margin)), rgb.shape[0] - 1)
    cols = np.minimum(np.arange(wx0, min(pw, x1 + margin)), rgb.shape[1] - 1)
    window = rgb[rows[:, None], cols[None, :]]
    with torch.inference_mode():
        x = torch.from_numpy(window).to(device).permute(2, 0, 1)[None].float().div_(255)  # channels_last strides
        res = net.compress(x, stages)
    grids = []
    for s, idx in enumerate(res.indices):
        f = STRIDE if s == 0 else STRIDE // 2
        part = idx[0, :, (y0 - wy0) // f : (y1 - wy0) // f, (x0 - wx0) // f : (x1 - wx0) // f]
        grids += list(part.cpu().numpy().astype(np.int64))
    return grids


# ---------------------------------------------------------------- weights file


@dataclass
class Model:
    """The network and the index prior, from one weights file."""

    net: McQuic
    prior: IndexPrior


def write_weights(path: Path, network: dict[str, torch.Tensor], model_args_json: str, prior: IndexPrior, info: dict[str, Any]) -> None:
    """One safetensors file: the network (`network.export_tensors`) plus the integer prior (`prior.*`)."""
    import json

    import torch
    from safetensors.torch import save_file

    from .network import FORMAT

    tensors = {k: v.contiguous() for k, v in network.items()}
    tensors.update({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in prior.to_tensors().items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": FORMAT, "model_args": model_args_json, "prior": json.dumps(info)})


def load_model(path: Path) -> Model:
    import json

    from safetensors import safe_open

    from .network import FORMAT, McQuic

    with safe_open(str(path), framework="pt") as f:
        meta, names = f.metadata() or {}, list(f.keys())
        if meta.get("format") != FORMAT or "prior.unigram" not in names:
            raise CodecNotFoundError(f"{path}: not an mcquic weights file (no network or prior)")
        state = {k: f.get_tensor(k) for k in names if not k.startswith("prior.")}
        tables = {k: f.get_tensor(k).numpy() for k in names if k.startswith("prior.")}
    net = McQuic.from_state_dict(state, json.loads(meta["model_args"]))
    prior = IndexPrior.from_tensors(tables)
    a = net.args
    n_cb = a.coarse_m + a.fine_m * a.fine_stages
    if (a.coarse_m, a.fine_m, a.coarse_k, a.fine_k) != (COARSE_M, FINE_M, prior.alphabet, prior.alphabet) or prior.unigram.shape[0] != n_cb:
        raise CodecNotFoundError(f"{path}: prior of shape {prior.unigram.shape} does not fit the network {a}")
    return Model(net, prior)


# ---------------------------------------------------------------- the codec


@register_codec("mcquic")
class McQuicCodec(NeuralCodec):
    """Photos at 0.1-1 bpp: McQuic multi-codebook VQ, 1 coarse + up to 3 fine stages, context-coded."""

    media = "image"
    model_id = "mcquic-v1"
    description = "McQuic multi-codebook VQ image codec, context-coded indices, tiled"
    weights_path = WEIGHTS
    auto_priority = 20
    default_setting = "q2"
    header_fields = {
        "extra.stride": Int(STRIDE, STRIDE), "extra.tile": Int(STRIDE, 0xFFFF), "extra.stages": Int(1, 4), "extra.dec_margin": Int(0, 64),
        "extra.codebooks": IntList(1, 8, 4), "extra.codebook_size": Int(1, 1 << 16), "extra.alpha": BOOL,
    }  # fmt: skip

    def __init__(self, weights_path: Path | None = None, tile: int = TILE, enc_margin: int = ENC_MARGIN, dec_margin: int = DEC_MARGIN) -> None:
        super().__init__(weights_path)
        if tile % STRIDE or not STRIDE <= tile <= 0xFFFF:
            raise ValueError(f"tile={tile} is not a multiple of {STRIDE} in [{STRIDE}, 65535]")
        if enc_margin % STRIDE or enc_margin < 0 or not 0 <= dec_margin <= 64:
            raise ValueError(f"enc_margin={enc_margin} (a multiple of {STRIDE}) or dec_margin={dec_margin} (0..64 cells) out of range")
        self.tile, self.enc_margin, self.dec_margin = tile, enc_margin, dec_margin

    def settings(self) -> list[Setting]:
        return [
            Setting("q1", 0.125, "bpp", "coarse stage only (4 x 8 bit per 16x16 pixels, before entropy coding)"),
            Setting("q2", 0.375, "bpp", "coarse + 1 fine stage (2 x 8 bit per 8x8 pixels)"),
            Setting("q3", 0.625, "bpp", "coarse + 2 fine stages"),
            Setting("q4", 0.875, "bpp", "coarse + 3 fine stages"),
        ]

    def load(self, path: Path) -> Model:
        return load_model(path)

    # ------------------------------------------------------------ encode

    def encode(self, image: M.Image, setting: Setting) -> Encoded:
        stages = SETTINGS[setting.name]
        if max(image.width, image.height) > MAX_SIDE:
            raise MediaError(f"mcquic: images up to {MAX_SIDE} pixels a side, got {image.width}x{image.height}")
        rgb, alpha = M.to_rgb8(image)
        model = self.model
        boxes = tiles(image.height, image.width, self.tile)
        media = {"kind": "image", "width": image.width, "height": image.height, "channels": image.channels, "bit_depth": image.bit_depth}
        extra = {
            "stride": STRIDE, "tile": self.tile, "stages": stages, "dec_margin": self.dec_margin, "alpha": alpha is not None,
            "codebooks": [COARSE_M] + [FINE_M] * (stages - 1), "codebook_size": model.prior.alphabet,
        }  # fmt: skip

        def packets() -> Iterator[bytes]:
            for box in boxes:
                with one_thread():  # the same bytes for any thread count
                    grids = tile_indices(model.net, rgb, box, stages, self.enc_margin, self.device)
                enc = E.Encoder()
                mask = model.prior.encode(enc, grids)
                streams = [_META.pack(*grids[0].shape, mask), enc.to_bytes()]
                if alpha is not None:
                    y0, y1, x0, x1 = box
                    streams.append(encode_alpha(alpha[y0 : min(y1, image.height), x0 : min(x1, image.width)]))
                yield pack_streams(streams)

        return Encoded(media, packets(), len(boxes), extra)

    # ------------------------------------------------------------ decode

    def read_packet(self, header: Header, index: int, payload: bytes, box: tuple[int, int, int, int]) -> tuple[list[IntArray], np.ndarray | None]:
        """Index grids of packet `index` (tile `box`) and its alpha plane (None without alpha)."""
        ex, m = header.extra, header.media
        y0, y1, x0, x1 = box
        coarse = ((y1 - y0) // STRIDE, (x1 - x0) // STRIDE)
        n_cb = COARSE_M + FINE_M * (ex["stages"] - 1)
        try:
            meta, data, *alpha = unpack_streams(payload, 3 if ex["alpha"] else 2)
            if len(meta) != _META.size or _META.unpack(meta)[:2] != coarse:
                raise ContainerError(f"bad metadata (expected a tile of {coarse[0]} x {coarse[1]} coarse cells)")
            grids = self.model.prior.decode(E.Decoder(data), n_cb, coarse, _META.unpack(meta)[2])
            a = decode_alpha(alpha[0], min(y1, m["height"]) - y0, min(x1, m["width"]) - x0) if alpha else None
        except (ContainerError, ValueError, RuntimeError, IndexError) as err:
            raise ContainerError(f"mcquic packet {index}: undecodable ({err})") from None
        return grids, a

    def _check_header(self, header: Header) -> None:
        ex, m = header.extra, header.media
        try:
            ok = (
                ex["stride"] == STRIDE and ex["tile"] % STRIDE == 0 and STRIDE <= ex["tile"] <= 0xFFFF
                and ex["stages"] == SETTINGS.get(header.setting) and ex["codebook_size"] == self.model.prior.alphabet
                and ex["codebooks"] == [COARSE_M] + [FINE_M] * (ex["stages"] - 1) and isinstance(ex["alpha"], bool)
                and 0 <= ex["dec_margin"] <= 64 and 1 <= m["width"] <= MAX_SIDE and 1 <= m["height"] <= MAX_SIDE
                and m["channels"] in (1, 2, 3, 4) and m["bit_depth"] in (8, 16) and (m["channels"] in (2, 4) or not ex["alpha"])
                and header.packets == -(-m["height"] // ex["tile"]) * -(-m["width"] // ex["tile"])
            )  # fmt: skip
        except (KeyError, TypeError):
            ok = False
        if not ok:
            raise ContainerError(f"mcquic: inconsistent header fields {ex} / {m}")

    def decode(self, header: Header, packets: Iterator[bytes | None], recover: bool = False) -> M.Image:
        self._check_header(header)
        ex, m = header.extra, header.media
        h, w, stages = m["height"], m["width"], ex["stages"]
        boxes = tiles(h, w, ex["tile"])
        ch, cw = -(-h // STRIDE), -(-w // STRIDE)
        coarse = np.zeros((COARSE_M, ch, cw), np.uint8)
        fine = np.zeros((stages - 1, FINE_M, 2 * ch, 2 * cw), np.uint8)
        out = np.empty((h, w, m["channels"]), np.uint16 if m["bit_depth"] == 16 else np.uint8)
        if m["channels"] in (2, 4) and not ex["alpha"]:
            out[..., -1] = 65535 if m["bit_depth"] == 16 else 255
        for i, payload in enumerate(packets):
            if i >= len(boxes):
                raise ContainerError(f"mcquic: more packets than the {len(boxes)} tiles")
            if payload is None:
                raise ContainerError(f"mcquic packet {i} is damaged or missing (lost tiles cannot be recovered)")
            y0, _, x0, _ = boxes[i]
            grids, a = self.read_packet(header, i, payload, boxes[i])
            cy, cx = y0 // STRIDE, x0 // STRIDE
            coarse[:, cy : cy + grids[0].shape[0], cx : cx + grids[0].shape[1]] = np.stack(grids[:COARSE_M])
            for s in range(stages - 1):
                g = np.stack(grids[COARSE_M + FINE_M * s : COARSE_M + FINE_M * (s + 1)])
                fine[s, :, 2 * cy : 2 * cy + g.shape[1], 2 * cx : 2 * cx + g.shape[2]] = g
            if a is not None:
                out[y0 : y0 + a.shape[0], x0 : x0 + a.shape[1], -1] = a.astype(out.dtype) * (257 if m["bit_depth"] == 16 else 1)
        for box in boxes:
            self._synthesise(out, coarse, fine, box, ex["dec_margin"], m)
        return M.Image(out)

    def _synthesise(self, out: np.ndarray, coarse: np.ndarray, fine: np.ndarray, box: tuple[int, int, int, int], margin: int, m: dict[str, Any]) -> None:
        """Decode tile `box` from its indices plus `margin` coarse cells around it into `out`."""
        import torch

        y0, y1, x0, x1 = (v // STRIDE for v in box)
        wy0, wx0 = max(0, y0 - margin), max(0, x0 - margin)
        wy1, wx1 = min(coarse.shape[1], y1 + margin), min(coarse.shape[2], x1 + margin)
        idx = [coarse[None, :, wy0:wy1, wx0:wx1]] + [f[None, :, 2 * wy0 : 2 * wy1, 2 * wx0 : 2 * wx1] for f in fine]
        stages = 1 + fine.shape[0]
        with torch.inference_mode(), one_thread():
            ts = [torch.from_numpy(i.astype(np.int64)).to(self.device) for i in idx]
            x = self.model.net.decompress(ts, stages, (STRIDE * (wy1 - wy0), STRIDE * (wx1 - wx0)))[0]
            if m["channels"] <= 2:
                x = x.mean(0, keepdim=True)
            pixels = x.mul(255).round_().to(torch.uint8).cpu().numpy()
        py0, px0 = STRIDE * y0, STRIDE * x0
        py1, px1 = min(STRIDE * y1, m["height"]), min(STRIDE * x1, m["width"])
        core = pixels[:, py0 - STRIDE * wy0 : py1 - STRIDE * wy0, px0 - STRIDE * wx0 : px1 - STRIDE * wx0].transpose(1, 2, 0)
        color = 1 if m["channels"] <= 2 else 3
        out[py0:py1, px0:px1, :color] = core.astype(out.dtype) * (257 if m["bit_depth"] == 16 else 1)
