"""The same input gives the same file, and a file the same samples or pixels, whatever the number
of torch threads: each real codec encodes here on one thread, then processes with 2 and 4 threads
decode that file and encode the input again. The shipped weights are used (a random network may
not show oneDNN's thread-dependent summation)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from nmc.codec import api
from nmc.codec import media as M
from nmc.codec.registry import get_codec

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def inputs() -> dict[str, tuple[M.Image | M.Audio, str]]:
    speech, rate = sf.read(SAMPLES / "speech_es.flac", dtype="float32")
    photo = np.asarray(Image.open(SAMPLES / "photo_aqua.png").convert("RGB"))
    crop = np.clip(photo.astype(np.int16) + 4, 0, 255).astype(np.uint8)[256:, :384]  # coded differently on 1 and 2 threads without one_thread
    return {"hificodec": (M.Audio.from_array(speech[: 3 * rate], rate), "2kbps"), "mcquic": (M.Image(np.ascontiguousarray(crop)), "q4")}


def digest(data: bytes, media: M.Image | M.Audio) -> list[str]:
    raw = media.pixels.tobytes() if isinstance(media, M.Image) else media.to_array().tobytes()
    return [hashlib.sha256(data).hexdigest(), hashlib.sha256(raw).hexdigest()]


SCRIPT = textwrap.dedent("""
    import hashlib, json, sys, numpy as np, torch
    torch.set_num_threads(int(sys.argv[1]))
    from nmc.codec import api, media as M
    out = {}
    for name, setting in json.loads(sys.argv[2]).items():
        x = np.load(f"{sys.argv[3]}/{name}.npy")
        media = M.Image(x) if x.dtype == np.uint8 else M.Audio.from_array(x, 16000)
        data = api.compress(name, media, setting)
        back = api.decompress(open(f"{sys.argv[3]}/{name}.nmc", "rb").read())
        raw = back.pixels.tobytes() if isinstance(back, M.Image) else back.to_array().tobytes()
        out[name] = [hashlib.sha256(data).hexdigest(), hashlib.sha256(raw).hexdigest()]
    print(json.dumps(out))
""")


@pytest.mark.usefixtures("one_torch_thread")
def test_files_and_media_do_not_depend_on_the_thread_count(tmp_path: Path) -> None:
    here, settings = {}, {}
    for name, (media, setting) in inputs().items():
        if not get_codec(name).weights_path or not get_codec(name).weights_path.is_file():  # type: ignore[union-attr]
            pytest.skip(f"{name}: the shipped weights are needed")
        data = api.compress(name, media, setting)
        (tmp_path / f"{name}.nmc").write_bytes(data)
        np.save(tmp_path / f"{name}.npy", media.pixels if isinstance(media, M.Image) else media.to_array())
        here[name], settings[name] = digest(data, api.decompress(data)), setting
    for threads in (2, 4):
        run = subprocess.run([sys.executable, "-c", SCRIPT, str(threads), json.dumps(settings), str(tmp_path)], capture_output=True, text=True, check=True)
        assert json.loads(run.stdout) == here, f"{threads} threads"
