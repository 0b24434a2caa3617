"""What the image metrics need of one original, computed once and reused for each decoded version.

`nmc eval` scores dozens of decoded versions of every photo. ST-LPIPS runs its network on the
original and on the decoded image, and MS-SSIM filters both at five scales; the original's half
of that work is the same every time. `ImageReference` keeps it (the original's normalised
ST-LPIPS features, its MS-SSIM means and variances per scale) and scores a batch of decoded
images in one network call. The numbers are those of `stlpips_pytorch` and `pytorch_msssim`
up to float rounding (tests compare them).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import torch

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang 2003, as pytorch_msssim
MS_SSIM_WINDOW, MS_SSIM_SIGMA, MS_SSIM_K = 11, 1.5, (0.01, 0.03)
MS_SSIM_MIN_SIDE = (MS_SSIM_WINDOW - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1)  # 160: smaller has no 5 scales
ST_LPIPS_MIN_SIDE = 20  # ST-LPIPS's blur-pooled AlexNet reflect-pads a feature map that is 1 pixel wide at 20 or less
Uint8Image = npt.NDArray[np.uint8]


class ImageReference:
    """An original `(H, W, 3)` uint8 image on `device`, with its share of the metrics' work.

    Args:
        rgb (np.ndarray): the original, `(H, W, 3)` uint8.
        device (str): where the metric networks and filters run.
    """

    def __init__(self, rgb: Uint8Image, device: str = "cpu") -> None:
        self.rgb, self.device = rgb, device
        self._lpips: list[torch.Tensor] | None = None  # normalised features per layer
        self._ssim: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # (mean, variance) per scale

    def tensor(self, images: Sequence[Uint8Image]) -> torch.Tensor:
        """`(N, 3, H, W)` float in [0, 255], channels-last (oneDNN's fast layout for convolutions)."""
        import torch

        for d in images:
            if d.shape != self.rgb.shape:
                raise ValueError(f"decoded shape {d.shape} differs from the reference {self.rgb.shape}")
        x = torch.from_numpy(np.stack(images).astype(np.float32)).to(self.device)
        return x.permute(0, 3, 1, 2)

    # ------------------------------------------------------------ ST-LPIPS

    def st_lpips(self, decoded: Sequence[Uint8Image]) -> list[float]:
        """Shift-tolerant LPIPS (alex) of each decoded image against the original; lower is closer; NaN for images
        whose shorter side is `ST_LPIPS_MIN_SIDE` pixels or less."""
        import torch

        layers = self._st_lpips_layers(decoded)
        if layers is None:
            return [math.nan] * len(decoded)
        total = sum(d.mean(dim=(2, 3)) for d in layers)
        return [float(v) for v in torch.as_tensor(total).flatten().cpu()]

    def st_lpips_maps(self, decoded: Sequence[Uint8Image]) -> npt.NDArray[np.float32]:
        """Where ST-LPIPS sees each decoded image differ: `(N, H, W)`, each layer's distances upsampled (bilinear) to
        the image and summed, so a map's mean is about `st_lpips`; NaN for images whose shorter side is
        `ST_LPIPS_MIN_SIDE` pixels or less."""
        import torch
        import torch.nn.functional as F

        h, w = self.rgb.shape[:2]
        layers = self._st_lpips_layers(decoded)
        if layers is None:
            return np.full((len(decoded), h, w), np.nan, np.float32)
        maps = sum(F.interpolate(d, size=(h, w), mode="bilinear", align_corners=False) for d in layers)
        return torch.as_tensor(maps)[:, 0].float().cpu().numpy()

    def _st_lpips_layers(self, decoded: Sequence[Uint8Image]) -> list[torch.Tensor] | None:
        """Per layer, ST-LPIPS's weighted distance of each decoded image at each position, `(N, 1, h, w)`; None when
        the original is too small for its network."""
        import torch

        from .threads import exact_cuda

        if min(self.rgb.shape[:2]) <= ST_LPIPS_MIN_SIDE:
            return None
        model = _lpips_model(self.device)
        with torch.no_grad(), exact_cuda():  # on a GPU: fp32 convolutions, not TF32
            if self._lpips is None:
                self._lpips = _lpips_features(model, self.tensor([self.rgb]))
            feats = _lpips_features(model, self.tensor(decoded))
            return [lin(torch.square(f - r)) for lin, f, r in zip(model.lins, feats, self._lpips)]

    # ------------------------------------------------------------ MS-SSIM

    def ms_ssim(self, decoded: Sequence[Uint8Image]) -> list[float]:
        """MS-SSIM (5 scales, 11x11 Gaussian window, data range 255) of each decoded image; NaN
        for images whose shorter side is 160 pixels or less."""
        import torch
        import torch.nn.functional as F

        if min(self.rgb.shape[:2]) <= MS_SSIM_MIN_SIDE:
            return [math.nan] * len(decoded)
        c1, c2 = ((k * 255) ** 2 for k in MS_SSIM_K)
        from .threads import exact_cuda

        win = _gauss_window(self.device)
        with torch.no_grad(), exact_cuda():
            if self._ssim is None:
                self._ssim = []
                x = self.tensor([self.rgb]).contiguous()
                for _ in MS_SSIM_WEIGHTS:
                    mu = _blur(x, win)
                    self._ssim.append((mu, _blur(x * x, win) - mu * mu))
                    x = F.avg_pool2d(x, 2, padding=[s % 2 for s in x.shape[2:]])
            x, y = self.tensor([self.rgb]).contiguous(), self.tensor(decoded).contiguous()
            levels = []
            for i, (mu1, var1) in enumerate(self._ssim):
                mu2 = _blur(y, win)
                var2, cov = _blur(y * y, win) - mu2 * mu2, _blur(x * y, win) - mu1 * mu2
                cs_map = (2 * cov + c2) / (var1 + var2 + c2)
                if i < len(MS_SSIM_WEIGHTS) - 1:
                    levels.append(torch.relu(cs_map.flatten(2).mean(-1)))
                    pad = [s % 2 for s in x.shape[2:]]
                    x, y = F.avg_pool2d(x, 2, padding=pad), F.avg_pool2d(y, 2, padding=pad)
                else:
                    ssim_map = (2 * mu1 * mu2 + c1) / (mu1 * mu1 + mu2 * mu2 + c1) * cs_map
                    levels.append(torch.relu(ssim_map.flatten(2).mean(-1)))
            weights = torch.tensor(MS_SSIM_WEIGHTS, device=y.device).view(-1, 1, 1)
            value = torch.prod(torch.stack(levels) ** weights, dim=0).mean(1)  # (scales, N, C) -> (N,)
            return [float(v) for v in value.cpu()]


def _lpips_model(device: str) -> Any:  # stlpips_pytorch's LPIPS (untyped)
    from .metrics import _st_lpips_model

    return _st_lpips_model("alex").to(device)


def _lpips_features(model: Any, x: torch.Tensor) -> list[torch.Tensor]:
    """ST-LPIPS's normalised features of `(N, 3, H, W)` images in [0, 255] (its forward, one side)."""
    import torch

    x = model.scaling_layer(x / 127.5 - 1).contiguous(memory_format=torch.channels_last)
    return [f / (torch.sqrt(torch.sum(f * f, dim=1, keepdim=True)) + 1e-10) for f in model.net(x)]


def _gauss_window(device: str) -> torch.Tensor:
    import torch

    coords = torch.arange(MS_SSIM_WINDOW, dtype=torch.float) - MS_SSIM_WINDOW // 2
    g = torch.exp(-(coords**2) / (2 * MS_SSIM_SIGMA**2))
    return (g / g.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1).to(device)


def _blur(x: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter per channel, 'valid' borders (as pytorch_msssim)."""
    import torch.nn.functional as F

    x = F.conv2d(x, win.transpose(2, 3), groups=3)
    return F.conv2d(x, win, groups=3)
