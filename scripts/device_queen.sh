#!/usr/bin/env bash
# One device call for queen (issue 11): fit a Gaussian sequence on the GPU, then time the coding
# core at 100k Gaussians on that machine.
#   usage (repo root, carry .whl):  MINUTES=3.5 bash scripts/device_queen.sh   (about 7 of the 8 minutes)
# Back in $OUT (8 files at most): fit/fitted_NN.xz (the fitted frames, packed losslessly) and fit/fit.json
# (models/queen/fit.py; unpack here with `python -m nmc.models.queen.fit unpack OUT/fit DEST`),
# measure100k_cuda.json and measure100k_cpu.json (models/queen/measure.py on a generated 100k-Gaussian,
# 6-frame sequence: encode with the fits on the GPU, then on the CPU cores; decode on the CPU) and queen.log.
set -uo pipefail
MINUTES=${MINUTES:-3.5}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT/fit"
export PYTHONUNBUFFERED=1
LOG="$OUT/queen.log"
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site "${WHL:-.whl}"/*.whl || exit 1
# nmc is not pip-installed there: expose the repo folders as the nmc.* packages.
mkdir -p /tmp/nmcpkg/nmc && cp nmc/__init__.py /tmp/nmcpkg/nmc/
for d in codec models cli; do ln -sfn "$PWD/$d" /tmp/nmcpkg/nmc/$d; done
export PYTHONPATH=/tmp/site:/tmp/nmcpkg
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; nproc; } >> "$LOG" 2>&1
python3 -P -m nmc.models.queen.fit run "$OUT/fit" --minutes "$MINUTES" ${FIT_ARGS:-} >> "$LOG" 2>&1
rc=$?
python3 -P -m nmc.models.queen.scenes /tmp/g100k --gaussians 100000 --frames 6 >> "$LOG" 2>&1
for dev in cuda cpu; do  # the encoder fits its decoders and gate on the GPU, then on the CPU cores alone
  timeout 100 python3 -P -m nmc.models.queen.measure /tmp/g100k --group 6 --lam 3e-6 --psnr-every 5 --threads "$(nproc)" \
      --device $dev --json-out "$OUT/measure100k_$dev.json" >> "$LOG" 2>&1 || echo "measure $dev exit $?" >> "$LOG"
done
tail -n 40 "$LOG"
ls -la "$OUT" "$OUT/fit"
exit $rc
