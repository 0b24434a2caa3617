"""`nmc batch`: mirrored trees, resume, failures reported while the rest goes on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_image
from test_cli import ROOT, SLOW_NMC, default_sigint, run
from test_files import dead_pid

from nmc.codec import api
from nmc.codec import batch as B
from nmc.codec import files as F
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


def test_planning_a_decode_reads_headers_only(tmp_path: Path) -> None:
    """Planning names each output from its header without importing torch or loading a model (it
    cost 1.3 s per `nmc batch` on the 2-core box); a file this nmc cannot decode fails when it runs."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("hificodec_format3.nmc", "mcquic_format3.nmc", "queen_format2.nmc", "hificodec_retired_s15470.nmc"):
        (src / name).write_bytes((ROOT / "tests" / "data" / name).read_bytes())
    code = (
        "import sys; from pathlib import Path; from nmc.codec import batch as B; "
        f"jobs = B.plan(Path({str(src)!r}), Path({str(tmp_path / 'dst')!r})); "
        "print(sorted(j.dst.name for j in jobs), [j.error for j in jobs], 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "['hificodec_format3.wav', 'hificodec_retired_s15470.wav', 'mcquic_format3.png', 'queen_format2'] ['', '', '', ''] False"


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


@pytest.mark.parametrize("args, files, expected", [((), 3, 2), ((), 1, 1), (("--workers", "4"), 3, 3), (("--workers", "1"), 3, 1)])
def test_default_workers_are_the_cores_but_never_more_than_the_files(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], files: int, expected: int  # noqa: ANN001
) -> None:
    """On the CPU too the default is one worker per core (2 here), capped at the number of files."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(files):
        M.write_image(src / f"{i}.png", synthetic_image(8, 8, i))
    seen = []

    def fake_run(jobs, codec, quality, workers, *rest, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(workers)
        yield from (B.Result(j, "done") for j in jobs)

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(B, "run", fake_run)
    code, _, _ = run(capsys, "batch", str(src), str(tmp_path / "dst"), "-c", "toy-image", "--device", "cpu", "--json", *args)
    assert code == 0 and seen == [expected]


def test_batch_refuses_destination_inside_source(capsys, tree: Path) -> None:  # noqa: ANN001
    code, _, err = run(capsys, "batch", str(tree), str(tree / "out"))
    assert code == 1 and "inside" in err


def test_sources_with_the_same_output_are_refused_when_planning(capsys, tmp_path: Path) -> None:  # noqa: ANN001
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for name, seed in (("a.png", 1), ("a.jpg", 2), ("b.png", 3)):
        (src / (name + ".nmc")).write_bytes(api.compress("toy-image", synthetic_image(16, 16, seed)))
    code, out, err = run(capsys, "batch", str(src), str(dst), "--workers", "2", "--json")
    report = json.loads(out)
    assert code == 1 and report["counts"] == {"done": 1, "skipped": 0, "failed": 2, "not_run": 0}
    assert sorted(p.name for p in dst.iterdir()) == ["b.png"] and "would also be written" in err


def test_a_dead_worker_fails_its_files_only(capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for i in range(6):
        M.write_image(src / f"{i}.png", synthetic_image(16, 16, i))
    compress = B.compress_path

    def killed_on_3(path: Path, out: Path, **kwargs: object) -> object:
        if path.name == "3.png":  # dies (like the OOM killer) while its temporary output exists
            with F.atomic_output(out) as tmp:
                tmp.write_bytes(b"")
                os.kill(os.getpid(), signal.SIGKILL)
        return compress(path, out, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(B, "compress_path", killed_on_3)  # the forked workers inherit it
    code, out, err = run(capsys, "batch", str(src), str(dst), "-c", "toy-image", "--workers", "2", "--json")
    report = json.loads(out)
    assert code == 1 and report["counts"]["not_run"] == 0 and 1 <= report["counts"]["failed"] <= 2  # 3.png and what ran beside it
    assert {r["src"].rsplit("/", 1)[1] for r in report["files"] if r["status"] == "failed"} >= {"3.png"}
    assert not [p for p in dst.iterdir() if F.TEMP_NAME.match(p.name)]
    monkeypatch.setattr(B, "compress_path", compress)
    code, out, _ = run(capsys, "batch", str(src), str(dst), "-c", "toy-image", "--resume", "--json")
    assert code == 0 and len(list(dst.iterdir())) == 6


def test_resume_removes_stale_temporary_files(capsys, tree: Path, tmp_path: Path) -> None:  # noqa: ANN001
    dst = tmp_path / "dst"
    (dst / "a").mkdir(parents=True)
    stale = dst / "a" / f".broken.png.nmc.{dead_pid()}.nmctmp.nmc"
    stale.write_bytes(b"")
    run(capsys, "batch", str(tree), str(dst), "-c", "toy-image", "--resume")
    assert not stale.exists()


def test_ctrl_c_stops_the_workers_and_reports(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for i in range(8):
        M.write_image(src / f"{i}.png", synthetic_image(64, 16, i))  # 4 packets: 4 s each with SLOW_NMC
    p = subprocess.Popen([*SLOW_NMC, "batch", str(src), str(dst), "-c", "toy-image", "-j", "2"], stderr=subprocess.PIPE, cwd=ROOT, start_new_session=True, preexec_fn=default_sigint)
    deadline = time.monotonic() + 30
    while not (dst.is_dir() and any(q.name.startswith(".") for q in dst.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)  # until a worker writes its (hidden) temporary output
    start = time.monotonic()
    os.killpg(p.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    _, err = p.communicate(timeout=60)
    assert time.monotonic() - start < 10 and p.returncode == 130
    text = err.decode()
    assert "8 not run" in text and text.rstrip().endswith("nmc: error: interrupted") and "Traceback" not in text, text
    assert list(dst.iterdir()) == []


def test_a_shared_network_writes_what_one_file_at_a_time_writes(tmp_path: Path) -> None:
    """Workers that send their network calls to this process (`nmc batch` on a GPU, forced here on
    the CPU) write the same bytes, and decode to the same media, as `api` coding in this process."""
    import soundfile as sf

    src, dst, back = tmp_path / "src", tmp_path / "dst", tmp_path / "back"
    (src / "sub").mkdir(parents=True)
    photo = M.read_image(ROOT / "samples" / "photo_aqua.png").pixels
    for i in range(3):  # equal sizes: their calls can share a batch
        M.write_image(src / f"p{i}.png", M.Image(np.ascontiguousarray(photo[60 * i : 60 * i + 64, 80 * i : 80 * i + 96])))
    M.write_image(src / "sub" / "odd.png", M.Image(np.ascontiguousarray(photo[:50, :70])))
    x, rate = sf.read(ROOT / "samples" / "speech_es.flac", dtype="float32")
    sf.write(src / "sub" / "talk.wav", np.stack([x[: 2 * rate], x[rate : 3 * rate]], axis=1), rate)  # stereo: channels as rows
    (src / "bad.wav").write_bytes(b"RIFF, but not audio")  # fails alone
    stats: dict[str, float] = {}
    results = list(B.run(B.plan(src, dst), workers=2, share_network=True, stats=stats))
    assert sorted(r.status for r in results) == ["done"] * 5 + ["failed"] and stats["calls"] >= 5
    assert 0 <= stats["started_s"] <= stats["warm_s"] <= stats["first_call_s"] and stats["busy_s"] > 0
    for r in results:
        if r.status == "done":
            kind, media = api.load_media(r.job.src)
            assert r.job.dst.read_bytes() == api.compress("auto", media), r.job.src
    results = list(B.run(B.plan(dst, back), workers=2, share_network=True))
    assert [r.status for r in results] == ["done"] * 5
    for r in results:
        here = api.decompress(r.job.src.read_bytes())
        there = api.load_media(r.job.dst)[1]
        if isinstance(here, M.Image):
            assert np.array_equal(here.pixels, there.pixels)
        else:
            assert np.abs(here.to_array() - there.to_array()).max() <= 1 / 32768  # WAV holds 16-bit samples
