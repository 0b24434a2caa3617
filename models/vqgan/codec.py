"""The `vqgan` codec: photos at 0.01-0.05 bpp as VQGAN indices (one per 16x16 pixels) into a ladder
of codebooks, range-coded with context priors, in interleaved packets.

Settings are the codebook sizes of the weights file: each ladder rung's and the base's (`s16` ..
`s8192`), nominal rate log2(S) / 256 bpp. The image is replicate-padded to a multiple of 16 and
cut into square tiles of `TILE` pixels; each tile's index map is split over `packets` interleaved
packets (`packets.py`: a lost one leaves scattered holes), then the tile's alpha packet if any:

    index packet = one range-coded stream: table choice, then the cells of the tile's sub-grid
    alpha packet = the alpha plane of the tile, lossless (`codec/plane.py`)

The encoder runs the network on each tile with `ENC_MARGIN` pixels of the image around it; the
decoder gathers the index map of the whole image and synthesises each tile from its cells plus
`dec_margin` cells around it, so tiles meet without seams. Byte layout: docs/FORMAT.md.

Under `--recover` a lost index packet leaves its cells masked in the index map; they are filled
before synthesis by the recovery transformer (`recovery.py`, its own weights file `RECOVERY`), or
by a simple concealment (`concealment`: what `nmc eval --loss` compares). A continuous recovery
model, and the mean of the received neighbours' codes (`fill_mean`: what `--recover` fills without
an installed recovery model), fill code vectors instead of indices: they go into the code map that is
synthesised (`tiling.net_decode_codes`). A lost alpha packet leaves its tile opaque.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nmc.codec import media as M
from nmc.codec.container import Header
from nmc.codec.errors import CodecNotFoundError, MediaError
from nmc.codec.fields import BOOL, HeaderFields, HexBits, Int, IntList, header_field
from nmc.codec.interface import Encoded, NeuralCodec, Setting
from nmc.codec.plane import decode_plane, encode_plane
from nmc.codec.registry import register_codec
from nmc.codec.weights import read_args
from nmc.codec.tiling import MAX_SIDE, Box, alpha_of, check_geometry, is_gray, new_canvas, put_alpha, tiles

from .packets import MAX_PACKETS, decode_cells, encode_cells, interleave, packet_cells, packet_count
from .tiling import STRIDE, net_decode, net_decode_codes, net_decode_concealed, net_indices, synthesise, tile_indices

if TYPE_CHECKING:
    import torch

    from .network import Ladder
    from .recovery import IndexTransformer

WEIGHTS = Path(__file__).parent / "weights" / "vqgan.safetensors"
RECOVERY = Path(__file__).parent / "weights" / "recovery.safetensors"
FILL_STEPS = 2  # rounds of the recovery transformer's iterative fill (4: ~2x the CPU time)
# the transformer (without one installed: "mean"); copy the nearest received cell; the most frequent received index;
# the mean of the received neighbours' codes
CONCEALMENTS = ("recovery", "nearest", "frequent", "mean")
TILE = 1024  # pixels per tile side, a multiple of STRIDE
PACKETS = 8  # index packets per tile (2 x 4 interleave): a 768x512 photo survives the loss of one
ENC_MARGIN = 128  # pixels of image around a tile that the encoder sees (its choice, not part of the format)
DEC_MARGIN = 8  # cells of neighbouring indices the decoder sees (g_s reaches ~6.5)


OWN_BLOCK = 4  # cells a side of the blocks for which `--conceal-check` chooses the decoder of lost cells (64 pixels)
TRIAL_MIN_SIDE = 64  # pixels a side: a smaller tile (an edge of the image) is not tried: too few cells to lose a quarter of


def trial_lost(packets: int) -> list[list[int]]:
    """The two losses of a tile's packets that `trial_own_blocks` tries, each a quarter of them (at least one), spread
    over the lattice's rows: of the default 2 x 4, packets 0 and 4 (every fourth cell of every row), then 2 and 6."""
    n = max(1, packets // 4)
    first = [i * packets // n for i in range(n)]
    return [first, [j + max(1, packets // (2 * n)) for j in first]]


def block_grid(cells: tuple[int, int]) -> tuple[int, int]:
    """Blocks of `OWN_BLOCK` x `OWN_BLOCK` cells over an index map of `cells` (the last row and column may be smaller)."""
    return -(-cells[0] // OWN_BLOCK), -(-cells[1] // OWN_BLOCK)


def pack_blocks(own: np.ndarray) -> str:
    """The header's `own_blocks` of a bool block map (raster order, 4 blocks a hex digit, the first the highest bit);
    "" when no block is set."""
    if not own.any():
        return ""
    bits = np.zeros(-(-own.size // 4) * 4, np.uint8)
    bits[: own.size] = own.ravel()
    return "".join(f"{v:x}" for v in bits.reshape(-1, 4) @ np.array([8, 4, 2, 1]))


def unpack_blocks(hexbits: str, cells: tuple[int, int]) -> np.ndarray:
    """The cells of an index map of `cells` whose blocks `own_blocks` sets ("": none), bool `cells`."""
    bh, bw = block_grid(cells)
    if not hexbits:
        return np.zeros(cells, bool)
    bits = np.array([(int(c, 16) >> (3 - i)) & 1 for c in hexbits for i in range(4)], bool)[: bh * bw].reshape(bh, bw)
    return np.kron(bits, np.ones((OWN_BLOCK, OWN_BLOCK), bool))[: cells[0], : cells[1]]


@dataclass(frozen=True, kw_only=True)
class RungSetting(Setting):
    codebook_size: int  # a ladder rung's, or the base codebook's


def _setting(size: int, base: bool) -> RungSetting:
    bits = math.log2(size)
    what = f"{size}-entry {'base ' if base else ''}codebook: {bits:g} bit per 16x16 pixels before entropy coding"
    return RungSetting(f"s{size}", bits / STRIDE**2, "bpp", what, codebook_size=size)


def _cells(media: dict[str, Any]) -> tuple[int, int]:
    """The index map's cells (rows, columns) of an image of `media`."""
    return -(-media["height"] // STRIDE), -(-media["width"] // STRIDE)


def _spans(cells: int, tile: int) -> list[int]:
    """Sizes in cells of the tiles along one side of `cells` cells."""
    return [min(tile, cells - s) for s in range(0, cells, tile)]


@dataclass(frozen=True)
class Fields(HeaderFields):
    stride: int = header_field(Int(STRIDE, STRIDE))
    tile: int = header_field(Int(STRIDE, 0xFFFF))
    interleave: list[int] = header_field(IntList(1, MAX_PACKETS, 2))
    alpha: bool = header_field(BOOL)
    dec_margin: int = header_field(Int(0, 64))
    gray: bool = header_field(BOOL, default=False)  # R=G=B colour image: one decoded plane copied to all three
    # blocks of `OWN_BLOCK` cells where the encoder's trial (`conceal_check`) found the concealing decoder the worse:
    # under --recover their pixels come from the setting's own decoder
    own_blocks: str = header_field(HexBits(1 << 16), default="")

    @property
    def lattice(self) -> tuple[int, int]:
        return self.interleave[0], self.interleave[1]

    def packets(self, media: dict[str, Any]) -> int:
        """Packets of an image of `media`: per tile its index packets, then its alpha packet if any."""
        rows, cols = (_spans(n, self.tile // STRIDE) for n in _cells(media))
        return packet_count(rows, cols, self.lattice) + (len(rows) * len(cols) if self.alpha else 0)

    def consistent(self, header: Header, setting: Setting) -> bool:
        m = header.media
        return (
            isinstance(setting, RungSetting) and self.tile % STRIDE == 0 and len(self.interleave) == 2
            and self.interleave[0] * self.interleave[1] <= MAX_PACKETS and max(m["width"], m["height"]) <= MAX_SIDE
            and (m["channels"] in (2, 4) or not self.alpha) and header.packets == self.packets(m)
            and (not self.own_blocks or len(self.own_blocks) == -(-math.prod(block_grid(_cells(m))) // 4))
        )  # fmt: skip


@register_codec("vqgan")
class VQGANCodec(NeuralCodec["Ladder"]):
    """Photos at 0.01-0.05 bpp: VQGAN indices into a k-means codebook ladder, context-coded, interleaved packets."""

    media = "image"
    model_id = "vqgan-v1"
    retired_weights = {
        "eabe51d1ee51075b": "vqgan weights with the untuned ladder, shipped until 2026-12-02 session 5",
        "f5cf0901301a436f": "vqgan weights with s16's own decoder only, shipped until 2026-12-02 session 6",
        "09eda3a92b1a9cea": "vqgan weights with the decoders of s16 and s32 only, shipped until 2026-12-03 session 12",
        "c1a1a2e9fbd34895": "vqgan weights with the decoders of s16, s32 and s1024 only, shipped until 2026-12-03 session 13",
        "e7ddaf262205e9ca": "vqgan weights with the decoders of s16, s32, s256, s1024 and s2048 only, shipped until 2026-12-03 session 14",
        "0f3e97db6a443925": "vqgan weights with session 14's decoders (every size its own), shipped until 2026-12-04 session 16",
        "f154ddc75635a3dd": "vqgan weights with session 16's decoders, shipped until 2026-12-04 session 17",
        "de498570616a4dcb": "vqgan weights with session 17's decoders, shipped until 2026-12-04 session 18",
        "6a43b3d1f31e628c": "vqgan weights with session 18's decoders, shipped until 2026-12-04 session 19",
        "136bc44c73ac2ada": "vqgan weights with session 19's decoders and the priors of nearest-code maps, shipped in 2026-12-04 session 19",
        "737df5967b1bc6a6": "vqgan weights with session 19's decoders and refitted priors, shipped until 2026-12-04 session 20",
    }
    description = "VQGAN image codec for extreme rates: codebook ladder, context-coded indices, tiled, interleaved packets"
    weights_path = WEIGHTS
    auto_priority = 10  # below mcquic: chosen by `--codec auto` only for rates below mcquic's lowest setting
    header_fields = Fields
    can_recover = True  # lost index packets are predicted (`recovery.py`)
    concealments = CONCEALMENTS
    baseline_concealments = ("nearest", "frequent")  # issue 10's simple baselines; "mean" is the model-free fill
    recovery_path: Path | None = RECOVERY
    header_dict = (  # format 2: a typical header (the most frequent values), part of the format
        b'{"coder":{"coder":"range","library":"constriction","perfect":false,"version":"0.5.0"},'
        b'"extra":{"alpha":false,"dec_margin":8,"interleave":[2,4],"stride":16,"tile":1024},'
        b'"media":{"bit_depth":8,"channels":3,"height":512,"kind":"image","width":768},"model_id":"vqgan-v1","packets":8,'
        b'"setting":"s64","weights":"'
    )

    net_indices = staticmethod(net_indices)  # the network functions `run` calls (tiling.py)
    onnx_functions = ("indices", "decode")  # their exports reproduce torch (`onnx_backend`); recovery stays in torch
    net_decode = staticmethod(net_decode)
    net_decode_codes = staticmethod(net_decode_codes)
    net_decode_concealed = staticmethod(net_decode_concealed)

    def __init__(self, weights_path: Path | None = None, tile: int = TILE, packets: int = PACKETS, enc_margin: int = ENC_MARGIN,
                 dec_margin: int = DEC_MARGIN, recovery_path: Path | None = None, concealment: str = "recovery", fill_steps: int = FILL_STEPS,
                 conceal_check: bool = False) -> None:  # fmt: skip
        super().__init__(weights_path)
        check_geometry(tile, enc_margin, dec_margin, STRIDE)
        self.tile, self.lattice, self.enc_margin, self.dec_margin = tile, interleave(packets), enc_margin, dec_margin
        if recovery_path is not None:
            self.recovery_path = Path(recovery_path)
        if concealment not in CONCEALMENTS:
            raise ValueError(f"concealment must be one of {CONCEALMENTS}, got {concealment!r}")
        self.concealment, self.fill_steps, self.conceal_check = concealment, fill_steps, conceal_check

    def with_packets(self, packets: int) -> VQGANCodec:
        """A copy that codes `packets` index packets per tile, on the squarest lattice a x b = `packets` (a prime
        count: one row of packets, each a set of columns); it shares what this one has loaded."""
        if not 1 <= packets <= MAX_PACKETS:
            raise MediaError(f"--packets: vqgan codes 1 to {MAX_PACKETS} index packets per tile, got {packets}")
        codec = copy.copy(self)
        codec.lattice = interleave(packets)
        return codec

    def with_conceal_check(self) -> VQGANCodec:
        """A copy whose encoder tries `--recover` on each photo and writes in the header whether the concealing
        decoder or the setting's own decoder conceals each block of it better (`trial_own_blocks`)."""
        codec = copy.copy(self)
        codec.conceal_check = True
        return codec

    @cached_property
    def recovery(self) -> tuple[IndexTransformer | None, dict[int, int]]:
        """The recovery transformer, checked against the network of the installed weights (loaded on first
        lost packet), and the codebooks it can fill: size -> its rung in the model, for each codebook whose
        codes (and, for a continuous model, whose decoder: `decoder_hashes`) are the ones it was trained on (the
        others fall back to the neighbours' mean, which beats the nearest copy on dev). No model file: (None, {}), every codebook gets the
        neighbours' mean (`fill_mean`); a file that is not a model for this network: an error."""
        from nmc.codec.weights import read_weights

        from .network import is_base
        from .recovery import codebook_hashes, decoder_hashes, load_recovery, network_hash

        path = self.recovery_path
        if path is None or not Path(path).exists():
            return None, {}
        try:
            model, network, codebooks = load_recovery(Path(path))
        except ValueError as err:
            raise CodecNotFoundError(str(err)) from None
        assert self.weights_path is not None  # `self.model` loaded it
        ours = network_hash(read_weights(Path(self.weights_path), network=is_base).state)  # the rungs' tensors not read
        if network != ours:
            raise CodecNotFoundError(f"{path}: recovery model for network {network}; the installed vqgan network is {ours}")
        ours_by_size = (decoder_hashes if model.args.continuous else codebook_hashes)(self.model.net)
        covered = {s: model.args.sizes.index(s) for s, h in ours_by_size.items() if codebooks.get(s) == h}
        try:
            concealers = model.concealers(self.model.net.args)  # decoders trained to conceal (`--tune-decoder`)
        except (RuntimeError, KeyError) as err:
            raise CodecNotFoundError(f"{path}: its concealing decoder does not fit the installed vqgan network ({str(err).splitlines()[0]})") from None
        for size, g_s in concealers.items():
            if size in covered:
                self.model.net.set_concealer(size, g_s)
        return model, covered

    def concealment_identity(self) -> str:
        from nmc.codec.interface import file_sha256

        path = self.recovery_path
        if path is None or not Path(path).is_file():
            return "recovery none: neighbours' mean"  # a new key: "recovery none steps 2" cached the nearest copy
        return f"recovery {file_sha256(Path(path))[:16]} steps {self.fill_steps}"

    def conceal(self, indices: np.ndarray, masked: np.ndarray, k: int, how: str | None = None) -> np.ndarray:
        """`indices` with the `masked` cells filled by `how` (default `self.concealment`), or with the neighbours' mean
        or a continuous recovery model the code map `(h, w, d)` fp32 (`fill_mean`, `fill_codes`); one thread: the same
        pixels for any thread count."""
        from nmc.codec.threads import one_thread

        from .recovery import fill, fill_codes, fill_frequent, fill_mean, fill_nearest

        size, how = self.model.net.sizes[k], how or self.concealment
        if how == "frequent":
            return fill_frequent(indices, masked, int(np.argmax(self.model.prior.unigram[k])))
        if how == "nearest":
            return fill_nearest(indices, masked)
        model, covered = self.recovery if how == "recovery" else (None, {})
        codes = self.model.net.unit_codes(size)
        with one_thread():
            if model is None or size not in covered or size in model.mean_sizes:  # "mean", a codebook without a model for it, or
                # one whose concealing decoder learnt from the mean (`--mean-sizes`)
                return fill_mean(indices, masked, codes)
            if model.args.continuous:
                return fill_codes(model, indices, masked, covered[size], codes)
            return fill(model, indices, masked, covered[size], self.fill_steps)

    def concealment_used(self, k: int, own_share: float = 0.0) -> str:
        """What `conceal` fills codebook k's lost cells with: the recovery model fills only the codebooks it is bound to (those it
        was trained on, less those left to the mean where the mean measured better: `restamp_recovery.py --drop`);
        `own_share`: the share of the lost cells the file sends to the setting's own decoder (`own_blocks`)."""
        if self.concealment != "recovery":
            return self.concealment
        size, (model, covered) = self.model.net.sizes[k], self.recovery
        if size in covered and model is not None and size in model.mean_sizes:
            own = f" ({100 * own_share:.0f} % of them through the setting's own decoder, as the file asks)" if own_share else ""
            return f"the received neighbours' mean, through the recovery file's concealing decoder{own}"
        if size in covered and model is not None:
            return self.concealment
        if model is None:
            return f"the received neighbours' mean (no recovery model installed at {self.recovery_path})"
        return f"the received neighbours' mean (the recovery model is not bound to the s{size} {'codebook and decoder' if model.args.continuous else 'codebook'})"

    @cached_property
    def _settings(self) -> list[Setting]:
        """The weights file's operating points, from its metadata (the network is loaded on first use only)."""
        try:
            args = read_args(self._weights_file())
            base, rungs = int(args["codebook_size"]), sorted(int(s) for s in args["rungs"])
        except (KeyError, TypeError, ValueError) as err:
            raise self._unusable(err) from None
        settings: list[Setting] = [_setting(s, False) for s in rungs]
        return settings + [_setting(base, True)]

    def settings(self) -> list[Setting]:
        return self._settings

    @property
    def sizes(self) -> list[int]:
        """The codebook sizes, in the network's order (`Ladder.sizes`, checked in `build_net`), known without it."""
        return [s.codebook_size for s in self._settings if isinstance(s, RungSetting)]

    def build_net(self, state: dict[str, torch.Tensor], args: dict[str, Any]) -> Ladder:
        from .network import Ladder

        net = Ladder.from_state_dict(state, args)
        if net.sizes != self.sizes:
            raise ValueError(f"network codebooks {net.sizes} differ from the file's metadata")
        return net

    def prior_contexts(self, net: Ladder) -> list[list[int]]:
        return [[s, s, s] for s in net.sizes]  # left, up, up-left (`packets.NEIGHBOURS`)

    def prior_alphabets(self, net: Ladder) -> list[int]:
        return net.sizes

    def encode(self, image: M.Image, setting: Setting) -> Encoded:
        assert isinstance(setting, RungSetting)
        if max(image.width, image.height) > MAX_SIDE:
            raise MediaError(f"vqgan: images up to {MAX_SIDE} pixels a side, got {image.width}x{image.height}")
        rgb, alpha = M.to_rgb8(image)
        prior, size = self.prior, setting.codebook_size
        k = self.sizes.index(size)
        boxes = tiles(image.height, image.width, self.tile, STRIDE)
        fields = Fields(stride=STRIDE, tile=self.tile, interleave=list(self.lattice), alpha=alpha is not None, dec_margin=self.dec_margin,
                        gray=is_gray(image.channels, rgb))  # fmt: skip
        grids: list[np.ndarray] = []  # the tiles' index maps, when the trial below needs them all before the first packet
        if self.conceal_check and size in self.recovery[1] and size in self.model.net.concealers:
            grids = [tile_indices(self.run, rgb, box, [size], self.enc_margin)[0] for box in boxes]
            fields = dataclasses.replace(fields, own_blocks=pack_blocks(self.trial_own_blocks(rgb, boxes, grids, k, fields)))

        def packets() -> Iterator[bytes]:
            for i, box in enumerate(boxes):
                grid = grids[i] if grids else tile_indices(self.run, rgb, box, [size], self.enc_margin)[0]
                for cells in packet_cells(grid.shape, self.lattice):
                    yield encode_cells(prior, k, grid[cells])
                if alpha is not None:
                    yield encode_plane(alpha_of(alpha, box))

        return Encoded(fields, packets(), fields.packets(M.metadata(image)))

    def trial_own_blocks(self, rgb: np.ndarray, boxes: list[Box], grids: list[np.ndarray], k: int, fields: Fields) -> np.ndarray:
        """The encoder's trial of `--recover` (`conceal_check`): in each tile of `TRIAL_MIN_SIDE` pixels a side and two
        packets or more, each loss of `trial_lost` in turn (a quarter of the index packets) with its cells filled as
        `--recover` fills them; the tile decoded through the concealing decoder and through the setting's own, and
        ST-LPIPS's map of each against the photo summed over each block of `OWN_BLOCK` cells and both losses. Returns the
        blocks whose own decodes are the nearer, bool `block_grid`. The concealing decoder draws most lost cells better,
        but some textures worse (wood grain: models/vqgan/RECOVERY.md "Session 22"), and only the encoder has the photo."""
        from nmc.codec.reference import ImageReference
        from nmc.codec.threads import one_thread

        cells = (-(-rgb.shape[0] // STRIDE), -(-rgb.shape[1] // STRIDE))
        indices = np.zeros(cells, np.int64)
        tried = []  # (box, its pixels in the image, its cells, its packets' cells, the photo there)
        for box, grid in zip(boxes, grids):
            crop = (box[0], min(box[1], rgb.shape[0]), box[2], min(box[3], rgb.shape[1]))
            cut = (slice(box[0] // STRIDE, box[1] // STRIDE), slice(box[2] // STRIDE, box[3] // STRIDE))
            indices[cut] = grid
            parts = packet_cells(grid.shape, self.lattice)
            if min(crop[1] - crop[0], crop[3] - crop[2]) >= TRIAL_MIN_SIDE and len(parts) > 1:
                tried.append((box, crop, cut, parts, ImageReference(np.ascontiguousarray(rgb[crop[0] : crop[1], crop[2] : crop[3]]), self.device)))
        worse = np.zeros(block_grid(cells))  # the concealing decoder's ST-LPIPS less the own decoder's, summed per block
        out, size = np.empty(rgb.shape, np.uint8), self.sizes[k]
        for loss in range(2):
            masked = np.zeros(cells, bool)
            for _, _, cut, parts, _ in tried:
                for j in trial_lost(len(parts))[loss]:
                    masked[cut][parts[j]] = True
            codes = self.conceal(indices, masked, k, "recovery")
            for box, (y0, y1, x0, x1), _, _, ref in tried:
                decodes = []
                for concealed in (masked, None):  # the concealing decoder (the tile's window holds lost cells); its own
                    synthesise(self.run, out, codes, box, size, fields.dec_margin, fields.gray, concealed)
                    decodes.append(out[y0:y1, x0:x1].copy())
                with one_thread():  # the choice, and so the file's bytes, the same for any thread count
                    concealer, own = ref.st_lpips_maps(decodes)
                ys, xs = np.arange(y0, y1) // (STRIDE * OWN_BLOCK), np.arange(x0, x1) // (STRIDE * OWN_BLOCK)
                np.add.at(worse, (ys[:, None], xs[None, :]), concealer - own)
        return worse > 0

    def decode(self, header: Header, fields: Fields, packets: Iterator[bytes | None]) -> M.Image:
        m, prior, setting = header.media, self.prior, self.setting(header.setting)
        assert isinstance(setting, RungSetting)  # `Fields.consistent`
        size = setting.codebook_size
        k = self.sizes.index(size)
        boxes = tiles(m["height"], m["width"], fields.tile, STRIDE)
        indices = np.zeros(_cells(m), np.int64)
        masked = np.zeros(indices.shape, bool)
        out = new_canvas(m, fields.alpha)
        lost = [0, 0]  # index packets, alpha packets
        for box in boxes:  # the packets, in order: the header's count is checked
            cut = (slice(box[0] // STRIDE, box[1] // STRIDE), slice(box[2] // STRIDE, box[3] // STRIDE))
            tile = indices[cut]
            for cells in packet_cells(tile.shape, fields.lattice):
                payload = next(packets)  # None: lost (only under --recover)
                if payload is None:
                    masked[cut][cells], lost[0] = True, lost[0] + 1
                else:
                    tile[cells] = decode_cells(payload, prior, k, tile[cells].shape)
            if fields.alpha:
                payload = next(packets)
                h, w = min(box[1], m["height"]) - box[0], min(box[3], m["width"]) - box[2]
                if payload is None:  # alpha cannot be predicted: the tile stays opaque
                    put_alpha(out, np.full((h, w), 255, np.uint8), box)
                    lost[1] += 1
                else:
                    put_alpha(out, decode_plane(payload, h, w), box)
        rest = next(packets, None)  # reads the end record, which the container checks
        assert rest is None  # the header's packet count is the tiles' (`Fields.consistent`)
        grid, concealed = indices, None  # the index map, or the code map of a continuous fill; the cells a concealing decoder sees
        own = np.zeros(indices.shape, bool)  # cells whose pixels come from the setting's own decoder though a concealer is used
        if masked.any():
            grid = self.conceal(indices, masked, k)
            if self.concealment == "recovery" and size in self.model.net.concealers:
                concealed, own = masked, unpack_blocks(fields.own_blocks, indices.shape)
            self.recovered = {"packets": lost[0] + lost[1], "indices": int(masked.sum()), "alpha_packets": lost[1],
                              "method": self.concealment_used(k, float((own & masked).sum() / masked.sum()))}  # fmt: skip
        elif lost[1]:
            self.recovered = {"packets": lost[1], "indices": 0, "alpha_packets": lost[1], "method": self.concealment}
        alt = np.empty_like(out) if own.any() else out  # the own decoder's pixels of the tiles that have own blocks
        for box in boxes:
            synthesise(self.run, out, grid, box, size, fields.dec_margin, fields.gray, concealed)
            own_cells = own[box[0] // STRIDE : box[1] // STRIDE, box[2] // STRIDE : box[3] // STRIDE]
            if own_cells.any():
                synthesise(self.run, alt, grid, box, size, fields.dec_margin, fields.gray)
                y0, x0, color = box[0], box[2], 1 if out.shape[2] <= 2 else 3
                pick = np.kron(own_cells, np.ones((STRIDE, STRIDE), bool))[: out.shape[0] - y0, : out.shape[1] - x0]
                y1, x1 = y0 + pick.shape[0], x0 + pick.shape[1]
                np.copyto(out[y0:y1, x0:x1, :color], alt[y0:y1, x0:x1, :color], where=pick[..., None])
        return M.Image(out)
