"""The weights file of a neural codec: its network and integer priors in one safetensors file, so
that the weights hash in every header covers both. One writer, one reader:

    net.<name>   the network's tensors, as the codec's `build_net(state, args)` takes them
    prior.*      the integer priors (`PriorSet.to_tensors`); absent in a network-only export
    metadata     "format": FORMAT, "model_args": JSON object (the network's constructor
                 arguments), "report": JSON object (training step, how the priors were fitted)

Training exports use the same layout without priors; `fit_prior.py` adds them. Files written
before this layout (the shipped weights of 2026-11 and 2026-12) keep loading: their network
tensors have no prefix, their arguments are under "config" or "model_args" and their report
under "prior" (and "step").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .prior import PriorSet

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

FORMAT = "nmc-weights-1"


@dataclass
class Weights:
    """What a weights file holds; `prior` is None in a network-only export."""

    state: dict[str, torch.Tensor]
    args: dict[str, Any]
    prior: PriorSet | None = None
    report: dict[str, Any] = field(default_factory=dict)


def write_weights(path: Path, weights: Weights) -> None:
    """Write `weights` (tensors in the dtypes given) to `path`, creating its folder."""
    import torch
    from safetensors.torch import save_file

    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in weights.state.items()}
    if weights.prior is not None:
        tensors.update({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.prior.to_tensors().items()})
    meta = {"format": FORMAT, "model_args": json.dumps(weights.args), "report": json.dumps(weights.report)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


def read_args(path: Path) -> dict[str, Any]:
    """The network's constructor arguments of `path`, without reading its tensors; ValueError if malformed."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a safetensors file ({err})") from None
    args_json = meta.get("model_args") or meta.get("config")
    if args_json is None:
        raise ValueError(f"{path}: no model arguments in the metadata")
    return dict(json.loads(args_json))


def read_prior(path: Path) -> PriorSet:
    """The integer priors of `path` alone, read with numpy (no torch): what decoding needs besides the network;
    ValueError if malformed or absent."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys() if k.startswith("prior.")}  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a safetensors file ({err})") from None
    if not tensors:
        raise ValueError(f"{path}: no priors (a network-only export: run fit_prior.py)")
    return PriorSet.from_tensors(tensors)


def read_weights(path: Path, network: Callable[[str], bool] | None = None) -> Weights:
    """The tensors, arguments, priors and report of `path` (never a pickle); ValueError if malformed. `network`:
    which network tensors (by name in `state`) to read; the others are not read from the disk at all."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta, names = f.metadata() or {}, list(f.keys())
            prefix = "net." if meta.get("format") == FORMAT else ""
            wanted = [k for k in names if network is None or k.startswith("prior.") or network(k[len(prefix):])]
            tensors = {k: f.get_tensor(k) for k in wanted}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a safetensors file ({err})") from None
    prior_tensors = {k: t.numpy() for k, t in tensors.items() if k.startswith("prior.")}
    if meta.get("format") == FORMAT:
        state = {k[4:]: t for k, t in tensors.items() if k.startswith("net.")}
        args, report = json.loads(meta["model_args"]), json.loads(meta.get("report", "{}"))
    else:  # the layout before FORMAT: unprefixed network tensors
        state = {k: t for k, t in tensors.items() if not k.startswith("prior.")}
        args_json = meta.get("model_args") or meta.get("config")
        if args_json is None:
            raise ValueError(f"{path}: no model arguments in the metadata")
        args, report = json.loads(args_json), json.loads(meta.get("prior", "{}"))
        report.update({"step": int(meta["step"])} if "step" in meta else {})
    prior = PriorSet.from_tensors(prior_tensors) if prior_tensors else None
    return Weights(state, args, prior, report)
