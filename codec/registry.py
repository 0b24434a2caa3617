"""Codec interface and registry.

A codec is a class registered under the name it writes into the container header. Packages
announce their codecs through the `nmc.codecs` entry-point group (see pyproject.toml); the
registry imports those modules on first use, which runs their `@register_codec` decorators.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, TypeVar

from .container import Header
from .errors import CodecNotFoundError
from .fields import Field

MEDIA_KINDS = ("audio", "image", "gaussians")


@dataclass(frozen=True)
class Setting:
    """One rate point of a codec: `name` is what users pass to --quality and the header stores."""

    name: str
    rate: float  # nominal rate, in `unit`
    unit: str  # "kbps", "bpp" or "MB/frame"
    description: str = ""


@dataclass
class Encoded:
    """What `Codec.encode` returns: media metadata and codec-specific header fields, then packets.

    `packets` may be a lazy iterator (streamed audio); `packet_count` is None when unknown upfront.
    """

    media: dict[str, Any]
    packets: Iterable[bytes]
    packet_count: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Codec(ABC):
    """Base class of every codec. Subclasses set the class variables and implement the coding."""

    name: ClassVar[str]  # set by @register_codec
    media: ClassVar[str]  # one of MEDIA_KINDS
    model_id: ClassVar[str]
    description: ClassVar[str] = ""
    weights_path: Path | None = None  # hashed into every header it writes (an instance may override it)
    auto_priority: ClassVar[int] = 0  # `--codec auto` takes the highest for the media kind
    default_setting: ClassVar[str | None] = None  # None: the middle of settings()
    header_fields: ClassVar[dict[str, Field]] = {}  # "extra.NAME" / "media.NAME" -> type and range, checked before decode()

    @abstractmethod
    def settings(self) -> list[Setting]:
        """Rate points, lowest rate first."""

    @abstractmethod
    def encode(self, media: Any, setting: Setting) -> Encoded:
        """Code `media` at `setting` into header fields and independently decodable packets."""

    @abstractmethod
    def decode(self, header: Header, packets: Iterator[bytes | None], recover: bool = False) -> Any:
        """Media from the header and packets; a None packet was lost (raise unless recoverable)."""

    def weights_hash(self) -> str:
        """First 64 bits of the weights file's SHA-256, so a file is never decoded with other weights."""
        return file_sha256(self.weights_path)[:16] if self.weights_path else "none"

    def default(self) -> Setting:
        """The setting used when the user names none."""
        settings = self.settings()
        return self.setting(self.default_setting) if self.default_setting else settings[len(settings) // 2]

    def setting(self, name: str) -> Setting:
        for s in self.settings():
            if s.name == name:
                return s
        names = ", ".join(s.name for s in self.settings())
        raise CodecNotFoundError(f"codec {self.name!r} has no rate setting {name!r} (choose from {names})")


class NeuralCodec(Codec):
    """A codec whose network and priors live in one weights file, loaded on first use so that
    `nmc --help` and `nmc models` stay fast. `model.net` is the torch module to place on a device."""

    def __init__(self, weights_path: Path | None = None) -> None:
        if weights_path is not None:
            self.weights_path = Path(weights_path)
        self.device = "cpu"

    @abstractmethod
    def load(self, path: Path) -> Any:
        """The model (an object with a `net` attribute) from the weights file."""

    @cached_property
    def model(self) -> Any:
        path = self.weights_path
        if path is None or not Path(path).is_file():
            raise CodecNotFoundError(f"{self.name} weights not found at {path} (the model is not installed)")
        model = self.load(Path(path))
        model.net.to(self.device)
        return model

    def to(self, device: str) -> NeuralCodec:
        """Run the network on `device`; indices, tables and media stay on the CPU."""
        self.device = device
        if "model" in self.__dict__:
            self.model.net.to(device)
        return self


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread. oneDNN's convolutions sum in an order that depends on the
    thread count, and a last-ULP difference can flip a VQ index or a rounded sample: on one thread
    the bytes a codec writes and the media it decodes are the same whatever the caller's setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@cache
def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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


def codec_for_media(kind: str) -> str:
    """Name of the default codec for a media kind (`--codec auto`)."""
    candidates = [c for c in available().values() if c.media == kind]
    if not candidates:
        raise CodecNotFoundError(f"no codec for {kind} is installed")
    return max(candidates, key=lambda c: c.auto_priority).name
