"""Atomic outputs: never a directory replaced but nmc's own frame directories, never a concurrent writer's file lost, no temporary files left."""

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


def write_frames(target: Path, names: list[str], force: bool = False) -> None:
    """What decoding a Gaussian sequence does: a directory of frames, written atomically."""
    with F.atomic_output(target, force) as tmp:
        tmp.mkdir()
        for n in names:
            (tmp / n).write_bytes(n.encode())


class TestFrameDirectories:
    """A sequence decodes to a directory; --force replaces only a frame directory nmc wrote, unchanged."""

    def test_written_whole_with_a_marker(self, tmp_path: Path) -> None:
        write_frames(tmp_path / "seq", ["a.ply", "b.ply"])
        assert files_in(tmp_path / "seq") == {"a.ply", "b.ply", F.FRAMES_MARKER} and files_in(tmp_path) == {"seq"}
        assert F.nmc_frame_directory(tmp_path / "seq")
        with pytest.raises(MediaError, match="already exists"):
            write_frames(tmp_path / "seq", ["c.ply"])

    def test_force_replaces_an_unchanged_nmc_directory(self, tmp_path: Path) -> None:
        write_frames(tmp_path / "seq", ["a.ply", "b.ply"])
        write_frames(tmp_path / "seq", ["c.ply"], force=True)
        assert files_in(tmp_path / "seq") == {"c.ply", F.FRAMES_MARKER} and files_in(tmp_path) == {"seq"}

    @pytest.mark.parametrize("change", ["user file", "subdirectory", "no marker", "bad marker", "symlink"])
    def test_force_never_replaces_another_directory(self, tmp_path: Path, change: str) -> None:
        write_frames(tmp_path / "seq", ["a.ply"])
        target = tmp_path / "seq"
        if change == "user file":
            (target / "notes.txt").write_text("precious")
        elif change == "subdirectory":
            (target / "sub").mkdir()
        elif change == "no marker":
            (target / F.FRAMES_MARKER).unlink()
        elif change == "bad marker":
            (target / F.FRAMES_MARKER).write_text("{")
        else:
            target = tmp_path / "link"
            target.symlink_to(tmp_path / "seq")
        before = files_in(tmp_path / "seq")
        with pytest.raises(MediaError, match="is a directory that nmc did not write"):
            write_frames(target, ["b.ply"], force=True)
        assert files_in(tmp_path / "seq") == before and (tmp_path / "seq" / "a.ply").read_bytes() == b"a.ply"

    def test_failure_keeps_the_old_output(self, tmp_path: Path) -> None:
        write_frames(tmp_path / "seq", ["a.ply"])
        with pytest.raises(RuntimeError):
            with F.atomic_output(tmp_path / "seq", force=True) as tmp:
                tmp.mkdir()
                (tmp / "b.ply").write_bytes(b"half")
                raise RuntimeError("damaged packet")
        assert files_in(tmp_path / "seq") == {"a.ply", F.FRAMES_MARKER} and files_in(tmp_path) == {"seq"}

    def test_a_directory_that_appears_while_writing_is_kept(self, tmp_path: Path) -> None:
        with pytest.raises(MediaError, match="appeared while"):
            with F.atomic_output(tmp_path / "seq") as tmp:
                tmp.mkdir()
                (tmp / "a.ply").write_bytes(b"mine")
                (tmp_path / "seq").mkdir()
                (tmp_path / "seq" / "keep.txt").write_text("theirs")
        assert files_in(tmp_path / "seq") == {"keep.txt"} and files_in(tmp_path) == {"seq"}

    def test_dot_is_never_replaced(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        write_frames(tmp_path / "seq", ["a.ply"])
        monkeypatch.chdir(tmp_path / "seq")
        with pytest.raises(MediaError, match="is a directory"):
            write_frames(Path("."), ["b.ply"], force=True)


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
