"""Loss-free decodes of the dev photos at s1024, through the network's decoder and through a recovery file's concealing
decoder (mean ST-LPIPS and PSNR): what a concealing decoder gives with nothing lost, the reference its recovery must be
judged against.

    python -P scripts/conceal_lossfree.py RECOVERY.safetensors
"""
import hashlib, io, sys
from pathlib import Path
import numpy as np, torch
from nmc.codec import api
from nmc.codec.evaluate import Scorer, load_reference
import nmc.models.vqgan.codec as VC
from nmc.models.vqgan.tiling import _pixels

if len(sys.argv) != 2:
    raise SystemExit(__doc__)
codec = VC.VQGANCodec(recovery_path=Path(sys.argv[1]))
codec.recovery  # loads the concealer
net = codec.model.net
size = 1024
codes = net.unit_codes(size)
grids = {}
orig = VC.synthesise
def capture(run, out, grid, box, size_, margin, gray, masked=None):
    grids.setdefault("g", grid); return orig(run, out, grid, box, size_, margin, gray, masked)
res = {False: [], True: []}
DEV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dev" / "images"
for path in sorted(DEV.glob("*.png")):
    ref = load_reference(path, "image")
    scorer = Scorer("image", lambda: ref, ["st_lpips", "psnr"], "cpu")
    fo = io.BytesIO(); api.compress_to_file(codec, ref, fo, codec.setting("s1024"))
    grids.clear(); VC.synthesise = capture; api.decompress(fo.getvalue(), codec=codec); VC.synthesise = orig
    g = torch.from_numpy(grids["g"])
    h, w = ref.pixels.shape[:2]
    for c in (False, True):
        with torch.inference_mode():
            x = net.synthesize(codes[g].permute(2, 0, 1)[None], size, concealed=c)
        px = _pixels(x, False)[0].permute(1, 2, 0).numpy()[:h, :w]
        from nmc.codec import media as M
        s = scorer.scores([M.Image(np.ascontiguousarray(px))])[0]
        res[c].append((s["st_lpips"], s["psnr"]))
for c in (False, True):
    m = np.mean(res[c], axis=0); print("concealing decoder" if c else "base decoder", f"loss-free s1024 ST-LPIPS {m[0]:.4f} PSNR {m[1]:.2f}")
