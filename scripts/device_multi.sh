#!/usr/bin/env bash
# One device call that runs several device scripts side by side on the same machine and brings their
# results back within the tool's 8 files: each job gets its own OUT (/tmp/multi/<name>); afterwards every
# file above 1 MiB moves to $OUT/<name>__<path with / as __>, and the rest (logs, json) goes into
# $OUT/small.tar.gz (unpack: tar -xzf small.tar.gz -> <name>/...).
#   usage: bash scripts/device_multi.sh 'queen=bash scripts/device_queen.sh' 'rec=MINUTES=8 bash scripts/device_recovery.sh'
# A job's environment goes inside its quotes. Carry .whl (installed once, here) and .data/weights if used. The call's exit status is the first non-zero one of its jobs.
set -uo pipefail
OUT=${OUT:-/tmp/out}
rm -rf /tmp/multi; mkdir -p "$OUT" /tmp/multi  # a warm machine keeps the last call's
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
cd /tmp/multi
find . -type f -size +1M | while read -r f; do mv "$f" "$OUT/$(echo "${f#./}" | sed 's|/|__|g')"; done
tar -czf "$OUT/small.tar.gz" .
ls -la "$OUT"
exit $rc
