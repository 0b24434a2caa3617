"""The `queen` codec: dynamic 3D Gaussian sequences through the coding core (`core.py`).

QUEEN codes a keyframe, then each frame as residuals of the previous decoded one: attributes
through integer latents and small decoders fitted to each group of frames, positions through a
learned gate. Here the sequence is cut into groups of `group` frames; each group is one packet
with its decoders and priors (the core's group header), then one packet per frame:

    packets = G0, f0 .. f(g-1), G1, fg .. f(2g-1), ...        T + ceil(T / g) packets

The first group starts with the keyframe; later groups continue from the decoder's state. The
encoder holds one group of frames, the decoder one frame, whatever the sequence length. The
decoders are fitted at encode time, so there is no weights file (`weights` is "none"): a file
decodes with any nmc that has this format. Byte layout: docs/FORMAT.md.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

from nmc.codec import media as M
from nmc.codec.container import MAX_HEADER_BYTES, Header
from nmc.codec.errors import ContainerError, MediaError
from nmc.codec.fields import BOOL, MAX_SEQUENCE, HeaderFields, Int, header_field
from nmc.codec.interface import Codec, Encoded, Setting
from nmc.codec.registry import register_codec
from nmc.codec.threads import one_thread

if TYPE_CHECKING:
    from .core import Settings

GROUP = 10  # frames per group: the decoders are fitted once per group (encoder memory: one group)
MAX_GAUSSIANS = 1 << 23  # per frame; bounds the decoder's state (N x channels int64, 3.7 GiB at SH degree 3)


@dataclass(frozen=True, kw_only=True)
class Quality(Setting):
    lam: float  # core.Settings.lam: predicted render MSE per bit per Gaussian (lower: better quality)


# Nominal rates: bits per Gaussian and frame (the whole file) and render PSNR on the generated
# 20k-Gaussian, 12-frame sequence (models/queen/CARD.md, `measure.py`); short sequences pay more
# for their keyframe. Fitted splats need lower lam for the same PSNR (q4 gave 40.8 dB on the
# fitted 8k sequence): q5 and q6 are for them (on the generated scenes the gate's noise floor
# caps the PSNR near 53 dB, the re-fitting jitter being left alone).
SETTINGS: list[Setting] = [
    Quality(f"q{k + 1}", rate, "bits/Gaussian", f"lam {lam:g}: about {psnr} dB render PSNR on the generated scenes", lam=lam)
    for k, (lam, rate, psnr) in enumerate([(3e-6, 22.2, 38), (1e-6, 26.5, 43), (3e-7, 32.1, 48), (1e-7, 37.5, 49),
                                           (3e-8, 43.5, 52), (1e-8, 49.9, 53)])
]


@dataclass(frozen=True)
class Fields(HeaderFields):
    gaussians: int = header_field(Int(1, MAX_GAUSSIANS), "media")  # in every frame
    sh_degree: int = header_field(Int(0, 3))
    normals: bool = header_field(BOOL)  # the .ply frames carry (zero) normals
    group: int = header_field(Int(1, MAX_SEQUENCE))

    def consistent(self, header: Header, setting: Setting) -> bool:
        frames = header.media["frame_count"]
        return isinstance(setting, Quality) and header.packets == packet_count(frames, self.group)


def packet_count(frames: int, group: int) -> int:
    return frames + -(-frames // group)


@register_codec("queen")
class QueenCodec(Codec):
    """Dynamic 3D Gaussians: a keyframe, then gated position residuals and latent attribute residuals."""

    media = "gaussians"
    model_id = "queen-v1"
    description = "QUEEN-style dynamic 3DGS codec: keyframe + per-frame residuals, latent decoders fitted per group, gated positions"
    auto_priority = 10
    default_setting = "q2"
    header_fields = Fields
    header_dict = (  # format 2: a typical header (the most frequent values), part of the format
        b'{"coder":{"coder":"range","library":"constriction","perfect":false,"version":"0.5.0"},'
        b'"extra":{"group":10,"normals":true,"sh_degree":3},"media":{"frame_count":30,"gaussians":100000,"kind":"gaussians","names":['
        + b",".join(b'"frame_%04d.ply"' % t for t in range(12)) + b',"00000.ply","00001.ply","00002.ply"]},'
        b'"model_id":"queen-v1","packets":33,"setting":"q2","weights":"none"}'
    )

    def __init__(self, group: int = GROUP, core: Settings | None = None) -> None:
        """`core` sets the encoder's effort (fitting and gate steps); its `lam` comes from the setting."""
        if not 1 <= group <= MAX_SEQUENCE:
            raise ValueError(f"group={group} is not in [1, {MAX_SEQUENCE}]")
        self.group, self._core = group, core
        self._device: str | None = None  # `to`'s, applied when the core is made

    @property
    def core(self) -> Settings:
        """The encoder's settings. The core imports torch: only once a sequence is coded, not when
        the codec is made to read a header (`nmc batch` plans a directory from the headers)."""
        if self._core is None:
            from .core import Settings

            self._core = Settings() if self._device is None else Settings(device=self._device)
        return self._core

    def settings(self) -> list[Setting]:
        return SETTINGS

    def to(self, device: str) -> QueenCodec:
        """Fit the decoders and the gate on `device` when encoding (decoding is integer work on the CPU); the core
        (torch) is not imported for it."""
        self._device = device
        if self._core is not None:
            self._core = dataclasses.replace(self._core, device=device)
        return self

    def encode(self, seq: M.Gaussians, setting: Setting) -> Encoded:
        assert isinstance(setting, Quality)
        n = seq.counts[0]
        other = next((i for i, c in enumerate(seq.counts) if c != n), None)
        if other is not None:
            raise MediaError(f"{seq.names[other]} holds {seq.counts[other]} Gaussians, {seq.names[0]} {n}: "
                             "queen codes a constant set of Gaussians (densified or pruned sequences are not handled)")
        if not 1 <= n <= MAX_GAUSSIANS:
            raise MediaError(f"queen codes 1 to {MAX_GAUSSIANS} Gaussians per frame, the sequence has {n}")
        if len(json.dumps(seq.names)) > MAX_HEADER_BYTES // 2:
            raise MediaError(f"the names of {len(seq.names)} frames do not fit one file's header; code the sequence in parts")
        fields = Fields(gaussians=n, sh_degree=seq.layout.sh_degree, normals=seq.layout.normals, group=self.group)
        from .core import GroupEncoder

        encoder = GroupEncoder(seq.layout, dataclasses.replace(self.core, lam=setting.lam))

        def packets() -> Iterator[bytes]:
            frames = seq.frames()
            while group := list(islice(frames, self.group)):
                with one_thread():  # the fits run in torch: the same bytes whatever the caller's thread count
                    coded = encoder.encode_group(group)
                yield coded.header
                yield from coded.packets

        return Encoded(fields, packets(), packet_count(len(seq.names), self.group))

    def decode(self, header: Header, fields: Fields, packets: Iterator[Any]) -> M.Gaussians:
        from .core import GroupDecoder

        layout, total = M.GaussianLayout(fields.sh_degree, fields.normals), header.media["frame_count"]

        def frames() -> Iterator[M.Matrix]:
            decoder, done = GroupDecoder(layout, fields.gaussians), 0
            for start in range(0, total, fields.group):
                for m in decoder.decode_group(next(packets), islice(packets, min(fields.group, total - start))):
                    done += 1
                    yield m
            if done != total or next(packets, None) is not None:  # reading on checks the container's end record
                raise ContainerError(f"queen decoded {done} of {total} frames (file is damaged)")

        return M.Gaussians(layout, header.media["names"], [fields.gaussians] * total, frames)
