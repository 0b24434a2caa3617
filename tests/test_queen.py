"""queen data and rendering: the procedural scenes, the 3DGS layout, the CPU splatting renderer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nmc.codec import media as M
from nmc.codec.errors import MediaError
from nmc.models.queen import render, scenes
from nmc.models.queen.layout import Layout

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
        m, sl = frames[0], Layout(3).slices()
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
        layout = Layout.of(seq.frames[0])
        assert layout == Layout(1, normals=True)
        assert np.array_equal(layout.to_matrix(seq.frames[1]), list(scenes.generate(cfg))[1])
        assert np.load(tmp_path / "seq" / "static.npy").shape == (50,)

    def test_sample_is_the_generator_output(self) -> None:
        """samples/gaussians_queen was written by the generator (command in samples/ATTRIBUTION.md)."""
        seq = M.read_gaussians(SAMPLE)
        cfg = scenes.SceneConfig(gaussians=256, frames=len(seq.frames), seed=0)
        for frame, m in zip(seq.frames, scenes.generate(cfg)):
            np.testing.assert_allclose(Layout(3).to_matrix(frame), m, rtol=0, atol=1e-5)


class TestLayout:
    def test_round_trip(self, frames: list[np.ndarray]) -> None:
        layout = Layout(3)
        frame = layout.to_frame(frames[0])
        assert list(frame)[:6] == ["x", "y", "z", "nx", "ny", "nz"] and len(frame) == 62
        assert np.array_equal(layout.to_matrix(frame), frames[0])

    @pytest.mark.parametrize("change, message", [
        (lambda f: f.pop("rot_3"), "missing"),
        (lambda f: f.update(extra=f["x"]), "unexpected"),
        (lambda f: f.pop("f_rest_44"), "SH degree"),
        (lambda f: f["opacity"].__setitem__(0, np.nan), "NaN"),
        (lambda f: f.update(nx=np.ones_like(f["x"])), "normals"),
    ])
    def test_refuses(self, frames: list[np.ndarray], change, message: str) -> None:  # type: ignore[no-untyped-def]
        frame = {k: v.copy() for k, v in Layout(3).to_frame(frames[0]).items()}
        change(frame)
        with pytest.raises(MediaError, match=message):
            Layout(3).to_matrix(frame)

    def test_other_degree_is_another_layout(self, frames: list[np.ndarray]) -> None:
        low = Layout(1).to_frame(np.zeros((3, Layout(1).channels), np.float32))
        with pytest.raises(MediaError, match="differ"):
            Layout(3).to_matrix(low)


class TestRender:
    CAM = render.held_out_cameras((48, 36), 1)[0]

    def test_identical_frames_give_infinite_psnr(self, frames: list[np.ndarray]) -> None:
        a, b = render.render(frames[0], Layout(3), self.CAM), render.render(frames[0].copy(), Layout(3), self.CAM)
        assert render.psnr(a, b) == float("inf")
        assert 0.05 < float(a.mean()) < 1.0  # the scene is in view

    def test_psnr_falls_smoothly_with_perturbation(self, frames: list[np.ndarray]) -> None:
        rng = np.random.default_rng(0)
        noise = rng.normal(size=frames[0].shape).astype(np.float32)
        ref = render.render(frames[0], Layout(3), self.CAM)
        sizes = (1e-4, 2e-4, 4e-4, 8e-4)
        p = [render.psnr(ref, render.render(frames[0] + s * noise, Layout(3), self.CAM)) for s in sizes]
        assert 60 < p[0] < 100 and all(a > b for a, b in zip(p, p[1:]))  # every attribute: finite, monotone
        colour = np.zeros_like(noise)
        colour[:, 3:6] = noise[:, 3:6]  # the image is linear in the colours: 6.02 dB per doubling
        p = [render.psnr(ref, render.render(frames[0] + s * colour, Layout(3), self.CAM)) for s in sizes]
        assert all(a - b == pytest.approx(6.02, abs=0.1) for a, b in zip(p, p[1:]))

    def test_single_gaussian(self) -> None:
        """A round opaque Gaussian straight ahead: its colour (SH degree 0) in the middle, black far away."""
        layout = Layout(0, normals=False)
        cam = render.Camera.look_at(np.array([0.0, -3.0, 0.0]), np.zeros(3), 33, 33)
        g = np.zeros((1, layout.channels), np.float32)
        g[0, 3:6] = (np.array([0.9, 0.5, 0.1]) - 0.5) / render.SH_C0
        g[0, 6] = 10.0  # opacity ~ 1 -> clamped to 0.99
        g[0, 7:10] = np.log(0.2)
        g[0, 10] = 1.0  # identity rotation
        img = render.render(g, layout, cam)
        np.testing.assert_allclose(img[16, 16].numpy(), 0.99 * np.array([0.9, 0.5, 0.1]), atol=2e-3)
        assert float(img[0, 0].abs().max()) < 1e-3

    def test_depth_order(self) -> None:
        """Two opaque Gaussians on the view axis: the nearer one's colour wins, whatever the input order."""
        layout = Layout(0, normals=False)
        cam = render.Camera.look_at(np.array([0.0, -3.0, 0.0]), np.zeros(3), 17, 17)
        g = np.zeros((2, layout.channels), np.float32)
        g[:, 6], g[:, 7:10], g[:, 10] = 10.0, np.log(0.3), 1.0
        g[0, 1], g[0, 3:6] = 1.0, (np.array([1.0, 0.0, 0.0]) - 0.5) / render.SH_C0  # red, farther
        g[1, 1], g[1, 3:6] = -1.0, (np.array([0.0, 0.0, 1.0]) - 0.5) / render.SH_C0  # blue, nearer
        for order in ([0, 1], [1, 0]):
            px = render.render(g[order], layout, cam)[8, 8]
            assert float(px[2]) > 0.95 and float(px[0]) < 0.05

    def test_sh_view_dependence(self) -> None:
        """A degree-1 coefficient along y: brighter seen from one side than from the other."""
        layout = Layout(1, normals=False)
        g = torch.zeros(1, layout.channels)
        g[0, 6 + 0] = 0.5  # red, first degree-1 basis function (-C1 * y)
        sh = torch.cat([g[:, 3:6, None], g[:, 6:15].reshape(1, 3, 3)], 2)
        left = render.eval_sh(1, sh, torch.tensor([[0.0, -1.0, 0.0]]))
        right = render.eval_sh(1, sh, torch.tensor([[0.0, 1.0, 0.0]]))
        assert float(left[0, 0]) == pytest.approx(render.SH_C1 * 0.5) and float(right[0, 0]) == pytest.approx(-render.SH_C1 * 0.5)
