"""Batched network calls (`codec/netcall.py`): rows of a batch are coded as they are alone, the
server answers each caller with its rows and gives an error only to the call that fails, and a
codec whose calls go to a server writes the same bytes. The shipped weights are used."""

from __future__ import annotations

import time
from multiprocessing import Pipe
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from nmc.codec import api, netcall
from nmc.codec import media as M
from nmc.codec.registry import get_codec

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def crops(n: int, h: int = 64, w: int = 96) -> list[np.ndarray]:
    photo = np.asarray(Image.open(SAMPLES / "photo_aqua.png").convert("RGB"))
    return [np.ascontiguousarray(photo[40 * i : 40 * i + h, 50 * i : 50 * i + w]) for i in range(n)]


def speech(seconds: float, start: float = 0.0) -> np.ndarray:
    x, rate = sf.read(SAMPLES / "speech_es.flac", dtype="float32")
    return np.ascontiguousarray(x[int(start * rate) : int((start + seconds) * rate)])


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]


def rows_alone(codec: str, fn: str, arrays: tuple[np.ndarray, ...], static: dict) -> None:  # type: ignore[type-arg]
    c = get_codec(codec)
    batched = netcall.run_here(c, fn, arrays, static)  # type: ignore[arg-type]
    for i in range(len(arrays[0])):
        alone = netcall.run_here(c, fn, tuple(a[i : i + 1] for a in arrays), static)  # type: ignore[arg-type]
        assert all(np.array_equal(b[i : i + 1], a) for b, a in zip(batched, alone)), f"{codec} {fn} row {i}"


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> Iterator[str]:
    """The real codecs' networks on each device (small inputs: oneDNN and cuDNN then pick kernels by batch size)."""
    api.use_device(request.param)
    yield request.param
    api.use_device("cpu")


@pytest.mark.usefixtures("device")
class TestRowsAreCodedAlone:
    def test_mcquic(self) -> None:
        windows = np.stack(crops(3))
        rows_alone("mcquic", "compress", (windows,), {"stages": 4})
        coarse, *fine = netcall.run_here(get_codec("mcquic"), "compress", (windows,), {"stages": 4})  # type: ignore[arg-type]
        rows_alone("mcquic", "decompress", (coarse.astype(np.uint8), *(f.astype(np.uint8) for f in fine)), {"shape": (64, 96), "gray": False})

    def test_hificodec(self) -> None:
        x = np.stack([speech(1.0, s) for s in (0.5, 2.0, 4.0)])[:, None]
        rows_alone("hificodec", "encode", (x,), {"levels": 2})
        (idx,) = netcall.run_here(get_codec("hificodec"), "encode", (x,), {"levels": 4})  # type: ignore[arg-type]
        rows_alone("hificodec", "decode", (idx,), {})


def test_clips_of_similar_lengths_give_calls_of_one_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """hificodec pads a clip's last window with silence to a multiple of 0.5 s (encoder and decoder),
    so that `nmc batch` can batch clips of similar lengths: 1.0 s and 1.2 s share one bucket, 1.4 s not."""
    shapes: list[tuple[str, tuple[tuple[int, ...], ...]]] = []
    run_here = netcall.run_here

    def spy(codec, fn, arrays, static):  # type: ignore[no-untyped-def]
        shapes.append((fn, tuple(a.shape for a in arrays)))
        return run_here(codec, fn, arrays, static)

    def calls(seconds: float) -> list[tuple[str, tuple[tuple[int, ...], ...]]]:
        shapes.clear()
        api.decompress(api.compress("hificodec", M.Audio.from_array(speech(seconds, 0.3), 16000), "2kbps"))
        return list(shapes)

    get_codec("hificodec").silence_indices()  # type: ignore[attr-defined]  # (cached: not in the calls)
    monkeypatch.setattr(netcall, "run_here", spy)
    short, longer, other = calls(1.0), calls(1.2), calls(1.4)
    assert short == longer and [fn for fn, _ in short] == ["encode", "decode"] and short != other


def test_a_gpu_call_has_the_rows_of_its_function(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU every call of a network function has its rows (the codec's `gpu_rows`, else
    `GPU_ROWS`), zero rows added, whatever the number of rows that came; on the CPU one row."""
    calls: list[np.ndarray] = []

    def fake_run(net, device, fn, arrays, static):  # type: ignore[no-untyped-def]
        calls.append(arrays[0])
        return (arrays[0] * 2,)

    monkeypatch.setattr(netcall, "_run", fake_run)
    x = np.arange(1, 7, dtype=np.float32)[:, None]
    (out,) = netcall.run_on(None, "cuda", None, (x,), {}, rows=4)
    assert [len(c) for c in calls] == [4, 4] and not calls[1][2:].any() and np.array_equal(out, 2 * x)
    calls.clear()
    netcall.run_on(None, "cpu", None, (x,), {}, rows=4)
    assert [len(c) for c in calls] == [1] * 6
    mcquic, hifi = get_codec("mcquic"), get_codec("hificodec")
    assert netcall.rows_per_call(mcquic, "compress") == netcall.rows_per_call(mcquic, "decompress") == 4  # type: ignore[arg-type]
    assert netcall.rows_per_call(hifi, "encode") == netcall.rows_per_call(hifi, "decode") == netcall.GPU_ROWS  # type: ignore[arg-type]


class TestServer:
    def test_it_warms_up_when_started_and_closes_unstarted_at_once(self) -> None:
        server = netcall.Server("cpu", codecs=("hificodec",))
        try:
            deadline = time.monotonic() + 60
            while "warm" not in server.times and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.times["started"] <= server.times["warm"] and "model" in vars(get_codec("hificodec"))
        finally:
            server.close()
        idle = netcall.Server("cpu", start=False, codecs=("mcquic",))
        idle.close()
        assert not idle.started and not idle.times

    def test_each_caller_gets_its_rows_and_a_bad_call_fails_alone(self) -> None:
        server = netcall.Server("cpu", max_rows=8)
        try:
            c = get_codec("hificodec")
            (good,) = netcall.run_here(c, "encode", (speech(0.5)[None, None],), {"levels": 1})  # type: ignore[arg-type]
            calls = [good, good[:, :, ::-1].copy(), np.full_like(good, 5000)]  # the last: indices outside the codebook
            pipes = [Pipe() for _ in calls]
            server._run([(ours, ("hificodec", "decode", (), (idx,))) for (ours, _), idx in zip(pipes, calls)])
            replies = [theirs.recv() for _, theirs in pipes]
            for idx, (ok, out) in zip(calls[:2], replies):
                assert ok and np.array_equal(out[0], netcall.run_here(c, "decode", (idx,), {})[0])  # type: ignore[arg-type]
            ok, message = replies[2]
            assert not ok and "outside" in message
        finally:
            server.close()

    def test_a_codec_behind_a_server_writes_the_same_bytes(self, monkeypatch: pytest.MonkeyPatch) -> None:
        photo, clip = M.Image(crops(1)[0]), M.Audio.from_array(speech(1.5, 1.0), 16000)
        here = [api.compress("mcquic", photo, "q3"), api.compress("hificodec", clip, "2kbps")]
        server = netcall.Server("cpu", max_rows=8)
        try:
            monkeypatch.setattr(netcall, "_client", None)
            netcall.connect(server.address, server.authkey)
            there = [api.compress("mcquic", photo, "q3"), api.compress("hificodec", clip, "2kbps")]
            decoded = [api.decompress(d) for d in there]
        finally:
            netcall._client.close()  # type: ignore[union-attr]
            monkeypatch.setattr(netcall, "_client", None)
            server.close()
        assert here == there and server.calls >= 3
        assert np.array_equal(decoded[0].pixels, api.decompress(here[0]).pixels)
        assert np.array_equal(decoded[1].to_array(), api.decompress(here[1]).to_array())
