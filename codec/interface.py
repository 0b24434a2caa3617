"""The codec interface: what a codec declares and implements (`registry` finds it by name).

A codec class declares its media kind, model id, rate settings, typed header fields
(`fields.HeaderFields`), the preset dictionary of its header (container format 2) and whether it
can recover lost packets; it implements `encode` (media -> header fields + packets) and `decode`
(header + checked fields + packets -> media). `NeuralCodec` adds the weights file
(`codec/weights.py`): the codec builds its network from the stored tensors and arguments, the
core loads the file and its priors on first use.
"""

from __future__ import annotations

import hashlib
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Iterable, Iterator, TypeVar

import numpy as np

from .container import Header
from .errors import CodecNotFoundError, ContainerError, MediaError
from .fields import HeaderFields
from .prior import PriorSet

if TYPE_CHECKING:
    import torch

MEDIA_KINDS = ("audio", "image", "gaussians")


@dataclass(frozen=True)
class Setting:
    """One rate point: `name` is what users pass to --quality and what the header stores. A codec
    subclasses it with keyword-only fields for what the setting means (codebooks, stages)."""

    name: str
    rate: float  # nominal rate, in `unit`
    unit: str  # "kbps", "bpp" or "MB/frame"
    description: str = ""


@dataclass
class Encoded:
    """What `Codec.encode` returns: the typed header fields, then packets.

    `packets` may be a lazy iterator (streamed audio); `packet_count` is None when unknown upfront.
    `media` is the header's media metadata (default: `media.metadata` of the input).
    """

    fields: HeaderFields
    packets: Iterable[bytes]
    packet_count: int | None = None
    media: dict[str, Any] | None = None


class Codec(ABC):
    """Base class of every codec. Subclasses set the class variables and implement the coding."""

    name: ClassVar[str]  # set by @register_codec
    media: ClassVar[str]  # one of MEDIA_KINDS
    model_id: ClassVar[str]
    description: ClassVar[str] = ""
    weights_path: Path | None = None  # hashed into every header it writes (an instance may override it)
    retired_weights: ClassVar[dict[str, str]] = {}  # hash -> version, named when a file needs those weights
    auto_priority: ClassVar[int] = 0  # `--codec auto` takes the highest for the media kind
    default_setting: ClassVar[str | None] = None  # None: the middle of settings()
    header_fields: ClassVar[type[HeaderFields]] = HeaderFields  # typed `extra` (and codec media fields)
    header_dict: ClassVar[bytes] = b""  # preset DEFLATE dictionary of the header: typical header JSON
    can_recover: ClassVar[bool] = False  # True: decode() accepts lost packets (None) under --recover
    recovered: dict[str, Any] | None = None  # what the last decode filled in for lost packets (counts; None: nothing lost)
    concealments: ClassVar[tuple[str, ...]] = ()  # codecs that can recover: how lost data is filled, the codec's own way first
    baseline_concealments: ClassVar[tuple[str, ...]] = ()  # the simple ones among them: `nmc eval --loss` reports the share of
    # the gap between the better of these and the loss-free decode that each other concealment closes
    concealment: str = ""  # the one decode uses (`nmc eval --loss` compares them all)

    def concealment_identity(self) -> str:
        """Changes whenever a concealment's output may change (e.g. the hash of a recovery model's weights)."""
        return ""

    @abstractmethod
    def settings(self) -> list[Setting]:
        """Rate points, lowest rate first."""

    @abstractmethod
    def encode(self, media: Any, setting: Setting) -> Encoded:
        """Code `media` at `setting` into header fields and independently decodable packets."""

    @abstractmethod
    def decode(self, header: Header, fields: Any, packets: Iterator[bytes | None]) -> Any:
        """Media from the header, its checked `header_fields` and the packets. A None packet
        was lost; only codecs that `can_recover` are given one."""

    @classmethod
    def installed(cls) -> bool:
        """Whether the codec can run here: it needs no weights file, or its shipped one is present."""
        return cls.weights_path is None or Path(cls.weights_path).is_file()

    def weights_hash(self) -> str:
        """First 64 bits of the weights file's SHA-256, so a file is never decoded with other weights."""
        return file_sha256(self.weights_path)[:16] if self.weights_path else "none"

    def code_hash(self) -> str:
        """First 64 bits of a SHA-256 of the codec's own package sources (its network functions and what they call):
        what a cached result of this codec's code (an ONNX graph, an `nmc eval` point) is bound to besides the weights."""
        return package_sha256(type(self).__module__)[:16]

    def default(self) -> Setting:
        """The setting used when the user names none."""
        settings = self.settings()
        return self.setting(self.default_setting) if self.default_setting else settings[len(settings) // 2]

    def with_packets(self, packets: int) -> Codec:
        """This codec splitting each unit it codes into `packets` interleaved packets (`nmc compress --packets`), where
        the codec can recover a lost one; the others refuse."""
        raise MediaError(f"--packets: codec {self.name} does not split its data over interleaved packets")

    def with_conceal_check(self) -> Codec:
        """This codec trying `--recover` on what it codes and writing in the header how a decoder conceals it best
        (`nmc compress --conceal-check`), where the codec has a choice to make; the others refuse."""
        raise MediaError(f"--conceal-check: codec {self.name} has no concealment to choose")

    def setting(self, name: str) -> Setting:
        for s in self.settings():
            if s.name == name:
                return s
        names = ", ".join(s.name for s in self.settings())
        raise CodecNotFoundError(f"codec {self.name!r} has no rate setting {name!r} (choose from {names})")

    def read_fields(self, header: Header) -> Any:
        """The header's typed fields, checked once: types and ranges, then their consistency."""
        setting = next((s for s in self.settings() if s.name == header.setting), None)
        if setting is None:
            raise ContainerError(f"header names no {self.name} setting: {header.setting!r} (file is damaged)")
        fields = self.header_fields.read(header)
        if not fields.consistent(header, setting):
            raise ContainerError(f"{self.name}: inconsistent header fields {header.extra} / {header.media} (file is damaged)")
        return fields


N = TypeVar("N", bound="torch.nn.Module")


@dataclass
class Model(Generic[N]):
    """A codec's network and integer priors, from one weights file."""

    net: N
    prior: PriorSet


class NeuralCodec(Codec, Generic[N]):
    """A codec whose network and priors live in one weights file, loaded on first use so that
    `nmc --help` and `nmc models` stay fast. The codec supplies `build_net` and the context
    alphabets its priors must have (`prior_contexts`, and `prior_alphabets` when codebooks differ in size)."""

    # Rows of every GPU call of `net_<fn>` (`netcall.run_on`; default `netcall.GPU_ROWS`): a call
    # costs about what its rows cost, and one file's call is padded to them. Fixed per function,
    # so a row never depends on how many files shared its call.
    gpu_rows: ClassVar[dict[str, int]] = {}
    # Network functions that ONNX Runtime may run on the CPU (`onnx_backend`): those whose export reproduces torch.
    onnx_functions: ClassVar[tuple[str, ...]] = ()

    def __init__(self, weights_path: Path | None = None) -> None:
        if weights_path is not None:
            self.weights_path = Path(weights_path)
        self.device = "cpu"

    @abstractmethod
    def build_net(self, state: dict[str, torch.Tensor], args: dict[str, Any]) -> N:
        """The network (fp32, eval mode) from the file's tensors and constructor arguments."""

    @abstractmethod
    def prior_contexts(self, net: N) -> list[list[int]]:
        """Per codebook, the alphabet size of each context its prior is conditioned on."""

    def prior_alphabets(self, net: N) -> list[int] | None:
        """Per codebook, its alphabet; None: one alphabet shared by every codebook."""
        return None

    def _weights_file(self) -> Path:
        """The weights file; CodecNotFoundError when it is not installed."""
        path = self.weights_path
        if path is None or not Path(path).is_file():
            raise CodecNotFoundError(f"{self.name} weights not found at {path} (the model is not installed)")
        return Path(path)

    def _unusable(self, err: Exception) -> CodecNotFoundError:
        return CodecNotFoundError(f"{self.weights_path}: not a usable {self.name} weights file ({err})")

    @cached_property
    def model(self) -> Model[N]:
        from .weights import read_weights

        path = self._weights_file()
        try:
            w = read_weights(path)
            net = self.build_net(w.state, w.args)
            if w.prior is None:
                raise ValueError("no priors (a network-only export: run fit_prior.py)")
            w.prior.check(self.prior_contexts(net), self.prior_alphabets(net))
        except (KeyError, TypeError, ValueError) as err:
            raise self._unusable(err) from None
        net.to(self.device)
        return Model(net, w.prior)

    @cached_property
    def prior(self) -> PriorSet:
        """The integer priors: the loaded model's, else read alone (numpy only, no torch: the ONNX Runtime path never
        builds the network; its graphs were exported, and so checked, from the same weights file)."""
        if "model" in self.__dict__:
            return self.model.prior
        from .weights import read_prior

        path = self._weights_file()
        try:
            return read_prior(path)
        except (KeyError, TypeError, ValueError) as err:
            raise self._unusable(err) from None

    def read_fields(self, header: Header) -> Any:
        """`Codec.read_fields`; a `codebook_size` field must also be the model's alphabet."""
        fields = super().read_fields(header)
        size = getattr(fields, "codebook_size", None)
        if size is not None and size != self.prior.alphabet:
            raise ContainerError(f"{self.name}: header codebook_size {size}, the model has {self.prior.alphabet} (file is damaged)")
        return fields

    def to(self, device: str) -> NeuralCodec[N]:
        """Run the network on `device`; indices, tables and media stay on the CPU."""
        self.device = device
        if "model" in self.__dict__:
            self.model.net.to(device)
        return self

    def run(self, fn: str, *arrays: np.ndarray, **static: Any) -> tuple[np.ndarray, ...]:
        """The codec's network function `net_<fn>(net, *tensors, **static)` on `arrays` (batch axis
        first), on this codec's device, or batched with other files' calls where `nmc batch` shares
        one network between its workers (`netcall`). Every network call of a codec goes through here."""
        from . import netcall

        return netcall.call(self, fn, arrays, static)


@cache
def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@cache
def package_sha256(module: str) -> str:
    """SHA-256 of the `.py` files (names and bytes) in the folder of the imported `module`."""
    digest = hashlib.sha256()
    for path in sorted(Path(str(sys.modules[module].__file__)).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
