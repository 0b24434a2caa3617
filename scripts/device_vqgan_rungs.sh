#!/usr/bin/env bash
# One device call: fine-tune vqgan's codebook-ladder rungs side by side (issue 9, models/vqgan/CARD.md).
#   usage: MINUTES=6.5 bash scripts/device_vqgan_rungs.sh     (from the repo root)
# Needs .data/images, .data/gpu_stlpips (scripts/stage_stlpips.sh), the constriction wheel in $WHL
# (default .whl) and the base network as BASE: a checkpoint folder (default .ckpt/vqgan: generator and
# discriminator, as the base training calls leave it on a warm machine or as their fp16 slim copy
# travels) or an export (generator only: the discriminator starts fresh).
#   RUNGS      codebook sizes (default 16 32 64 128 256 512 1024 2048)
#   LADDER     a ladder.py file that travelled; else it is made here from BASE, codes weighed by their
#              use on the training photos (deterministic: the same base gives the same ladder)
#   STEPS      cosine horizon of each fine-tune (train.py --total-steps; default 3000)
#   RUNG_ARGS  more train.py options for every rung (e.g. --tune-decoder, --batch 8)
#   BASELINE=1 first evaluate every rung untuned (its k-means codebook) on the held-out photos the fine-tunes report on
#   FIT=1      then fit the index priors there too (fit_prior.py, FIT_ARGS; indices on FIT_THREADS CPU
#              threads): $OUT/vqgan.safetensors is then the installable weights file (a 4th file)
# Rung i trains on GPU i mod NGPU, all at once, one process each: codebook + 1x1 convs from the base,
# GAN from step 0 with the base's discriminator. Each resumes from .ckpt/vqgan-r<S> if that exists
# (a second call on the warm machine continues). Back in $OUT (3 files): vqgan_rungs.safetensors
# (base + every rung, no priors: `fit_prior.py --network` it here), rungs.log (the logs), ladder.safetensors.
# Without a GPU (a CPU check, PY=.venv/bin/python TINY=--tiny): the same, on the CPU.
set -uo pipefail
MINUTES=${MINUTES:?minutes of fine-tuning per rung}
RUNGS=${RUNGS:-16 32 64 128 256 512 1024 2048}
STEPS=${STEPS:-3000}
BASE=${BASE:-.ckpt/vqgan}
DATA=${DATA:-.data/images}
OUT=${OUT:-/tmp/out}
PY=${PY:-python3}
TINY=${TINY:-}
LOGS=$(mktemp -d)
mkdir -p "$OUT" .ckpt
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
if command -v nvidia-smi > /dev/null; then
  NGPU=$(nvidia-smi -L | wc -l) DEVICE=cuda
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  [ "${INSTALL:-1}" = 1 ] && { $PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site "${WHL:-.whl}"/*.whl || exit 1; }
  mkdir -p /tmp/nmcpkg/nmc && cp nmc/__init__.py /tmp/nmcpkg/nmc/  # nmc is not installed there: the repo's folders as nmc.*
  for d in codec models cli; do ln -sfn "$PWD/$d" /tmp/nmcpkg/nmc/$d; done
  export PYTHONPATH=/tmp/site:/tmp/nmcpkg:$PWD/.data/gpu_stlpips
else
  NGPU=1 DEVICE=cpu
fi
[ -e "$BASE" ] || { echo "no base network at $BASE"; exit 2; }
echo "rungs $RUNGS on $NGPU $DEVICE device(s), $MINUTES min each, horizon $STEPS steps; base $BASE"

export_base=.ckpt/vqgan_base.safetensors  # the base network as the codec and the ladder read it
if [ -d "$BASE" ]; then
  $PY models/vqgan/train.py --ckpt-dir "$BASE" --max-steps 0 --holdout 0 --data "$DATA" --export $export_base \
      --log-file "$LOGS/base_export.log" $TINY > "$LOGS/base_export.stdout" 2>&1 || { cat "$LOGS/base_export.stdout"; exit 1; }
else
  cp "$BASE" $export_base
fi
if [ -z "${LADDER:-}" ]; then
  LADDER=.ckpt/ladder.safetensors
  $PY models/vqgan/ladder.py --network $export_base --out $LADDER --rungs "$(echo $RUNGS | tr ' ' ,)" --data "$DATA" \
      --device $DEVICE > "$LOGS/ladder.log" 2>&1 || { cat "$LOGS/ladder.log"; exit 1; }
fi
cat "$LOGS"/ladder.log 2>/dev/null

if [ -n "${BASELINE:-}" ]; then  # each rung's k-means codebook as it is, on the same held-out photos (~0.5 min)
  for s in $RUNGS; do
    $PY models/vqgan/train.py --data "$DATA" --ckpt-dir "$LOGS/untuned-r$s" --init "$BASE" --ladder $LADDER --rung $s --max-steps 0 \
        --log-file "$LOGS/r${s}_untuned.log" $TINY > /dev/null 2>&1 &
  done
  wait
  for s in $RUNGS; do grep -h "eval held-out" "$LOGS/r${s}_untuned.log" | sed "s/^/r$s untuned: /" | tee -a "$OUT/rungs.log"; done
fi

i=0 pids=()
for s in $RUNGS; do
  CUDA_VISIBLE_DEVICES=$((i % NGPU)) $PY models/vqgan/train.py --data "$DATA" --ckpt-dir .ckpt/vqgan-r$s --init "$BASE" \
      --ladder $LADDER --rung $s --disc-start 0 --adv-ramp ${ADV_RAMP:-200} --warmup ${WARMUP:-100} --total-steps $STEPS \
      --minutes "$MINUTES" --log-file "$LOGS/r$s.log" --export "$LOGS/r$s.safetensors" $TINY ${RUNG_ARGS:-} > "$LOGS/r$s.stdout" 2>&1 &
  pids+=($!) i=$((i + 1))
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done

tuned=()
for s in $RUNGS; do
  { echo "== rung $s"; cat "$LOGS/r$s.log" 2>/dev/null || tail -n 20 "$LOGS/r$s.stdout"; } >> "$OUT/rungs.log"
  if [ -f "$LOGS/r$s.safetensors" ]; then tuned+=(--rung "$LOGS/r$s.safetensors"); else echo "rung $s: no export (its k-means codebook goes in untuned)"; rc=1; fi
  grep -h "stopped at\|eval held-out" "$LOGS/r$s.log" 2>/dev/null | sed "s/^/r$s: /"
done
cat "$LOGS/base_export.log" >> "$OUT/rungs.log" 2>/dev/null
$PY models/vqgan/fit_prior.py --network $export_base --ladder $LADDER "${tuned[@]}" --out "$OUT/vqgan_rungs.safetensors" --assemble-only || rc=1
cp $LADDER "$OUT/ladder.safetensors"
if [ -n "${FIT:-}" ]; then  # the priors too (minutes on the CPU here, ~1-2 min there): an installable file
  $PY models/vqgan/fit_prior.py --network "$OUT/vqgan_rungs.safetensors" --out "$OUT/vqgan.safetensors" --data "$DATA" \
      --device $DEVICE --threads ${FIT_THREADS:-8} --no-real-rates ${FIT_ARGS:-} > "$LOGS/fit_prior.log" 2>&1 || rc=1
  cat "$LOGS/fit_prior.log"; cat "$LOGS/fit_prior.log" >> "$OUT/rungs.log"
fi
ls -la "$OUT"
exit $rc
