"""Golden files of the real codecs: files written by an earlier release keep decoding to the same
indices and the same samples or pixels.

`tests/data/<codec>_format1.nmc` were written by main at a7dab17 (container format 1, mcquic v2
weights), `<codec>_format2.nmc` by the codec kit (format 2, the same packets): hificodec codes the
first 2 s of samples/speech_es.flac at 2kbps, mcquic a 48x80 RGBA crop of samples/photo_aqua.png
(rows 200-247, columns 300-379, alpha = min(255, 3 x + y)) at q2, vqgan (format 2 only) a 192x256 crop
at s64. Format 2 also pins each codec's preset header dictionary (a changed dictionary cannot inflate
these headers).
The indices' hash pins the bitstream (a change to encoder and decoder together fails it); the
decoded hash pins the networks (on this kind of CPU: other vector units may round differently).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest

from nmc.codec import api

DATA = Path(__file__).parent / "data"
HASHES = {  # codec -> sha256 of the decoded indices (int64, little endian) and of the decoded media
    "hificodec": (
        "6fefa2d5857fab2ae8eaa7146755e862bcd6e37c27142fa1d3e4468c90728e99",  # (100 frames, 1 channel, 4 codebooks)
        "72bc29e992ebf4440aba1199e2c643ecda4c511cf39d841540e6fb9cf5341918",  # float32 (32000, 1), DC blocker of 0.1 s, silence indices after the end (scale2)
    ),
    "mcquic": (
        "b5c147af26923f58cfb0a0b4f2f563f7dfb98400e17585c4bfbada3e600254b7",  # 180 indices, codebook by codebook
        "2972024747db7ada1f45ec5a77f49b0782f6dabfbf8fa50dbe2d7dd1272b3040",  # uint8 (48, 80, 4)
    ),
}
GOLDEN = {f"{codec}_format{v}.nmc": hashes for codec, hashes in HASHES.items() for v in (1, 2)}
GOLDEN["vqgan_format2.nmc"] = (  # rows 100-291, columns 200-455 of samples/photo_aqua.png at s64 (main, 2026-12-02)
    "b5b0af105be286357711e1e888f29e97214fe2840cfd2a33e1b9e8a7ed0e24f4",  # 192 indices, packet by packet
    "d70366f618065b84dff0d6c1574ebcecb3e4a4db16fc013f4ec99ab742a4f8b7",  # uint8 (192, 256, 3)
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def indices(data: bytes) -> np.ndarray:
    """Every index of the file in packet order (hificodec: frame, channel, codebook; mcquic: grid by grid)."""
    opened = api.open_file(io.BytesIO(data))
    codec, header, fields = opened.codec, opened.header, opened.fields
    parts = []
    if header.codec == "vqgan":
        from nmc.models.vqgan.packets import decode_cells, packet_cells

        size = codec.setting(header.setting).codebook_size  # type: ignore[attr-defined]
        k, (h, w) = codec.model.net.sizes.index(size), (header.media["height"] // 16, header.media["width"] // 16)  # type: ignore[attr-defined]
        grid = np.zeros((h, w), np.int64)  # one tile
        return np.concatenate([decode_cells(p, codec.model.prior, k, grid[c].shape).ravel()  # type: ignore[attr-defined]
                               for p, c in zip(opened.packets, packet_cells((h, w), fields.lattice))]).astype("<i8")
    for i, payload in enumerate(opened.packets):
        if header.codec == "hificodec":
            parts.append(codec.read_packet(fields, i, payload)[0].ravel())  # type: ignore[attr-defined]
        else:
            from nmc.codec.tiling import tiles

            box = tiles(header.media["height"], header.media["width"], fields.tile, 16)[i]
            parts += [g.ravel() for g in codec.read_packet(header, fields, payload, box)[0]]  # type: ignore[attr-defined]
    return np.concatenate(parts).astype("<i8")


def decoded_bytes(data: bytes) -> bytes:
    media = api.decompress(data)
    return media.to_array().astype("<f4").tobytes() if hasattr(media, "to_array") else media.pixels.tobytes()


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_file_decodes_bit_identically(name: str) -> None:
    data = (DATA / name).read_bytes()
    want_indices, want_decoded = GOLDEN[name]
    assert hashlib.sha256(indices(data).tobytes()).hexdigest() == want_indices
    assert hashlib.sha256(decoded_bytes(data)).hexdigest() == want_decoded


def test_a_file_of_the_retired_mcquic_v1_weights_names_both_versions() -> None:
    """Files written with the v1 weights (until 2026-12-02) carry their hash; the v2 weights refuse them."""
    from conftest import with_header

    from nmc.codec.errors import WeightsMismatchError
    from nmc.codec.registry import get_codec

    v1 = with_header((DATA / "mcquic_format1.nmc").read_bytes(), lambda h: h.update(weights="ba88bdd9a546d455"))
    with pytest.raises(WeightsMismatchError) as refused:
        api.decompress(v1)
    message = str(refused.value)
    assert "ba88bdd9a546d455 (mcquic v1 weights" in message and get_codec("mcquic").weights_hash() in message
    assert "needs the other weights version" in message
