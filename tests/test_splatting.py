"""The CPU splatting renderer (codec/splatting.py): compositing, SH colour, cameras for quality views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nmc.codec import splatting
from nmc.codec.errors import MediaError
from nmc.codec.media import GaussianLayout, Gaussians
from nmc.models.queen import scenes

CFG = scenes.SceneConfig(gaussians=800, frames=2, seed=3)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return list(scenes.generate(CFG))


class TestRender:
    CAM = scenes.held_out_cameras((48, 36), 1)[0]

    def test_identical_frames_give_infinite_psnr(self, frames: list[np.ndarray]) -> None:
        a, b = splatting.render(frames[0], GaussianLayout(3), self.CAM), splatting.render(frames[0].copy(), GaussianLayout(3), self.CAM)
        assert splatting.psnr(a, b) == float("inf")
        assert 0.05 < float(a.mean()) < 1.0  # the scene is in view

    def test_psnr_falls_smoothly_with_perturbation(self, frames: list[np.ndarray]) -> None:
        rng = np.random.default_rng(0)
        noise = rng.normal(size=frames[0].shape).astype(np.float32)
        ref = splatting.render(frames[0], GaussianLayout(3), self.CAM)
        sizes = (1e-4, 2e-4, 4e-4, 8e-4)
        p = [splatting.psnr(ref, splatting.render(frames[0] + s * noise, GaussianLayout(3), self.CAM)) for s in sizes]
        assert 60 < p[0] < 100 and all(a > b for a, b in zip(p, p[1:]))  # every attribute: finite, monotone
        colour = np.zeros_like(noise)
        colour[:, 3:6] = noise[:, 3:6]  # the image is linear in the colours: 6.02 dB per doubling
        p = [splatting.psnr(ref, splatting.render(frames[0] + s * colour, GaussianLayout(3), self.CAM)) for s in sizes]
        assert all(a - b == pytest.approx(6.02, abs=0.1) for a, b in zip(p, p[1:]))

    def test_single_gaussian(self) -> None:
        """A round opaque Gaussian straight ahead: its colour (SH degree 0) in the middle, black far away."""
        layout = GaussianLayout(0, normals=False)
        cam = splatting.Camera.look_at(np.array([0.0, -3.0, 0.0]), np.zeros(3), 33, 33)
        g = np.zeros((1, layout.channels), np.float32)
        g[0, 3:6] = (np.array([0.9, 0.5, 0.1]) - 0.5) / splatting.SH_C0
        g[0, 6] = 10.0  # opacity ~ 1 -> clamped to 0.99
        g[0, 7:10] = np.log(0.2)
        g[0, 10] = 1.0  # identity rotation
        img = splatting.render(g, layout, cam)
        np.testing.assert_allclose(img[16, 16].numpy(), 0.99 * np.array([0.9, 0.5, 0.1]), atol=2e-3)
        assert float(img[0, 0].abs().max()) < 1e-3

    def test_depth_order(self) -> None:
        """Two opaque Gaussians on the view axis: the nearer one's colour wins, whatever the input order."""
        layout = GaussianLayout(0, normals=False)
        cam = splatting.Camera.look_at(np.array([0.0, -3.0, 0.0]), np.zeros(3), 17, 17)
        g = np.zeros((2, layout.channels), np.float32)
        g[:, 6], g[:, 7:10], g[:, 10] = 10.0, np.log(0.3), 1.0
        g[0, 1], g[0, 3:6] = 1.0, (np.array([1.0, 0.0, 0.0]) - 0.5) / splatting.SH_C0  # red, farther
        g[1, 1], g[1, 3:6] = -1.0, (np.array([0.0, 0.0, 1.0]) - 0.5) / splatting.SH_C0  # blue, nearer
        for order in ([0, 1], [1, 0]):
            px = splatting.render(g[order], layout, cam)[8, 8]
            assert float(px[2]) > 0.95 and float(px[0]) < 0.05

    def test_sh_view_dependence(self) -> None:
        """A degree-1 coefficient along y: brighter seen from one side than from the other."""
        layout = GaussianLayout(1, normals=False)
        g = torch.zeros(1, layout.channels)
        g[0, 6 + 0] = 0.5  # red, first degree-1 basis function (-C1 * y)
        sh = torch.cat([g[:, 3:6, None], g[:, 6:15].reshape(1, 3, 3)], 2)
        left = splatting.eval_sh(1, sh, torch.tensor([[0.0, -1.0, 0.0]]))
        right = splatting.eval_sh(1, sh, torch.tensor([[0.0, 1.0, 0.0]]))
        assert float(left[0, 0]) == pytest.approx(splatting.SH_C1 * 0.5) and float(right[0, 0]) == pytest.approx(-splatting.SH_C1 * 0.5)


    def test_dense_compositing_matches_tiles_and_has_gradients(self, frames: list[np.ndarray]) -> None:
        """composite_dense (fitting) differs from the tiled renderer only by the 3-sigma cut and the early stop."""
        x = torch.tensor(frames[0], requires_grad=True)
        dense = splatting.composite_dense(splatting.project(x, GaussianLayout(3), self.CAM), self.CAM.width, self.CAM.height)
        assert splatting.psnr(splatting.render(frames[0], GaussianLayout(3), self.CAM), dense.detach()) > 50
        dense.sum().backward()
        assert x.grad is not None and bool(torch.all(torch.isfinite(x.grad)))
        for group, cols in GaussianLayout(3).slices().items():  # every attribute group reaches the image
            assert float(x.grad[:, cols].abs().sum()) > 0, group

    def test_render_views_are_frame_major(self, frames: list[np.ndarray]) -> None:
        seq = Gaussians.from_matrices(GaussianLayout(3), frames)
        cams = scenes.held_out_cameras((24, 18), 2)
        views = splatting.render_views(seq, cams)
        assert len(views) == 4 and views[0].shape == (18, 24, 3) and views[0].dtype == np.float32
        assert np.array_equal(views[3], splatting.render(frames[1], GaussianLayout(3), cams[1]).numpy())


class TestCameras:
    def test_cameras_json_round_trip(self, tmp_path: Path, frames: list[np.ndarray]) -> None:
        """A 3DGS cameras.json (centre and camera-to-world rotation) gives back the same views, scaled."""
        cams = scenes.held_out_cameras((96, 72))
        splatting.write_cameras(tmp_path / "cameras.json", cams)
        back = splatting.read_cameras(tmp_path / "cameras.json", 48)
        assert [(c.width, c.height) for c in back] == [(48, 36)] * 4
        small = splatting.render(frames[0], GaussianLayout(3), scenes.held_out_cameras((48, 36))[2])
        assert splatting.psnr(small, splatting.render(frames[0], GaussianLayout(3), back[2])) > 80

    def test_quality_cameras(self, tmp_path: Path, frames: list[np.ndarray]) -> None:
        """From cameras.json beside the frames when there is one, else a ring that sees the scene."""
        ring = splatting.quality_cameras(tmp_path, frames[0], 3, 40)
        assert len(ring) == 3 and (ring[0].width, ring[0].height) == (40, 30)
        image = splatting.render(frames[0], GaussianLayout(3), ring[0])
        assert float((image.sum(2) > 0.05).float().mean()) > 0.3  # most of the view shows the scene
        splatting.write_cameras(tmp_path / "cameras.json", scenes.held_out_cameras((96, 72), 8))
        picked = splatting.quality_cameras(tmp_path / "frame_0000.ply", frames[0], 3, 40)
        assert [c.center.round(6).tolist() for c in picked] == [scenes.held_out_cameras((96, 72), 8)[i].center.round(6).tolist() for i in (0, 4, 7)]

    def test_bad_cameras_json(self, tmp_path: Path, frames: list[np.ndarray]) -> None:
        for text in ("{", "[]", '[{"width": 4}]'):
            (tmp_path / "cameras.json").write_text(text)
            with pytest.raises(MediaError, match="cameras.json"):
                splatting.quality_cameras(tmp_path, frames[0])
