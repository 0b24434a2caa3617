"""Typed header fields: the type and range of every header value a decoder sizes buffers from.

A crafted or damaged header can pass its CRC, so nothing in it is trusted: it is checked once,
when the file is opened, before any decoder allocates memory or writes output. The media fields
are the core's (`MEDIA_FIELDS`, with a memory bound from the media size); a codec declares its
own as a frozen `HeaderFields` dataclass, each field with its type and section:

    @dataclass(frozen=True)
    class Fields(HeaderFields):
        hop: int = header_field(Int(320, 320))                          # extra.hop
        coded_frames: int = header_field(Int(1, MAX_FRAMES), "media")   # media.coded_frames

`Fields.read(header)` checks them and returns the typed object the decoder works with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .errors import ContainerError
from .media import MAX_AUDIO_CHANNELS, MAX_PIXELS, is_frame_name

if TYPE_CHECKING:
    from .container import Header
    from .interface import Setting

MAX_FRAMES = 1 << 40  # audio samples per channel: 2 years at 16 kHz, 16 days at 768 kHz


class Field(Protocol):
    def ok(self, value: Any) -> bool: ...

    def __str__(self) -> str: ...


@dataclass(frozen=True)
class Int:
    """An integer (never a bool or a float) in [lo, hi]."""

    lo: int
    hi: int

    def ok(self, value: Any) -> bool:
        return type(value) is int and self.lo <= value <= self.hi

    def __str__(self) -> str:
        return f"an integer in [{self.lo}, {self.hi}]"


@dataclass(frozen=True)
class OneOf:
    """One of a few values, of the same type (320.0 is not 320, True is not 1)."""

    values: tuple[Any, ...]

    def ok(self, value: Any) -> bool:
        return any(type(value) is type(v) and value == v for v in self.values)

    def __str__(self) -> str:
        return f"one of {', '.join(map(repr, self.values))}"


@dataclass(frozen=True)
class IntList:
    """A list of up to `max_len` integers, each in [lo, hi]."""

    lo: int
    hi: int
    max_len: int

    def ok(self, value: Any) -> bool:
        return type(value) is list and len(value) <= self.max_len and all(Int(self.lo, self.hi).ok(v) for v in value)

    def __str__(self) -> str:
        return f"a list of at most {self.max_len} integers in [{self.lo}, {self.hi}]"


@dataclass(frozen=True)
class HexBits:
    """A bitmap as a string of up to `max_len` lowercase hex digits, 4 bits each, the first bit the first digit's highest."""

    max_len: int

    def ok(self, value: Any) -> bool:
        return type(value) is str and len(value) <= self.max_len and all(c in "0123456789abcdef" for c in value)

    def __str__(self) -> str:
        return f"a string of at most {self.max_len} lowercase hex digits"


@dataclass(frozen=True)
class FrameNames:
    """Distinct frame file names (`media.is_frame_name`: `*.ply`, no path, not hidden): a decoder
    writes files under these names, so a crafted header must not name `../x` or `/etc/x`."""

    max_len: int

    def ok(self, value: Any) -> bool:
        return (type(value) is list and len(value) <= self.max_len and all(type(v) is str and is_frame_name(v) for v in value)
                and len(set(value)) == len(value))

    def __str__(self) -> str:
        return f"a list of at most {self.max_len} distinct plain .ply file names"


BOOL = OneOf((False, True))
MAX_SEQUENCE = 1 << 20  # frames of a Gaussian sequence

MEDIA_FIELDS: dict[str, dict[str, Field]] = {
    "image": {"width": Int(1, MAX_PIXELS), "height": Int(1, MAX_PIXELS), "channels": Int(1, 4), "bit_depth": OneOf((8, 16))},
    "audio": {"sample_rate": Int(1, 2**31 - 1), "channels": Int(1, MAX_AUDIO_CHANNELS), "frames": Int(1, MAX_FRAMES)},
    "gaussians": {"frame_count": Int(1, MAX_SEQUENCE), "names": FrameNames(MAX_SEQUENCE)},
}


def _check(section: dict[str, Any], name: str, spec: Field, where: str) -> None:
    if name not in section:
        raise ContainerError(f"header lacks {where}.{name} (file is damaged)")
    if not spec.ok(section[name]):
        raise ContainerError(f"header field {where}.{name} = {section[name]!r} is not {spec} (file is damaged)")


def check_media(media: dict[str, Any]) -> None:
    """The core's media fields by kind, the decoded size bound (`MAX_PIXELS`), one name per frame."""
    kind = media.get("kind")
    if not isinstance(kind, str) or kind not in MEDIA_FIELDS:
        raise ContainerError(f"header field media.kind = {kind!r} is not one of {', '.join(MEDIA_FIELDS)} (file is damaged)")
    for name, spec in MEDIA_FIELDS[kind].items():
        _check(media, name, spec, "media")
    if kind == "image" and media["width"] * media["height"] > MAX_PIXELS:
        raise ContainerError(f"header claims a {media['width']}x{media['height']} image, more than {MAX_PIXELS} pixels (file is damaged)")
    if kind == "gaussians" and len(media["names"]) != media["frame_count"]:
        raise ContainerError(f"header names {len(media['names'])} frames but claims {media['frame_count']} (file is damaged)")


SECTIONS = ("extra", "media")
F = TypeVar("F", bound="HeaderFields")


def header_field(spec: Field, section: str = "extra", default: Any = dataclasses.MISSING) -> Any:
    """A field of a `HeaderFields` dataclass: its JSON type and range, and the header section it lives in.

    A field with a `default` was added after files without it were written: absent means the
    default, and it is written only when it differs (so older readers' files stay the same bytes).
    """
    if section not in SECTIONS:
        raise ValueError(f"header section {section!r} is not one of {SECTIONS}")
    return dataclasses.field(default=default, metadata={"spec": spec, "section": section})


def _optional(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING


@dataclass(frozen=True)
class HeaderFields:
    """Base of a codec's typed header fields (`extra`, and codec fields of `media`)."""

    @classmethod
    def read(cls: type[F], header: Header) -> F:
        """`check_media`, then each field's type and range; the typed fields."""
        check_media(header.media)
        values = {}
        for f in dataclasses.fields(cls):
            section = f.metadata["section"]
            if _optional(f) and f.name not in getattr(header, section):
                continue
            _check(getattr(header, section), f.name, f.metadata["spec"], section)
            values[f.name] = getattr(header, section)[f.name]
        return cls(**values)

    def consistent(self, header: Header, setting: Setting) -> bool:
        """Relations between the fields, the media and the setting (types and ranges are checked)."""
        return True

    def section(self, name: str) -> dict[str, Any]:
        """The fields that live in header section `name`, as written."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata["section"] == name and not (_optional(f) and getattr(self, f.name) == f.default)}
