#!/usr/bin/env bash
# One device call on one H200 (issue 13, after call 4 of 2026-12-02), at most 8 minutes: `nmc batch` throughput
# with mcquic's 4-row GPU calls (16 before), the server loading CUDA and the networks while the workers start,
# and where the start-up goes; the cross-device check and batched = one at a time again (mcquic's calls changed).
# Results in $OUT (6 files):
#   env.txt            GPU, torch, CPU count
#   pytest.txt         the CUDA halves of tests/test_device.py and tests/test_netcall.py
#   crossdevice.json   scripts/crossdevice.py: GPU <-> CPU quality deltas, max differences, batched = one at a time
#   rows.jsonl         scripts/gpu_rows.py: per network function, rows equal to those of a call of the function's
#                      rows (mcquic 4, hificodec 16) at batch sizes 1-16, and seconds per call
#   cpu2.jsonl         2 idle cores (taskset -c 0,1): `nmc batch --device cpu` with 1 and 2 workers, wall seconds (CPU2=0: skip)
#   throughput.jsonl   scripts/throughput.py: each run a fresh process; 512 photos / 1152 clips (speech: 64 copies
#                      of each dev clip, speechvar: 64 copies cut to 64 lengths, as a real directory; x4: 4 times
#                      as many) on 16 workers (12 for one run), files/s whole run and started, rows per GPU call,
#                      time to the first file, server start / warm / first call, server busy s, CPU s, process s;
#                      rowsN: every call N rows (rows16: as in call 4, the A/B of mcquic's 4 rows)
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

# 2b. The 2-core target (`nmc batch --workers 2` >= 1.7x one worker on the CPU): the shared 2-core box cannot show it
# (its scheduler shares CPUs by session), so here on 2 idle cores of this machine (taskset), whole commands as a user
# runs them: 72 clips (the dev clips 4 times) and 24 photos (the dev photos 3 times), 1 then 2 workers, twice.
CPU2=${CPU2:-1}
if [ "$CPU2" = 1 ]; then
  rm -rf /tmp/cpu2 && mkdir -p /tmp/cpu2/clips /tmp/cpu2/photos
  for k in 1 2 3 4; do for f in .data/gpu_dev/speech/*; do ln -s "$PWD/$f" "/tmp/cpu2/clips/${k}_$(basename "$f")"; done; done
  for k in 1 2 3; do for f in .data/gpu_dev/images/*; do ln -s "$PWD/$f" "/tmp/cpu2/photos/${k}_$(basename "$f")"; done; done
  for rep in 1 2; do for kind in clips photos; do for w in 1 2; do
    rm -rf /tmp/cpu2/out; t=$(date +%s.%N)
    timeout 60 taskset -c 0,1 $NMC batch /tmp/cpu2/$kind /tmp/cpu2/out --device cpu --workers $w > /dev/null 2>&1; rc=$?
    echo "{\"run\": \"$kind-cpu-2cores-w$w\", \"rep\": $rep, \"files\": $(ls /tmp/cpu2/$kind | wc -l), \"out\": $(ls /tmp/cpu2/out 2>/dev/null | wc -l), \"rc\": $rc, \"wall_s\": $(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}')}" | tee -a "$OUT/cpu2.jsonl"
  done; done; done
  at cpu2
fi

# 3. A row's numbers against its batch size, and the cost of a call.
if [ "$SMALL" = 1 ]; then SIZES=1,2; else SIZES=1,2,4,8,16; fi
timeout 60 $PY -P scripts/gpu_rows.py .data/gpu_dev "$OUT/rows.jsonl" --device "$DEV" --sizes $SIZES
at rows

# 4. nmc batch throughput in the time left (the call ends by TOTAL s); runs stop starting when the budget is spent,
# so the runs come in the order they matter: call 4's six, the A/B of mcquic's rows, hificodec's decoder on 8-row
# calls (6.8 ms against 10.3 for 16 in call 4), fewer workers than cores, then a directory 4 times larger (how
# much of the whole-run rate is start-up).
if [ "$SMALL" = 1 ]; then COPIES="--img-copies 1 --speech-copies 1 --share" W=2 W3=1; else COPIES="--img-copies 64 --speech-copies 64" W=16 W3=12; fi
RUNS="speech-enc:$W,speech-dec:$W,speechvar-enc:$W,speechvar-dec:$W,img-enc:$W,img-dec:$W,img-enc:$W:rows16,img-dec:$W:rows16,speech-dec:$W:rows8,img-dec:$W3,speech-enc:$W:x4,speech-dec:$W:x4"
BUDGET=$((TOTAL - (SECONDS - T0) - 30))
rm -rf /tmp/nmc_throughput
timeout $((BUDGET + 25)) $PY -P scripts/throughput.py .data/gpu_dev "$OUT/throughput.jsonl" --device "$DEV" --budget "$BUDGET" $COPIES --runs "$RUNS"
at "all done"
ls -la "$OUT"
