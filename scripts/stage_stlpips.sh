#!/usr/bin/env bash
# Stage ST-LPIPS for a vqgan training call: the GPU image has no stlpips_pytorch, and its wheel (66 MB, VGG
# weights included) is too large to carry. Copies the installed package's code and its AlexNet weights
# (weights/vST0.0/alex_shift_tolerant.pth, backbone and linear heads, as fp16; nothing is downloaded at run
# time) into .data/gpu_stlpips, which scripts/device_train.sh puts on PYTHONPATH. Carry .data/gpu_stlpips.
#   usage: bash scripts/stage_stlpips.sh        (from the repo root, after `make install`)
set -euo pipefail
PY=${PY:-.venv/bin/python}
src=$("$PY" -c "import importlib.util as u; print(u.find_spec('stlpips_pytorch').submodule_search_locations[0])")
dst=.data/gpu_stlpips/stlpips_pytorch
rm -rf .data/gpu_stlpips
mkdir -p "$dst/weights/vST0.0"
(cd "$src" && find . -name '*.py' -not -path '*/__pycache__/*' -exec cp --parents {} "$OLDPWD/$dst" \;)
# fp16 copy (4.8 instead of 9.5 MiB, so the photos, the package and the wheels travel in one call); the
# package's load_state_dict casts it back to fp32: outputs within 1e-3 of the original (checked below).
"$PY" - "$src/weights/vST0.0/alex_shift_tolerant.pth" "$dst/weights/vST0.0/alex_shift_tolerant.pth" <<'PY'
import sys, torch
sd = torch.load(sys.argv[1], map_location="cpu")
torch.save({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, sys.argv[2])
PY
"$PY" - "$dst/weights/vST0.0/alex_shift_tolerant.pth" <<'PY'
import copy, sys, torch
from nmc.codec.metrics import _st_lpips_model
torch.manual_seed(0)
a, b = torch.rand(2, 4, 3, 64, 64) * 2 - 1
net = copy.deepcopy(_st_lpips_model("alex"))
ref = net(a, b).flatten()
missing, unexpected = net.load_state_dict(torch.load(sys.argv[1], map_location="cpu"), strict=False)
assert not unexpected and all(k.startswith("lins.") for k in missing), (missing, unexpected)  # lins aliases lin0..4
err = (net(a, b).flatten() - ref).abs().max().item()
assert err < 1e-3, err
print(f"fp16 weights: ST-LPIPS within {err:.1e} of the original")
PY
du -sh .data/gpu_stlpips
