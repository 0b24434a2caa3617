"""Network-level progress check of a hificodec checkpoint or export on a folder of speech.

Encodes and decodes every clip with the network alone (fixed-length indices, no priors, no
container), so a training checkpoint can be measured before its priors are fitted:

    python models/hificodec/probe.py .ckpt/hificodec .data/dev-unseen ../shared/data/dev/speech

Prints per folder and level count the mean PESQ-WB, STOI, mel distance and the decoded DC
offset (dBFS). The real rate and the codec's numbers come from `nmc eval` once the priors exist.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
import typer

from nmc.codec import metrics as M
from nmc.codec.weights import read_weights
from nmc.models.hificodec.network import CodecConfig, HiFiCodec
from nmc.models.trainkit import checkpoint as ckpt_io

SR = 16000


def load_net(src: Path) -> tuple[HiFiCodec, str]:
    """The generator of a training checkpoint folder or of an exported safetensors file."""
    if src.is_dir():
        loaded = ckpt_io.load(src)
        if loaded is None:
            raise typer.BadParameter(f"no checkpoint in {src}")
        tensors, meta = loaded
        net = HiFiCodec(CodecConfig.from_json(json.dumps(meta["model_args"])))
        net.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("g/")})
        return net.remove_weight_norm().eval(), f"step {meta['step']}"
    export = read_weights(src)
    return HiFiCodec.from_state_dict(export.state, CodecConfig.from_dict(export.args)), src.name


def main(src: Path, folders: list[Path], levels: str = "1,2,3,4", threads: int = 1) -> None:
    torch.set_num_threads(threads)
    net, name = load_net(src)
    for folder in folders:
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".flac", ".wav", ".opus", ".ogg"))
        rows: dict[int, list[tuple[float, float, float, float]]] = {int(n): [] for n in levels.split(",")}
        for path in files:
            x, sr = sf.read(str(path), dtype="float32", always_2d=True)
            x = x.mean(axis=1)
            x16 = soxr.resample(x, sr, SR).astype(np.float32) if sr != SR else x
            if np.sqrt(np.mean(x16**2)) < 1e-4:  # silent clip: the metrics are undefined
                continue
            peak = max(1.0, float(np.abs(x16).max()))
            with torch.inference_mode():
                for n in rows:
                    idx = net.encode(torch.from_numpy(x16 / peak)[None, None], n)
                    y = net.decode(idx)[0, 0, : len(x16)].numpy() * peak
                    dc = 20 * math.log10(max(abs(float(y.mean())), 1e-12))
                    rows[n].append((M.pesq_wb(x16, SR, y, SR), M.stoi(x16, SR, y, SR), M.mel_distance(x16, SR, y, SR), dc))
        for n, r in rows.items():
            a = np.array(r)
            print(f"{name} {folder} levels {n} ({n} kbit/s nominal), {len(r)} clips: PESQ-WB {np.nanmean(a[:, 0]):.3f} "
                  f"STOI {np.nanmean(a[:, 1]):.3f} mel {a[:, 2].mean():.3f} DC mean {a[:, 3].mean():.1f} dBFS max {a[:, 3].max():.1f}",
                  flush=True)


if __name__ == "__main__":
    typer.run(main)
