#!/usr/bin/env bash
# One device call: train hificodec and mcquic (and/or vqgan) side by side on the lent GPU machine.
#   usage: MINUTES=8.5 scripts/device_train.sh        (from the repo root; carry .data and .whl)
#          MINUTES=8.5 JOBS=vqgan scripts/device_train.sh   (needs .data/images, .data/gpu_stlpips and .whl there)
# Each job is torchrun + DDP over all GPUs (they share them) and resumes from $CKPT_ROOT/<name> (default .ckpt), which a
# warm machine keeps between calls; on a fresh machine, .ckpt/<name> travels with `carry` or the
# job starts as HIFI_ARGS / MCQ_ARGS say (e.g. --init). Back in $OUT: the logs and a copy of each
# checkpoint without optimizer moments (8 files at most come back; export locally with train.py --max-steps 0 --export).
# JOBS=hificodec or JOBS=mcquic trains one of them only; FIT="hificodec mcquic" also fits their priors (below); JOBS=vqgan needs the ST-LPIPS package staged by
# scripts/stage_stlpips.sh (VQ_ARGS adds options) and brings back an fp16 moment-free checkpoint.
set -uo pipefail
MINUTES=${MINUTES:?minutes}
JOBS=${JOBS:-hificodec mcquic}
OUT=${OUT:-/tmp/out}
NGPU=$(nvidia-smi -L | wc -l)
CKPT_ROOT=${CKPT_ROOT:-.ckpt}  # a second run of the same job beside this one: its own CKPT_ROOT, PORT0 and OUT
mkdir -p "$OUT" "$CKPT_ROOT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
# WHL: the wheel folder carried (default .whl; a vqgan-only call needs just constriction, e.g. .whl_vq)
if [ "${INSTALL:-1}" = 1 ]; then python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site "${WHL:-.whl}"/*.whl || exit 1; fi
# nmc is not pip-installed there: expose the repo folders as the nmc.* packages.
mkdir -p /tmp/nmcpkg/nmc && cp nmc/__init__.py /tmp/nmcpkg/nmc/
for d in codec models cli; do ln -sfn "$PWD/$d" /tmp/nmcpkg/nmc/$d; done
export PYTHONPATH=/tmp/site:/tmp/nmcpkg:$PWD/.data/gpu_stlpips
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
echo "jobs: $JOBS on $NGPU GPU(s), $MINUTES min"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader -l 20 > "/tmp/gpu_use_$$.txt" 2>&1 &
smi=$!
pids=()
port=${PORT0:-29500}
for job in $JOBS; do
  port=$((port + 1))
  case $job in
    hificodec) args="--data .data/speech ${HIFI_ARGS:-}";;
    mcquic) args="--data .data/images ${MCQ_ARGS:-}";;
    vqgan) args="--data .data/images ${VQ_ARGS:-}";;
    *) echo "unknown job $job"; exit 2;;
  esac
  torchrun --nproc_per_node="$NGPU" --master_port=$port models/$job/train.py --ckpt-dir "$CKPT_ROOT/$job" \
      --minutes "$MINUTES" --log-file "$OUT/$job.log" $args > "$OUT/$job.stdout" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
kill $smi 2>/dev/null
echo "GPU use every 20 s (utilization, memory): $(tr '\n' ';' < "/tmp/gpu_use_$$.txt")"
for job in $JOBS; do echo "== $job"; tail -n 4 "$OUT/$job.stdout"; done
for job in $JOBS; do
  # vqgan (HALF=1: every job) in fp16, 17 MB instead of 33 and one shard for mcquic: what a fresh machine must be sent next session
  half=$({ [ "$job" = vqgan ] || [ "${HALF:-0}" = 1 ]; } && echo --half)
  python3 -P -m nmc.models.trainkit.checkpoint "$CKPT_ROOT/$job" "$OUT/ckpt_$job" $half
done
# FIT="hificodec mcquic": export the trained network and fit its priors here, on the GPU (minutes, against 30-80 on the
# 2-core box); $OUT/hificodec_16k.safetensors or $OUT/mcquic.safetensors is then the installable weights file (the tables are integers, so where
# they were fitted does not matter to decoding). FIT_SPEECH: the training speech carried (default .data/gpu_speech).
for job in ${FIT:-}; do
  case $job in
    hificodec)
      python3 -P models/hificodec/train.py --ckpt-dir "$CKPT_ROOT/hificodec" --max-steps 0 --export /tmp/fit_hificodec.safetensors &&
      python3 -P models/hificodec/fit_prior.py --generator /tmp/fit_hificodec.safetensors --out "$OUT/hificodec_16k.safetensors" \
          --data "${FIT_SPEECH:-.data/gpu_speech}" --minutes 90 --device "${FIT_DEVICE:-cuda}" --cache /tmp/fit_hificodec_idx.npz \
          > "$OUT/hificodec_fit.log" 2>&1 || { rc=1; tail -n 5 "$OUT/hificodec_fit.log"; };;
    mcquic)
      python3 -P models/mcquic/train.py --ckpt-dir "$CKPT_ROOT/mcquic" --max-steps 0 --export /tmp/fit_mcquic.safetensors &&
      python3 -P models/mcquic/fit_prior.py --network /tmp/fit_mcquic.safetensors --out "$OUT/mcquic.safetensors" \
          --data .data/images --device "${FIT_DEVICE:-cuda}" --cache /tmp/fit_mcquic_idx.npz \
          > "$OUT/mcquic_fit.log" 2>&1 || { rc=1; tail -n 5 "$OUT/mcquic_fit.log"; };;
    *) echo "FIT: no prior fit for $job here"; rc=1;;
  esac
done
rm -f "$OUT"/*.stdout
ls -la "$OUT" "$OUT"/ckpt_* 2>/dev/null
exit $rc
