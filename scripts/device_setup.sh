# Sourced by the device scripts (scripts/device_crossdevice.sh, scripts/device_throughput.sh) after they set
# OUT and PY: sends everything printed to $OUT/log.txt too, defines `at` (seconds since the start), installs the
# carried wheels (.whl) unless a warm machine has them, lays the repo out as the nmc package with its
# codecs' entry points (nmc is not pip-installed there), sets PYTHONPATH and NMC, and records the machine
# in $OUT/env.txt.
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
T0=$SECONDS
at() { echo "== $1 at $((SECONDS - T0)) s"; }
if [ "${INSTALL:-1}" = 1 ] && [ ! -f /tmp/site/soundfile.py ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
fi
mkdir -p /tmp/nmcpkg/nmc /tmp/nmcpkg/nmc-0.1.0.dist-info && cp nmc/__init__.py /tmp/nmcpkg/nmc/
for d in codec models cli; do ln -sfn "$PWD/$d" /tmp/nmcpkg/nmc/$d; done
printf 'Metadata-Version: 2.1\nName: nmc\nVersion: 0.1.0\n' > /tmp/nmcpkg/nmc-0.1.0.dist-info/METADATA
$PY -c 'import tomllib; eps = tomllib.load(open("pyproject.toml", "rb"))["project"]["entry-points"]["nmc.codecs"]
print("[nmc.codecs]"); [print(f"{k} = {v}") for k, v in eps.items()]' > /tmp/nmcpkg/nmc-0.1.0.dist-info/entry_points.txt
export PYTHONPATH=/tmp/site:/tmp/nmcpkg:$PWD/.data/gpu_stlpips${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
NMC="$PY -P -m nmc.cli.main"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
  $PY -P -c 'import torch, nmc.codec.registry as r; print(torch.__version__, torch.version.cuda, list(r.available()))'; } | tee "$OUT/env.txt"
at installed
