#!/usr/bin/env bash
# Stage ST-LPIPS for a vqgan training call: the GPU image has no stlpips_pytorch, and its wheel (66 MB, VGG
# weights included) is too large to carry. Copies the installed package's code and its AlexNet weights
# (weights/vST0.0/alex_shift_tolerant.pth, 9.9 MB: backbone and linear heads; nothing is downloaded at run
# time) into .data/gpu_stlpips, which scripts/device_train.sh puts on PYTHONPATH. Carry .data/gpu_stlpips.
#   usage: bash scripts/stage_stlpips.sh        (from the repo root, after `make install`)
set -euo pipefail
PY=${PY:-.venv/bin/python}
src=$("$PY" -c "import importlib.util as u; print(u.find_spec('stlpips_pytorch').submodule_search_locations[0])")
dst=.data/gpu_stlpips/stlpips_pytorch
rm -rf .data/gpu_stlpips
mkdir -p "$dst/weights/vST0.0"
(cd "$src" && find . -name '*.py' -not -path '*/__pycache__/*' -exec cp --parents {} "$OLDPWD/$dst" \;)
cp "$src/weights/vST0.0/alex_shift_tolerant.pth" "$dst/weights/vST0.0/"
du -sh .data/gpu_stlpips
