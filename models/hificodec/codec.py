"""The `hificodec` codec: HiFi-Codec GRVQ indices of 30 s chunks, range-coded with context priors.

Audio of any rate and channel count is resampled to 16 kHz and each channel is coded on its
own. One packet holds one chunk of `chunk_frames` codec frames (hop 320, 30 s) of every channel:

    packet  = pack_streams([meta, stream_0, ..., stream_{C-1}])
    meta    = uint16 frames | per channel: uint8 unigram mask, float32 gain
    stream  = range-coded indices of one channel, frame-major (frame t: codebooks 0..n-1)

The networks run on windows of `WINDOW_FRAMES` (10 s) with `ENC_CONTEXT` frames of audio on
both sides (encoder) or `DEC_CONTEXT` frames of the neighbouring indices (decoder, one packet
of lookahead), both more than the networks' receptive fields, so chunked coding equals
whole-signal coding and memory stays bounded. Each index is coded with the integer
`ContextPrior` of its codebook given the most recent indices of a few related codebooks
(`sources`), or with a unigram table where that is cheaper for the packet (bit k of the
mask). Contexts restart at every packet, so packets decode independently. Byte layout:
docs/FORMAT.md.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from nmc.codec import entropy as E
from nmc.codec import media as M
from nmc.codec.container import Header, pack_streams, unpack_streams
from nmc.codec.dsp import DCBlocker
from nmc.codec.errors import CodecNotFoundError, ContainerError, MediaError
from nmc.codec.fields import MAX_FRAMES, Int
from nmc.codec.media import MAX_AUDIO_CHANNELS
from nmc.codec.prior import PriorSet, tables_from_scores
from nmc.codec.registry import Encoded, NeuralCodec, Setting, one_thread, register_codec

if TYPE_CHECKING:
    import torch

    from .network import HiFiCodec

WEIGHTS = Path(__file__).parent / "weights" / "hificodec_16k.safetensors"
SAMPLE_RATE = 16000
DC_WINDOW = SAMPLE_RATE // 10  # samples averaged by the output DC blocker (0.1 s: converges within short clips)
HOP = 320  # samples per codec frame (50 frames/s)
CHUNK_FRAMES = 1500  # codec frames per packet (30 s): the coder's ~2 bytes per stream stay < 0.1 %
WINDOW_FRAMES = 500  # codec frames per network call (10 s): bounds memory whatever the packet size
ENC_CONTEXT = 10  # frames of audio on each side of a chunk; g_a's receptive field is 8
DEC_CONTEXT = 12  # frames of indices on each side of a chunk; g_s's receptive field is 11
SETTINGS = {"1kbps": 2, "2kbps": 4, "3kbps": 6, "4kbps": 8}  # name -> codebooks
_META = struct.Struct("<H")
_CHANNEL = struct.Struct("<Bf")

IntArray = npt.NDArray[np.int64]


# ---------------------------------------------------------------- index prior


def sources(k: int, groups: int) -> list[int]:
    """Codebooks whose most recent index is a context of codebook k = level * groups + g.

    Itself (previous frame), the previous level of the same group, level 0 of the next group,
    level 0 of the same group (from level 2) and the same level of the next group (from level 1).
    """
    level, g = divmod(k, groups)
    other = (g + 1) % groups
    out = [k, k - groups, other, g, level * groups + other]
    keep = [True, level >= 1, True, level >= 2, level >= 1]
    return list(dict.fromkeys(j for j, ok in zip(out, keep) if ok))


def contexts(indices: npt.ArrayLike, k: int, groups: int, alphabet: int) -> IntArray:
    """Context rows `(T, len(sources(k)))` of codebook k for one packet's indices `(n_codebooks, T)`.

    Indices are coded frame by frame, codebook by codebook within a frame, so the most recent
    index of codebook j is the one at frame t if j < k, else at t - 1; `alphabet` stands for
    "none yet" at the packet start (contexts never cross packets).
    """
    idx = np.asarray(indices, dtype=np.int64)
    cols = []
    for j in sources(k, groups):
        cols.append(idx[j] if j < k else np.concatenate([[alphabet], idx[j, :-1]])[: idx.shape[1]])
    return np.stack(cols, axis=1)


@dataclass
class GRVQPrior(PriorSet):
    """The codebooks' priors (`PriorSet`) for GRVQ indices; codes one channel of a packet.

    Symbols are coded frame-major (t, then k); the contexts of codebook k are given by `sources`.
    """

    groups: int = 2

    def scores(self, k: int, ctx: IntArray) -> IntArray:
        """`ContextPrior.scores` of codebook k for context rows `(T, n_ctx)`."""
        return self.priors[k].scores(ctx)

    def context_tables(self, indices: npt.ArrayLike, k: int) -> IntArray:
        """Frequency tables `(T, K)` that code codebook k of `indices` `(n_codebooks, T)`."""
        return tables_from_scores(self.scores(k, contexts(indices, k, self.groups, self.alphabet)))

    def encode(self, enc: E.Encoder, indices: npt.NDArray[np.integer], block: int = 64) -> int:
        """Code `(n_codebooks, T)` indices frame-major; returns the mask of codebooks coded with
        their unigram table (where that is cheaper for this packet). Tables are built `block`
        frames at a time, so memory does not grow with the packet."""
        n, T = indices.shape
        ctx = [contexts(indices, k, self.groups, self.alphabet) for k in range(n)]

        def tables(k: int, t: int) -> IntArray:
            return tables_from_scores(self.scores(k, ctx[k][t : t + block]))

        mask = 0
        for k in range(n):
            bits = sum(E.cross_entropy_bits(indices[k, t : t + block], tables(k, t)) for t in range(0, T, block))
            if E.cross_entropy_bits(indices[k], self.unigram[k]) < bits:
                mask |= 1 << k
        for t in range(0, T, block):
            rows = [np.broadcast_to(self.unigram[k], (min(block, T - t), self.alphabet)) if mask >> k & 1 else tables(k, t) for k in range(n)]
            enc.encode(indices[:, t : t + block].T.ravel(), np.stack(rows, axis=1).reshape(-1, self.alphabet))
        return mask

    def decode(self, dec: E.Decoder, n_codebooks: int, frames: int, mask: int) -> npt.NDArray[np.int64]:
        K = self.alphabet
        out = np.full((n_codebooks, frames + 1), K, np.int64)  # column -1 is "none yet" (frame -1)
        plan: list[tuple[int, IntArray | None, list[tuple[int, bool, np.ndarray]]]] = []
        for k in range(n_codebooks):
            if mask >> k & 1:
                plan.append((k, None, []))
            else:
                src = [(j, j < k, self.priors[k].term(c)) for c, j in enumerate(sources(k, self.groups))]
                plan.append((k, self.priors[k].bias.astype(np.int64), src))
        for t in range(frames):
            for k, base, src in plan:
                if base is None:
                    out[k, t] = dec.decode(self.unigram[k], 1)[0]
                    continue
                s = base.copy()
                for j, same_frame, delta in src:
                    s += delta[out[j, t if same_frame else t - 1]]
                out[k, t] = dec.decode(tables_from_scores(s)[None])[0]
        return out[:, :frames]

    @classmethod
    def for_groups(cls, tensors: dict[str, np.ndarray], groups: int) -> GRVQPrior:
        """Load the priors and check that each has the contexts `sources` gives it."""
        base = PriorSet.from_tensors(tensors)
        for k, p in enumerate(base.priors):
            if len(p.embed) != len(sources(k, groups)):
                raise ValueError(f"prior {k} has {len(p.embed)} contexts, the codec gives {len(sources(k, groups))}")
        return cls(base.priors, base.unigram, groups)


# ---------------------------------------------------------------- weights file


@dataclass
class Model:
    """The generator and the index prior, from one weights file."""

    net: HiFiCodec
    prior: GRVQPrior


def write_weights(path: Path, generator: dict[str, torch.Tensor], config_json: str, prior: GRVQPrior, info: dict[str, Any]) -> None:
    """One safetensors file: fp16 generator tensors plus the integer prior (`prior.*`)."""
    import json

    import torch
    from safetensors.torch import save_file

    tensors = {k: v.half().contiguous() for k, v in generator.items()}
    tensors.update({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in prior.to_tensors().items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"codec": "hificodec", "config": config_json, "prior": json.dumps(info)})


def load_model(path: Path) -> Model:
    from safetensors import safe_open

    from .network import CodecConfig, HiFiCodec

    with safe_open(str(path), framework="pt") as f:
        meta, names = f.metadata() or {}, list(f.keys())
        if "config" not in meta or "prior.unigram" not in names:
            raise CodecNotFoundError(f"{path}: not a hificodec weights file (no config or prior)")
        state = {k: f.get_tensor(k) for k in names if not k.startswith("prior.")}
        tables = {k: f.get_tensor(k).numpy() for k in names if k.startswith("prior.")}
    config = CodecConfig.from_json(meta["config"])
    try:
        prior = GRVQPrior.for_groups(tables, config.groups)
    except (KeyError, ValueError) as err:
        raise CodecNotFoundError(f"{path}: prior does not fit this codec ({err})") from None
    if prior.unigram.shape != (config.groups * config.levels, config.codebook_size) or prior.unigram.shape[0] > 8:
        raise CodecNotFoundError(f"{path}: prior of shape {prior.unigram.shape} does not fit the generator")
    return Model(HiFiCodec.from_state_dict(state, config), prior)


# ---------------------------------------------------------------- streaming helpers


def _windows(blocks: Iterable[np.ndarray], chunk: int, context: int) -> Iterator[tuple[np.ndarray, int, int]]:
    """Cut a stream of arrays (time on axis 0) into chunks of `chunk` rows, each with up to
    `context` rows of its neighbours on both sides; yields `(window, a, b)` with the chunk at
    `window[a:b]`. Holds at most one chunk, its contexts and one block.
    """
    buf: np.ndarray | None = None
    origin = pos = 0  # absolute rows of buf[0] and of the next chunk's start
    it = iter(blocks)
    while True:
        block = next(it, None)
        if block is not None:
            buf = block if buf is None else np.concatenate([buf, block])
        if buf is None:
            return
        end = origin + len(buf)
        while pos < end and (block is None or end - pos >= chunk + context):
            lo, stop = max(pos - context, origin), min(pos + chunk, end)
            yield buf[lo - origin : min(stop + context, end) - origin], pos - lo, stop - lo
            pos = stop
            cut = max(pos - context, origin) - origin
            buf, origin = buf[cut:], origin + cut
        if block is None:
            return


def _sub_windows(window: np.ndarray, a: int, b: int, size: int, context: int) -> Iterator[tuple[np.ndarray, int, int]]:
    """Like `_windows` inside one window: chunks of `size` rows of `window[a:b]` with context."""
    for s in range(a, b, size):
        e = min(s + size, b)
        lo, hi = max(s - context, 0), min(e + context, len(window))
        yield window[lo:hi], s - lo, e - lo


def _checked(blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    for b in blocks:
        if not np.isfinite(b).all():
            raise MediaError("hificodec: audio contains NaN or infinite samples")
        yield b


def _exact(blocks: Iterable[np.ndarray], channels: int, keep: int, total: int) -> Iterator[np.ndarray]:
    """The first `keep` rows of a block stream, then zeros up to `total` rows."""
    got = 0
    for b in blocks:
        b = b[: keep - got]
        got += len(b)
        if len(b):
            yield b
        if got == keep:
            break
    if total > got:
        yield np.zeros((total - got, channels), np.float32)


def _gain(x: np.ndarray) -> float:
    """Divisor that brings `x` into [-1, 1]: 1, or the peak rounded up to float32."""
    peak = np.float32(np.abs(x).max(initial=0.0))
    return 1.0 if peak <= 1 else float(peak)


# ---------------------------------------------------------------- the codec


@register_codec("hificodec")
class HiFiCodecCodec(NeuralCodec):
    """Speech at 1-4 kbit/s nominal (2-8 codebooks of 1024 x 50 frames/s), 16 kHz output."""

    media = "audio"
    model_id = "hificodec-16k-v1"
    description = "HiFi-Codec GRVQ speech codec, 16 kHz, context-coded indices"
    weights_path = WEIGHTS
    auto_priority = 10
    default_setting = "2kbps"
    header_fields = {
        "media.coded_rate": Int(SAMPLE_RATE, SAMPLE_RATE), "media.coded_channels": Int(1, MAX_AUDIO_CHANNELS), "media.coded_frames": Int(1, MAX_FRAMES),
        "extra.hop": Int(HOP, HOP), "extra.chunk_frames": Int(1, 0xFFFF), "extra.frames": Int(1, MAX_FRAMES), "extra.codebooks": Int(2, 8),
        "extra.groups": Int(1, 8), "extra.codebook_size": Int(1, 1 << 16),
    }  # fmt: skip

    def __init__(self, weights_path: Path | None = None, chunk_frames: int = CHUNK_FRAMES, window_frames: int = WINDOW_FRAMES) -> None:
        super().__init__(weights_path)
        if not 1 <= chunk_frames <= 0xFFFF or window_frames < 1:
            raise ValueError(f"chunk_frames={chunk_frames} outside [1, 65535] or window_frames={window_frames} < 1")
        self.chunk_frames, self.window_frames = chunk_frames, window_frames

    def settings(self) -> list[Setting]:
        return [Setting(name, n * 10 * 50 / 1000, "kbps", f"{n} codebooks ({n // 2} levels x 2 groups)") for name, n in SETTINGS.items()]

    def load(self, path: Path) -> Model:
        return load_model(path)

    # ------------------------------------------------------------ encode

    def encode(self, audio: M.Audio, setting: Setting) -> Encoded:
        n_cb = SETTINGS[setting.name]
        model = self.model
        coded = max(1, round(audio.frames * SAMPLE_RATE / audio.sample_rate))
        frames = -(-coded // HOP)
        chunk = self.chunk_frames
        media = {
            "kind": "audio", "sample_rate": audio.sample_rate, "channels": audio.channels, "frames": audio.frames,
            "coded_rate": SAMPLE_RATE, "coded_channels": audio.channels, "coded_frames": coded,
        }  # fmt: skip
        extra = {"hop": HOP, "chunk_frames": chunk, "frames": frames, "codebooks": n_cb, "groups": model.prior.groups, "codebook_size": model.prior.alphabet}

        def packets() -> Iterator[bytes]:
            x = M.resample_blocks(_checked(audio.blocks()), audio.sample_rate, SAMPLE_RATE, audio.channels)
            x = _exact(x, audio.channels, coded, frames * HOP)
            for window, a, b in _windows(x, chunk * HOP, ENC_CONTEXT * HOP):
                yield self._encode_chunk(model, window, a // HOP, b // HOP, n_cb)

        return Encoded(media, packets(), -(-frames // chunk), extra)

    def encode_indices(self, model: Model, x: np.ndarray, a: int, b: int, n_cb: int) -> npt.NDArray[np.int64]:
        """Indices `(n_cb, b - a)` of frames a..b of one channel's window `x` (16 kHz, in [-1, 1]),
        computed `window_frames` at a time."""
        import torch

        parts = []
        for sub, sa, sb in _sub_windows(x, a * HOP, b * HOP, self.window_frames * HOP, ENC_CONTEXT * HOP):
            with torch.inference_mode(), one_thread():  # the same bytes for any thread count
                y = model.net.g_a(torch.from_numpy(np.ascontiguousarray(sub, np.float32))[None, None].to(self.device))
                idx = model.net.quantizer.codes_to_indices(y[..., sa // HOP : sb // HOP], n_cb // model.prior.groups)
            parts.append(idx[0].cpu().numpy().astype(np.int64))
        return np.concatenate(parts, axis=1)

    def _encode_chunk(self, model: Model, window: np.ndarray, a: int, b: int, n_cb: int) -> bytes:
        meta, streams = [_META.pack(b - a)], []
        for x in window.T:
            gain = _gain(x)
            enc = E.Encoder()
            mask = model.prior.encode(enc, self.encode_indices(model, x / np.float32(gain), a, b, n_cb))
            meta.append(_CHANNEL.pack(mask, gain))
            streams.append(enc.to_bytes())
        return pack_streams([b"".join(meta), *streams])

    # ------------------------------------------------------------ decode

    def read_packet(self, header: Header, index: int, payload: bytes) -> tuple[npt.NDArray[np.int64], list[float]]:
        """Indices `(frames, channels, n_codebooks)` and per-channel gains of packet `index`."""
        ex, ch = header.extra, header.media["coded_channels"]
        expected = min(ex["chunk_frames"], ex["frames"] - index * ex["chunk_frames"])
        try:
            meta, *streams = unpack_streams(payload, 1 + ch)
        except ContainerError as err:
            raise ContainerError(f"hificodec packet {index}: {err}") from None
        if len(meta) != _META.size + ch * _CHANNEL.size or _META.unpack_from(meta)[0] != expected:
            raise ContainerError(f"hificodec packet {index}: bad metadata (expected {expected} frames of {ch} channels)")
        out = np.zeros((expected, ch, ex["codebooks"]), np.int64)
        gains = []
        for c, data in enumerate(streams):
            mask, gain = _CHANNEL.unpack_from(meta, _META.size + c * _CHANNEL.size)
            if not (np.isfinite(gain) and gain >= 1):
                raise ContainerError(f"hificodec packet {index}: invalid gain {gain}")
            try:
                out[:, c] = self.model.prior.decode(E.Decoder(data), ex["codebooks"], expected, mask).T
            except (ValueError, RuntimeError) as err:
                raise ContainerError(f"hificodec packet {index}: undecodable indices ({err})") from None
            gains.append(gain)
        return out, gains

    def _check_header(self, header: Header) -> None:
        ex, m = header.extra, header.media
        prior = self.model.prior
        try:
            ok = (
                ex["hop"] == HOP and m["coded_rate"] == SAMPLE_RATE and ex["codebooks"] == SETTINGS.get(header.setting)
                and ex["groups"] == prior.groups and ex["codebook_size"] == prior.alphabet
                and 1 <= ex["chunk_frames"] <= 0xFFFF and m["coded_channels"] >= 1 and m["coded_frames"] >= 1
                and ex["frames"] == -(-m["coded_frames"] // HOP)
                and header.packets in (None, -(-ex["frames"] // ex["chunk_frames"]))
            )  # fmt: skip
        except (KeyError, TypeError):
            ok = False
        if not ok:
            raise ContainerError(f"hificodec: inconsistent header fields {ex} / {m}")

    def decode(self, header: Header, packets: Iterator[bytes | None], recover: bool = False) -> M.Audio:
        self._check_header(header)
        model, ch, coded = self.model, header.media["coded_channels"], header.media["coded_frames"]
        gains: deque[list[float]] = deque()

        def indices() -> Iterator[np.ndarray]:
            for i, payload in enumerate(packets):
                if payload is None:
                    raise ContainerError(f"hificodec packet {i} is damaged or missing (lost audio cannot be recovered)")
                idx, g = self.read_packet(header, i, payload)
                gains.append(g)
                yield idx

        def blocks() -> Iterator[np.ndarray]:
            import torch

            left = coded
            dc = DCBlocker(ch, DC_WINDOW)  # the decoder's activations leave a DC offset
            for window, a, b in _windows(indices(), header.extra["chunk_frames"], DEC_CONTEXT):
                gain = gains.popleft()
                for sub, sa, sb in _sub_windows(window, a, b, self.window_frames, DEC_CONTEXT):
                    out = np.empty(((sb - sa) * HOP, ch), np.float32)
                    for c in range(ch):
                        with torch.inference_mode(), one_thread():  # the same samples for any thread count
                            idx = torch.from_numpy(np.ascontiguousarray(sub[:, c].T))[None].to(self.device)
                            x = model.net.decode(idx)[0, 0, sa * HOP : sb * HOP].float().cpu().numpy()
                        out[:, c] = x * np.float32(gain[c])
                    out = dc(out[:left])
                    yield out
                    left -= len(out)
            if left:
                raise ContainerError(f"hificodec: stream ends {left} samples early")

        return M.Audio(SAMPLE_RATE, ch, coded, blocks)
