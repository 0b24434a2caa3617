"""Training-file discovery. The development set is for measuring only: refuse to train on it."""

from __future__ import annotations

from pathlib import Path


def is_dev(path: Path) -> bool:
    """True for anything inside a folder named dev or dev-* (the dev set and held-out dev splits)."""
    return any(part == "dev" or part.startswith("dev-") for part in path.resolve().parts)


def training_files(root: Path, exts: tuple[str, ...], max_files: int = 0) -> list[Path]:
    """Sorted files under `root` with one of `exts` (lower case, with the dot); the first `max_files` if > 0."""
    if is_dev(root):
        raise ValueError(f"refusing to train on a development set: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in exts and not is_dev(p))
    if not files:
        raise ValueError(f"no {'/'.join(exts)} files under {root}")
    return files[: max_files or None]
