#!/usr/bin/env bash
# One device call for queen (issue 11): optionally fit a Gaussian sequence on the GPU, then time the
# coding core at 100k Gaussians on that machine.
#   usage (repo root, carry .whl):  bash scripts/device_queen.sh                 (speed only, ~4-6 minutes)
#                                   FIT=1 MINUTES=3 bash scripts/device_queen.sh  (+ the fitted sequence)
# Back in $OUT (8 files at most): queen.log; with FIT=1 fit/fitted_NN.xz and fit/fit.json (models/queen/fit.py;
# unpack here with `python -m nmc.models.queen.fit unpack OUT/fit DEST`); one measure_<device>_<lam>_g<group>_f<frames>.json
# per entry of MEASURES (models/queen/measure.py on the first frames of a generated 100k-Gaussian sequence of FRAMES
# frames: encode with the fits, gate and RDOQ on the device, decode on the CPU, DECODES passes over the stream;
# rate, PSNR, static share, seconds).
# A dry run on a CPU machine: PY=.venv/bin/python INSTALL=0 THREADS=1 GAUSSIANS=2000 FRAMES=5 \
#   MEASURES="cpu:1e-6:2:4 cpu:1e-6:2:5:2" OUT=/tmp/dry bash scripts/device_queen.sh
set -uo pipefail
FIT=${FIT:-0} MINUTES=${MINUTES:-3} OUT=${OUT:-/tmp/out} PY=${PY:-python3}
GAUSSIANS=${GAUSSIANS:-100000} FRAMES=${FRAMES:-30} DECODES=${DECODES:-3}
# device:lam:group:frames[:psnr_every (5)] -- call 1's point (q1, 6 frames in one group), the default q2 in groups of 10
# over 12 frames (a keyframe, 11 residual frames, two decoder fits; call 2's points), then q2 over 30 frames (three
# groups, one keyframe: the decode rate a viewer sustains; PSNR of frames 0, 10, 20). The frames of a scene do not
# depend on its length, so all three read the one 30-frame scene. Encoding on the CPU cores (cpu:...) ran past its
# 110 s in call 2 and is left out.
MEASURES=${MEASURES:-"cuda:3e-6:6:6 cuda:1e-6:10:12 cuda:1e-6:10:30:10"}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
LOG="$OUT/queen.log"
if [ "${INSTALL:-1}" = 1 ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site "${WHL:-.whl}"/*.whl || exit 1
fi
# nmc is not pip-installed there: expose the repo folders as the nmc.* packages.
mkdir -p /tmp/nmcpkg/nmc && cp nmc/__init__.py /tmp/nmcpkg/nmc/
for d in codec models cli; do ln -sfn "$PWD/$d" /tmp/nmcpkg/nmc/$d; done
export PYTHONPATH=/tmp/site:/tmp/nmcpkg
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; nproc; git log -1 --format='%h %s' 2>/dev/null; } >> "$LOG" 2>&1
rc=0
if [ "$FIT" = 1 ]; then
  mkdir -p "$OUT/fit"
  $PY -P -m nmc.models.queen.fit run "$OUT/fit" --minutes "$MINUTES" ${FIT_ARGS:-} >> "$LOG" 2>&1
  rc=$?
fi
SCENE=/tmp/g${GAUSSIANS}
$PY -P -m nmc.models.queen.scenes "$SCENE" --gaussians "$GAUSSIANS" --frames "$FRAMES" >> "$LOG" 2>&1
echo "== scene ready at ${SECONDS} s" >> "$LOG"
for m in $MEASURES; do  # each at most MEASURE_TIMEOUT (110 s): the call ends inside 8 minutes
  IFS=: read -r dev lam group frames every <<< "$m"
  echo "== measure $m (at ${SECONDS} s)" >> "$LOG"
  timeout "${MEASURE_TIMEOUT:-110}" $PY -P -m nmc.models.queen.measure "$SCENE" --group "$group" --frames "$frames" --lam "$lam" \
      --psnr-every "${every:-5}" --decodes "$DECODES" --threads "${THREADS:-$(nproc)}" --device "$dev" \
      --json-out "$OUT/measure_${dev}_${lam}_g${group}_f${frames}.json" >> "$LOG" 2>&1 || echo "measure $m exit $?" >> "$LOG"
done
echo "== done at ${SECONDS} s" >> "$LOG"
tail -n 60 "$LOG"
ls -la "$OUT"
exit $rc
