"""Sharded, pickle-free training checkpoints: safetensors shards plus one `ckpt.json`.

Shards stay under 15 MiB (files coming back from a GPU call are limited to 16 MiB each); a tensor
larger than the room left is split across shards. Crash-safe: new shards get new names, then
`ckpt.json` is replaced atomically, and only then are the old shards removed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FORMAT = "nmc-train-ckpt-v1"
SHARD_BYTES = 15 * 2**20 - 2**16  # tensor bytes per shard; the safetensors header fits in the rest


def save(ckpt_dir: Path, tensors: dict[str, torch.Tensor], meta: dict) -> list[int]:
    """Write `tensors` and JSON-able `meta` (must hold `step`) to `ckpt_dir`; returns the shard sizes."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{meta['step']:09d}"
    shards: list[dict[str, torch.Tensor]] = [{}]
    index: dict[str, dict] = {}
    used = 0
    for name, t in tensors.items():
        flat, parts = t.detach().to("cpu").reshape(-1), 0
        while parts == 0 or flat.numel():  # fill each shard to the limit
            room = (SHARD_BYTES - used) // flat.element_size()
            if room == 0:
                shards.append({})
                used, room = 0, SHARD_BYTES // flat.element_size()
            part, flat = flat[:room], flat[room:]
            shards[-1][f"{name}#{parts}"] = part.clone()
            used += part.numel() * part.element_size()
            parts += 1
        index[name] = {"shape": list(t.shape), "parts": parts}
    files = []
    for k, shard in enumerate(shards):
        files.append(f"shard-{tag}-{k:03d}.safetensors")
        save_file(shard, str(ckpt_dir / files[-1]))
    tmp = ckpt_dir / "ckpt.json.tmp"
    tmp.write_text(json.dumps({**meta, "format": FORMAT, "shards": files, "tensors": index}, indent=1))
    os.replace(tmp, ckpt_dir / "ckpt.json")
    for old in ckpt_dir.glob("shard-*.safetensors"):
        if old.name not in files:
            old.unlink()
    return [(ckpt_dir / f).stat().st_size for f in files]


def load(ckpt_dir: Path) -> tuple[dict[str, torch.Tensor], dict] | None:
    """`(tensors, meta)` of the checkpoint in `ckpt_dir`, or None when there is none."""
    if not (ckpt_dir / "ckpt.json").exists():
        return None
    meta = json.loads((ckpt_dir / "ckpt.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{ckpt_dir}/ckpt.json: unknown checkpoint format {meta.get('format')!r}")
    raw: dict[str, torch.Tensor] = {}
    for f in meta["shards"]:
        raw.update(load_file(str(ckpt_dir / f)))
    tensors = {name: torch.cat([raw.pop(f"{name}#{j}") for j in range(e["parts"])]).reshape(e["shape"])
               for name, e in meta["tensors"].items()}
    return tensors, meta


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str, moments: str) -> tuple[dict[str, torch.Tensor], list]:
    """Flat `{prefix/param_id/key: tensor}` of the optimizer state and its param groups (JSON).

    `moments`: fp32 (bit-exact resume), bf16 (half the size) or none (empty: moments restart).
    """
    if moments not in ("fp32", "bf16", "none"):
        raise ValueError(f"optimizer moments {moments!r}: use fp32, bf16 or none")
    sd = opt.state_dict()
    if moments == "none":
        return {}, sd["param_groups"]
    dtype = torch.bfloat16 if moments == "bf16" else torch.float32
    tensors = {f"{prefix}/{pid}/{k}": (v.to(dtype) if v.dim() else v)
               for pid, st in sd["state"].items() for k, v in st.items() if torch.is_tensor(v)}
    return tensors, sd["param_groups"]


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str, groups: list) -> bool:
    """Restore the state saved by `optimizer_tensors`; False when it holds no moments (fresh Adam)."""
    state: dict[int, dict] = {}
    for name, v in tensors.items():
        if name.startswith(prefix + "/"):
            _, pid, k = name.rsplit("/", 2)
            state.setdefault(int(pid), {})[k] = v
    if not state:
        return False
    opt.load_state_dict({"state": state, "param_groups": groups})
    for group in opt.param_groups:  # moments with the parameter's dtype, device and strides (fused Adam)
        for p in group["params"]:
            st = opt.state.get(p, {})
            for k, v in st.items():
                if torch.is_tensor(v) and v.dim():
                    st[k] = torch.empty_like(p).copy_(v)
    return True


def slim(src: Path, dst: Path, optim_prefixes: tuple[str, ...] = ("opt", "optim"), half: bool = False) -> list[int]:
    """Copy the checkpoint in `src` to `dst` without optimizer moments (the resume warms up again).

    What a GPU call brings back: a full checkpoint with fp32 moments is 3x the weights. `half`
    stores fp32 tensors as fp16 (half again: what must travel to a fresh machine next session;
    resuming loads them into fp32 parameters, ~5e-4 relative rounding)."""
    loaded = load(src)
    if loaded is None:
        raise ValueError(f"no checkpoint in {src}")
    tensors, meta = loaded
    keep = {k: v.half() if half and v.dtype == torch.float32 else v
            for k, v in tensors.items() if k.split("/", 1)[0].split("_", 1)[0] not in optim_prefixes}  # fmt: skip
    meta = {k: v for k, v in meta.items() if k not in ("format", "shards", "tensors")}
    meta["ckpt_optim"] = "none"
    return save(dst, keep, meta)


if __name__ == "__main__":  # python -m nmc.models.trainkit.checkpoint SRC DST [--half]: a moment-free copy
    import sys

    print(slim(Path(sys.argv[1]), Path(sys.argv[2]), half="--half" in sys.argv[3:]))
