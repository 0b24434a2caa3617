#!/usr/bin/env bash
# One device call on one H200 (issue 13, after call 3 of 2026-12-02), at most 8 minutes: `nmc batch` throughput
# with forked workers, size-ordered jobs and hificodec's bucketed windows; whether a row's numbers depend on
# its batch on this GPU; the cross-device check again (hificodec's encoder and decoder changed at the end of a clip).
# Results in $OUT (6 files):
#   env.txt            GPU, torch, CPU count
#   pytest.txt         the CUDA halves of tests/test_device.py and tests/test_netcall.py
#   crossdevice.json   scripts/crossdevice.py: GPU <-> CPU quality deltas, max differences, batched = one at a time
#   rows.jsonl         scripts/gpu_rows.py: per network function, rows equal to the 16-row batch's at batch
#                      sizes 1-32, and seconds per call (what a padded lone call costs)
#   throughput.jsonl   scripts/throughput.py: each run a fresh process; 512 photos / 1152 clips (speech: 64 copies
#                      of each dev clip, speechvar: 64 copies cut to 64 lengths, as a real directory) on 16
#                      and 32 workers (GPU, then CPU), files/s whole run and started, rows per GPU call, process s
#   log.txt            everything printed
# Carry [".whl", ".data/gpu_dev"] (from scripts/stage_crossdevice.sh; 5 MiB beside the tree).
# A dry run on a CPU machine (the shared network forced on the CPU):
#   DEV=cpu PY=.venv/bin/python INSTALL=0 OUT=/tmp/dry SMALL=1 bash scripts/device_throughput.sh
set -uo pipefail
OUT=${OUT:-/tmp/out} DEV=${DEV:-cuda} PY=${PY:-python3} SMALL=${SMALL:-0} TOTAL=${TOTAL:-450}
source scripts/device_setup.sh  # log, timer, install, env.txt

# 1. The tests' CUDA halves (skipped on the CPU machines).
timeout 40 $PY -P -m pytest -q -p no:cacheprovider -k cuda tests/test_device.py tests/test_netcall.py > "$OUT/pytest.txt" 2>&1
tail -n 3 "$OUT/pytest.txt"
at pytest

# 2. Cross-device quality and batched = one at a time on the GPU (the dev files batched on 8 workers).
rm -rf /tmp/dev_batched
timeout 40 $NMC batch .data/gpu_dev /tmp/dev_batched --device "$DEV" --workers 8 --json > /tmp/dev_batched.json
timeout 90 $PY -P scripts/crossdevice.py .data/gpu_dev "$OUT/crossdevice.json" --batched /tmp/dev_batched --gpu "$DEV" | tail -n 25
at crossdevice

# 3. A row's numbers against its batch size, and the cost of a call.
if [ "$SMALL" = 1 ]; then SIZES=1,2; else SIZES=1,2,4,8,16,32; fi
timeout 60 $PY -P scripts/gpu_rows.py .data/gpu_dev "$OUT/rows.jsonl" --device "$DEV" --sizes $SIZES
at rows

# 4. nmc batch throughput in the time left (the call ends by TOTAL s); runs stop starting when the budget is spent.
if [ "$SMALL" = 1 ]; then COPIES="--img-copies 1 --speech-copies 1 --share" W=2 W2=3; else COPIES="--img-copies 64 --speech-copies 64" W=16 W2=32; fi
# Workers wait for the GPU part of each file's time, so twice as many workers as cores may keep both busy (W2).
RUNS="speech-enc:$W,speech-dec:$W,speechvar-enc:$W,speechvar-dec:$W,img-enc:$W,img-dec:$W,img-enc:$W2,img-dec:$W2,speechvar-dec:$W2,speech-enc:$W:cpu,img-dec:$W:cpu,speech-dec:$W:rows32"
BUDGET=$((TOTAL - (SECONDS - T0) - 30))
rm -rf /tmp/nmc_throughput
timeout $((BUDGET + 25)) $PY -P scripts/throughput.py .data/gpu_dev "$OUT/throughput.jsonl" --device "$DEV" --budget "$BUDGET" $COPIES --runs "$RUNS"
at "all done"
ls -la "$OUT"
