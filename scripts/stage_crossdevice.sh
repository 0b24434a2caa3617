#!/usr/bin/env bash
# Here, before scripts/device_crossdevice.sh: the wheels it installs on the GPU machine (Python 3.12, no
# package index) in .whl/, the dev photos and clips in .data/gpu_dev/, and ST-LPIPS (code and fp16 AlexNet
# weights) in .data/gpu_stlpips/ (all ignored; carry them: ~15 MiB).
# pesq has no wheels: it is built here with a Python 3.12 (PY312, default python3.12; pyenv has one).
set -euo pipefail
PY312=${PY312:-python3.12}
mkdir -p .whl .data/gpu_dev
cp ../shared/wheels/*.whl .whl/
python3 -m pip download -q --no-deps -d .whl --python-version 3.12 --only-binary=:all: \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  psutil pytest pluggy iniconfig hypothesis sortedcontainers attrs packaging
ls .whl/pesq-*-cp312-*.whl >/dev/null 2>&1 || $PY312 -m pip wheel -q --no-deps "pesq==0.0.4" -w .whl
rm -rf .data/gpu_dev/images .data/gpu_dev/speech
cp -r ../shared/data/dev/images ../shared/data/dev/speech .data/gpu_dev/
bash scripts/stage_stlpips.sh
du -sh .whl .data/gpu_dev .data/gpu_stlpips
