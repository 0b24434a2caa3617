"""torch against ONNX Runtime on the CPU (`codec/onnx_backend.py`): the same bytes? how far apart are the decodes?

Every photo (mcquic q2, vqgan s1024) and speech clip (hificodec 2kbps) in DATA is coded with each runtime, and the torch-coded
file is decoded with each. Reports per file whether the bytes are equal, the largest pixel or sample difference of
the decodes and the PSNR difference against the original (photos); a cache folder of its own (graphs exported on
the way, as a first run would).

    python -P scripts/crossbackend.py ../shared/data/dev OUT.json
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from nmc.codec import api
from nmc.codec import media as M
from nmc.codec.metrics import psnr

os.environ["NMC_CACHE_DIR"] = tempfile.mkdtemp(prefix="nmc-crossbackend-")


def with_backend(backend: str, fn, *args):  # noqa: ANN001, ANN201
    os.environ["NMC_BACKEND"] = backend
    return fn(*args)


def array(media: M.Image | M.Audio) -> np.ndarray:
    return media.pixels if isinstance(media, M.Image) else media.to_array()


rows = []
data, out = Path(sys.argv[1]), Path(sys.argv[2])
CASES = (("image", "mcquic", "q2", "images/*.png"), ("image", "vqgan", "s1024", "images/*.png"), ("audio", "hificodec", "2kbps", "speech/*"))
for kind, codec, setting, pattern in CASES:
    for path in sorted(data.glob(pattern)):
        media = M.read_image(path) if kind == "image" else M.read_audio(path)
        torch_bytes = with_backend("torch", api.compress, codec, media, setting)
        with_backend("auto", api.compress, codec, media, setting)  # exports this shape's graph (a first run)
        onnx_bytes = with_backend("auto", api.compress, codec, media, setting)
        with_backend("auto", api.decompress, torch_bytes)  # exports the decoder's graphs of this shape
        a, b = (array(with_backend(k, api.decompress, torch_bytes)) for k in ("torch", "auto"))
        row = {"file": path.name, "codec": codec, "same_bytes": torch_bytes == onnx_bytes, "max_diff": float(np.abs(a.astype(np.float64) - b).max())}
        if kind == "image":
            row["psnr_delta_db"] = psnr(media.pixels[..., :3], b[..., :3]) - psnr(media.pixels[..., :3], a[..., :3])
        rows.append(row)
        print(json.dumps(row), flush=True)
out.write_text(json.dumps(rows, indent=1))
