#!/usr/bin/env bash
# One device call on one H200 (issue 13), at most 8 minutes: GPU speed, cross-device quality, GPU metrics.
# Results in $OUT (7 files):
#   env.txt            GPU, torch, CPU count
#   bench.json         `nmc bench --device cpu,cuda`: one file's encode/decode speed, 1 thread vs the GPU
#   throughput.jsonl   scripts/throughput.py: `nmc batch` over 256 photos / 1152 clips (copies of the dev
#                      sets) on the GPU against --workers and rows per GPU call, and on 16 CPU workers:
#                      files/s, MP/s or x real time (whole run and once started), mean rows per call
#   crossdevice.json   scripts/crossdevice.py: encode GPU -> decode CPU and the reverse, PSNR / PESQ deltas,
#                      max pixel / sample differences, batched bytes = one-at-a-time bytes on the GPU
#   eval_gpu.json      scripts/eval_speed.py: `nmc eval` points (mcquic + jpeg, PSNR, MS-SSIM, ST-LPIPS) with
#                      the metrics on the GPU, seconds per point
#   pytest.txt         the CUDA halves of tests/test_device.py and tests/test_netcall.py
#   log.txt            everything printed
# Here, first: `bash scripts/stage_crossdevice.sh` (fills .whl, .data/gpu_dev and .data/gpu_stlpips, 14.6 MiB
# beside the 36 MiB tree); then carry [".whl", ".data/gpu_dev", ".data/gpu_stlpips"]. Each part has a time
# limit, and the throughput runs (last) get what is left of TOTAL = 450 s and stop starting when it is spent,
# so the call ends within 7.5 minutes (8 at worst: a run started in its last 25 s is cut at 25 s).
# A dry run on a CPU machine: DEV=cpu PY=.venv/bin/python INSTALL=0 OUT=/tmp/dry SMALL=1 bash scripts/device_crossdevice.sh
set -uo pipefail
OUT=${OUT:-/tmp/out} DEV=${DEV:-cuda} PY=${PY:-python3} SMALL=${SMALL:-0} TOTAL=${TOTAL:-450}
source scripts/device_setup.sh  # log, timer, install, env.txt

# 1. Cross-device quality, and batched = one at a time on the GPU (the dev files, batched on 8 workers).
# crossdevice.json is rewritten after each file (photos and clips alternate), so a time limit keeps what is done.
rm -rf /tmp/dev_batched
timeout 40 $NMC batch .data/gpu_dev /tmp/dev_batched --device "$DEV" --workers 8 --json > /tmp/dev_batched.json
timeout 100 $PY -P scripts/crossdevice.py .data/gpu_dev "$OUT/crossdevice.json" --batched /tmp/dev_batched --gpu "$DEV" | tail -n 30
at crossdevice

# 2. One file, one thread against the GPU (each network call on the GPU runs 16 rows: 15 are padding here).
timeout 45 $NMC bench samples/photo_aqua.png samples/speech_es.flac --codec hificodec,mcquic --device cpu,$DEV --threads 1 --repeat 1 --json > "$OUT/bench.json"
at bench

# 3. nmc eval with the metrics on the GPU (ST-LPIPS from .data/gpu_stlpips: fp16 weights, within 3e-6).
timeout 50 $PY -P scripts/eval_speed.py .data/gpu_dev/images "$OUT/eval_gpu.json" --device "$DEV" --workers 4 --codec mcquic --anchors jpeg
at eval

# 4. The tests' CUDA halves (skipped on the CPU machines).
timeout 40 $PY -P -m pytest -q -p no:cacheprovider -k cuda tests/test_device.py tests/test_netcall.py > "$OUT/pytest.txt" 2>&1
tail -n 3 "$OUT/pytest.txt"
at pytest

# 5. nmc batch throughput in the time left (the call ends by TOTAL s): the target rows first; runs stop
# starting when the budget is spent.
if [ "$SMALL" = 1 ]; then COPIES="--img-copies 1 --speech-copies 1" W=2; else COPIES="" W=16; fi
RUNS="img-enc:$W,img-dec:$W,speech-enc:$W,speech-dec:$W,img-enc:4,speech-enc:4,img-enc:$W:rows32,img-enc:$W:rows4,img-enc:$W:cpu,speech-enc:$W:cpu,img-dec:$W:cpu,speech-dec:$W:cpu"
BUDGET=$((TOTAL - (SECONDS - T0) - 30))
rm -rf /tmp/nmc_throughput
timeout $((BUDGET + 25)) $PY -P scripts/throughput.py .data/gpu_dev "$OUT/throughput.jsonl" --device "$DEV" --budget "$BUDGET" $COPIES --runs "$RUNS"
at "all done"
ls -la "$OUT"
