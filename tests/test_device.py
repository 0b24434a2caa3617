"""`--device`: names resolved (auto is the CPU without a GPU), a missing GPU is one clear error, and
a file coded on one device decodes on the other with the same quality (PSNR within 0.05 dB, PESQ
within 0.02 of the CPU-only path). Without CUDA only the CPU-only pair runs, and it must give the
reference bytes and media exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from test_cli import run

from nmc.codec import api, device
from nmc.codec import media as M
from nmc.codec.errors import MediaError
from nmc.codec.metrics import pesq_wb, psnr

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TestResolve:
    def test_names(self) -> None:
        assert device.resolve("cpu") == "cpu"
        assert device.resolve("auto") == ("cuda" if CUDA else "cpu")
        with pytest.raises(MediaError, match="choose auto, cpu, cuda"):
            device.resolve("gpu")

    @pytest.mark.skipif(CUDA, reason="a CUDA device is present")
    def test_cuda_without_a_gpu_is_one_clear_error(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        code, _, err = run(capsys, "compress", str(SAMPLES / "photo_aqua.png"), "-o", str(tmp_path / "x.nmc"), "--device", "cuda")
        assert code == 1 and err.startswith("nmc: error: --device cuda: no CUDA device") and len(err.splitlines()) == 1
        assert list(tmp_path.iterdir()) == []
        code, _, err = run(capsys, "batch", str(SAMPLES), str(tmp_path / "out"), "--device", "cuda:0")
        assert code == 1 and "no CUDA device" in err and not (tmp_path / "out").exists()

    def test_usage_errors(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        code, _, err = run(capsys, "batch", str(SAMPLES), str(tmp_path / "out"), "--executor", "dask")
        assert code == 2 and "choose local or ray" in err
        code, _, err = run(capsys, "batch", str(SAMPLES), str(tmp_path / "out"), "--address", "auto")
        assert code == 2 and "--address needs --executor ray" in err


@pytest.fixture(scope="module")
def inputs() -> tuple[M.Image, M.Audio]:
    photo = np.asarray(Image.open(SAMPLES / "photo_aqua.png").convert("RGB"))[:256, :384]
    x, rate = sf.read(SAMPLES / "speech_es.flac", dtype="float32")
    return M.Image(np.ascontiguousarray(photo)), M.Audio.from_array(x[: 4 * rate], rate)


PAIRS = [("cpu", "cpu"), pytest.param("cuda", "cpu", marks=needs_cuda), pytest.param("cpu", "cuda", marks=needs_cuda), pytest.param("cuda", "cuda", marks=needs_cuda)]


@pytest.mark.parametrize(("encode_on", "decode_on"), PAIRS)
def test_coded_on_one_device_decoded_on_another(inputs: tuple[M.Image, M.Audio], encode_on: str, decode_on: str) -> None:
    photo, clip = inputs
    try:
        api.use_device("cpu")
        ref_data = [api.compress("mcquic", photo, "q2"), api.compress("hificodec", clip, "2kbps")]
        ref = [api.decompress(d) for d in ref_data]
        api.use_device(encode_on)
        data = [api.compress("mcquic", photo, "q2"), api.compress("hificodec", clip, "2kbps")]
        api.use_device(decode_on)
        got = [api.decompress(d) for d in data]
    finally:
        api.use_device("cpu")
    if encode_on == decode_on == "cpu":
        assert data == ref_data and np.array_equal(got[0].pixels, ref[0].pixels) and np.array_equal(got[1].to_array(), ref[1].to_array())
    assert abs(psnr(photo.pixels, got[0].pixels) - psnr(photo.pixels, ref[0].pixels)) <= 0.05
    x = clip.to_array()
    assert abs(pesq_wb(x, 16000, got[1].to_array(), 16000) - pesq_wb(x, 16000, ref[1].to_array(), 16000)) <= 0.02
