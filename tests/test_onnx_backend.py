"""The ONNX Runtime path (`codec/onnx_backend.py`): a warm command imports no torch and writes the same bytes.

The suite runs with `NMC_BACKEND=torch` (conftest); these tests turn the fast path on in a cache folder of their own.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from nmc.codec import api
from nmc.codec import media as M
from nmc.codec import onnx_backend as OB
from nmc.codec.evaluate import learned_coder
from nmc.codec.interface import package_sha256
from nmc.codec.registry import get_codec

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[1]
# One process: code a small photo and a short clip with the fast path on, then report the bytes, the decoded media
# and whether torch got imported.
SCRIPT = """
import json, sys
import numpy as np
from nmc.codec import api, media as M
photo = M.read_image(sys.argv[1]); clip = M.read_audio(sys.argv[2])
photo = M.Image(np.ascontiguousarray(photo.pixels[:64, :96]))
clip = M.Audio.from_array(clip.to_array()[:16000], clip.sample_rate)
p = api.compress("mcquic", photo, "q2"); s = api.compress("hificodec", clip, "2kbps"); v = api.compress("vqgan", photo, "s64")
np.savez(sys.argv[3], p=np.frombuffer(p, np.uint8), s=np.frombuffer(s, np.uint8), v=np.frombuffer(v, np.uint8),
         pixels=api.decompress(p).pixels, samples=api.decompress(s).to_array(), vq=api.decompress(v).pixels)
print(json.dumps({"torch": "torch" in sys.modules}))
"""


def code(tmp_path: Path, backend: str, name: str) -> tuple[dict[str, np.ndarray], bool]:
    env = {**os.environ, "NMC_BACKEND": backend, "NMC_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / f"{name}.npz"
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "samples/photo_aqua.png"), str(ROOT / "samples/speech_es.flac"), str(out)],
                         env=env, capture_output=True, text=True, timeout=600, check=True)  # fmt: skip
    with np.load(out) as z:
        return dict(z), json.loads(run.stdout.strip().splitlines()[-1])["torch"]


@pytest.mark.slow
def test_a_warm_command_imports_no_torch_and_writes_the_same_bytes(tmp_path: Path) -> None:
    """The first run exports the calls (torch), the second runs them in ONNX Runtime without importing torch; both
    write the bytes of the torch path and decode within a level / 1e-3 of it."""
    torch_run, _ = code(tmp_path, "torch", "torch")
    assert not (tmp_path / "cache").exists()  # NMC_BACKEND=torch writes no graph
    cold, cold_torch = code(tmp_path, "auto", "cold")
    graphs = {p.name.split("-")[0] + "-" + p.name.split("-")[2] for p in (tmp_path / "cache" / "onnx").glob("*.onnx")}
    assert cold_torch and graphs == {"hificodec-decode", "hificodec-encode", "mcquic-compress", "mcquic-decompress", "vqgan-indices", "vqgan-decode"}
    warm, warm_torch = code(tmp_path, "auto", "warm")
    assert not warm_torch
    for run in (cold, warm):
        assert all(run[k].tobytes() == torch_run[k].tobytes() for k in ("p", "s", "v"))
    assert max(np.abs(warm[k].astype(int) - torch_run[k].astype(int)).max() for k in ("pixels", "vq")) <= 1
    assert np.abs(warm["samples"] - torch_run["samples"]).max() <= 1e-3


def small_photo() -> M.Image:
    rng = np.random.default_rng(0)
    return M.Image(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))


def test_a_graph_is_bound_to_its_call_and_a_bad_one_is_never_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The graph's name holds the weights hash, the function, the static arguments and the input shapes; an export
    whose outputs differ from torch's is thrown away; a damaged graph file makes torch run the call, and the next
    export replaces it."""
    monkeypatch.setenv("NMC_BACKEND", "auto")
    monkeypatch.setenv("NMC_CACHE_DIR", str(tmp_path))
    codec = get_codec("mcquic")
    window = np.zeros((1, 32, 48, 3), np.uint8)
    path = OB.graph_path(codec, "compress", (window,), {"stages": 2})
    assert codec.weights_hash() in path.name and path.parent == tmp_path / "onnx"
    assert len({path, OB.graph_path(codec, "compress", (window,), {"stages": 3}),
                OB.graph_path(codec, "compress", (np.zeros((1, 48, 48, 3), np.uint8),), {"stages": 2})}) == 3  # fmt: skip
    expected = codec.run("compress", window, stages=2)  # torch, then the export
    assert path.is_file() and OB.run(codec, "compress", (window,), {"stages": 2}) is not None
    path.write_bytes(b"not a graph")
    OB._sessions.clear()
    assert OB.run(codec, "compress", (window,), {"stages": 2}) is None
    assert all(np.array_equal(a, b) for a, b in zip(codec.run("compress", window, stages=2), expected))  # torch again
    assert OB.run(codec, "compress", (window,), {"stages": 2}) is not None  # replaced
    path.unlink()
    OB._sessions.clear()
    real = OB._run_graph
    monkeypatch.setattr(OB, "_run_graph", lambda p, a, **kw: tuple(x + 1 for x in real(p, a, **kw)))  # ONNX Runtime disagrees
    assert not OB.export(codec, "compress", (window,), {"stages": 2}, expected) and not path.exists()
    assert list(tmp_path.glob("onnx/*.part")) == []


def test_a_graph_is_bound_to_the_code_that_exported_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After an upgrade that changes a codec's own code (e.g. vqgan's choice of indices), the graphs of the old code are
    not used: the graph's name holds a hash of the codec's package sources."""
    pkg = tmp_path / "fakecodec"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "network.py").write_text("ANSWER = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fakecodec.network  # noqa: F401

    first = package_sha256("fakecodec.network")
    (pkg / "network.py").write_text("ANSWER = 2\n")
    package_sha256.cache_clear()
    assert package_sha256("fakecodec.network") != first and package_sha256("fakecodec") == package_sha256("fakecodec.network")
    codec = get_codec("mcquic")
    window = np.zeros((1, 32, 48, 3), np.uint8)
    before = OB.graph_path(codec, "compress", (window,), {"stages": 2})
    identity = learned_coder("mcquic").identity  # `nmc eval`'s cached points are bound to the code too
    monkeypatch.setattr(type(codec), "code_hash", lambda self: "other code")
    assert OB.graph_path(codec, "compress", (window,), {"stages": 2}) != before
    assert learned_coder("mcquic").identity != identity


def test_a_cache_that_cannot_be_written_leaves_the_torch_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    monkeypatch.setenv("NMC_BACKEND", "auto")
    monkeypatch.setenv("NMC_CACHE_DIR", str(blocker))  # its onnx/ folder cannot be made
    codec = get_codec("mcquic")
    window = np.zeros((1, 32, 32, 3), np.uint8)
    assert codec.run("compress", window, stages=1)[0].shape == (1, 4, 2, 2) and not OB.export(codec, "compress", (window,), {"stages": 1}, ())


def test_the_cache_keeps_the_most_recent_graphs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NMC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(OB, "MAX_GRAPHS", 2)
    folder = tmp_path / "onnx"
    folder.mkdir()
    for i in range(4):
        (folder / f"mcquic-h-compress-{i}.onnx").write_bytes(b"")
        os.utime(folder / f"mcquic-h-compress-{i}.onnx", (i, i))
    (folder / "hificodec-h-encode-0.onnx").write_bytes(b"")
    OB._prune("mcquic")
    assert sorted(p.name for p in folder.iterdir()) == ["hificodec-h-encode-0.onnx", "mcquic-h-compress-2.onnx", "mcquic-h-compress-3.onnx"]
    (folder / "mcquic-h-compress-9.onnx").symlink_to(folder / "gone.onnx")  # a graph another process removes meanwhile
    OB._prune("mcquic")  # parallel `nmc eval` workers prune at once: a vanished file is no error
    assert sorted(p.name for p in folder.iterdir() if p.exists()) == ["hificodec-h-encode-0.onnx", "mcquic-h-compress-2.onnx", "mcquic-h-compress-3.onnx"]


def test_the_fast_path_is_cpu_only_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    codec = get_codec("mcquic")
    monkeypatch.setenv("NMC_BACKEND", "auto")
    assert OB.usable(codec, "compress") and not OB.usable(codec, "no-such-function")
    assert OB.usable(get_codec("vqgan"), "decode") and not OB.usable(get_codec("vqgan"), "decode_codes")  # a fill: torch
    monkeypatch.setenv("NMC_BACKEND", "torch")
    assert not OB.usable(codec, "compress")


def test_auto_device_on_a_cpu_build_imports_no_torch() -> None:
    """`--device auto` knows there is no GPU without importing torch when torch is a CPU build or no driver is there."""
    code = "import sys; from nmc.codec.device import resolve; print(resolve('auto'), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    from nmc.codec.device import _cuda_possible

    if not _cuda_possible():
        assert out == ["cpu", "False"]
    else:
        assert out[0] in ("cpu", "cuda")


def test_the_prior_is_read_without_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh codec's `prior` (what entropy coding needs) comes from the weights file alone, equal to the model's."""
    from nmc.models.mcquic.codec import McQuicCodec

    fresh = McQuicCodec()
    prior = fresh.prior
    assert "model" not in fresh.__dict__
    assert prior.alphabets == get_codec("mcquic").model.prior.alphabets
    assert all(np.array_equal(a, b) for a, b in zip(prior.unigram, get_codec("mcquic").model.prior.unigram))
    buf = io.BytesIO()
    api.compress_to_file(fresh, small_photo(), buf, fresh.setting("q1"))
    assert api.decompress(buf.getvalue()).pixels.shape == (32, 48, 3)


def test_the_prior_tables_are_the_same_integers_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where torch is not loaded the int8 products of the priors go through numpy: the same integers."""
    for name in ("hificodec", "mcquic"):
        prior = get_codec(name).prior.priors[1]
        with_torch = [prior._dots(c, prior.embed[c]) for c in range(len(prior.embed))]
        with monkeypatch.context() as m:
            m.delitem(sys.modules, "torch")
            without = [prior._dots(c, prior.embed[c]) for c in range(len(prior.embed))]
        assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(with_torch, without))
