"""Network calls that can be batched across files: numpy arrays in and out, batch axis first.

A codec runs its network only through `NeuralCodec.run(fn, *arrays, **static)`, which calls the
codec's static method `net_<fn>(net, *tensors, **static)`. `call` does that on the codec's device
(`run_here`), unless this process is a worker of `nmc batch` that shares one network: then the call
goes to the `Server` in the main process. The server takes every call that is waiting, stacks the
calls with the same codec, function, static arguments and row shapes into one batch, runs it on its
device (the GPU), and sends each worker its rows; while it runs, the next calls queue up, so the
batches fill by themselves when the workers keep the GPU busy. A row's numbers do not depend on
the batch it came in (`run_on`), so batched coding writes the same bytes as coding one file at a
time on the same device: tests check it on the CPU, scripts/device_crossdevice.sh on a GPU.
The server starts CUDA and loads the networks it will run as soon as it starts, while the
workers read their first files.
"""

from __future__ import annotations

import secrets
import threading
import time
from multiprocessing.connection import Client, Connection, Listener, wait
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from .interface import NeuralCodec

GPU_ROWS = 16  # rows of a network call on a GPU (one file's call is padded), unless the codec says (`gpu_rows`)
Runner = Callable[..., tuple[np.ndarray, ...]]  # run(fn, *arrays, **static), as `NeuralCodec.run`
Request = tuple[str, str, tuple[tuple[str, Any], ...], tuple[np.ndarray, ...]]  # codec, fn, static, arrays
_client: Connection | None = None  # set in the workers of a shared network


def call(codec: NeuralCodec[Any], fn: str, arrays: tuple[np.ndarray, ...], static: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """`net_<fn>` of `codec` on `arrays`: here, or on the shared network when this process has one."""
    if _client is None:
        return run_here(codec, fn, arrays, static)
    try:
        _client.send((codec.name, fn, tuple(sorted(static.items())), arrays))
        ok, out = _client.recv()
    except (EOFError, OSError) as err:
        raise RuntimeError(f"the shared network of this batch is gone ({type(err).__name__})") from None
    if not ok:
        raise RuntimeError(out)
    return tuple(out)


def run_here(codec: NeuralCodec[Any], fn: str, arrays: tuple[np.ndarray, ...], static: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """`net_<fn>` of `codec` on the codec's device; on the CPU through ONNX Runtime when this call has a graph
    (`onnx_backend`: then torch is not imported), else by torch, after which the call is exported for next time."""
    from . import onnx_backend

    fast = onnx_backend.usable(codec, fn)
    out = onnx_backend.run(codec, fn, arrays, static) if fast else None
    if out is None:
        out = run_on(codec.model.net, codec.device, getattr(codec, f"net_{fn}"), arrays, static, rows_per_call(codec, fn))
        if fast:
            onnx_backend.export(codec, fn, arrays, static, out)
    return out


def rows_per_call(codec: NeuralCodec[Any], fn: str) -> int:
    """The rows of every GPU call of `net_<fn>`: the codec's choice (`gpu_rows`), else `GPU_ROWS`."""
    return codec.gpu_rows.get(fn, GPU_ROWS)


def run_on(
    net: Any, device: str, fn: Callable[..., Any], arrays: tuple[np.ndarray, ...], static: dict[str, Any], rows: int | None = None
) -> tuple[np.ndarray, ...]:
    """`fn(net, *tensors, **static)` on `device`, on one thread (`one_thread`: the same numbers anywhere).

    A row's numbers must not depend on the batch it came in: oneDNN and cuDNN choose kernels by
    the batch size, and kernels round differently. So on the CPU each row runs alone (batching
    gains little there), and on a GPU every call runs on exactly `rows` rows (default `GPU_ROWS`),
    zero rows added.
    """
    n = len(arrays[0])
    size = 1 if device == "cpu" else rows or GPU_ROWS
    if n != size:
        pad = -n % size
        padded = [np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)]) if pad else a for a in arrays]
        parts = [_run(net, device, fn, tuple(a[i : i + size] for a in padded), static) for i in range(0, n + pad, size)]
        return tuple(np.concatenate(p)[:n] for p in zip(*parts))
    return _run(net, device, fn, arrays, static)


def _run(net: Any, device: str, fn: Callable[..., Any], arrays: tuple[np.ndarray, ...], static: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """The tensors are fresh copies with standard strides: a batch of one whose stride came from
    numpy (0) or from pickling (the full size) can make a convolution pick another memory format
    and kernel, and round differently."""
    import torch

    from .threads import one_thread

    with torch.inference_mode(), one_thread():
        tensors = [torch.tensor(a, device=device) for a in arrays]
        out = fn(net, *tensors, **static)
        return tuple(t.cpu().numpy() for t in (out if isinstance(out, tuple) else (out,)))


def connect(address: str, authkey: bytes) -> None:
    """Make this process (a batch worker) send its network calls to the server at `address`."""
    global _client
    _client = Client(address, authkey=authkey)


class Server:
    """Runs the networks of the installed codecs on `device` for the workers that `connect`, in
    batches of up to `max_rows` rows; `codecs`: those to load onto the device at the start (the
    others load at their first call). Its thread stops with `close`."""

    def __init__(self, device: str, max_rows: int = GPU_ROWS, start: bool = True, codecs: tuple[str, ...] = ()) -> None:
        self.device, self.max_rows, self.codecs = device, max(1, max_rows), codecs
        self.authkey = secrets.token_bytes(16)
        self._listener = Listener(family="AF_UNIX", authkey=self.authkey)
        self.address: str = self._listener.address  # a path for AF_UNIX
        self._conns: list[Connection] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready: set[str] = set()  # codecs moved to the device
        self.calls = self.batches = 0  # served calls and network runs: calls / batches is the mean batch
        self.busy = 0.0  # seconds spent running batches
        self.times: dict[str, float] = {}  # time.perf_counter() when it "started", was "warm", got its "first_call"
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._accept, self._serve)]
        if start:
            self.start()

    @property
    def started(self) -> bool:
        return self._threads[1].ident is not None

    def start(self) -> None:
        """Start serving (`nmc batch` forks its workers first: a forked child gets no running thread)."""
        if not self.started:
            for t in self._threads:
                t.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn = self._listener.accept()
            except OSError:  # a worker that died during the handshake, or the listener closed
                continue
            with self._lock:
                self._conns.append(conn)

    def _drop(self, conn: Connection) -> None:
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)
        conn.close()

    def _warm_up(self) -> None:
        """Start CUDA, load the libraries of its first convolutions and products, and load the
        networks of `codecs` onto the device, while the workers read their first files (an error
        here is left to the first call to report)."""
        import torch

        from .interface import NeuralCodec
        from .registry import get_codec
        from .threads import one_thread

        try:
            if self.device != "cpu":
                with torch.inference_mode(), one_thread():
                    x = torch.zeros(1, 1, 8, 8, device=self.device)
                    torch.nn.functional.conv2d(x, x[..., :3, :3])
                    torch.nn.functional.conv1d(x[0], x[0, ..., :3])
                    torch.bmm(x[0], x[0]).cpu()
            for name in self.codecs:
                if not self._stop.is_set() and isinstance(get_codec(name), NeuralCodec):
                    self._codec(name).model  # noqa: B018  (loads it onto the device)
        except Exception:  # noqa: BLE001
            pass

    def _serve(self) -> None:
        self.times["started"] = time.perf_counter()
        self._warm_up()
        self.times["warm"] = time.perf_counter()
        while not self._stop.is_set():
            with self._lock:
                conns = list(self._conns)
            if not conns:
                self._stop.wait(0.05)
                continue
            requests: list[tuple[Connection, Request]] = []
            for conn in wait(conns, timeout=0.05):
                assert isinstance(conn, Connection)
                try:
                    requests.append((conn, conn.recv()))
                except (EOFError, OSError):  # the worker died or was stopped
                    self._drop(conn)
            if requests:
                self.times.setdefault("first_call", time.perf_counter())
            groups: dict[Any, list[tuple[Connection, Request]]] = {}
            for conn, (name, fn, static, arrays) in requests:
                key = (name, fn, static, tuple((a.shape[1:], a.dtype.str) for a in arrays))
                groups.setdefault(key, []).append((conn, (name, fn, static, arrays)))
            for group in groups.values():
                batch: list[tuple[Connection, Request]] = []
                for item in group:
                    if batch and sum(len(r[3][0]) for _, r in batch) + len(item[1][3][0]) > self.max_rows:
                        self._run(batch)
                        batch = []
                    batch.append(item)
                self._run(batch)

    def _codec(self, name: str) -> NeuralCodec[Any]:
        from .registry import get_codec

        codec: NeuralCodec[Any] = get_codec(name)  # type: ignore[assignment]
        if name not in self._ready:
            codec.to(self.device)
            self._ready.add(name)
        return codec

    def _run(self, batch: list[tuple[Connection, Request]]) -> None:
        name, fn, static, _ = batch[0][1]
        start = time.perf_counter()
        try:
            arrays = tuple(np.concatenate(parts) for parts in zip(*(r[3] for _, r in batch)))
            out = run_here(self._codec(name), fn, arrays, dict(static))
            self.busy += time.perf_counter() - start
        except Exception as err:  # noqa: BLE001 - the caller's error (a damaged file's indices, say)
            if len(batch) > 1:  # only the call that fails alone gets the error
                for one in batch:
                    self._run([one])
                return
            self._reply(batch[0][0], (False, f"{type(err).__name__}: {err}"))
            return
        self.calls, self.batches = self.calls + len(batch), self.batches + 1
        cuts = np.cumsum([len(r[3][0]) for _, r in batch])[:-1]
        rows = [np.split(o, cuts) for o in out]
        for i, (conn, _) in enumerate(batch):
            self._reply(conn, (True, tuple(r[i] for r in rows)))

    def _reply(self, conn: Connection, message: tuple[bool, Any]) -> None:
        try:
            conn.send(message)
        except OSError:
            self._drop(conn)

    def close(self) -> None:
        self._stop.set()
        if self.started:
            try:
                Client(self.address, authkey=self.authkey).close()  # wakes the accepting thread
            except OSError:
                pass
            self._threads[1].join()
        self._listener.close()
        if self.started:
            self._threads[0].join(1)
        for conn in list(self._conns):
            conn.close()
