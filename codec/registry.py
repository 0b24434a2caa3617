"""The codec registry: the `@register_codec` decorator and the lookups.

Packages announce their codecs through the `nmc.codecs` entry-point group (see pyproject.toml);
the registry imports those modules on first use, which runs their `@register_codec` decorators.
The interface a codec implements is `codec/interface.py`.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from typing import Callable, TypeVar

from .errors import CodecNotFoundError
from .interface import MEDIA_KINDS, Codec

CODECS: dict[str, type[Codec]] = {}
C = TypeVar("C", bound=type[Codec])


def register_codec(name: str) -> Callable[[C], C]:
    """Class decorator: make the codec known under `name` (the name stored in headers)."""

    def wrap(cls: C) -> C:
        if cls.media not in MEDIA_KINDS:
            raise ValueError(f"codec {name!r} has unknown media kind {cls.media!r}")
        cls.name = name
        CODECS[name] = cls
        return cls

    return wrap


@cache
def _load_plugins() -> None:
    for ep in entry_points(group="nmc.codecs"):
        ep.load()


def available() -> dict[str, type[Codec]]:
    """All registered codecs, after importing the installed plugins."""
    _load_plugins()
    return dict(sorted(CODECS.items()))


@cache
def get_codec(name: str) -> Codec:
    """The codec instance for `name` (loaded once per process)."""
    codecs = available()
    if name not in codecs:
        known = ", ".join(codecs) or "none"
        raise CodecNotFoundError(f"unknown codec {name!r} (installed: {known})")
    return codecs[name]()


def codec_for_media(kind: str, rate: float | None = None) -> str:
    """Name of the codec `--codec auto` takes for a media kind: among the installed ones, the highest
    `auto_priority` whose lowest setting is at or below `rate` (a requested rate in the settings'
    unit; None: any), else the one whose lowest setting goes lowest."""
    candidates = sorted((c for c in available().values() if c.media == kind and c.installed()), key=lambda c: -c.auto_priority)
    if not candidates:
        raise CodecNotFoundError(f"no codec for {kind} is installed")
    if rate is None:
        return candidates[0].name
    lowest = {c.name: get_codec(c.name).settings()[0].rate for c in candidates}
    reaching = [c.name for c in candidates if lowest[c.name] <= rate + 1e-9]
    return reaching[0] if reaching else min(lowest, key=lambda n: lowest[n])
