#!/usr/bin/env bash
# Train HiFi-Codec on a GPU machine, from the repository root (carry .data and .whl, and
# .ckpt/hificodec when resuming on a fresh machine):
#
#   NGPU=1 MINUTES=8.5 bash models/hificodec/train_device.sh [more train.py options]
#
# Resumes from .ckpt/hificodec when it holds a checkpoint. Writes $OUT/hificodec.log,
# $OUT/hificodec_16k.safetensors (fp16 generator) and a copy of the checkpoint in
# $OUT/ckpt/hificodec/latest (set COPY_CKPT=0 to skip it). Two of these can run side by side
# on one host (CUDA_VISIBLE_DEVICES=0 / =1): --standalone picks a free rendezvous port.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
NGPU=${NGPU:-$(python3 -c 'import torch; print(torch.cuda.device_count())')}
torchrun --standalone --nproc_per_node="$NGPU" models/hificodec/train.py \
  --data .data/speech --ckpt-dir .ckpt/hificodec --minutes "${MINUTES:-8.5}" \
  --log-file "$OUT/hificodec.log" --export "$OUT/hificodec_16k.safetensors" "$@"
rc=$?
if [ "${COPY_CKPT:-1}" = 1 ] && [ -d .ckpt/hificodec/latest ]; then
  mkdir -p "$OUT/ckpt/hificodec" && cp -r .ckpt/hificodec/latest "$OUT/ckpt/hificodec/"
fi
exit $rc
