#!/usr/bin/env bash
# One device call on one H200 (issue 13): GPU speed and the cross-device check. Results in $OUT (6 files):
#   env.txt            GPU, torch, CPU count
#   bench.json         `nmc bench --device cpu,cuda`: one file's encode/decode speed, 1 thread vs the GPU
#   throughput.jsonl   `nmc batch` over 512 photos / 1152 clips (64 copies of the dev sets): files/s,
#                      MP/s or x real time, mean GPU batch, against --workers and the GPU's rows per call
#   crossdevice.json   scripts/crossdevice.py: encode GPU -> decode CPU and the reverse, PSNR / PESQ deltas,
#                      max pixel / sample differences, batched bytes = one-at-a-time bytes on the GPU
#   pytest.txt         the CUDA halves of tests/test_device.py and tests/test_netcall.py
#   log.txt            everything printed
# Here, first: `bash scripts/stage_crossdevice.sh` (fills .whl and .data/gpu_dev, ~9 MiB beside the
# 43 MiB tree); then run this with carry [".whl", ".data/gpu_dev"]. Ray does not travel (75 MiB wheel).
# The parts take about 1 + 6 + 2 + 2 minutes: with PARTS="1 2" then PARTS="3 4" in a second call at once
# (the warm machine keeps /tmp) no call nears the 10-minute limit. Each call returns its own files.
# A dry run on a CPU machine: DEV=cpu COPIES=2 PY=.venv/bin/python INSTALL=0 OUT=/tmp/dry bash scripts/device_crossdevice.sh
set -uo pipefail
OUT=${OUT:-/tmp/out} DEV=${DEV:-cuda} COPIES=${COPIES:-64} PY=${PY:-python3} PARTS=${PARTS:-1 2 3 4}
want() { [[ " $PARTS " == *" $1 "* ]]; }
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
T0=$SECONDS
if [ "${INSTALL:-1}" = 1 ] && [ ! -d /tmp/site/constriction ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
fi
# nmc is not pip-installed there: the repo folders become the nmc.* packages, and a dist-info folder
# declares the codecs' entry points (the registry finds codecs through them).
mkdir -p /tmp/nmcpkg/nmc /tmp/nmcpkg/nmc-0.1.0.dist-info && cp nmc/__init__.py /tmp/nmcpkg/nmc/
for d in codec models cli; do ln -sfn "$PWD/$d" /tmp/nmcpkg/nmc/$d; done
printf 'Metadata-Version: 2.1\nName: nmc\nVersion: 0.1.0\n' > /tmp/nmcpkg/nmc-0.1.0.dist-info/METADATA
$PY -c 'import tomllib; eps = tomllib.load(open("pyproject.toml", "rb"))["project"]["entry-points"]["nmc.codecs"]
print("[nmc.codecs]"); [print(f"{k} = {v}") for k, v in eps.items()]' > /tmp/nmcpkg/nmc-0.1.0.dist-info/entry_points.txt
export PYTHONPATH=/tmp/site:/tmp/nmcpkg PYTHONUNBUFFERED=1
NMC="$PY -P -m nmc.cli.main"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
  $PY -P -c 'import torch, nmc.codec.registry as r; print(torch.__version__, torch.version.cuda, list(r.available()))'; } | tee "$OUT/env.txt"

# 1. One file, one thread against the GPU (each network call on the GPU runs 16 rows: 15 are padding here).
want 1 && timeout 180 $NMC bench samples/photo_aqua.png samples/speech_es.flac --codec hificodec,mcquic --device cpu,$DEV --threads 1 --json > "$OUT/bench.json"
want 1 && echo "bench done at $((SECONDS - T0)) s"

# 2. Throughput of nmc batch: 64 copies of each dev file (links), encode then decode.
mkdir -p /tmp/many/images /tmp/many/speech /tmp/many/images64
for k in $(seq -w 1 "$COPIES"); do
  for f in .data/gpu_dev/images/*; do ln -sf "$PWD/$f" /tmp/many/images/c${k}_$(basename "$f"); done
  for f in .data/gpu_dev/speech/*; do ln -sf "$PWD/$f" /tmp/many/speech/c${k}_$(basename "$f"); done
done
for f in $(ls /tmp/many/images | head -n 64); do ln -sf "$(readlink "/tmp/many/images/$f")" /tmp/many/images64/$f; done
batch() {  # label src dst args...: one line of throughput.jsonl
  local label=$1 src=$2 dst=$3; shift 3
  rm -rf "$dst"
  timeout 300 $NMC batch "$src" "$dst" --json "$@" > /tmp/batch.json
  $PY -P - "$label" "$src" "$*" <<'EOF' | tee -a "$OUT/throughput.jsonl"
import json, sys
r = json.load(open("/tmp/batch.json"))
done = [f for f in r["files"] if f["status"] == "done"]
amount = sum(8 * f["bytes"] / f["rate"] / (1e6 if f["unit"] == "bpp" else 1e3) for f in done)  # MP or seconds of audio
unit = "MP/s" if done and done[0]["unit"] == "bpp" else "x realtime"
net = r["network"]
print(json.dumps({"run": sys.argv[1], "src": sys.argv[2], "args": sys.argv[3], "counts": r["counts"], "seconds": r["seconds"],
                  "files_per_s": round(len(done) / r["seconds"], 2), "speed": round(amount / r["seconds"], 2), "unit": unit,
                  "mean_batch": round(net["calls"] / net["batches"], 2) if net.get("batches") else None}))
EOF
}
if want 2; then
batch img-enc-gpu-w1 /tmp/many/images64 /tmp/e1 --device $DEV --workers 1
for w in 4 8 16; do batch img-enc-gpu-w$w /tmp/many/images /tmp/img_enc --device $DEV --workers $w; done
batch img-dec-gpu-w16 /tmp/img_enc /tmp/img_dec --device $DEV --workers 16
batch img-dec-gpu-w4 /tmp/img_enc /tmp/img_dec --device $DEV --workers 4
batch img-enc-cpu-w16 /tmp/many/images /tmp/e2 --device cpu --workers 16
batch img-dec-cpu-w16 /tmp/img_enc /tmp/d2 --device cpu --workers 16
for w in 4 16; do batch speech-enc-gpu-w$w /tmp/many/speech /tmp/sp_enc --device $DEV --workers $w; done
batch speech-dec-gpu-w16 /tmp/sp_enc /tmp/sp_dec --device $DEV --workers 16
batch speech-enc-cpu-w16 /tmp/many/speech /tmp/e3 --device cpu --workers 16
batch speech-dec-cpu-w16 /tmp/sp_enc /tmp/d3 --device cpu --workers 16
echo "throughput done at $((SECONDS - T0)) s"
fi
# Rows per GPU call other than 16 (another row count may change a few indices: speed only).
cat > /tmp/rows.py <<'EOF'
import json, sys, time
from pathlib import Path
from nmc.codec import batch as B, netcall
if __name__ == "__main__":  # spawned workers import this file again
    rows = int(sys.argv[1])
    netcall.GPU_ROWS = rows
    jobs, stats = B.plan(Path("/tmp/many/images"), Path(f"/tmp/rows{rows}")), {}
    t = time.perf_counter()
    n = sum(r.status == "done" for r in B.run(jobs, workers=16, device=sys.argv[2], batch_size=rows, stats=stats, share_network=True))
    s = time.perf_counter() - t
    print(json.dumps({"run": f"img-enc-gpu-w16-rows{rows}", "files_per_s": round(n / s, 2), "seconds": round(s, 2),
                      "mean_batch": round(stats["calls"] / stats["batches"], 2) if stats["batches"] else None}))
EOF
want 3 && for rows in 4 32; do timeout 200 $PY -P /tmp/rows.py "$rows" "$DEV" | tee -a "$OUT/throughput.jsonl"; done

# 3. Cross-device quality, and batched = one at a time on the GPU (the dev files against their first copies' batch output).
if want 3; then
mkdir -p /tmp/dev_batched
batch dev-img-enc-gpu .data/gpu_dev/images /tmp/dev_batched/images --device $DEV --workers 8
batch dev-speech-enc-gpu .data/gpu_dev/speech /tmp/dev_batched/speech --device $DEV --workers 8
timeout 400 $PY -P scripts/crossdevice.py .data/gpu_dev "$OUT/crossdevice.json" --batched /tmp/dev_batched --gpu "$DEV" | tail -n 30
echo "crossdevice done at $((SECONDS - T0)) s"
fi

# 4. The tests' CUDA halves (skipped on the CPU machines).
if want 4; then
  timeout 300 $PY -P -m pytest -q -p no:cacheprovider tests/test_device.py tests/test_netcall.py > "$OUT/pytest.txt" 2>&1
  tail -n 5 "$OUT/pytest.txt"
fi
echo "all done at $((SECONDS - T0)) s"
ls -la "$OUT"
