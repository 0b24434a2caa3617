"""A tiny codec for the core's tests only (never installed): horizontal-difference coding of
quantized pixels / samples with Laplace tables stored in a safetensors "weights" file.

It exercises every part of the container and entropy layer that real codecs use: header
fields, one packet per band/chunk, streaming audio, lost-packet recovery.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from safetensors.numpy import load_file, save_file

from nmc.codec import entropy as E
from nmc.codec import media as M
from nmc.codec.container import Header, pack_streams, unpack_streams
from nmc.codec.errors import MediaError
from nmc.codec.fields import HeaderFields, OneOf, header_field
from nmc.codec.interface import Codec, Encoded, Setting
from nmc.codec.registry import register_codec

WEIGHTS = Path(__file__).parent / "data" / "toy.safetensors"
BAND = 16  # image rows per packet
CHUNK = 4000  # audio frames per packet
SUPPORT = 255


def make_weights(path: Path = WEIGHTS) -> None:
    save_file({"tables": E.quantized_laplace_tables([1.0, 4.0, 16.0], SUPPORT)}, str(path))


def _tables() -> np.ndarray:
    return load_file(str(WEIGHTS))["tables"]


def _encode_rows(q: np.ndarray, table: np.ndarray) -> bytes:
    d = np.diff(q.astype(np.int32), axis=-1, prepend=0) + SUPPORT
    enc = E.Encoder()
    enc.encode(d.ravel(), table)
    return enc.to_bytes()


def _decode_rows(data: bytes, shape: tuple[int, ...], table: np.ndarray) -> np.ndarray:
    d = E.Decoder(data).decode(table, int(np.prod(shape))).reshape(shape) - SUPPORT
    return np.cumsum(d, axis=-1)


def slow(seconds: float) -> None:
    """Make coding each toy packet take `seconds` more (signal and Ctrl-C tests need long runs)."""
    global _encode_rows, _decode_rows
    encode, decode = _encode_rows, _decode_rows
    _encode_rows = lambda *args: (time.sleep(seconds), encode(*args))[1]  # noqa: E731
    _decode_rows = lambda *args: (time.sleep(seconds), decode(*args))[1]  # noqa: E731


@dataclass(frozen=True)
class ImageFields(HeaderFields):
    step: int = header_field(OneOf((4, 16)))
    band: int = header_field(OneOf((BAND,)))


@register_codec("toy-image")
class ToyImage(Codec):
    """Quantized pixels; a lost band of rows decodes as mid-gray under --recover."""

    media = "image"
    model_id = "toy-image-v1"
    weights_path = WEIGHTS
    default_setting = "fine"
    header_fields = ImageFields
    header_dict = (
        b'{"coder":{"coder":"range","library":"constriction","perfect":false,"version":"0.5.0"},"extra":{"band":16,"step":4},'
        b'"media":{"bit_depth":8,"channels":3,"height":40,"kind":"image","width":56},"model_id":"toy-image-v1","packets":3,"setting":"fine","weights":"'
    )
    can_recover = True

    def settings(self) -> list[Setting]:
        return [Setting("coarse", 1.0, "bpp"), Setting("fine", 3.0, "bpp")]

    def encode(self, image: M.Image, setting: Setting) -> Encoded:
        rgb, alpha = M.to_rgb8(image)
        if alpha is not None:
            raise MediaError("toy-image does not code alpha")
        step = 16 if setting.name == "coarse" else 4
        q = (rgb.astype(np.int32) // step).transpose(2, 0, 1)  # (3, H, W)
        table = _tables()[0 if step == 16 else 1]
        packets = [_encode_rows(q[:, y : y + BAND], table) for y in range(0, image.height, BAND)]
        media = {"kind": "image", "width": image.width, "height": image.height, "channels": 3, "bit_depth": 8}
        return Encoded(ImageFields(step, BAND), packets, len(packets), media)

    def decode(self, header: Header, fields: ImageFields, packets: Iterator[bytes | None]) -> M.Image:
        h, w, step = header.media["height"], header.media["width"], fields.step
        table = _tables()[0 if step == 16 else 1]
        out = np.full((3, h, w), 128 // step, np.int64)
        for i, p in enumerate(packets):
            rows = min(BAND, h - i * BAND)
            if p is None:  # lost: the band stays mid-gray
                continue
            out[:, i * BAND : i * BAND + rows] = _decode_rows(p, (3, rows, w), table)
        px = np.clip(out * step + step // 2, 0, 255).astype(np.uint8).transpose(1, 2, 0)
        return M.Image(np.ascontiguousarray(px))


@register_codec("toy-audio")
class ToyAudio(Codec):
    media = "audio"
    model_id = "toy-audio-v1"
    weights_path = WEIGHTS
    header_dict = (
        b'{"coder":{"coder":"range","library":"constriction","perfect":false,"version":"0.5.0"},"extra":{},'
        b'"media":{"channels":1,"frames":12000,"kind":"audio","sample_rate":8000},"model_id":"toy-audio-v1","packets":3,"setting":"8bit","weights":"'
    )

    def settings(self) -> list[Setting]:
        return [Setting("8bit", 64.0, "kbps")]

    def encode(self, audio: M.Audio, setting: Setting) -> Encoded:
        def packets() -> Iterator[bytes]:
            pending = np.zeros((0, audio.channels), np.float32)
            for block in audio.blocks():
                pending = np.concatenate([pending, block])
                while len(pending) >= CHUNK:
                    yield self._packet(pending[:CHUNK])
                    pending = pending[CHUNK:]
            if len(pending):
                yield self._packet(pending)

        return Encoded(HeaderFields(), packets(), -(-audio.frames // CHUNK))

    def _packet(self, x: np.ndarray) -> bytes:
        q = np.clip(np.round(x.T * 127), -127, 127).astype(np.int32)
        return pack_streams([np.uint32(x.shape[0]).tobytes(), _encode_rows(q, _tables()[2])])

    def decode(self, header: Header, fields: HeaderFields, packets: Iterator[bytes | None]) -> M.Audio:
        ch = header.media["channels"]

        def blocks() -> Iterator[np.ndarray]:
            for p in packets:
                assert p is not None  # toy-audio cannot recover: it is never given a lost packet
                n_bytes, data = unpack_streams(p, 2)
                n = int(np.frombuffer(n_bytes, np.uint32)[0])
                yield (_decode_rows(data, (ch, n), _tables()[2]).T / 127).astype(np.float32)

        return M.Audio(header.media["sample_rate"], ch, header.media["frames"], blocks)
