"""The CPU fast path: a codec's network functions run by ONNX Runtime, so that a warm command never imports torch.

Importing torch takes about 2 s of a CLI command's 2.5-3 (docs/BENCHMARKS.md, "Start-up"); onnxruntime takes 0.2 s.
Every network call goes through `netcall.run_here(codec, fn, arrays, static)`. For a codec that lists the function in
`onnx_functions`, on the CPU, that call first looks for a graph of exactly this call: the codec, its weights hash,
the function, its static arguments and the input shapes and dtypes (`graph_path`). If there is one, ONNX Runtime runs
it on one thread. If not, torch runs the call as always, and the call is then exported (`torch.onnx.export`) and
checked: ONNX Runtime must give the same indices, pixels within a level and samples within `FLOAT_TOL` on
these inputs, or the graph is thrown away. So the first call of a shape pays torch and the export; the next ones
(the same kind of file) start without torch.

The graphs live in `cache_dir()` (`NMC_CACHE_DIR`, else `$XDG_CACHE_HOME/nmc` or `~/.cache/nmc`, then `onnx/`),
written atomically, at most `MAX_GRAPHS` per codec (the least recently used go: each graph holds its weights, 10-20
MB). `NMC_BACKEND=torch` turns the fast path off. What changes for users: decoded samples and pixels may differ from
torch's by float rounding, as a GPU decode does; the indices, tables and so the bytes of every file do not depend on
it (integer priors), and the export check keeps the indices of the call it was made from.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .interface import NeuralCodec

MAX_GRAPHS = 24  # per codec, least recently used first out: a ladder of nine settings needs 18 (an indices and a decode graph each)
UINT8_TOL, FLOAT_TOL = 1, 1e-3  # largest |onnx - torch| accepted at export: uint8 pixels one level, floats (samples)
OPSET = 17
_sessions: dict[Path, Any] = {}


@functools.cache
def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def cache_dir() -> Path:
    root = os.environ.get("NMC_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nmc"
    return Path(root) / "onnx"


def usable(codec: NeuralCodec[Any], fn: str) -> bool:
    """Whether `fn` of `codec` may take the fast path here."""
    return (fn in codec.onnx_functions and codec.device == "cpu" and os.environ.get("NMC_BACKEND", "auto") != "torch"
            and _installed("onnxruntime"))  # fmt: skip


def graph_path(codec: NeuralCodec[Any], fn: str, arrays: tuple[np.ndarray, ...], static: dict[str, Any]) -> Path:
    """The graph of exactly this call: codec, weights, function, static arguments, input shapes and dtypes, and the
    codec's code (`NeuralCodec.code_hash`: an upgrade that changes what a network function computes must not keep
    running the graphs of the old code)."""
    what = json.dumps([fn, sorted((k, repr(v)) for k, v in static.items()), [(a.shape, a.dtype.str) for a in arrays],
                       codec.code_hash()])  # fmt: skip
    return cache_dir() / f"{codec.name}-{codec.weights_hash()}-{fn}-{hashlib.sha256(what.encode()).hexdigest()[:16]}.onnx"


def _new_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # the same numbers for any thread count
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run_graph(path: Path, arrays: tuple[np.ndarray, ...], keep: bool = True) -> tuple[np.ndarray, ...]:
    """`arrays` through the graph at `path`; its session stays loaded for the next calls unless `keep` is False."""
    session = _sessions.get(path) or _new_session(path)
    if keep:
        _sessions[path] = session
    names = [i.name for i in session.get_inputs()]
    return tuple(session.run(None, {n: np.ascontiguousarray(a) for n, a in zip(names, arrays)}))


def run(codec: NeuralCodec[Any], fn: str, arrays: tuple[np.ndarray, ...], static: dict[str, Any]) -> tuple[np.ndarray, ...] | None:
    """The call through its graph, or None when there is none yet (or it cannot be loaded)."""
    path = graph_path(codec, fn, arrays, static)
    if not path.is_file():
        return None
    try:
        out = _run_graph(path, arrays)
    except Exception:  # noqa: BLE001  (a damaged or foreign cache file: torch runs the call, the export replaces it)
        _sessions.pop(path, None)
        return None
    with contextlib.suppress(OSError):  # recently used (unless another process pruned it meanwhile)
        os.utime(path)
    return out


def export(codec: NeuralCodec[Any], fn: str, arrays: tuple[np.ndarray, ...], static: dict[str, Any], expected: tuple[np.ndarray, ...]) -> bool:
    """Export the call that torch just ran (outputs `expected`) to its graph, if ONNX Runtime reproduces it; the
    fast path needs `onnx` for this. Never fails the command: False when the graph was not kept."""
    if not _installed("onnx"):
        return False
    import torch

    path = graph_path(codec, fn, arrays, static)
    try:  # a cache folder that cannot be written: no fast path, the command goes on
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".onnx.part", dir=path.parent)
        os.close(fd)
    except OSError:
        return False
    net, call = codec.model.net, getattr(codec, f"net_{fn}")

    class Call(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, *tensors: torch.Tensor) -> Any:
            return call(self.net, *tensors, **static)

    try:
        from .threads import one_thread

        with warnings.catch_warnings(), torch.inference_mode(), one_thread():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
            torch.onnx.export(Call(), tuple(torch.tensor(a) for a in arrays), tmp, dynamo=False, opset_version=OPSET,
                              input_names=[f"in{i}" for i in range(len(arrays))])  # fmt: skip
        if not _same(_run_graph(Path(tmp), arrays, keep=False), expected):
            return False
        os.replace(tmp, path)
    except Exception:  # noqa: BLE001  (an export that fails leaves the torch path, never the command)
        return False
    finally:
        Path(tmp).unlink(missing_ok=True)
    _prune(codec.name)
    return True


def _same(got: tuple[np.ndarray, ...], expected: tuple[np.ndarray, ...]) -> bool:
    """Integer outputs equal, uint8 within `UINT8_TOL`, floats within `FLOAT_TOL`."""
    if len(got) != len(expected):
        return False
    for g, e in zip(got, expected):
        if g.shape != e.shape:
            return False
        tol = UINT8_TOL if e.dtype == np.uint8 else 0 if np.issubdtype(e.dtype, np.integer) else FLOAT_TOL
        if g.dtype != e.dtype or not np.abs(g.astype(np.float64) - e.astype(np.float64)).max(initial=0) <= tol:
            return False
    return True


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # pruned by another process meanwhile (parallel `nmc eval` workers export at once)
        return 0.0


def _prune(codec: str) -> None:
    graphs = sorted(cache_dir().glob(f"{codec}-*.onnx"), key=_mtime, reverse=True)
    for old in graphs[MAX_GRAPHS:]:
        old.unlink(missing_ok=True)
