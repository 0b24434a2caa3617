#!/usr/bin/env bash
# One device call: train vqgan's recovery transformer (models/vqgan/train_recovery.py) on every GPU.
#   usage: MINUTES=7 bash scripts/device_recovery.sh     (from the repo root)
# Carry .data/gpu_recovery (the index maps made here by models/vqgan/index_maps.py, a few MiB) and
# .whl_vq (the constriction wheel). Without maps there, they are extracted on the GPU first from
# .data/images (carry it: 12.9 MiB) with NETWORK (default: the installed vqgan weights; a base export
# needs LADDER too). Resumes from .ckpt/recovery, which a warm machine keeps between calls. REC_ARGS
# adds options (e.g. --total-steps). Back in $OUT (4 files): recovery.log, recovery.safetensors (the
# file to install as models/vqgan/weights/recovery.safetensors) and ckpt_recovery/ (fp16, no moments).
set -uo pipefail
MINUTES=${MINUTES:?minutes}
OUT=${OUT:-/tmp/out}
MAPS=${MAPS:-.data/gpu_recovery/vqgan_maps.safetensors}
NGPU=$(nvidia-smi -L | wc -l)
mkdir -p "$OUT" .ckpt
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
if [ "${INSTALL:-1}" = 1 ]; then python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site "${WHL:-.whl_vq}"/*.whl || exit 1; fi
mkdir -p /tmp/nmcpkg/nmc && cp nmc/__init__.py /tmp/nmcpkg/nmc/
for d in codec models cli; do ln -sfn "$PWD/$d" /tmp/nmcpkg/nmc/$d; done
export PYTHONPATH=/tmp/site:/tmp/nmcpkg
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
start=$(date +%s)
if [ ! -f "$MAPS" ]; then
  python3 -P models/vqgan/index_maps.py --network "${NETWORK:-models/vqgan/weights/vqgan.safetensors}" ${LADDER:+--ladder "$LADDER"} \
      --data .data/images --out "$MAPS" --device cuda >> "$OUT/recovery.log" 2>&1 || exit 1
fi
left=$(python3 -c "print(max(1.0, $MINUTES - ($(date +%s) - $start) / 60))")
torchrun --nproc_per_node="$NGPU" models/vqgan/train_recovery.py --maps "$MAPS" --minutes "$left" --ckpt-dir .ckpt/recovery \
    --log-file "$OUT/recovery.log" --export "$OUT/recovery.safetensors" ${REC_ARGS:-} > /tmp/recovery.stdout 2>&1
rc=$?
tail -n 12 /tmp/recovery.stdout
python3 -P -m nmc.models.trainkit.checkpoint .ckpt/recovery "$OUT/ckpt_recovery" --half
ls -la "$OUT" "$OUT"/ckpt_recovery
exit $rc
