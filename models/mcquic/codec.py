"""The `mcquic` codec: McQuic multi-codebook VQ indices of image tiles, range-coded with context priors.

The image is replicate-padded to a multiple of 16 and cut into square tiles of `TILE` pixels;
one packet holds one tile:

    packet = pack_streams([meta, indices] + [alpha])
    meta   = uint16 coarse rows | uint16 coarse cols | uint16 unigram mask
    indices: range-coded, codebook-major (4 coarse codebooks, then 2 per fine stage) (`index_coding.py`)
    alpha:  the alpha plane of the tile, lossless (`codec/plane.py`), if any

The encoder runs the network on each tile with `ENC_MARGIN` pixels of the image around it; the
decoder gathers every packet's indices and synthesises each tile from its indices plus
`dec_margin` coarse cells of its neighbours' (more than the decoder's receptive field), so tiles
meet without seams and memory stays bounded by the tile size. Byte layout: docs/FORMAT.md.
"""

from __future__ import annotations

import math
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
from nmc.codec.errors import ContainerError, MediaError
from nmc.codec.fields import BOOL, HeaderFields, Int, IntList, header_field
from nmc.codec.interface import Encoded, NeuralCodec, Setting
from nmc.codec.plane import decode_plane, encode_plane
from nmc.codec.registry import register_codec

from .index_coding import COARSE_M, FINE_M, context_sizes, decode_tile, encode_tile
from .tiling import STRIDE, net_compress, net_decompress, synthesise, tile_indices, tiles

if TYPE_CHECKING:
    import torch

    from .network import McQuic

WEIGHTS = Path(__file__).parent / "weights" / "mcquic.safetensors"
CODEBOOK_SIZE = 256  # entries per codebook of the shipped model (nominal rates); the header has the model's
TILE = 1024  # pixels per tile side (packet), a multiple of STRIDE
ENC_MARGIN = 128  # pixels of image around a tile that the encoder sees (its choice, not part of the format)
DEC_MARGIN = 10  # coarse cells of neighbouring indices the decoder sees (g_c + g_s reach ~9)
MAX_SIDE = 1 << 20  # pixels; a header claiming more is damaged (keeps the decoder's allocations sane)
_META = struct.Struct("<HHH")

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, kw_only=True)
class Quality(Setting):
    stages: int  # index stages: the coarse one and stages - 1 fine ones


def _quality(stages: int) -> Quality:
    bits = math.log2(CODEBOOK_SIZE)
    bpp = COARSE_M * bits / STRIDE**2 + (stages - 1) * FINE_M * bits / (STRIDE // 2) ** 2
    what = f"coarse stage ({COARSE_M} x {bits:g} bit per {STRIDE}x{STRIDE} pixels)" + (f" + {stages - 1} fine ({FINE_M} x {bits:g} bit per 8x8 pixels each)" if stages > 1 else "")
    return Quality(f"q{stages}", bpp, "bpp", what, stages=stages)


SETTINGS: list[Setting] = [_quality(stages) for stages in (1, 2, 3, 4)]


@dataclass(frozen=True)
class Fields(HeaderFields):
    stride: int = header_field(Int(STRIDE, STRIDE))
    tile: int = header_field(Int(STRIDE, 0xFFFF))
    stages: int = header_field(Int(1, 4))
    codebooks: list[int] = header_field(IntList(1, 8, 4))
    codebook_size: int = header_field(Int(1, 1 << 16))
    alpha: bool = header_field(BOOL)
    dec_margin: int = header_field(Int(0, 64))
    gray: bool = header_field(BOOL, default=False)  # R=G=B colour image: one decoded plane copied to all three

    def consistent(self, header: Header, setting: Setting) -> bool:
        m = header.media
        return (
            isinstance(setting, Quality) and self.stages == setting.stages and self.tile % STRIDE == 0
            and self.codebooks == [COARSE_M] + [FINE_M] * (self.stages - 1) and max(m["width"], m["height"]) <= MAX_SIDE
            and (m["channels"] in (2, 4) or not self.alpha) and header.packets == len(tiles(m["height"], m["width"], self.tile))
        )  # fmt: skip


@register_codec("mcquic")
class McQuicCodec(NeuralCodec["McQuic"]):
    """Photos at 0.1-1 bpp: McQuic multi-codebook VQ, 1 coarse + up to 3 fine stages, context-coded."""

    media = "image"
    model_id = "mcquic-v1"
    description = "McQuic multi-codebook VQ image codec, context-coded indices, tiled"
    weights_path = WEIGHTS
    retired_weights = {
        "ba88bdd9a546d455": "mcquic v1 weights, shipped until 2026-12-02",
        "22c2f8fd8616cd4b": "mcquic v2 weights, shipped until 2026-12-02 session 6",
        "bc1cc7d93fd6c993": "mcquic v2.1 weights, shipped until 2026-12-03 session 11",
        "19aa09c84e0476fa": "mcquic v3 weights of step 45240, shipped until 2026-12-03 session 12",
    }
    auto_priority = 20
    default_setting = "q2"
    header_fields = Fields
    header_dict = (  # format 2: a typical header (the most frequent values), part of the format
        b'{"coder":{"coder":"range","library":"constriction","perfect":false,"version":"0.5.0"},'
        b'"extra":{"alpha":false,"codebook_size":256,"codebooks":[4,2,2,2],"dec_margin":10,"stages":2,"stride":16,"tile":1024},'
        b'"media":{"bit_depth":8,"channels":3,"height":512,"kind":"image","width":768},"model_id":"mcquic-v1","packets":1,'
        b'"setting":"q2","weights":"'
    )

    def __init__(self, weights_path: Path | None = None, tile: int = TILE, enc_margin: int = ENC_MARGIN, dec_margin: int = DEC_MARGIN) -> None:
        super().__init__(weights_path)
        if tile % STRIDE or not STRIDE <= tile <= 0xFFFF:
            raise ValueError(f"tile={tile} is not a multiple of {STRIDE} in [{STRIDE}, 65535]")
        if enc_margin % STRIDE or enc_margin < 0 or not 0 <= dec_margin <= 64:
            raise ValueError(f"enc_margin={enc_margin} (a multiple of {STRIDE}) or dec_margin={dec_margin} (0..64 cells) out of range")
        self.tile, self.enc_margin, self.dec_margin = tile, enc_margin, dec_margin

    net_compress = staticmethod(net_compress)  # the network functions `run` calls (tiling.py)
    net_decompress = staticmethod(net_decompress)
    # On an H200 a call of 4 photos (768x512) takes 7 ms, of 16 24-30 ms, and `nmc batch` gathers
    # 2-5 per call (docs/BENCHMARKS.md, "One H200"): 16-row calls spent most of the GPU on padding.
    gpu_rows = {"compress": 4, "decompress": 4}
    onnx_functions = ("compress", "decompress")  # their exports reproduce torch (`onnx_backend`)

    def settings(self) -> list[Setting]:
        return SETTINGS

    def build_net(self, state: dict[str, torch.Tensor], args: dict[str, Any]) -> McQuic:
        from .network import McQuic

        net = McQuic.from_state_dict(state, args)
        a = net.args
        if (a.coarse_m, a.fine_m, a.fine_k, net.stride) != (COARSE_M, FINE_M, a.coarse_k, STRIDE):
            raise ValueError(f"network {a} does not fit the codec ({COARSE_M} + {FINE_M} codebooks of one size, stride {STRIDE})")
        return net

    def prior_contexts(self, net: McQuic) -> list[list[int]]:
        return [context_sizes(k, net.args.coarse_k) for k in range(COARSE_M + FINE_M * net.args.fine_stages)]

    def encode(self, image: M.Image, setting: Setting) -> Encoded:
        assert isinstance(setting, Quality)
        if max(image.width, image.height) > MAX_SIDE:
            raise MediaError(f"mcquic: images up to {MAX_SIDE} pixels a side, got {image.width}x{image.height}")
        rgb, alpha = M.to_rgb8(image)
        prior, stages = self.prior, setting.stages
        boxes = tiles(image.height, image.width, self.tile)
        gray = image.channels >= 3 and bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
        fields = Fields(stride=STRIDE, tile=self.tile, stages=stages, codebooks=[COARSE_M] + [FINE_M] * (stages - 1),
                        codebook_size=prior.alphabet, alpha=alpha is not None, dec_margin=self.dec_margin, gray=gray)

        def packets() -> Iterator[bytes]:
            for y0, y1, x0, x1 in boxes:
                grids = tile_indices(self.run, rgb, (y0, y1, x0, x1), stages, self.enc_margin)
                enc = E.Encoder()
                mask = encode_tile(enc, prior, grids)
                streams = [_META.pack(*grids[0].shape, mask), enc.to_bytes()]
                if alpha is not None:
                    streams.append(encode_plane(alpha[y0 : min(y1, image.height), x0 : min(x1, image.width)]))
                yield pack_streams(streams)

        return Encoded(fields, packets(), len(boxes))

    def read_packet(self, header: Header, fields: Fields, payload: bytes | None, box: tuple[int, int, int, int]) -> tuple[list[IntArray], np.ndarray | None]:
        """Index grids of the packet of tile `box` and its alpha plane (None without alpha)."""
        assert payload is not None  # only codecs that can recover are given lost packets
        y0, y1, x0, x1 = box
        coarse = ((y1 - y0) // STRIDE, (x1 - x0) // STRIDE)
        meta, data, *alpha = unpack_streams(payload, 3 if fields.alpha else 2)
        if len(meta) != _META.size or _META.unpack(meta)[:2] != coarse:
            raise ContainerError(f"bad metadata (expected a tile of {coarse[0]} x {coarse[1]} coarse cells)")
        grids = decode_tile(E.Decoder(data), self.prior, COARSE_M + FINE_M * (fields.stages - 1), coarse, _META.unpack(meta)[2])
        m = header.media
        return grids, decode_plane(alpha[0], min(y1, m["height"]) - y0, min(x1, m["width"]) - x0) if alpha else None

    def decode(self, header: Header, fields: Fields, packets: Iterator[bytes | None]) -> M.Image:
        m = header.media
        h, w, stages = m["height"], m["width"], fields.stages
        boxes = tiles(h, w, fields.tile)
        ch, cw = -(-h // STRIDE), -(-w // STRIDE)
        coarse = np.zeros((COARSE_M, ch, cw), np.uint8)
        fine = np.zeros((stages - 1, FINE_M, 2 * ch, 2 * cw), np.uint8)
        out = np.empty((h, w, m["channels"]), np.uint16 if m["bit_depth"] == 16 else np.uint8)
        scale = 257 if m["bit_depth"] == 16 else 1
        if m["channels"] in (2, 4) and not fields.alpha:
            out[..., -1] = 255 * scale
        for i, payload in enumerate(packets):  # as many as tiles: the header's count is checked
            y0, _, x0, _ = boxes[i]
            grids, a = self.read_packet(header, fields, payload, boxes[i])
            cy, cx = y0 // STRIDE, x0 // STRIDE
            coarse[:, cy : cy + grids[0].shape[0], cx : cx + grids[0].shape[1]] = np.stack(grids[:COARSE_M])
            for s in range(stages - 1):
                g = np.stack(grids[COARSE_M + FINE_M * s : COARSE_M + FINE_M * (s + 1)])
                fine[s, :, 2 * cy : 2 * cy + g.shape[1], 2 * cx : 2 * cx + g.shape[2]] = g
            if a is not None:
                out[y0 : y0 + a.shape[0], x0 : x0 + a.shape[1], -1] = a.astype(out.dtype) * scale
        for box in boxes:
            synthesise(self.run, out, coarse, fine, box, fields.dec_margin, fields.gray)
        return M.Image(out)
