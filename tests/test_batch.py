"""`nmc batch`: mirrored trees, resume, failures reported while the rest goes on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import synthetic_image
from test_cli import run

from nmc.codec import batch as B
from nmc.codec import media as M


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    M.write_image(src / "one.png", synthetic_image(20, 20, 1))
    M.write_image(src / "a" / "b" / "two.png", synthetic_image(24, 16, 2))
    (src / "a" / "broken.png").write_bytes(b"\x89PNG garbage")
    (src / "a" / "readme.txt").write_text("ignored")
    return src


def test_plan_mirrors_tree(tree: Path, tmp_path: Path) -> None:
    jobs = B.plan(tree, tmp_path / "dst")
    assert sorted(str(j.dst.relative_to(tmp_path / "dst")) for j in jobs) == ["a/b/two.png.nmc", "a/broken.png.nmc", "one.png.nmc"]


def test_batch_compress_resume_and_decode(capsys, tree: Path, tmp_path: Path) -> None:  # noqa: ANN001
    dst = tmp_path / "dst"
    code, out, err = run(capsys, "batch", str(tree), str(dst), "-c", "toy-image", "--json")
    report = json.loads(out)
    assert code == 1 and report["counts"] == {"done": 2, "skipped": 0, "failed": 1, "not_run": 0}
    assert "broken.png" in err and (dst / "a" / "b" / "two.png.nmc").exists() and not (dst / "a" / "broken.png.nmc").exists()

    code, out, _ = run(capsys, "batch", str(tree), str(dst), "-c", "toy-image", "--resume", "--json")
    assert json.loads(out)["counts"] == {"done": 0, "skipped": 2, "failed": 1, "not_run": 0}

    back = tmp_path / "back"
    code, out, _ = run(capsys, "batch", str(dst), str(back), "--workers", "2", "--json")
    assert code == 0 and json.loads(out)["counts"]["done"] == 2
    assert M.read_image(back / "a" / "b" / "two.png").pixels.shape == (24, 16, 3)


def test_batch_refuses_destination_inside_source(capsys, tree: Path) -> None:  # noqa: ANN001
    code, _, err = run(capsys, "batch", str(tree), str(tree / "out"))
    assert code == 1 and "inside" in err
