"""`nmc batch --executor ray` on a local Ray instance (2 CPUs): the same files, byte for byte, and
the same summary as the local executor, with a bad file, `--resume` and decoding. Skipped where
Ray is not installed (`pip install 'nmc[ray]'`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import soundfile as sf
from test_cli import ROOT, run

from nmc.codec import media as M

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    photo = M.read_image(ROOT / "samples" / "photo_aqua.png").pixels
    M.write_image(src / "a.png", M.Image(np.ascontiguousarray(photo[100:164, 200:296])))
    M.write_image(src / "sub" / "b.png", M.Image(np.ascontiguousarray(photo[300:348, 500:580])))
    x, rate = sf.read(ROOT / "samples" / "speech_es.flac", dtype="float32")
    sf.write(src / "sub" / "talk.flac", x[: 2 * rate], rate)
    (src / "broken.png").write_bytes(b"\x89PNG garbage")
    return src


def summary(out: str, root: Path) -> dict[str, Any]:
    """The JSON summary without what differs between two runs: times and the output folder."""
    report = json.loads(out)
    files = sorted(({k: v for k, v in f.items() if k not in ("seconds", "output")} for f in report["files"]), key=lambda f: f["src"])
    return {"counts": report["counts"], "files": [{**f, "src": str(Path(f["src"]).relative_to(root))} for f in files]}


def outputs(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.usefixtures("local_ray")
def test_ray_writes_what_the_local_executor_writes(capsys: pytest.CaptureFixture[str], tree: Path, tmp_path: Path) -> None:
    local, far = tmp_path / "local", tmp_path / "ray"
    code_l, out_l, _ = run(capsys, "batch", str(tree), str(local), "--device", "cpu", "--json")
    code_r, out_r, err = run(capsys, "batch", str(tree), str(far), "--executor", "ray", "--workers", "2", "--device", "cpu", "--json")
    assert code_l == code_r == 1 and "broken.png" in err and "Traceback" not in err
    assert summary(out_r, tree) == summary(out_l, tree) and json.loads(out_r)["counts"]["done"] == 3
    assert outputs(far) == outputs(local) and len(outputs(far)) == 3

    (far / "a.png.nmc").unlink()
    code, out, _ = run(capsys, "batch", str(tree), str(far), "--executor", "ray", "--workers", "2", "--device", "cpu", "--resume", "--json")
    assert json.loads(out)["counts"] == {"done": 1, "skipped": 2, "failed": 1, "not_run": 0} and outputs(far) == outputs(local)

    back_l, back_r = tmp_path / "back_local", tmp_path / "back_ray"
    run(capsys, "batch", str(local), str(back_l), "--device", "cpu")
    code, out, _ = run(capsys, "batch", str(far), str(back_r), "--executor", "ray", "--workers", "2", "--device", "cpu", "--json")
    assert code == 0 and outputs(back_r) == outputs(back_l) and sorted(outputs(back_r)) == ["a.png", "sub/b.png", "sub/talk.wav"]
