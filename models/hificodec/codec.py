"""The `hificodec` codec: HiFi-Codec GRVQ indices of 30 s chunks, range-coded with context priors.

Audio of any rate and channel count is resampled to 16 kHz and each channel is coded on its
own. One packet holds one chunk of `chunk_frames` codec frames (hop 320, 30 s) of every channel:

    packet  = pack_streams([meta, stream_0, ..., stream_{C-1}])
    meta    = uint16 frames | per channel: uint8 unigram mask, float32 gain
    stream  = range-coded indices of one channel (`index_coding.py`)

The networks run on windows of `WINDOW_FRAMES` (10 s) with `ENC_CONTEXT` frames of audio on
both sides (encoder) or `DEC_CONTEXT` frames of the neighbouring indices (decoder, one packet
of lookahead), both more than the networks' receptive fields, so chunked coding equals
whole-signal coding and memory stays bounded; after the end of the signal the encoder sees
silence and the decoder the indices of silence (`BUCKET`). Byte layout: docs/FORMAT.md.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from nmc.codec import entropy as E
from nmc.codec import media as M
from nmc.codec.container import Header, pack_streams, unpack_streams
from nmc.codec.dsp import DCBlocker
from nmc.codec.errors import ContainerError
from nmc.codec.fields import MAX_FRAMES, HeaderFields, Int, header_field
from nmc.codec.interface import Encoded, NeuralCodec, Setting
from nmc.codec.media import MAX_AUDIO_CHANNELS
from nmc.codec.registry import register_codec
from nmc.codec.windows import exact_length, sub_windows, windows

from .index_coding import context_sizes, decode_indices, encode_indices

if TYPE_CHECKING:
    import torch

    from .network import HiFiCodec

WEIGHTS = Path(__file__).parent / "weights" / "hificodec_16k.safetensors"
SAMPLE_RATE = 16000
DC_WINDOW = SAMPLE_RATE // 10  # samples averaged by the output DC blocker (0.1 s: converges within short clips)
HOP = 320  # samples per codec frame (50 frames/s)
GROUPS = 2  # GRVQ groups
CODEBOOK_SIZE = 1024  # entries per codebook of the shipped model (nominal rates); the header has the model's
CHUNK_FRAMES = 1500  # codec frames per packet (30 s): the coder's ~2 bytes per stream stay < 0.1 %
WINDOW_FRAMES = 500  # codec frames per network call (10 s): bounds memory whatever the packet size
ENC_CONTEXT = 10  # frames of audio on each side of a chunk; g_a's receptive field is 8
BUCKET = 25  # the networks' last window of a signal is padded with silence to a multiple of this (0.5 s)
DEC_CONTEXT = 12  # frames of indices on each side of a chunk; g_s's receptive field is 11
SILENCE_DBFS = -57.0  # a frame this quiet (RMS), with SILENCE_HANGOVER quiet frames on each side, is
SILENCE_HANGOVER = 2  # coded as digital silence: its indices repeat and cost little (the encoder's choice)
_META = struct.Struct("<H")
_CHANNEL = struct.Struct("<Bf")


@dataclass(frozen=True, kw_only=True)
class Rate(Setting):
    codebooks: int  # residual levels x groups


def _rate(levels: int) -> Rate:
    n = levels * GROUPS
    kbps = n * math.log2(CODEBOOK_SIZE) * SAMPLE_RATE / HOP / 1000
    return Rate(f"{kbps:g}kbps", kbps, "kbps", f"{n} codebooks ({levels} levels x {GROUPS} groups)", codebooks=n)


SETTINGS: list[Setting] = [_rate(levels) for levels in (1, 2, 3, 4)]


@dataclass(frozen=True)
class Fields(HeaderFields):
    coded_rate: int = header_field(Int(SAMPLE_RATE, SAMPLE_RATE), "media")
    coded_channels: int = header_field(Int(1, MAX_AUDIO_CHANNELS), "media")
    coded_frames: int = header_field(Int(1, MAX_FRAMES), "media")
    hop: int = header_field(Int(HOP, HOP))
    chunk_frames: int = header_field(Int(1, 0xFFFF))
    frames: int = header_field(Int(1, MAX_FRAMES))
    codebooks: int = header_field(Int(2, 8))
    groups: int = header_field(Int(GROUPS, GROUPS))
    codebook_size: int = header_field(Int(1, 1 << 16))

    def consistent(self, header: Header, setting: Setting) -> bool:
        packets = -(-self.frames // self.chunk_frames)  # None in the header while streaming
        return (
            isinstance(setting, Rate) and self.codebooks == setting.codebooks
            and self.frames == -(-self.coded_frames // HOP) and header.packets in (None, packets)
        )  # fmt: skip


def silent_frames(x: np.ndarray, a: int, b: int) -> npt.NDArray[np.bool_]:
    """Which of frames a..b of `x` (16 kHz, the gain applied) lie in near-silence: the frame and
    `SILENCE_HANGOVER` frames on each side below `SILENCE_DBFS` (onsets and word ends stay coded)."""
    n = len(x) // HOP
    rms = np.sqrt(np.mean(np.square(x[: n * HOP].astype(np.float64).reshape(n, HOP)), axis=1))
    quiet = np.pad(rms < 10 ** (SILENCE_DBFS / 20), SILENCE_HANGOVER, constant_values=True)
    runs = np.asarray(np.lib.stride_tricks.sliding_window_view(quiet, 2 * SILENCE_HANGOVER + 1).all(axis=1))
    return runs[a:b] if b <= n else np.pad(runs, (0, b - n), constant_values=True)[a:b]


def silence_of(encode: Callable[[np.ndarray], np.ndarray]) -> npt.NDArray[np.int64]:
    """The indices (all codebooks) that `encode` (audio `(1, 1, T)` -> indices `(1, codebooks, T / HOP)`)
    gives digital silence, away from any edge: what the encoder writes for near-silent frames."""
    return np.asarray(encode(np.zeros((1, 1, (2 * ENC_CONTEXT + 1) * HOP), np.float32))[0, :, ENC_CONTEXT], np.int64)


def _gain(x: np.ndarray) -> float:
    """Divisor that brings `x` into [-1, 1]: 1, or the peak rounded up to float32."""
    peak = np.float32(np.abs(x).max(initial=0.0))
    return 1.0 if peak <= 1 else float(peak)


@register_codec("hificodec")
class HiFiCodecCodec(NeuralCodec["HiFiCodec"]):
    """Speech at 1-4 kbit/s nominal (2-8 codebooks of 1024 x 50 frames/s), 16 kHz output."""

    media = "audio"
    model_id = "hificodec-16k-v1"
    description = "HiFi-Codec GRVQ speech codec, 16 kHz, context-coded indices"
    weights_path = WEIGHTS
    auto_priority = 10
    default_setting = "2kbps"
    header_fields = Fields
    retired_weights = {"6553de974051380d": "hificodec weights of 2026-11-27 (step 8320), shipped until 2026-12-02",
                       "d553f07bbb7a7b47": "hificodec weights of 2026-12-02 session 4 (step 11970), shipped until session 7",
                       "7f82764f15a95273": "hificodec weights of 2026-12-03 session 7 (step 14340), shipped until session 8",
                       "0094e18fd354ca1b": "hificodec weights of 2026-12-03 session 8 (step 15470), shipped until session 9",
                       "adc01b93119567ea": "hificodec weights of 2026-12-03 session 9 (step 17660), shipped until session 11"}
    header_dict = (  # format 2: a typical header (the most frequent values), part of the format
        b'{"coder":{"coder":"range","library":"constriction","perfect":false,"version":"0.5.0"},'
        b'"extra":{"chunk_frames":1500,"codebook_size":1024,"codebooks":4,"frames":60,"groups":2,"hop":320},'
        b'"media":{"channels":1,"coded_channels":1,"coded_frames":16000,"coded_rate":16000,"frames":16000,"kind":"audio",'
        b'"sample_rate":16000},"model_id":"hificodec-16k-v1","packets":1,"setting":"2kbps","weights":"'
    )

    def __init__(self, weights_path: Path | None = None, chunk_frames: int = CHUNK_FRAMES, window_frames: int = WINDOW_FRAMES) -> None:
        super().__init__(weights_path)
        if not 1 <= chunk_frames <= 0xFFFF or window_frames < 1:
            raise ValueError(f"chunk_frames={chunk_frames} outside [1, 65535] or window_frames={window_frames} < 1")
        self.chunk_frames, self.window_frames = chunk_frames, window_frames
        self._silence: npt.NDArray[np.int64] | None = None  # the indices of digital silence (`silence_indices`)

    onnx_functions = ("encode", "decode")  # their exports reproduce torch (`onnx_backend`)

    def settings(self) -> list[Setting]:
        return SETTINGS

    def build_net(self, state: dict[str, torch.Tensor], args: dict[str, Any]) -> HiFiCodec:
        from .network import CodecConfig, HiFiCodec

        config = CodecConfig.from_dict(args)
        if (config.hop_length, config.groups) != (HOP, GROUPS) or config.levels * GROUPS > 8:
            raise ValueError(f"network {config} does not fit the codec (hop {HOP}, {GROUPS} groups, <= 8 codebooks)")
        return HiFiCodec.from_state_dict(state, config)

    def prior_contexts(self, net: HiFiCodec) -> list[list[int]]:
        return context_sizes(GROUPS * net.config.levels, GROUPS, net.config.codebook_size)

    def encode(self, audio: M.Audio, setting: Setting) -> Encoded:
        assert isinstance(setting, Rate)
        prior = self.prior  # read now: missing weights fail before the header is written
        coded = max(1, round(audio.frames * SAMPLE_RATE / audio.sample_rate))
        frames = -(-coded // HOP)
        fields = Fields(coded_rate=SAMPLE_RATE, coded_channels=audio.channels, coded_frames=coded, hop=HOP, chunk_frames=self.chunk_frames,
                        frames=frames, codebooks=setting.codebooks, groups=GROUPS, codebook_size=prior.alphabet)

        def packets() -> Iterator[bytes]:
            x = M.resample_blocks(M.finite_blocks(audio.blocks(), "hificodec"), audio.sample_rate, SAMPLE_RATE, audio.channels)
            x = exact_length(x, audio.channels, coded, frames * HOP)
            for window, a, b in windows(x, self.chunk_frames * HOP, ENC_CONTEXT * HOP):
                yield self._encode_chunk(window, a // HOP, b // HOP, setting.codebooks)

        return Encoded(fields, packets(), -(-frames // self.chunk_frames))

    def encode_indices(self, x: np.ndarray, a: int, b: int, n_cb: int) -> npt.NDArray[np.int64]:
        """Indices `(n_cb, b - a)` of frames a..b of one channel's window `x` (16 kHz, in [-1, 1]),
        computed `window_frames` at a time.

        A window that ends where `x` ends gets at least `ENC_CONTEXT` frames of silence after it, up
        to a multiple of `BUCKET` frames: the signal is silent after its end whatever the window, and
        windows of clips of similar lengths have one shape, so `nmc batch` can batch them on a GPU.
        """
        parts = []
        for sub, sa, sb in sub_windows(x, a * HOP, b * HOP, self.window_frames * HOP, ENC_CONTEXT * HOP):
            n = len(sub) // HOP
            tail = (ENC_CONTEXT + -(n + ENC_CONTEXT) % BUCKET) * HOP if sb + ENC_CONTEXT * HOP > len(sub) else 0
            row = np.zeros((1, 1, len(sub) + tail), np.float32)
            row[0, 0, : len(sub)] = sub
            (idx,) = self.run("encode", row, levels=n_cb // GROUPS)
            parts.append(idx[0, :, sa // HOP : sb // HOP].astype(np.int64))
        indices = np.concatenate(parts, axis=1)
        indices[:, silent_frames(x, a, b)] = self.silence_indices()[:n_cb, None]
        return indices

    def silence_indices(self) -> npt.NDArray[np.int64]:
        """The indices (all codebooks, as many as the priors: `GROUPS` x levels) the encoder gives digital silence,
        away from any edge."""
        if self._silence is None:
            levels = len(self.prior.unigram) // GROUPS
            self._silence = silence_of(lambda z: self.run("encode", z, levels=levels)[0])
        return self._silence

    @staticmethod
    def net_encode(net: HiFiCodec, x: torch.Tensor, levels: int) -> torch.Tensor:
        """Indices `(B, GROUPS * levels, T / HOP)` of audio windows `(B, 1, T)`."""
        return net.quantizer.codes_to_indices(net.g_a(x), levels)

    def decoder_rows(self, window: npt.NDArray[np.int64], b: int) -> npt.NDArray[np.int64]:
        """The decoder's input `(channels, n_codebooks, F)` for index window `(frames, channels,
        n_codebooks)` whose frames up to `b` are decoded. As the encoder, the decoder sees silence
        after the end of the signal (the indices of digital silence, at least `DEC_CONTEXT` frames,
        up to a multiple of `BUCKET`), so that clips of similar lengths give calls of one shape."""
        rows = window.transpose(1, 2, 0)
        if b + DEC_CONTEXT <= len(window):
            return rows
        tail = DEC_CONTEXT + -(len(window) + DEC_CONTEXT) % BUCKET
        silence = self.silence_indices()[: rows.shape[1], None]
        return np.concatenate([rows, np.broadcast_to(silence, (*rows.shape[:2], tail))], axis=2)

    @staticmethod
    def net_decode(net: HiFiCodec, indices: torch.Tensor) -> torch.Tensor:
        """Samples `(B, F * HOP)` of index windows `(B, n_codebooks, F)`."""
        return net.decode(indices)[:, 0].float()

    def _encode_chunk(self, window: np.ndarray, a: int, b: int, n_cb: int) -> bytes:
        meta, streams = [_META.pack(b - a)], []
        for x in window.T:
            gain = _gain(x)
            enc = E.Encoder()
            mask = encode_indices(enc, self.prior, self.encode_indices(x / np.float32(gain), a, b, n_cb), GROUPS)
            meta.append(_CHANNEL.pack(mask, gain))
            streams.append(enc.to_bytes())
        return pack_streams([b"".join(meta), *streams])

    def read_packet(self, fields: Fields, index: int, payload: bytes | None) -> tuple[npt.NDArray[np.int64], list[float]]:
        """Indices `(frames, channels, n_codebooks)` and per-channel gains of packet `index`."""
        assert payload is not None  # only codecs that can recover are given lost packets
        ch = fields.coded_channels
        expected = min(fields.chunk_frames, fields.frames - index * fields.chunk_frames)
        meta, *streams = unpack_streams(payload, 1 + ch)
        if len(meta) != _META.size + ch * _CHANNEL.size or _META.unpack_from(meta)[0] != expected:
            raise ContainerError(f"bad metadata (expected {expected} frames of {ch} channels)")
        out = np.zeros((expected, ch, fields.codebooks), np.int64)
        gains = []
        for c, data in enumerate(streams):
            mask, gain = _CHANNEL.unpack_from(meta, _META.size + c * _CHANNEL.size)
            if not (np.isfinite(gain) and gain >= 1):
                raise ContainerError(f"invalid gain {gain}")
            out[:, c] = decode_indices(E.Decoder(data), self.prior, GROUPS, fields.codebooks, expected, mask).T
            gains.append(gain)
        return out, gains

    def decode(self, header: Header, fields: Fields, packets: Iterator[bytes | None]) -> M.Audio:
        ch, coded = fields.coded_channels, fields.coded_frames
        gains: deque[list[float]] = deque()

        def indices() -> Iterator[np.ndarray]:
            for i, payload in enumerate(packets):
                idx, g = self.read_packet(fields, i, payload)
                gains.append(g)
                yield idx

        def blocks() -> Iterator[np.ndarray]:
            left = coded
            dc = DCBlocker(ch, DC_WINDOW)  # the decoder's activations leave a DC offset
            for window, a, b in windows(indices(), fields.chunk_frames, DEC_CONTEXT):
                gain = np.asarray(gains.popleft(), np.float32)
                for sub, sa, sb in sub_windows(window, a, b, self.window_frames, DEC_CONTEXT):
                    (x,) = self.run("decode", self.decoder_rows(sub, sb))  # channels as a batch
                    out = dc(np.ascontiguousarray(x[:, sa * HOP : sb * HOP].T * gain)[:left])
                    yield out
                    left -= len(out)
            if left:
                raise ContainerError(f"stream ends {left} samples early")

        return M.Audio(SAMPLE_RATE, ch, coded, blocks)
