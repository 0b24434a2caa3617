"""The built wheel holds every codec package, entry point and weights file, the training kit and
the license; installed on its own (no repository beside it), `nmc bench` runs with no arguments."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from nmc.codec.registry import get_codec

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"codec": "nmc/codec", "cli": "nmc/cli", "models": "nmc/models"}
NOT_TRAINED: set[str] = set()  # registered codecs whose weights come with their first training run


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the sources: a build/ folder of earlier builds would leak into it."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for name in ("nmc", *SOURCES):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)], check=True, capture_output=True)
    return next(out.glob("nmc-*.whl"))


def test_wheel_holds_every_codec_its_weights_and_the_kit(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {f"{SOURCES[p.relative_to(ROOT).parts[0]]}/{p.relative_to(ROOT / p.relative_to(ROOT).parts[0]).as_posix()}"
               for d in SOURCES for p in (ROOT / d).rglob("*.py")}  # fmt: skip
    assert sources <= names, sorted(sources - names)
    assert any(n.startswith("nmc/models/trainkit/") for n in names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    codecs = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["nmc.codecs"]
    for name, module in codecs.items():
        assert f"{name} = {module}" in entry_points and module.replace(".", "/") + ".py" in names
        weights = sorted((ROOT / "models" / name / "weights").glob("*.safetensors"))
        declared = get_codec(name).weights_path  # queen fits its decoders at encode time: no weights
        assert bool(weights) != (name in NOT_TRAINED or declared is None), name  # drop a name once it ships weights
        assert all(f"nmc/models/{name}/weights/{w.name}" in names for w in weights)
        assert declared is None or name in NOT_TRAINED or f"nmc/models/{name}/weights/{Path(declared).name}" in names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "License-Expression: MIT" in metadata and any(n.endswith("licenses/LICENSE") for n in names)


def test_bench_runs_from_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(wheel)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}  # ahead of the editable install of the repository
    where = subprocess.run([sys.executable, "-c", "import nmc.codec, nmc.models.mcquic.codec as q; print(nmc.codec.__file__, q.WEIGHTS)"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert all(p.startswith(str(target)) for p in where)
    bench = subprocess.run([str(target / "bin" / "nmc"), "bench"], env={**env, "COLUMNS": "250"}, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert bench.returncode == 0, bench.stderr[-2000:]
    assert "synthetic" in bench.stderr and "hificodec" in bench.stderr and "mcquic" in bench.stderr
