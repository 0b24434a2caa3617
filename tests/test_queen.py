"""queen data: the procedural scenes (the layout is tested in test_media.py, the renderer in test_splatting.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nmc.codec import media as M
from nmc.codec.media import GaussianLayout
from nmc.models.queen import scenes

SAMPLE = Path(__file__).parent.parent / "samples" / "gaussians_queen"
CFG = scenes.SceneConfig(gaussians=800, frames=4, seed=3)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return list(scenes.generate(CFG))


class TestScenes:
    def test_seeded(self, frames: list[np.ndarray]) -> None:
        again = list(scenes.generate(CFG))
        other = next(scenes.generate(scenes.SceneConfig(gaussians=800, frames=1, seed=4)))
        assert all(np.array_equal(a, b) for a, b in zip(frames, again))
        assert not np.array_equal(frames[0], other)

    def test_statistics_of_fitted_splats(self, frames: list[np.ndarray]) -> None:
        m, sl = frames[0], GaussianLayout(3).slices()
        alpha = 1 / (1 + np.exp(-m[:, sl["opacity"].start]))
        assert 0.55 < np.mean(alpha > 0.9) < 0.9 and 0.1 < np.mean(alpha < 0.5) < 0.4  # bimodal opacity
        s = np.sort(np.exp(m[:, sl["scale"]]), axis=1)
        assert np.median(s[:, 0] / s[:, 2]) < 0.25  # flat disks
        norms = np.linalg.norm(m[:, sl["rot"]], axis=1)
        assert norms.std() > 0.05  # raw quaternions are not unit length
        rest = np.abs(m[:, sl["rest"]].reshape(len(m), 3, 15))
        by_degree = [rest[:, :, a:b].mean() for a, b in ((0, 3), (3, 8), (8, 15))]
        assert by_degree[0] > by_degree[1] > by_degree[2] > 0  # SH energy falls with the degree

    def test_motion_and_static_truth(self, frames: list[np.ndarray]) -> None:
        base = scenes.build_base(CFG)
        static = scenes.static_mask(base)
        assert 0.6 < static.mean() < 0.8
        step = np.linalg.norm(frames[3][:, :3] - frames[0][:, :3], axis=1)
        assert step[static].max() < 10 * CFG.jitter_pos  # only re-fitting jitter
        assert np.median(step[~static]) > 0.05  # the object moves
        dc = slice(3, 6)
        assert np.abs(frames[3][base.lamp, dc] - frames[0][base.lamp, dc]).mean() > 0.1  # the lamp pulses

    def test_ply_sequence(self, tmp_path: Path) -> None:
        cfg = scenes.SceneConfig(gaussians=50, frames=2, sh_degree=1)
        scenes.write_scene(cfg, tmp_path / "seq")
        seq = M.read_gaussians(tmp_path / "seq")
        assert seq.names == ["frame_0000.ply", "frame_0001.ply"]
        assert seq.layout == GaussianLayout(1, normals=True) and seq.counts == [50, 50]
        assert np.array_equal(list(seq.frames())[1], list(scenes.generate(cfg))[1])
        assert np.load(tmp_path / "seq" / "static.npy").shape == (50,)

    def test_sample_is_the_generator_output(self) -> None:
        """samples/gaussians_queen was written by the generator (command in samples/ATTRIBUTION.md)."""
        seq = M.read_gaussians(SAMPLE)
        cfg = scenes.SceneConfig(gaussians=256, frames=len(seq.names), seed=0)
        for frame, m in zip(seq.frames(), scenes.generate(cfg), strict=True):
            np.testing.assert_allclose(frame, m, rtol=0, atol=1e-5)




class TestFit:
    def test_packing_is_lossless(self) -> None:
        from nmc.models.queen.fit import pack, unpack_frame

        rng = np.random.default_rng(0)
        a = rng.normal(0, 1, (50, 59)).astype(np.float32)
        b = (a + rng.normal(0, 1e-3, a.shape)).astype(np.float32)
        b[0, 0], b[1, 1] = np.float32("-0.0"), np.float32(3e-41)  # sign and subnormal bits survive
        back_a = unpack_frame(pack(a, None), None, a.shape)
        back_b = unpack_frame(pack(b, a), back_a, b.shape)
        assert back_a.tobytes() == a.tobytes() and back_b.tobytes() == b.tobytes()

    def test_tiny_fit_on_the_cpu(self, tmp_path: Path) -> None:
        """The GPU script end to end at toy size: every step runs, the frames unpack to a .ply sequence."""
        import json

        from nmc.models.queen import fit

        fit.run(tmp_path / "run", teacher=300, student=120, frames=2, cameras=2, size="16x12", steps0=30, steps=5, minutes=5, device="cpu")
        log = json.loads((tmp_path / "run" / "fit.json").read_text())["log"]
        assert [e["steps"] for e in log] == [30, 5]
        fit.unpack(tmp_path / "run", tmp_path / "seq")
        seq = M.read_gaussians(tmp_path / "seq")
        assert seq.counts == [120, 120] and (tmp_path / "seq" / "cameras.json").exists()
        f0, f1 = seq.frames()
        assert np.isfinite(f0).all() and not np.array_equal(f0, f1)


def test_measure_reports_rate_quality_gate_and_times(tmp_path: Path, one_torch_thread: None) -> None:
    """measure.py on the sample (what a device call runs at 100k): every figure present and plausible."""
    import json

    from nmc.models.queen import measure

    measure.main(SAMPLE, lam=1e-6, group=2, fit_steps=20, gate_steps=20, size="32x24", cameras=1, json_out=str(tmp_path / "m.json"))
    r = json.loads((tmp_path / "m.json").read_text())
    assert r["frames"] == 4 and r["gaussians"] == 256 and 10 < r["bits_per_gaussian"] < r["ply_mb_per_frame"] * 8e6 / 256
    assert r["psnr_min"] > 30 and r["static_without_update"] >= 0.95
    assert 0 < r["encode_fit_s"] < 4 * r["encode_s_per_frame"] and r["decode_keyframe_s"] > 0 and r["decode_residual_frames_per_s"] > 0
