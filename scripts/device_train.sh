#!/usr/bin/env bash
# Train hificodec and mcquic side by side on a lent GPU machine (one call of the device tool).
#   usage: scripts/device_train.sh MINUTES [HIFI_GPUS] [MCQUIC_GPUS]
# GPUs are split between the two jobs (default: first half hificodec, second half mcquic);
# each job is torchrun + DDP over its GPUs and resumes from .ckpt/<name> (kept on the warm
# machine between calls; without one, from the fp16 exports in .ckpt/init/ if present).
# Logs and fp16 exports go to $OUT.
set -uo pipefail
MINUTES=${1:?minutes}
NGPU=$(nvidia-smi -L | wc -l)
HIFI=${2:-$(( (NGPU + 1) / 2 ))}
MCQ=${3:-$(( NGPU - HIFI ))}
OUT=${OUT:-/tmp/out}
# FINAL=1: the last call of a session; checkpoints are saved without optimizer moments and
# copied to $OUT so that a later session can resume (the machine keeps nothing).
EXTRA=""; [ "${FINAL:-0}" = 1 ] && EXTRA="--ckpt-optim none"
mkdir -p "$OUT" .ckpt
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
# nmc is not pip-installed there: expose the repo folders as the nmc.* packages.
mkdir -p /tmp/nmcpkg/nmc && cp nmc/__init__.py /tmp/nmcpkg/nmc/
for d in codec models cli; do ln -sfn "$PWD/$d" /tmp/nmcpkg/nmc/$d; done
export PYTHONPATH=/tmp/site:/tmp/nmcpkg
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpus.txt"
GPUS=$(seq -s, 0 $((NGPU - 1)))
HIFI_GPUS=$(echo "$GPUS" | cut -d, -f1-"$HIFI")
MCQ_GPUS=$(echo "$GPUS" | cut -d, -f$((HIFI + 1))-)
echo "hificodec on GPUs $HIFI_GPUS, mcquic on GPUs $MCQ_GPUS, $MINUTES min"
CUDA_VISIBLE_DEVICES=$HIFI_GPUS torchrun --nproc_per_node="$HIFI" --master_port=29501 models/hificodec/train.py \
    --data .data/speech --ckpt-dir .ckpt/hificodec --minutes "$MINUTES" \
    --log-file "$OUT/hificodec.log" --export "$OUT/hificodec_16k.safetensors" $EXTRA \
    $( [ -f .ckpt/init/hificodec_16k.safetensors ] && echo --init .ckpt/init/hificodec_16k.safetensors ) > "$OUT/hificodec.stdout" 2>&1 &
P1=$!
if [ "$MCQ" -gt 0 ]; then
CUDA_VISIBLE_DEVICES=$MCQ_GPUS torchrun --nproc_per_node="$MCQ" --master_port=29502 models/mcquic/train.py \
    --data .data/images --ckpt-dir .ckpt/mcquic --minutes "$MINUTES" \
    --total-minutes "${MCQ_TOTAL_MINUTES:-18}" $EXTRA ${MCQ_ARGS:-} \
    $( [ -f .ckpt/init/mcquic.safetensors ] && echo --init .ckpt/init/mcquic.safetensors ) \
    --log-file "$OUT/mcquic.log" --export "$OUT/mcquic.safetensors" > "$OUT/mcquic.stdout" 2>&1 &
P2=$!
fi
wait $P1; R1=$?
[ "$MCQ" -gt 0 ] && { wait $P2; R2=$?; } || R2=0
tail -n 5 "$OUT/hificodec.stdout"; [ "$MCQ" -gt 0 ] && tail -n 5 "$OUT/mcquic.stdout"
if [ "${FINAL:-0}" = 1 ]; then
  mkdir -p "$OUT/ckpt_hificodec" "$OUT/ckpt_mcquic"
  cp -r .ckpt/hificodec/latest/. "$OUT/ckpt_hificodec/" 2>/dev/null
  cp .ckpt/mcquic/*.safetensors .ckpt/mcquic/ckpt.json "$OUT/ckpt_mcquic/" 2>/dev/null
  rm -f "$OUT"/*.stdout "$OUT"/gpus.txt "$OUT"/*.safetensors  # 8 files at most come back
fi
ls -la "$OUT" "$OUT"/ckpt_* 2>/dev/null
echo "exit codes: hificodec=$R1 mcquic=$R2"
