"""Training photos: decoded once into memory, served as random rescaled crops from a seeded generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .corpus import training_files

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")


def load_images(root: Path, holdout: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every image under `root` as uint8 `[3, H, W]` tensors; `holdout` of them, evenly spaced, kept apart.

    Raises ValueError for a development-set folder or one without images (`corpus.training_files`).
    """
    paths = training_files(root, IMAGE_EXTS)
    images = [torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1).contiguous() for p in paths]
    held = set(range(0, len(images), max(1, len(images) // holdout))[:holdout]) if holdout else set()
    return [im for i, im in enumerate(images) if i not in held], [images[i] for i in sorted(held)]


def random_crops(images: list[torch.Tensor], n: int, crop: int, scale: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """`n` random crops in [0, 1]: one random rescale per batch (crop `s * crop` pixels, resize), random h-flips.

    All draws come from `gen`, so seeding it from the step gives a resumed run the same crops.
    """
    ids = torch.randint(len(images), (n,), generator=gen).tolist()
    s = scale[0] + (scale[1] - scale[0]) * torch.rand((), generator=gen).item()
    size = min(round(crop * s), *(min(images[i].shape[1:]) for i in ids))
    crops = []
    for i in ids:
        _, h, w = images[i].shape
        top, left = (torch.randint(d - size + 1, (), generator=gen).item() for d in (h, w))
        crops.append(images[i][:, top : top + size, left : left + size])
    x = torch.stack(crops)
    flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)[:, None, None, None]
    x = torch.where(flip, x.flip(-1), x).float().div_(255)
    if size != crop:
        x = F.interpolate(x, size=(crop, crop), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
    return x.contiguous(memory_format=torch.channels_last)
