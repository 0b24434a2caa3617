"""Golden files of the real codecs: files written by an earlier release keep decoding to the same
indices and the same samples or pixels.

`tests/data/<codec>_format1.nmc` were written by main at a7dab17 (container format 1, mcquic's v2
weights retired in session 6, hificodec's retired 2026-11-27 weights), `<codec>_format2.nmc` by the codec kit (format 2, the same
packets; hificodec's rewritten with the weights of 2026-12-03 session 11 (the mean of steps 17660 and 22070) by
`scripts/rewrite_golden.py`, the files of the session-4, -7, -8 and -9 weights are `hificodec_retired_s11970.nmc`, `_s14340.nmc`,
`_s15470.nmc` and `_s17660.nmc`, refused by name;
mcquic's rewritten with the v3 weights of step 64320 (2026-12-03 session 12), the v2.1 and step-45240 files are
`mcquic_retired_v21.nmc` and `mcquic_retired_v3_45240.nmc`): hificodec codes the
first 2 s of samples/speech_es.flac at 2kbps, mcquic a 48x80 RGBA crop of samples/photo_aqua.png
(rows 200-247, columns 300-379, alpha = min(255, 3 x + y)) at q2, vqgan (format 2 only) a 192x256 crop
at s64 (rewritten with the weights of 2026-12-02 sessions 5 and 6, whose s16 and then s32 rungs got their own
decoders, by `scripts/rewrite_golden.py`: the s64 indices and pixels are unchanged; the files of the earlier
weights are `vqgan_retired_untuned.nmc` and `vqgan_retired_s16.nmc`, refused by name; since session 12, when s1024 got its
own decoder, also `vqgan_retired_s32.nmc`; since session 19, whose encoder chooses other indices
(`models/vqgan/resilient.py`), the rewritten files also hold other indices). Format 2 also pins each codec's preset header dictionary (a changed dictionary cannot inflate
these headers). `<codec>_format3.nmc` were written by this version (container format 3, 2026-12-02)
from the same sources: the same header fields and packets as format 2, in the compact framing.
The indices' hash pins the bitstream (a change to encoder and decoder together fails it); the decoded
media are compared with `golden_decoded.npz` (written on an AMD EPYC box) within a rounding tolerance:
CPUs with other vector units round the networks' float sums differently (Intel and AMD boxes gave other
hashes of the same decode), so an exact hash of decoded media would test the CPU, not the code.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest

from nmc.codec import api
from nmc.codec.container import END, read_header, read_packets, varint

DATA = Path(__file__).parent / "data"
INDICES = {  # codec -> sha256 of the decoded indices (int64, little endian)
    "hificodec": "17c2b2226bd696c14c0dfdddaf47338b8f7f9ed2f5a15986ce35c598a3b8c267",  # (100 frames, 1 channel, 4 codebooks)
    "mcquic": "e90e28a2ea6cafd5f1c8411c80f3ff35dfb5ed5016443b5638ce8724f8fa32db",  # 180 indices, codebook by codebook
}
GOLDEN = {f"{codec}_format{v}.nmc": codec for codec in INDICES for v in (1, 2, 3)}
del GOLDEN["hificodec_format1.nmc"]  # written with the retired 2026-11-27 weights: refused (below)
del GOLDEN["mcquic_format1.nmc"]  # written with the v2 weights, retired in session 6: refused (below)
GOLDEN["vqgan_format2.nmc"] = "vqgan"  # rows 100-291, columns 200-455 of samples/photo_aqua.png at s64 (main, 2026-12-02)
GOLDEN["vqgan_format3.nmc"] = "vqgan"
INDICES["vqgan"] = "b84b22fc6a884f309735033794ec3c252b321ef1038944a28b685044ae350774"  # 192 indices, packet by packet
DECODED = DATA / "golden_decoded.npz"  # codec -> the decoded media (float32 samples (32000, 1) with the 0.1 s DC blocker; uint8 pixels)
TOLERANCE = {"hificodec": 1e-3, "mcquic": 2, "vqgan": 2}  # largest difference: -60 dBFS of a sample; 2 of 255 levels

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


def decoded(data: bytes) -> np.ndarray:
    media = api.decompress(data)
    return media.to_array().astype("<f4") if hasattr(media, "to_array") else media.pixels


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_file_decodes_the_same(name: str) -> None:
    data, codec = (DATA / name).read_bytes(), GOLDEN[name]
    assert hashlib.sha256(indices(data).tobytes()).hexdigest() == INDICES[codec]
    got, want = decoded(data), np.load(DECODED)[codec]
    assert got.shape == want.shape and got.dtype == want.dtype
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    assert diff.max() <= TOLERANCE[codec] and diff.mean() <= TOLERANCE[codec] / 20


@pytest.mark.parametrize("codec", sorted(INDICES))
def test_format3_holds_the_packets_of_format2(codec: str) -> None:
    """Format 3 changed the framing only: the same header fields and payloads, fewer bytes around them."""
    files = []
    for version in (2, 3):
        data = (DATA / f"{codec}_format{version}.nmc").read_bytes()
        fo = io.BytesIO(data)
        header = read_header(fo, api.header_dictionary)
        files.append((data, header, fo.tell(), list(read_packets(fo, header))))
    (old, h2, head2, p2), (new, h3, head3, p3) = files
    assert (old[4], new[4], h2.version, h3.version) == (2, 3, 2, 3) and h2 == h3 and p2 == p3
    payloads = [p for p in p3 if p is not None]
    assert len(old) == head2 + sum(8 + len(p) for p in payloads) + 8
    assert len(new) == head3 + sum(len(varint(len(p))) + 4 + len(p) for p in payloads) + len(END + varint(len(payloads)))


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


RETIRED = [  # (file, what the refusal names), the codec is the file name's first word
    ("mcquic_format1.nmc", "22c2f8fd8616cd4b (mcquic v2 weights"),  # v2.1 (session 6) rewrote the format-2 and 3 goldens
    ("mcquic_retired_v21.nmc", "bc1cc7d93fd6c993 (mcquic v2.1 weights"),  # sessions 6-10
    ("mcquic_retired_v3_45240.nmc", "19aa09c84e0476fa (mcquic v3 weights of step 45240"),  # session 11
    ("hificodec_format1.nmc", "6553de974051380d (hificodec weights of 2026-11-27"),
    ("hificodec_retired_s11970.nmc", "d553f07bbb7a7b47 (hificodec weights of 2026-12-02 session 4"),
    ("hificodec_retired_s14340.nmc", "7f82764f15a95273 (hificodec weights of 2026-12-03 session 7"),
    ("hificodec_retired_s15470.nmc", "0094e18fd354ca1b (hificodec weights of 2026-12-03 session 8"),
    ("hificodec_retired_s17660.nmc", "adc01b93119567ea (hificodec weights of 2026-12-03 session 9"),
    ("vqgan_retired_untuned.nmc", "eabe51d1ee51075b (vqgan weights with the untuned ladder"),
    ("vqgan_retired_s16.nmc", "f5cf0901301a436f (vqgan weights with s16's own decoder only"),
    ("vqgan_retired_s32.nmc", "09eda3a92b1a9cea (vqgan weights with the decoders of s16 and s32 only"),
    ("vqgan_retired_s1024.nmc", "c1a1a2e9fbd34895 (vqgan weights with the decoders of s16, s32 and s1024 only"),
    ("vqgan_retired_s2048.nmc", "e7ddaf262205e9ca (vqgan weights with the decoders of s16, s32, s256, s1024 and s2048 only"),
    ("vqgan_retired_s14.nmc", "0f3e97db6a443925 (vqgan weights with session 14's decoders"),
    ("vqgan_retired_session16.nmc", "f154ddc75635a3dd (vqgan weights with session 16's decoders"),
    ("vqgan_retired_session17.nmc", "de498570616a4dcb (vqgan weights with session 17's decoders"),
    ("vqgan_retired_session18.nmc", "6a43b3d1f31e628c (vqgan weights with session 18's decoders"),
    ("vqgan_retired_session19.nmc", "136bc44c73ac2ada (vqgan weights with session 19's decoders and the priors of nearest-code maps"),
    ("vqgan_retired_session20.nmc", "737df5967b1bc6a6 (vqgan weights with session 19's decoders and refitted priors"),
]


@pytest.mark.parametrize("name, retired", RETIRED)
def test_a_file_of_retired_weights_names_both_versions(name: str, retired: str) -> None:
    """Files written with earlier weights of a codec (goldens of each shipped version) are refused, naming both the
    retired version and the installed weights."""
    from nmc.codec.errors import WeightsMismatchError
    from nmc.codec.registry import get_codec

    with pytest.raises(WeightsMismatchError) as refused:
        api.decompress((DATA / name).read_bytes())
    message = str(refused.value)
    assert retired in message and get_codec(name.split("_")[0]).weights_hash() in message
