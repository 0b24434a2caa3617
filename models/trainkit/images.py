"""Training photos: decoded once into memory, served as random rescaled crops from a seeded generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .corpus import training_files

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")


def photo_of(path: Path) -> str:
    """The photo a training file shows: its folder and its name before any `@` (scripts/prepare_images.py stores a
    photo's scales as `PHOTO@SIDE`, so the scales of one photo share it)."""
    return f"{path.parent.name}/{path.stem.split('@')[0]}"


def split_photos(root: Path, holdout: int) -> tuple[list[Path], list[Path]]:
    """The image files under `root`: those that train and those of `holdout` photos kept apart, evenly spaced. Whole
    photos are held out (every scale of one), so no held-out photo trains at another scale.

    Raises ValueError for a development-set folder or one without images (`corpus.training_files`).
    """
    paths = training_files(root, IMAGE_EXTS)
    of = [photo_of(p) for p in paths]
    photos = list(dict.fromkeys(of))
    held = {photos[i] for i in range(0, len(photos), max(1, len(photos) // holdout))[:holdout]} if holdout else set()
    return [p for p, ph in zip(paths, of) if ph not in held], [p for p, ph in zip(paths, of) if ph in held]


def load_images(root: Path, holdout: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The images of `split_photos` as uint8 `[3, H, W]` tensors: (training, held out)."""
    train, held = split_photos(root, holdout)
    return [read_image(p) for p in train], [read_image(p) for p in held]


def read_image(path: Path) -> torch.Tensor:
    """One image file as a uint8 `[3, H, W]` tensor (RGB)."""
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).contiguous()


def source_weights(paths: list[Path], power: float) -> torch.Tensor:
    """Sampling weights of `paths` that temper the sources (a file's folder: its package): a file of a folder of `n`
    files weighs `n ** -power`, so a folder weighs `n ** (1 - power)`. 0: every file alike (a large package
    dominates); 1: every package alike (a package of one file as likely as one of eighty); 0.5 between."""
    count: dict[Path, int] = {}
    for p in paths:
        count[p.parent] = count.get(p.parent, 0) + 1
    return torch.tensor([count[p.parent] ** -power for p in paths], dtype=torch.float64)


def random_crops(images: list[torch.Tensor], n: int, crop: int, scale: tuple[float, float], gen: torch.Generator,
                 weights: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """`n` random crops in [0, 1]: one random rescale per batch (crop `s * crop` pixels, resize), random h-flips.
    The images are drawn uniformly, or in proportion to `weights` (`source_weights`).

    All draws come from `gen`, so seeding it from the step gives a resumed run the same crops.
    """
    if weights is None:
        ids = torch.randint(len(images), (n,), generator=gen).tolist()
    else:
        ids = torch.multinomial(weights, n, replacement=True, generator=gen).tolist()
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
