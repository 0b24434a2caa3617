"""The README's library example runs as written (run from the repository root)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_library_example(monkeypatch) -> None:  # noqa: ANN001
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    monkeypatch.chdir(ROOT)
    scope: dict = {}
    exec(blocks[0], scope)  # noqa: S102 - our own README
    assert scope["decoded"].pixels.shape == scope["image"].pixels.shape
    assert scope["data"][:4] == b"\x89NMC"
