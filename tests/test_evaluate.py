"""`nmc eval` and `nmc bench` on a tiny synthetic dataset: report files, resume, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import synthetic_image
from nmc.cli.main import main
from nmc.codec import anchors as A
from nmc.codec import bench, evaluate
from nmc.codec import media as M

IMAGE_METRICS = {"image": ["psnr", "ms_ssim"]}  # ST-LPIPS is covered in test_metrics


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    M.write_image(root / "a.png", synthetic_image(176, 168, seed=1))
    M.write_image(root / "sub" / "b.png", synthetic_image(168, 192, seed=2))
    (root / "notes.txt").write_text("not media")
    return root


@pytest.fixture
def speech_dir(tmp_path: Path) -> Path:
    root = tmp_path / "speech"
    root.mkdir()
    t = np.arange(16000) / 16000
    sf.write(root / "tone.wav", (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 2 * t)).astype(np.float32), 16000)
    return root


class TestRun:
    def test_report_files(self, dataset: Path, tmp_path: Path) -> None:
        out = tmp_path / "report"
        report = evaluate.run([dataset], ["toy-image"], ["jpeg", "webp"], out, IMAGE_METRICS)
        assert {p.name for p in out.iterdir()} >= {"report.json", "report.csv", "report.md", "cache.jsonl", "rd_psnr.png", "rd_ms_ssim.png"}
        points = 2 * (2 + len(A.get_anchor("jpeg").settings()) + len(A.get_anchor("webp").settings()))
        saved = json.loads((out / "report.json").read_text())
        assert len(saved["records"]) == points == len(report["records"])
        first = saved["records"][0]
        assert set(first) >= {"file", "codec", "setting", "bytes", "bpp", "psnr", "ms_ssim"}
        assert first["bpp"] == pytest.approx(8 * first["bytes"] / (176 * 168))
        toy = [m for m in saved["means"] if m["codec"] == "toy-image"]
        assert [m["setting"] for m in toy] == ["coarse", "fine"] and all(m["files"] == 2 for m in toy)
        pairs = {(b["codec"], b["anchor"], b["metric"]) for b in saved["bd_rate"]}
        assert pairs == {("toy-image", a, m) for a in ("jpeg", "webp") for m in ("psnr", "ms_ssim")}
        with open(out / "report.csv") as fo:
            assert len(list(csv.DictReader(fo))) == points
        md = (out / "report.md").read_text()
        assert "## BD-rate" in md and "![rd_psnr.png](rd_psnr.png)" in md and "| b.png | toy-image | fine |" in md
        floors = {r[0]: r[1:] for r in evaluate.lowest_rates(saved, "image")}
        jpeg = [r["bpp"] for r in saved["records"] if r["codec"] == "jpeg" and r["setting"] == floors["jpeg"][0]]
        assert floors["toy-image"][0] == "coarse" and floors["jpeg"][1:] == [np.mean(jpeg), min(jpeg), max(jpeg)]
        assert floors["jpeg"][1] == min(m["bpp"] for m in saved["means"] if m["codec"] == "jpeg") and "## Lowest rate each codec reaches (image)" in md

    def test_anchors_only_compare_with_the_first(self, dataset: Path, tmp_path: Path) -> None:
        report = evaluate.run([dataset / "a.png"], [], ["jpeg", "webp"], tmp_path / "r", IMAGE_METRICS)
        assert {(b["codec"], b["anchor"]) for b in report["bd_rate"]} == {("webp", "jpeg")}
        assert all(isinstance(b["percent"], float) for b in report["bd_rate"])

    def test_resume_uses_the_cache(self, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        out = tmp_path / "report"
        first = evaluate.run([dataset], [], ["jpeg"], out, IMAGE_METRICS)
        with open(out / "cache.jsonl", "a") as fo:
            fo.write('{"key": "torn')  # a run killed mid-line

        def boom(*args: object) -> bytes:
            raise AssertionError("cached points must not be recomputed")

        monkeypatch.setattr(A.JPEG, "encode", boom)
        again = evaluate.run([dataset], [], ["jpeg"], out, IMAGE_METRICS)
        assert again["means"] == first["means"]
        with pytest.raises(AssertionError, match="recomputed"):  # a new metric needs new points
            evaluate.run([dataset], [], ["jpeg"], out, {"image": ["psnr", "st_lpips"]})

    def test_a_revised_metric_is_computed_again(self, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Points scored by an older definition of a metric (`Metric.revision`) are not taken from the cache."""
        import dataclasses

        from nmc.codec import metrics as Q

        out = tmp_path / "report"
        evaluate.run([dataset], [], ["jpeg"], out, IMAGE_METRICS)
        monkeypatch.setitem(Q.METRICS, "psnr", dataclasses.replace(Q.METRICS["psnr"], revision=2))
        cache = evaluate.PointCache(out / "cache.jsonl")
        assert cache.points and all(cache.get(k, ["psnr"]) is None for k in cache.points)
        assert all(cache.get(k, ["ms_ssim"]) is not None for k in cache.points)  # the unrevised metric still counts
        evaluate.run([dataset], [], ["jpeg"], out, IMAGE_METRICS)
        again = evaluate.PointCache(out / "cache.jsonl")
        assert all(again.get(k, ["psnr", "ms_ssim"]) is not None for k in again.points)  # rescored under revision 2
        assert '"revisions": {"psnr": 2}' in (out / "cache.jsonl").read_text()

    def test_workers_give_the_same_report(self, dataset: Path, tmp_path: Path) -> None:
        one = evaluate.run([dataset], ["toy-image"], ["jpeg"], tmp_path / "one", IMAGE_METRICS)
        two = evaluate.run([dataset], ["toy-image"], ["jpeg"], tmp_path / "two", IMAGE_METRICS, workers=2)
        timing = {"encode_s", "decode_s"}
        assert [{k: v for k, v in r.items() if k not in timing} for r in two["records"]] == [{k: v for k, v in r.items() if k not in timing} for r in one["records"]]
        lines = (tmp_path / "two" / "cache.jsonl").read_text().splitlines()
        assert len(lines) == len(one["records"])  # each point cached once, by the main process
        assert sorted(p.name for p in (tmp_path / "two" / "media").rglob("*")) == sorted(p.name for p in (tmp_path / "one" / "media").rglob("*"))

    def test_cached_points_of_a_copy_elsewhere_report_this_path(self, dataset: Path, tmp_path: Path) -> None:
        """The cache is keyed by content: points cached for a copy of the files at another path come back
        under this run's paths, with and without workers (a seeded report once listed a photo twice)."""
        import shutil

        copy = tmp_path / "copy"
        shutil.copytree(dataset, copy)
        for workers in (1, 2):
            out = tmp_path / f"r{workers}"
            evaluate.run([copy], [], ["jpeg"], out, IMAGE_METRICS, workers=workers)
            again = evaluate.run([dataset], ["toy-image"], ["jpeg"], out, IMAGE_METRICS, workers=workers)  # new points: workers run
            assert again["records"] and all(Path(r["file"]).is_relative_to(dataset) for r in again["records"])

    def test_a_worker_error_ends_the_run(self, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        def boom(*args: object) -> bytes:
            raise ValueError("encoder broke")

        monkeypatch.setattr(A.JPEG, "encode", boom)  # the forked workers inherit it
        with pytest.raises(ValueError, match="encoder broke"):
            evaluate.run([dataset], [], ["jpeg"], tmp_path / "r", IMAGE_METRICS, workers=2)

    def test_a_worker_error_from_the_cli_is_one_line(self, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capfd: pytest.CaptureFixture[str]) -> None:  # fmt: skip
        """The workers stopped after another one failed on a damaged file print nothing (they once inherited the CLI's
        SIGTERM handler and each printed a traceback)."""
        from nmc.codec.errors import ContainerError

        def boom(*args: object) -> bytes:
            raise ContainerError("encoder broke")

        monkeypatch.setattr(A.JPEG, "encode", boom)
        with pytest.raises(SystemExit) as exit_info:
            main(["eval", str(dataset), "--anchors", "jpeg", "--report", str(tmp_path / "r"), "--workers", "2"])
        err = capfd.readouterr().err
        assert exit_info.value.code != 0 and "encoder broke" in err and "Traceback" not in err

    def test_audio_with_learned_codec_and_anchor(self, speech_dir: Path, tmp_path: Path) -> None:
        metrics = {"audio": ["si_sdr", "mel_distance"]}
        report = evaluate.run([speech_dir], ["toy-audio"], ["opus"], tmp_path / "r", metrics)
        toy = next(r for r in report["records"] if r["codec"] == "toy-audio")
        assert toy["kbps"] == pytest.approx(8 * toy["bytes"] / 1000) and toy["si_sdr"] > 20
        assert (tmp_path / "r" / "rd_si_sdr.png").exists()

    def test_user_errors(self, dataset: Path, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="nothing to evaluate"):
            evaluate.run([dataset], [], [], tmp_path)
        with pytest.raises(ValueError, match="media kind"):
            evaluate.run([dataset], [], ["opus"], tmp_path)
        with pytest.raises(ValueError, match="unknown image metric"):
            evaluate.run([dataset], [], ["jpeg"], tmp_path, {"image": ["pesq"]})
        with pytest.raises(ValueError, match="no such file"):
            evaluate.run([tmp_path / "missing"], [], ["jpeg"], tmp_path)


class TestBench:
    def test_rows(self, dataset: Path) -> None:
        rows = bench.run([dataset / "a.png"], ["toy-image"], ["jpeg"], threads=[1], devices=["cpu"], repeat=1)
        toy, jpeg = rows
        assert toy.codec == "toy-image" and toy.speed_unit == "MP/s" and toy.encode_speed > 0
        assert toy.parameters and toy.weights_mb and toy.coded_bytes and toy.container_bytes
        assert toy.coded_bytes + toy.container_bytes == toy.file_bytes
        assert 0 <= toy.coder_overhead_pct < 5  # tiny streams: the final coder word dominates
        assert jpeg.coder_overhead_pct is None and jpeg.parameters is None and jpeg.peak_rss_mb >= 0
        assert toy.threads == 1 and jpeg.threads is None  # anchors thread inside their libraries

    def test_tally_restores_the_encoder(self) -> None:
        from nmc.codec import entropy as E

        before = E.Encoder.encode
        with bench.entropy_tally() as tally:
            enc = E.Encoder()
            enc.encode(np.array([0, 1, 1, 0]), np.array([1, 1], dtype=np.int32))
            enc.to_bytes()
        assert tally["ideal_bits"] == pytest.approx(4.0) and tally["coded_bytes"] >= 4
        assert E.Encoder.encode is before


def cli(*args: str) -> int:
    """Exit code of `nmc ARGS` (Typer exits with SystemExit even on success)."""
    try:
        main(list(args))
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


class TestCommandLine:
    def test_eval_json(self, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert cli("eval", str(dataset / "a.png"), "--anchors", "jpeg,webp", "--metrics", "psnr", "--report", str(tmp_path / "r"), "--json") == 0
        report = json.loads(capsys.readouterr().out)
        assert {r["codec"] for r in report["records"]} == {"jpeg", "webp"} and "ms_ssim" not in report["records"][0]

    def test_eval_table_and_bad_metric(self, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert cli("eval", str(dataset), "-c", "toy-image", "-m", "psnr", "-r", str(tmp_path / "r")) == 0
        err = capsys.readouterr().err
        assert "toy-image" in err and "BD-rate" not in err  # no anchor given
        assert cli("eval", str(dataset), "-a", "jpeg", "-m", "nope", "-r", str(tmp_path / "r")) == 2
        assert "unknown metric" in capsys.readouterr().err
        assert cli("eval", str(dataset), "-a", "jpeg", "--conceal-check", "-r", str(tmp_path / "r")) == 2
        assert "--conceal-check applies to the files of --loss" in capsys.readouterr().err
        assert cli("eval", str(tmp_path / "missing"), "-a", "jpeg", "-r", str(tmp_path / "r")) == 1

    def test_bench_json(self, dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert cli("bench", str(dataset / "a.png"), "--anchors", "webp", "--threads", "1", "--repeat", "1", "--json") == 0
        rows = json.loads(capsys.readouterr().out)
        assert [r["codec"] for r in rows] == ["webp"] and rows[0]["setting"] == A.get_anchor("webp").settings()[5]
