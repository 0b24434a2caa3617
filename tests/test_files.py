"""Atomic outputs: never a directory replaced, never a concurrent writer's file lost, no temporary files left."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import assert_user_error, files_in, run

from nmc.codec import files as F
from nmc.codec.errors import MediaError


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


class TestNeverReplaceADirectory:
    def test_force_refuses_a_directory_output(self, capsys, image_file: Path) -> None:  # noqa: ANN001
        somedir = image_file.parent / "somedir"
        somedir.mkdir()
        (somedir / "keep.txt").write_text("precious")
        assert_user_error(run(capsys, "compress", str(image_file), "-c", "toy-image", "-o", str(somedir), "--force"), "is a directory")
        assert (somedir / "keep.txt").read_text() == "precious"
        run(capsys, "compress", str(image_file), "-c", "toy-image")
        assert_user_error(run(capsys, "decompress", str(image_file) + ".nmc", "-o", str(somedir), "--force"), "is a directory")
        assert (somedir / "keep.txt").read_text() == "precious"

    @pytest.mark.parametrize("name", [".", ".."])
    def test_dot_and_parent(self, capsys, image_file: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:  # noqa: ANN001
        monkeypatch.chdir(image_file.parent)
        before = files_in(image_file.parent)
        assert_user_error(run(capsys, "compress", image_file.name, "-c", "toy-image", "-o", name, "--force"), "is a directory")
        assert files_in(image_file.parent) == before and image_file.is_file()

    def test_a_directory_that_appears_while_writing_is_kept(self, tmp_path: Path) -> None:
        target = tmp_path / "out.nmc"
        with pytest.raises(MediaError, match="is a directory"):
            with F.atomic_output(target, force=True) as tmp:
                tmp.write_bytes(b"new")
                target.mkdir()
                (target / "keep.txt").write_text("precious")
        assert (target / "keep.txt").read_text() == "precious" and files_in(tmp_path) == {"out.nmc"}


class TestExclusiveRename:
    def test_a_file_that_appears_while_writing_is_not_replaced(self, tmp_path: Path) -> None:
        target = tmp_path / "out.nmc"
        with pytest.raises(MediaError, match="appeared while"):
            with F.atomic_output(target) as tmp:
                tmp.write_bytes(b"mine")
                target.write_bytes(b"theirs")  # another writer finished first
        assert target.read_bytes() == b"theirs" and files_in(tmp_path) == {"out.nmc"}

    def test_force_replaces_a_file(self, tmp_path: Path) -> None:
        target = tmp_path / "out.nmc"
        target.write_bytes(b"old")
        with F.atomic_output(target, force=True) as tmp:
            tmp.write_bytes(b"new")
        assert target.read_bytes() == b"new" and files_in(tmp_path) == {"out.nmc"}


class TestTemporaryFiles:
    def test_failure_leaves_nothing(self, tmp_path: Path) -> None:
        with pytest.raises(RuntimeError):
            with F.atomic_output(tmp_path / "x.png") as tmp:
                tmp.write_bytes(b"half")
                assert F.TEMP_NAME.match(tmp.name)
                raise RuntimeError("boom")
        assert files_in(tmp_path) == set()

    def test_stale_ones_are_recognised_by_a_dead_pid(self, tmp_path: Path) -> None:
        stale = F.temp_path(tmp_path / "a.png").with_name(f".a.png.{dead_pid()}.nmctmp.png")
        live = F.temp_path(tmp_path / "b.png")  # this process: still writing
        for p in (stale, live, tmp_path / ".hidden.png"):
            p.write_bytes(b"")
        assert F.remove_stale_temps([tmp_path]) == 1
        assert files_in(tmp_path) == {live.name, ".hidden.png"}
