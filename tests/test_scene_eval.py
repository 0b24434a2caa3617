"""`nmc eval` on Gaussian sequences: the frame-by-frame anchors, the render metrics, the report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from test_cli import assert_user_error, run
from test_queen_codec import FAST

from nmc.codec import anchors as A
from nmc.codec import evaluate, metrics, splatting
from nmc.codec import media as M
from nmc.codec.registry import get_codec
from nmc.models.queen import scenes

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CFG = scenes.SceneConfig(gaussians=300, frames=2, seed=5)
SCENE_METRICS = {"gaussians": ["view_psnr", "view_ssim"]}  # ST-LPIPS: TestMetrics


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return list(scenes.generate(CFG))


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A folder holding one generated sequence (with its cameras.json) in a subfolder."""
    scenes.write_scene(CFG, tmp_path / "data" / "scene")
    return tmp_path / "data"


def anchor_round_trip(name: str, seq: M.Gaussians, setting: str) -> tuple[bytes, list[np.ndarray]]:
    anchor = A.get_anchor(name)
    data = anchor.encode(seq, setting)
    decoded = anchor.decode(data)
    assert decoded.layout == seq.layout and decoded.counts == seq.counts
    return data, list(decoded.frames())


class TestAnchors:
    @pytest.mark.parametrize("degree, normals", [(3, True), (1, False)])
    def test_ply_is_lossless_and_the_size_of_the_files(self, frames: list[np.ndarray], tmp_path: Path, degree: int, normals: bool) -> None:
        layout = M.GaussianLayout(degree, normals)
        seq = M.Gaussians.from_matrices(layout, [_cut(f, layout) for f in frames])
        data, out = anchor_round_trip("ply", seq, "f32")
        assert all(np.array_equal(a, b) for a, b in zip(seq.frames(), out))
        M.write_gaussians(tmp_path / "seq", seq)
        files = sum(p.stat().st_size for p in (tmp_path / "seq").iterdir())
        assert len(data) == files + 6 + 8 * len(frames)  # header and per-frame framing only

    def test_quant_error_is_half_a_step(self, frames: list[np.ndarray]) -> None:
        seq = M.Gaussians.from_matrices(M.GaussianLayout(3), frames)
        sizes = []
        for bits in A.QuantizedLzma.bits:
            data, out = anchor_round_trip("quant", seq, f"{bits}bit")
            sizes.append(len(data))
            for a, b in zip(frames, out):
                step = (a.max(axis=0) - a.min(axis=0)) / ((1 << bits) - 1)
                assert np.all(np.abs(a - b) <= step / 2 + 1e-6 * np.abs(a).max(axis=0))
        assert sizes == sorted(sizes)

    @pytest.mark.skipif(importlib.util.find_spec("gsply") is None, reason="gsply (nmc[spz]) is not installed")
    def test_spz_keeps_what_spz_keeps(self, frames: list[np.ndarray]) -> None:
        layout = M.GaussianLayout(3)
        sl, seq = layout.slices(), M.Gaussians.from_matrices(layout, frames)
        for setting in A.SPZ().settings():
            _, out = anchor_round_trip("spz", seq, setting)
            a, b = frames[0], out[0]
            assert np.abs(a[:, sl["pos"]] - b[:, sl["pos"]]).max() <= 2.0**-12  # 12 fractional bits
            kept = 3 * ((int(setting[2:]) + 1) ** 2 - 1)
            rest = b[:, sl["rest"]].reshape(len(b), 3, 15)
            assert not rest[:, :, kept // 3 :].any()  # dropped bands read back as zeros
            if kept:
                assert np.abs(rest[:, :, : kept // 3] - a[:, sl["rest"]].reshape(len(a), 3, 15)[:, :, : kept // 3]).max() < 0.1

    def test_bad_setting(self, frames: list[np.ndarray]) -> None:
        with pytest.raises(ValueError, match="bad setting"):
            A.get_anchor("quant").encode(M.Gaussians.from_matrices(M.GaussianLayout(3), frames), "q50")


def _cut(m: np.ndarray, layout: M.GaussianLayout) -> np.ndarray:
    """A degree-3 frame reduced to `layout`'s SH degree (the first coefficients of each colour)."""
    sl, rest = M.GaussianLayout(3).slices(), M.REST_COUNTS[layout.sh_degree] // 3
    parts = [m[:, sl["pos"]], m[:, sl["dc"]], m[:, sl["rest"]].reshape(len(m), 3, 15)[:, :, :rest].reshape(len(m), -1), m[:, sl["opacity"].start :]]
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


class TestMetrics:
    def test_views_of_identical_and_perturbed_sequences(self, frames: list[np.ndarray]) -> None:
        layout, cams = M.GaussianLayout(3), scenes.held_out_cameras((64, 48), 2)
        ref = splatting.render_views(M.Gaussians.from_matrices(layout, frames), cams)
        assert metrics.view_psnr(ref, ref) == float("inf") and metrics.view_ssim(ref, ref) == pytest.approx(1.0)
        assert metrics.view_st_lpips(ref, ref) == pytest.approx(0.0, abs=1e-6)
        rng, dc = np.random.default_rng(0), layout.slices()["dc"]
        scores = []
        for sigma in (0.02, 0.2):
            noisy = [f.copy() for f in frames]
            for f in noisy:
                f[:, dc] += rng.normal(0, sigma, f[:, dc].shape).astype(np.float32)
            dec = splatting.render_views(M.Gaussians.from_matrices(layout, noisy), cams)
            scores.append((metrics.view_psnr(ref, dec), metrics.view_ssim(ref, dec), metrics.view_st_lpips(ref, dec)))
        assert scores[0][0] > scores[1][0] > 10 and scores[0][1] > scores[1][1] and scores[0][2] < scores[1][2]
        pooled = 10 * np.log10(1 / np.mean([np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2) for a, b in zip(ref, dec)]))
        assert scores[1][0] == pytest.approx(pooled)
        with pytest.raises(ValueError, match="views"):
            metrics.view_psnr(ref, ref[:1])


class TestRun:
    def test_report_with_queen_and_anchors(self, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        queen = get_codec("queen")
        monkeypatch.setattr(queen, "_core", FAST)
        monkeypatch.setattr(evaluate, "SCENE_WIDTH", 40)  # small views, two cameras: the test is about the plumbing
        monkeypatch.setattr(evaluate, "SCENE_VIEWS", 2)
        out = tmp_path / "report"
        report = evaluate.run([dataset], ["queen"], ["ply", "quant"], out, SCENE_METRICS)
        assert {r["file"] for r in report["records"]} == {str(dataset / "scene")}  # the folder is one "file"
        ply = next(r for r in report["records"] if r["codec"] == "ply")
        files = sum(p.stat().st_size for p in (dataset / "scene").glob("*.ply"))
        assert ply["bytes"] == files + 6 + 16 and ply["mb_per_frame"] == pytest.approx(ply["bytes"] / 2e6)
        assert ply["bits_per_gaussian"] == pytest.approx(8 * ply["bytes"] / 600) and ply["view_psnr"] == float("inf")
        q = {r["setting"]: r for r in report["records"] if r["codec"] == "queen"}
        assert list(q) == ["q1", "q2", "q3", "q4", "q5", "q6"] and 20 < q["q1"]["view_psnr"] < q["q4"]["view_psnr"]
        assert q["q1"]["bits_per_gaussian"] < q["q4"]["bits_per_gaussian"] < ply["bits_per_gaussian"] / 5
        assert {(b["codec"], b["anchor"], b["metric"]) for b in report["bd_rate"]} == {("queen", a, "view_psnr") for a in ("ply", "quant")}
        saved = json.loads((out / "report.json").read_text())
        assert next(r for r in saved["records"] if r["codec"] == "ply")["view_psnr"] is None  # infinite PSNR is null in JSON
        assert {"rd_view_psnr.png", "rd_view_ssim.png", "report.html"} <= {p.name for p in out.iterdir()}
        media = next((out / "media").iterdir())
        assert (media / "original.view.webp").exists() and len(list(media.glob("queen.q*.view.webp"))) == 6
        page = (out / "report.html").read_text()
        assert "Gaussian sequences" in page and "MB/frame" in page and "queen.q1." in page
        assert "| queen | q1 | 1 |" in (out / "report.md").read_text()

        def boom(*args: object) -> bytes:
            raise AssertionError("cached points must not be recomputed")

        monkeypatch.setattr(A.RawPly, "encode", boom)
        assert evaluate.run([dataset], [], ["ply"], out, SCENE_METRICS)["records"][0]["bytes"] == ply["bytes"]

    def test_workers_give_the_same_report(self, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(evaluate, "SCENE_WIDTH", 40)  # the forked workers inherit it
        monkeypatch.setattr(evaluate, "SCENE_VIEWS", 2)
        scenes.write_scene(scenes.SceneConfig(gaussians=200, frames=2, seed=6), dataset / "other")
        psnr = {"gaussians": ["view_psnr"]}
        one = evaluate.run([dataset], [], ["quant"], tmp_path / "one", psnr)
        two = evaluate.run([dataset], [], ["quant"], tmp_path / "two", psnr, workers=2)
        timing = {"encode_s", "decode_s"}
        assert len({r["file"] for r in one["records"]}) == 2
        assert [{k: v for k, v in r.items() if k not in timing} for r in two["records"]] == [{k: v for k, v in r.items() if k not in timing} for r in one["records"]]

    def test_content_hash_covers_frames_and_cameras(self, dataset: Path) -> None:
        scene = dataset / "scene"
        before = evaluate.content_sha(scene)
        (scene / "static.npy").write_bytes(b"not part of the sequence")
        assert evaluate.content_sha(scene) == before
        (scene / "cameras.json").write_text((scene / "cameras.json").read_text().replace('"fx": ', '"fx": 1'))
        assert evaluate.content_sha(scene) != before

    def test_cli_bad_sequence_is_one_line(self, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        scene, layout = dataset / "scene", M.GaussianLayout(3)
        frames = list(M.read_gaussians(scene).frames())
        frames[1][3, layout.slices()["scale"]] = np.nan
        M.write_gaussians(scene, M.Gaussians.from_matrices(layout, frames))
        assert_user_error(run(capsys, "eval", str(dataset), "--anchors", "ply", "--report", str(tmp_path / "r")), "NaN or infinite values in ['scale_0', 'scale_1', 'scale_2']")
        (scene / "frame_0001.ply").write_bytes(b"ply\nformat ascii 1.0\nend_header\n")
        assert_user_error(run(capsys, "eval", str(scene), "--anchors", "ply", "--report", str(tmp_path / "r")), "frame_0001.ply")
