"""Training log: rank 0 appends flushed lines to one file; every run starts with its command and config."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO


def _commit() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Logger:
    """`say(msg)` writes a timestamped line (and echoes it) on rank 0; other ranks stay silent."""

    def __init__(self, path: Path, master: bool, config: dict) -> None:
        self.fh: TextIO | None = None
        if master:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fh = open(path, "a")  # noqa: SIM115 (open for the whole run)
            world = os.environ.get("WORLD_SIZE", "1")
            self.say(f"command: {shlex.join([sys.executable, *sys.argv])} (world {world}, commit {_commit()})")
            self.say("config: " + json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in config.items()}),
                     echo=False)

    def say(self, msg: str, echo: bool = True) -> None:
        if self.fh is None:
            return
        self.fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")
        self.fh.flush()
        if echo:
            print(msg, flush=True)

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
