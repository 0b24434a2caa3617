#!/usr/bin/env bash
# One device call: train vqgan's recovery transformer (models/vqgan/train_recovery.py) on every GPU.
#   usage: MINUTES=7 bash scripts/device_recovery.sh     (from the repo root)
# Carry .data/gpu_recovery (the index maps made here by models/vqgan/index_maps.py, a few MiB) and
# .whl_vq (the constriction wheel) or .whl. Without maps there, they are extracted on the GPU first from
# .data/images (carry it: 12.9 MiB) with NETWORK (default: the installed vqgan weights; a base export
# needs LADDER too). Resumes from CKPT (default .ckpt/recovery), which a warm machine keeps between calls.
# REC_ARGS adds options (e.g. --total-steps). Back in $OUT (4 files): recovery.log, recovery.safetensors
# (the file to install as models/vqgan/weights/recovery.safetensors) and ckpt_recovery/ (fp16, no moments).
# Two runs side by side (device_multi.sh, each its own OUT): give the second its own CKPT and PORT (the
# rendezvous port, default 29500); the maps are extracted once (a lock on MAPS), the second run waits.
# DECODED=1 trains the pointer on the decoded image (train_recovery.py --decoded-loss): no maps, the photos in IMAGES
# are encoded there by NETWORK; carry .data/gpu_stlpips too (scripts/stage_stlpips.sh: the GPU image lacks ST-LPIPS).
# A dry run on a CPU machine (a few photos in IMAGES, scratch files under SCRATCH instead of /tmp):
#   DEV=cpu PY=/work/main/.venv/bin/python INSTALL=0 SCRATCH=/tmp/dry IMAGES=DIR MAPS=/tmp/dry/maps.safetensors \
#   CKPT=/tmp/dry/ckpt OUT=/tmp/dry/out MINUTES=1 REC_ARGS="--tiny --max-steps 20 --holdout 1" bash scripts/device_recovery.sh
# (CKPT: else the dry run leaves .ckpt/recovery, which the next dry run resumes or refuses.)
set -uo pipefail
MINUTES=${MINUTES:?minutes}
OUT=${OUT:-/tmp/out} DEV=${DEV:-cuda} PY=${PY:-python3} SCRATCH=${SCRATCH:-/tmp} IMAGES=${IMAGES:-.data/images}
MAPS=${MAPS:-.data/gpu_recovery/vqgan_maps.safetensors} CKPT=${CKPT:-.ckpt/recovery} PORT=${PORT:-29500}
if [ "$DEV" = cuda ]; then NGPU=$(nvidia-smi -L | wc -l); nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; else NGPU=1; fi
mkdir -p "$OUT" .ckpt "$(dirname "$MAPS")"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
# WHL: the wheel folder carried (default .whl_vq, else .whl: session 10's first try carried only .whl and failed in 1 s)
WHL=${WHL:-$([ -d .whl_vq ] && echo .whl_vq || echo .whl)}
if [ "${INSTALL:-1}" = 1 ]; then "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SCRATCH/site" "$WHL"/*.whl || exit 1; fi
mkdir -p "$SCRATCH/nmcpkg/nmc" && cp nmc/__init__.py "$SCRATCH/nmcpkg/nmc/"
for d in codec models cli; do ln -sfn "$PWD/$d" "$SCRATCH/nmcpkg/nmc/$d"; done
export PYTHONPATH=$SCRATCH/site:$SCRATCH/nmcpkg:$PWD/.data/gpu_stlpips
start=$(date +%s)
if [ "${DECODED:-0}" = 1 ]; then
  DATA_ARGS=(--decoded-loss --data "$IMAGES" --network "${NETWORK:-models/vqgan/weights/vqgan.safetensors}")
else
  (
    flock 9
    if [ ! -f "$MAPS" ]; then
      "$PY" -P models/vqgan/index_maps.py --network "${NETWORK:-models/vqgan/weights/vqgan.safetensors}" ${LADDER:+--ladder "$LADDER"} \
          --data "$IMAGES" --out "$MAPS.part" --device "$DEV" >> "$OUT/recovery.log" 2>&1 && mv "$MAPS.part" "$MAPS"
    fi
  ) 9> "$MAPS.lock"
  [ -f "$MAPS" ] || exit 1
  DATA_ARGS=(--maps "$MAPS")
fi
left=$("$PY" -c "print(max(1.0, $MINUTES - ($(date +%s) - $start) / 60))")
stdout=$SCRATCH/$(basename "$CKPT").stdout
"$PY" -m torch.distributed.run --nproc_per_node="$NGPU" --master_port="$PORT" models/vqgan/train_recovery.py "${DATA_ARGS[@]}" --minutes "$left" \
    --ckpt-dir "$CKPT" --log-file "$OUT/recovery.log" --export "$OUT/recovery.safetensors" ${REC_ARGS:-} > "$stdout" 2>&1
rc=$?
tail -n 12 "$stdout"
"$PY" -P -m nmc.models.trainkit.checkpoint "$CKPT" "$OUT/ckpt_recovery" --half
ls -la "$OUT" "$OUT"/ckpt_recovery
exit $rc
