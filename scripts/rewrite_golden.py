"""Rewrite a codec's golden files with the installed weights, after new weights were shipped.

    python -P scripts/rewrite_golden.py CODEC [--check]

Encodes the codec's golden source (tests/test_golden.py says what it is) with the installed weights
and writes `tests/data/<codec>_format3.nmc` (this version's writer) and `<codec>_format2.nmc` (the same
header and packets in format 2's framing: uint32 lengths and an 8-byte end record, as the earlier
writer laid them out), stores the decoded media in `golden_decoded.npz` and prints the indices' hash for
`INDICES` in tests/test_golden.py. Move the old files aside first when the old weights get retired (a
retired file stays as the "refused by name" test). `--check` writes nothing and says whether the
fresh files equal the committed ones (true while the weights are unchanged).
"""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

import numpy as np
import torch
import typer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_golden as T  # noqa: E402

from nmc.codec import api  # noqa: E402
from nmc.codec import media as M  # noqa: E402
from nmc.codec.container import PacketWriter, read_header, read_packets, write_header  # noqa: E402

SETTING = {"hificodec": "2kbps", "mcquic": "q2", "vqgan": "s64"}


def source(codec: str) -> M.Image | M.Audio:
    """The media each golden file codes (the crops described in tests/test_golden.py)."""
    if codec == "hificodec":
        audio = M.read_audio("samples/speech_es.flac")
        return M.Audio.from_array(audio.to_array()[:32000], audio.sample_rate)
    rgb = M.read_image("samples/photo_aqua.png").pixels
    if codec == "vqgan":
        return M.Image(np.ascontiguousarray(rgb[100:292, 200:456]))
    crop = rgb[200:248, 300:380]
    y, x = np.mgrid[: crop.shape[0], : crop.shape[1]]
    alpha = np.minimum(255, 3 * x + y).astype(np.uint8)
    return M.Image(np.ascontiguousarray(np.dstack([crop, alpha])))


def as_format2(data: bytes) -> bytes:
    """The same header and packets in format 2's framing."""
    fo, out = io.BytesIO(data), io.BytesIO()
    header = read_header(fo, api.header_dictionary)
    write_header(out, header, api.header_dictionary(header.codec), version=2)
    writer = PacketWriter(out, version=2)
    for payload in read_packets(fo, header):
        assert payload is not None
        writer.write(payload)
    writer.close()
    return out.getvalue()


def main(codec: str, check: bool = False) -> None:
    torch.set_num_threads(1)
    if codec not in SETTING:
        raise typer.BadParameter(f"no golden source for {codec!r} (one of {', '.join(SETTING)})")
    new = api.compress(codec, source(codec), SETTING[codec])
    files = {T.DATA / f"{codec}_format3.nmc": new, T.DATA / f"{codec}_format2.nmc": as_format2(new)}
    if check:
        for path, data in files.items():
            print(f"{path.name}: {'same bytes' if path.exists() and path.read_bytes() == data else 'DIFFERS'}")
        return
    for path, data in files.items():
        path.write_bytes(data)
        print(f"wrote {path} ({len(data)} bytes)")
    arrays = dict(np.load(T.DECODED))
    arrays[codec] = T.decoded(new)
    np.savez_compressed(T.DECODED, **arrays)
    print(f"indices {hashlib.sha256(T.indices(new).tobytes()).hexdigest()} (INDICES[{codec!r}] in tests/test_golden.py)")


if __name__ == "__main__":
    typer.run(main)
