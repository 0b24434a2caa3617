"""Quick dev check of a vqgan recovery file, as `nmc eval --loss` scores it but for one setting and one fill.

    python -P scripts/recovery_devcheck.py RECOVERY.safetensors [recovery|mean|nearest|frequent] [s256] [independent|burst]

Each dev photo is coded at the setting, loses packets at 20 % on the channel (default independent; 2 draws, the seeds of `nmc eval
--loss` with seed 0, so the rows match its records; DRAWS=N draws 0 .. N-1, as `--loss-draws N`), and is decoded with the
fill; prints ST-LPIPS and PSNR per decode and their mean over all decodes (draws that lost nothing included, as `nmc
eval` counts them).
DEVCHECK_DIR=FOLDER checks that folder's PNGs instead of dev (e.g. held-out training photos through the codec);
PACKETS=N codes N index packets per tile instead of 8; WEIGHTS=FILE another vqgan weights file; CONCEAL_CHECK=1 compresses as
`nmc compress --conceal-check` does (prints the blocks the encoder sends to the setting's own decoder).
"""

import hashlib
import io
import os
import sys
from pathlib import Path

import numpy as np

from nmc.codec import api
from nmc.codec import loss as L
from nmc.codec.container import read_header
from nmc.codec.evaluate import Scorer, load_reference
from nmc.models.vqgan.codec import VQGANCodec

DEV = Path(os.environ.get("DEVCHECK_DIR") or Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dev" / "images")

rec, how, setting = Path(sys.argv[1]), (sys.argv[2:3] or ["recovery"])[0], (sys.argv[3:4] or ["s256"])[0]
channel = (sys.argv[4:5] or ["independent"])[0]
codec = VQGANCodec(Path(os.environ["WEIGHTS"]) if os.environ.get("WEIGHTS") else None, recovery_path=rec, concealment=how, packets=int(os.environ.get("PACKETS", "8")),
                   conceal_check=os.environ.get("CONCEAL_CHECK") == "1")  # fmt: skip
scores = []
for path in sorted(DEV.glob("*.png")):
    ref, sha = load_reference(path, "image"), hashlib.sha256(path.read_bytes()).hexdigest()
    scorer = Scorer("image", lambda: ref, ["st_lpips", "psnr"], "cpu")  # noqa: B023 (used in this iteration only)
    data = api.compress(codec, ref, setting)
    header = read_header(io.BytesIO(data), api.header_dictionary)
    packets = header.packets or 0
    if header.extra.get("own_blocks"):
        print(f"{path.name}: the encoder's trial sends blocks {header.extra['own_blocks']} to the setting's own decoder", flush=True)
    for draw in range(int(os.environ.get("DRAWS", "2"))):
        lost = L.lost_packets(packets, 0.2, channel, L.seed_of(0, sha, channel, 0.2, draw))
        s = scorer.scores([api.decompress(L.with_lost(data, lost, api.header_dictionary), recover=True, codec=codec)])[0]
        scores.append((s["st_lpips"], s["psnr"]))
        print(f"{path.name} draw {draw}: {int(lost.sum())} of {packets} lost, ST-LPIPS {s['st_lpips']:.4f}, PSNR {s['psnr']:.2f}", flush=True)
mean = np.mean(scores, axis=0)
print(f"{rec.name} {how} {setting} {channel}: mean over {len(scores)} decodes ST-LPIPS {mean[0]:.4f}, PSNR {mean[1]:.2f}")
