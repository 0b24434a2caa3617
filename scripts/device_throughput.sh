#!/usr/bin/env bash
# One device call on one H200 (issue 13; written after call 4 of 2026-12-02, cpu2 and the run order after call 6), at
# most 9 minutes: `nmc batch` throughput, where the start-up goes, the cross-device check and batched = one at a time.
# Results in $OUT (7 files):
#   env.txt            GPU, torch, CPU count, the CPU topology (lscpu -e) and the CPUs the cpu2 runs took
#   pytest.txt         the CUDA halves of tests/test_device.py and tests/test_netcall.py
#   crossdevice.json   scripts/crossdevice.py: GPU <-> CPU quality deltas, max differences, batched = one at a time
#   rows.jsonl         scripts/gpu_rows.py: per network function, rows equal to those of a call of the function's
#                      rows (mcquic 4, hificodec 16) at batch sizes 1-16, and seconds per call
#   cpu2.jsonl         2 idle CPUs (taskset; two cores, then one core's two threads where the machine has SMT):
#                      scripts/throughput.py rows of `batch.run` on the CPU with 1 and 2 workers (CPU2=0: skip)
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
OUT=${OUT:-/tmp/out} DEV=${DEV:-cuda} PY=${PY:-python3} SMALL=${SMALL:-0} TOTAL=${TOTAL:-540}
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
# (its scheduler shares CPUs by session), so here on 2 idle CPUs of this machine (taskset), each run a fresh process
# (scripts/throughput.py: files/s over the whole run and once started, CPU s, process s = the whole process but the
# CLI's own imports). Call 6 took CPUs 0,1, which may be two threads of one core: the topology goes to env.txt, and
# the runs take two CPUs of distinct cores ("cores", the 2-core machine: 1 then 2 workers, encode then decode), then,
# if the machine has SMT, two threads of one core ("smt", encode only: what call 6 measured?). 108 clips (the dev
# clips 6 times), 40 photos (the dev photos 5 times); each pair has its own budget (CPU2_BUDGET, SMT_BUDGET s).
CPU2=${CPU2:-1}
if [ "$CPU2" = 1 ]; then
  read -r CORES SMT < <($PY - <<'PAIRS'
import os
cpus = sorted(os.sched_getaffinity(0))
sib = {c: open(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list").read().strip() for c in cpus}
a = cpus[0]
other = next((c for c in cpus if sib[c] != sib[a]), None)  # on another core
twin = next((c for c in cpus if c != a and sib[c] == sib[a]), None)  # the same core's other thread
print(f"{a},{other}" if other is not None else "-", f"{a},{twin}" if twin is not None else "-")
PAIRS
)
  { lscpu -e=CPU,CORE,SOCKET,NODE,ONLINE 2>/dev/null | head -n 40; echo "cpu2 pairs: cores $CORES, smt $SMT"; } | tee -a "$OUT/env.txt"
  if [ "$SMALL" = 1 ]; then C2="--speech-copies 1 --img-copies 1"; else C2="--speech-copies 6 --img-copies 5"; fi
  rm -rf /tmp/cpu2
  if [ "$CORES" != - ]; then
    timeout $((${CPU2_BUDGET:-170} + 25)) taskset -c "$CORES" $PY -P scripts/throughput.py .data/gpu_dev "$OUT/cpu2.jsonl" --device cpu --tmp /tmp/cpu2 \
      $C2 --budget "${CPU2_BUDGET:-170}" --tag="-cores$CORES" --runs speech-enc:1:cpu,speech-enc:2:cpu,img-enc:1:cpu,img-enc:2:cpu,speech-dec:1:cpu,speech-dec:2:cpu,img-dec:1:cpu,img-dec:2:cpu
  fi
  if [ "$SMT" != - ]; then
    timeout $((${SMT_BUDGET:-75} + 25)) taskset -c "$SMT" $PY -P scripts/throughput.py .data/gpu_dev "$OUT/cpu2.jsonl" --device cpu --tmp /tmp/cpu2 \
      $C2 --budget "${SMT_BUDGET:-75}" --tag="-smt$SMT" --runs speech-enc:1:cpu,speech-enc:2:cpu,img-enc:1:cpu,img-enc:2:cpu
  fi
  at cpu2
fi

# 3. A row's numbers against its batch size, and the cost of a call.
if [ "$SMALL" = 1 ]; then SIZES=1,2; else SIZES=1,2,4,8,16; fi
timeout 60 $PY -P scripts/gpu_rows.py .data/gpu_dev "$OUT/rows.jsonl" --device "$DEV" --sizes $SIZES
at rows

# 4. nmc batch throughput in the time left (the call ends by TOTAL s); runs stop starting when the budget is spent,
# so the runs come in the order they matter: the targets' directories (4608 clips, 512 photos), call 4's 1152 clips,
# hificodec's decoder on 8-row calls, the A/B of mcquic's rows, clips of distinct lengths, fewer workers than cores.
if [ "$SMALL" = 1 ]; then COPIES="--img-copies 1 --speech-copies 1 --share" W=2 W3=1; else COPIES="--img-copies 64 --speech-copies 64" W=16 W3=12; fi
RUNS="speech-enc:$W:x4,speech-dec:$W:x4,img-enc:$W,img-dec:$W,speech-enc:$W,speech-dec:$W,speech-dec:$W:rows8,img-enc:$W:rows16,img-dec:$W:rows16,speechvar-enc:$W,speechvar-dec:$W,img-dec:$W3"
BUDGET=$((TOTAL - (SECONDS - T0) - 30))
rm -rf /tmp/nmc_throughput
timeout $((BUDGET + 25)) $PY -P scripts/throughput.py .data/gpu_dev "$OUT/throughput.jsonl" --device "$DEV" --budget "$BUDGET" $COPIES --runs "$RUNS"
at "all done"
ls -la "$OUT"
