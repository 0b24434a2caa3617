"""Loss-free decodes of the dev photos at one codebook size (default 1024), through the network's decoder and through a
recovery file's concealing decoder for that size (mean ST-LPIPS and PSNR): what a concealing decoder gives with nothing
lost, the reference its recovery must be judged against.

    python -P scripts/conceal_lossfree.py RECOVERY.safetensors [SIZE]

WEIGHTS=FILE another vqgan weights file (the one the recovery file's decoder was trained from: a recovery file binds
the decoders it was trained against, and a decoder it does not bind is not loaded).
"""

import os
import sys
from pathlib import Path

import numpy as np
import torch

from nmc.codec import media as M
from nmc.codec.evaluate import Scorer, load_reference
from nmc.models.vqgan.codec import VQGANCodec
from nmc.models.vqgan.tiling import net_decode_codes, net_decode_concealed, net_indices

DEV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dev" / "images"
if len(sys.argv) not in (2, 3):
    raise SystemExit(__doc__)
SIZE = int((sys.argv[2:] or ["1024"])[0])
codec = VQGANCodec(Path(os.environ["WEIGHTS"]) if os.environ.get("WEIGHTS") else None, recovery_path=Path(sys.argv[1]))
codec.recovery  # noqa: B018  (loading the file sets its concealing decoder on the network)
net, unit = codec.model.net, codec.model.net.unit_codes(SIZE)
scores: dict[str, list[tuple[float, float]]] = {"base decoder": [], "concealing decoder": []}
with torch.inference_mode():
    for path in sorted(DEV.glob("*.png")):
        ref = load_reference(path, "image")
        scorer = Scorer("image", lambda: ref, ["st_lpips", "psnr"], "cpu")  # noqa: B023 (used in this iteration only)
        h, w = ref.pixels.shape[:2]
        (grid,) = net_indices(net, torch.from_numpy(ref.pixels[None]), (SIZE,))  # one window: the codec's single tile
        for name, decode in zip(scores, (net_decode_codes, net_decode_concealed)):
            pixels = decode(net, unit[grid], SIZE, False)[0].permute(1, 2, 0).numpy()[:h, :w]
            s = scorer.scores([M.Image(np.ascontiguousarray(pixels))])[0]
            scores[name].append((s["st_lpips"], s["psnr"]))
for name, v in scores.items():
    m = np.mean(v, axis=0)
    print(f"{name}: loss-free s{SIZE} ST-LPIPS {m[0]:.4f} PSNR {m[1]:.2f}")
