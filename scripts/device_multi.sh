#!/usr/bin/env bash
# One device call that runs several device scripts side by side on the same machine and brings their
# results back within the tool's limits: each job gets its own OUT (/tmp/multi/<name>); afterwards every
# file above 1 MiB becomes <name>__<path with / as __>, and the rest (logs, json) goes into small.tar.gz
# (unpack: tar -xzf small.tar.gz -> <name>/...); see the end for what fits in $OUT.
#   usage: bash scripts/device_multi.sh 'queen=bash scripts/device_queen.sh' 'rec=MINUTES=8 bash scripts/device_recovery.sh'
# A job's environment goes inside its quotes. Carry .whl (installed once, here) and .data/weights if used. The call's exit status is the first non-zero one of its jobs.
set -uo pipefail
OUT=${OUT:-/tmp/out}
rm -rf /tmp/multi; mkdir -p "$OUT" /tmp/multi /tmp/results  # a warm machine keeps the last call's
# Install the carried wheels once (the jobs get INSTALL=0: parallel pip installs into one folder race), and
# put weights that travelled in .data/weights/ (carried while the tracked copies stay out of the tree) in place.
if [ -d .whl ] && [ ! -f /tmp/site/soundfile.py ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
for w in .data/weights/*.safetensors; do
  [ -f "$w" ] || continue
  case $(basename "$w") in hificodec*) d=hificodec;; mcquic*) d=mcquic;; vqgan*|recovery*) d=vqgan;; *) continue;; esac
  cp "$w" models/$d/weights/
done
export INSTALL=0
pids=() names=()
for job in "$@"; do
  name=${job%%=*} cmd=${job#*=}
  rm -rf "/tmp/multi/$name" && mkdir -p "/tmp/multi/$name"
  OUT="/tmp/multi/$name" bash -c "$cmd" > "/tmp/multi/$name/stdout.txt" 2>&1 &
  pids+=($!) names+=("$name")
done
rc=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"; r=$?
  echo "== ${names[$i]} exit $r"; tail -n 15 "/tmp/multi/${names[$i]}/stdout.txt"
  [ $rc = 0 ] && rc=$r
done
# The tool brings back at most 8 files, 16 MiB each, 64 MiB together, and drops EVERYTHING else silently
# (session 5 lost four trained rungs that way). So results go to /tmp/results, which the next call on the
# same warm machine keeps; what fits (in the jobs' order, small.tar.gz first) is copied to $OUT, and the rest
# is listed: fetch it in the next call with `FETCH="name ..." bash scripts/device_multi.sh ...`.
cd /tmp/multi
rm -rf /tmp/results.new && mkdir -p /tmp/results.new
find . -type f -size +1M | sort | while read -r f; do mv "$f" "/tmp/results.new/$(echo "${f#./}" | sed 's|/|__|g')"; done
tar -czf /tmp/results.new/small.tar.gz .
# Files asked for from the previous call's results come first, then this call's.
for f in ${FETCH:-}; do [ -f "/tmp/results/$f" ] && mv "/tmp/results/$f" /tmp/results.new/ || echo "FETCH: no /tmp/results/$f"; done
rm -rf /tmp/results.prev && mv /tmp/results /tmp/results.prev && mv /tmp/results.new /tmp/results  # .prev: a last resort
python3 - "$OUT" <<'PY'
import os, shutil, sys
out, cap, total, n = sys.argv[1], 16 << 20, 0, 0
for name in ["small.tar.gz"] + sorted(os.listdir("/tmp/results"), key=lambda f: os.path.getmtime(f"/tmp/results/{f}")):
    path = f"/tmp/results/{name}"
    if name == "small.tar.gz" and n: continue
    size = os.path.getsize(path)
    if n < 8 and size <= cap and total + size <= 64 << 20:
        shutil.copy(path, out); total += size; n += 1
    else:
        print(f"LEFT ON THE MACHINE (fetch next call with FETCH=): {name} {size / 2**20:.1f} MiB")
PY
ls -la "$OUT"
exit $rc
