"""Rewrite a continuous recovery file's size bindings with today's `decoder_hashes` (exact tensor bytes).

Until session 12 a continuous model bound each size to a hash of the unit codes rounded to 1e-4 plus the decoder's
bytes. Normalised on a GPU, 1024 or more codes round differently here and there, so files trained there never bound
their s1024-s8192 on the CPU (they fell back to the neighbours' mean). This rewrites the `codebooks` metadata of FILE
for the vqgan weights WEIGHTS; the tensors stay as they are:

- a size whose old hash, computed here on the CPU, is the one in the file: restamped (it was trained through these
  tensors);
- a size in `--trust` (e.g. `--trust 1024,2048,8192` for a file trained on a GPU against exactly WEIGHTS, which its
  training log shows): restamped without that check;
- a size bound already as today: kept, unless in `--drop` (to let the codec fill it with the neighbours' mean where
  that measured better than the model);
- any other size: left out (the codec falls back to the neighbours' mean there).

    python -P scripts/restamp_recovery.py FILE WEIGHTS OUT [--trust 1024,2048,8192] [--drop 1024]
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import typer
from safetensors import safe_open
from safetensors.torch import save_file

from nmc.codec.weights import read_weights
from nmc.models.vqgan.network import Ladder, base_of
from nmc.models.vqgan.recovery import decoder_hashes, network_hash

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def old_hashes(net: Ladder) -> dict[int, str]:
    """The binding as it was computed before session 12 (here, on the CPU)."""
    out = {}
    for size in net.sizes:
        vq, g_s = net.parts(size)
        q = np.round(net.unit_codes(size).double().numpy() * 1e4).astype("<i4")
        tensors = {f"out_proj.{k}": v for k, v in vq.out_proj.state_dict().items()} | {f"g_s.{k}": v for k, v in g_s.state_dict().items()}
        out[size] = hashlib.sha256(f"{hashlib.sha256(q.tobytes()).hexdigest()[:16]} {network_hash(tensors)}".encode()).hexdigest()[:16]
    return out


@app.command()
def main(file: Path, weights: Path, out: Path, trust: str = "", drop: str = "") -> None:
    w = read_weights(weights)
    net = Ladder.from_state_dict(w.state, w.args)
    with safe_open(str(file), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    if meta["network"] != network_hash(base_of(w.state, w.args)[0]):
        raise typer.BadParameter(f"{file} was trained for network {meta['network']}, not for {weights}'s")
    if not json.loads(meta["model_args"]).get("continuous"):
        raise typer.BadParameter(f"{file} is not a continuous model (its sizes bind to codes, not decoders)")
    had, old, new = {int(s): h for s, h in json.loads(meta["codebooks"]).items()}, old_hashes(net), decoder_hashes(net)
    trusted, dropped = ({int(s) for s in v.split(",") if s} for v in (trust, drop))
    keep = {s: new[s] for s in had if s in new and s not in dropped and (had[s] in (old[s], new[s]) or s in trusted)}
    meta["codebooks"] = json.dumps({str(s): h for s, h in sorted(keep.items())})
    save_file(tensors, str(out), metadata=meta)
    for s in sorted(had):
        why = ("dropped" if s in dropped else "bound already" if had[s] == new.get(s) else "old hash matches" if had[s] == old.get(s)
               else "trusted" if s in keep else "left out: old hash differs")
        print(f"s{s}: {why}")


if __name__ == "__main__":
    app()
