#!/usr/bin/env bash
# One device call: fine-tune vqgan's codebook-ladder rungs side by side (issue 9, models/vqgan/CARD.md).
#   usage: MINUTES=6.5 bash scripts/device_vqgan_rungs.sh     (from the repo root)
# Next call (recipe #2: no GAN, lr 5e-5; as a job of scripts/device_multi.sh, which puts the carried
# .data/weights/vqgan.safetensors into models/vqgan/weights/ and installs .whl; the whole command, the
# decoder A/B job beside it and the carry list: models/vqgan/CARD.md, "Next call"):
#   BASE=models/vqgan/weights/vqgan.safetensors RUNGS="16 32 64 128" MINUTES=5 STEPS=1200 BASELINE=1 FIT=1 \
#     RUNG_ARGS="--disc-start 100000 --lr 5e-5" bash scripts/device_vqgan_rungs.sh
#   carry [".data/gpu_stlpips", ".data/weights/vqgan.safetensors"] (the three weights hidden from the tree) on a
#   machine warm with .whl and .data/images; a fresh one also [".data/images", ".whl"], and then the hificodec
#   campaign shard must be hidden too (66.0 MiB with it, over the 64 MiB limit)
# Needs .data/images, .data/gpu_stlpips (scripts/stage_stlpips.sh), the constriction wheel in $WHL
# (default .whl; INSTALL=0: installed already, as scripts/device_multi.sh does) and the base network as BASE:
# a checkpoint folder (default .ckpt/vqgan: generator and discriminator, as the base training calls leave
# it on a warm machine or as their fp16 slim copy travels), an export, or an assembled weights file such as
# the installed models/vqgan/weights/vqgan.safetensors (its base network; its rungs are the ladder, below).
# From a file the discriminator starts fresh (no matter with RUNG_ARGS="--disc-start 100000": no GAN).
#   RUNGS      codebook sizes (default 16 32 64 128 256 512 1024 2048)
#   LADDER     a ladder.py file that travelled; else from an assembled BASE its rungs as they are numbered
#              there (`ladder.py --from-weights`: the shipped priors and recovery maps keep fitting), from
#              any other BASE a k-means ladder made here, codes weighed by their use on the training photos
#              (deterministic: the same base gives the same ladder)
#   STEPS      cosine horizon of each fine-tune (train.py --total-steps; default 3000)
#   RUNG_ARGS  more train.py options for every rung, after the defaults below, so they win (e.g.
#              "--disc-start 100000 --lr 5e-5": no GAN, lower lr; --tune-decoder; --batch 8)
#   TAG        names this run's files in .ckpt (.ckpt/vqgan-r<S>-<TAG>): a second recipe for the same rungs
#              (e.g. TAG=dec with --tune-decoder) neither resumes the first one's checkpoints nor races its files
#   BASELINE=1 first evaluate every rung untuned (its ladder codebook) on the held-out photos the fine-tunes report on
#   EXPORTS=1  bring each rung's export back as r<S>.safetensors (~11 MB) instead of the assembled file (with
#              --tune-decoder: base + two decoders pass the 16 MiB a returned file may have); assemble here with
#              `fit_prior.py --network models/vqgan/weights/vqgan.safetensors --rung r16.safetensors ...`
#   FIT=1      then fit the index priors there too (fit_prior.py, FIT_ARGS; indices on FIT_THREADS CPU
#              threads): $OUT/vqgan.safetensors is then the installable weights file (a 4th file)
# Rung i trains on GPU i mod NGPU, all at once, one process each: codebook + 1x1 convs from the base,
# GAN from step 0 unless RUNG_ARGS says otherwise. Each resumes from .ckpt/vqgan-r<S>[-<TAG>] if that exists
# (a second call on the warm machine continues). Back in $OUT (3 files): vqgan_rungs.safetensors
# (base + every rung, the base file's other rungs untouched; no priors: `fit_prior.py --network` it here),
# rungs.log (the logs), ladder.safetensors.
# Without a GPU (a CPU check, PY=.venv/bin/python TINY=--tiny): the same, on the CPU; every step in ~2 min
# with the installed weights and a few small photos (or a tiny assembled file; CARD, "CPU check"):
#   PY=.venv/bin/python TINY=--tiny MINUTES=0.2 STEPS=1200 RUNGS="16 32" BASE=models/vqgan/weights/vqgan.safetensors \
#     DATA=<a few small photos> BASELINE=1 FIT=1 FIT_ARGS="--steps 2 --batch 64" FIT_THREADS=1 \
#     RUNG_ARGS="--disc-start 100000 --lr 5e-5" OUT=/tmp/o bash scripts/device_vqgan_rungs.sh
set -uo pipefail
MINUTES=${MINUTES:?minutes of fine-tuning per rung}
RUNGS=${RUNGS:-16 32 64 128 256 512 1024 2048}
STEPS=${STEPS:-3000}
BASE=${BASE:-.ckpt/vqgan}
DATA=${DATA:-.data/images}
OUT=${OUT:-/tmp/out}
PY=${PY:-python3}
TINY=${TINY:-}
TAG=${TAG:+-$TAG}  # "-<tag>" or nothing
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
[ -n "${FIT:-}" ] && [ -n "${EXPORTS:-}" ] && { echo "FIT=1 with EXPORTS=1: fit the priors here, on the assembled exports"; exit 2; }
echo "rungs $RUNGS on $NGPU $DEVICE device(s), $MINUTES min each, horizon $STEPS steps; base $BASE${TAG:+, folders .ckpt/*$TAG}"

export_base=.ckpt/vqgan_base$TAG.safetensors  # the base network as the codec and the ladder read it
if [ -d "$BASE" ]; then
  $PY models/vqgan/train.py --ckpt-dir "$BASE" --max-steps 0 --holdout 0 --data "$DATA" --export $export_base \
      --log-file "$LOGS/base_export.log" $TINY > "$LOGS/base_export.stdout" 2>&1 || { cat "$LOGS/base_export.stdout"; exit 1; }
else
  cp "$BASE" $export_base
fi
if [ -z "${LADDER:-}" ]; then
  LADDER=.ckpt/ladder$TAG.safetensors
  if [ -f "$BASE" ] && $PY -P -c "import sys; from nmc.codec.weights import read_args; sys.exit('rungs' not in read_args(sys.argv[1]))" "$BASE"; then
    ladder_from=(--from-weights "$BASE")  # an assembled file: its rungs, numbered as its priors and recovery maps know them
  else
    ladder_from=(--network $export_base --rungs "$(echo $RUNGS | tr ' ' ,)" --data "$DATA" --device $DEVICE)
  fi
  $PY models/vqgan/ladder.py "${ladder_from[@]}" --out $LADDER > "$LOGS/ladder.log" 2>&1 || { cat "$LOGS/ladder.log"; exit 1; }
fi
cat "$LOGS"/ladder.log 2>/dev/null

if [ -n "${BASELINE:-}" ]; then  # each rung's ladder codebook as it is, on the same held-out photos (~0.5 min)
  for s in $RUNGS; do
    $PY models/vqgan/train.py --data "$DATA" --ckpt-dir "$LOGS/untuned-r$s" --init "$BASE" --ladder $LADDER --rung $s --max-steps 0 \
        --log-file "$LOGS/r${s}_untuned.log" $TINY > /dev/null 2>&1 &
  done
  wait
  for s in $RUNGS; do grep -h "eval held-out" "$LOGS/r${s}_untuned.log" | sed "s/^/r$s untuned: /" | tee -a "$OUT/rungs.log"; done
fi

i=0 pids=()
for s in $RUNGS; do
  CUDA_VISIBLE_DEVICES=$((i % NGPU)) $PY models/vqgan/train.py --data "$DATA" --ckpt-dir .ckpt/vqgan-r$s$TAG --init "$BASE" \
      --ladder $LADDER --rung $s --disc-start 0 --adv-ramp ${ADV_RAMP:-200} --warmup ${WARMUP:-100} --total-steps $STEPS \
      --minutes "$MINUTES" --log-file "$LOGS/r$s.log" --export "$LOGS/r$s.safetensors" $TINY ${RUNG_ARGS:-} > "$LOGS/r$s.stdout" 2>&1 &
  pids+=($!) i=$((i + 1))
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done

tuned=()
for s in $RUNGS; do
  { echo "== rung $s"; cat "$LOGS/r$s.log" 2>/dev/null || tail -n 20 "$LOGS/r$s.stdout"; } >> "$OUT/rungs.log"
  if [ -f "$LOGS/r$s.safetensors" ]; then tuned+=(--rung "$LOGS/r$s.safetensors"); else echo "rung $s: no export (its ladder codebook goes in untuned)"; rc=1; fi
  grep -h "stopped at\|eval held-out" "$LOGS/r$s.log" 2>/dev/null | sed "s/^/r$s: /"
done
cat "$LOGS/base_export.log" >> "$OUT/rungs.log" 2>/dev/null
assembled=$OUT/vqgan_rungs.safetensors
if [ -n "${EXPORTS:-}" ]; then  # the rungs' exports come back instead; the assembly still checks them
  for s in $RUNGS; do [ -f "$LOGS/r$s.safetensors" ] && cp "$LOGS/r$s.safetensors" "$OUT/r$s.safetensors"; done
  assembled=$LOGS/vqgan_rungs.safetensors
fi
$PY models/vqgan/fit_prior.py --network $export_base --ladder $LADDER "${tuned[@]}" --out "$assembled" --assemble-only || rc=1
cp $LADDER "$OUT/ladder.safetensors"
if [ -n "${FIT:-}" ]; then  # the priors too (minutes on the CPU here, ~1-2 min there): an installable file
  $PY models/vqgan/fit_prior.py --network "$OUT/vqgan_rungs.safetensors" --out "$OUT/vqgan.safetensors" --data "$DATA" \
      --device $DEVICE --threads ${FIT_THREADS:-8} --no-real-rates ${FIT_ARGS:-} > "$LOGS/fit_prior.log" 2>&1 || rc=1
  cat "$LOGS/fit_prior.log"; cat "$LOGS/fit_prior.log" >> "$OUT/rungs.log"
fi
ls -la "$OUT"
exit $rc
