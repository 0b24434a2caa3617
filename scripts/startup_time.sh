#!/usr/bin/env bash
# Whole-process start-up (`N=5 bash scripts/startup_time.sh` from the repo root): each command N times,
# interleaved; min and median of wall and CPU (user+sys) seconds.
N=${N:-5}; NMC=${NMC:-.venv/bin/nmc}; PY=${PY:-.venv/bin/python}; T=$(mktemp -d); $NMC compress samples/photo_aqua.png -o $T/p0.nmc >/dev/null 2>&1
cmds=("$PY -c pass" "$PY -c 'import torch'" "$NMC info $T/p0.nmc"
      "$NMC compress samples/speech_es.flac -o $T/s.nmc -f" "$NMC compress samples/photo_aqua.png -o $T/p.nmc -f"
      "$NMC decompress $T/s.nmc -o $T/s.wav -f" "$NMC decompress $T/p.nmc -o $T/p.png -f")
for i in $(seq "$N"); do for c in "${cmds[@]}"; do
  /usr/bin/time -f "%e %U %S" -o "$T/t" bash -c "$c" >/dev/null 2>&1 || echo "failed: $c" >&2
  echo "$c|$(cat "$T/t")" >> "$T/all"
done; done
python3 - "$T/all" "$T" <<'PY'
import sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    c, t = line.rstrip("\n").rsplit("|", 1)
    w, u, s = map(float, t.split()); rows.setdefault(c, []).append((w, u + s))
for c, v in rows.items():
    w, cpu = [x[0] for x in v], [x[1] for x in v]
    label = c.replace(sys.argv[2], "TMP")
    print(f"{label[:70]:70s} wall min {min(w):.2f} med {st.median(w):.2f} | cpu min {min(cpu):.2f} med {st.median(cpu):.2f}")
PY
rm -rf "$T"
