"""Integer symbols for the range coder: tables sent as integer log-frequencies, wide integers as classes.

Every table that reaches the coder is rebuilt by the decoder from integers in the stream:
a `Table` stores, per symbol, how many 1/16-bit units it is less probable than the most
probable one (a byte), and `codec.prior.tables_from_scores` turns those into frequencies with
integer arithmetic only. The encoder may derive the bytes from a float density (a learned
prior) or from counts; the decoder never evaluates a float.

Integers of any size (keyframe attributes, position residuals in 1e-4 steps) are split into a
class, coded with a per-stream table, and raw low bits under uniform tables (the class says how
many): u = zigzag(v); u < 4 is its own class; otherwise the class holds the position of the
leading bit and the two bits below it, the rest are raw. Tables stay small (< 160 classes up
to 2**40) and adapt to each stream.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from nmc.codec.container import pack_streams, unpack_streams
from nmc.codec.entropy import Decoder, Encoder
from nmc.codec.errors import ContainerError
from nmc.codec.prior import UNITS, tables_from_scores

MANT = 2  # bits kept in the class below the leading one
MAX_DEFICIT = 255  # 255/16 ~ 16 bits below the best symbol: the floor probability
RAW_CHUNK = 8  # raw bits are coded in pieces of at most 8 under uniform tables

I64 = npt.NDArray[np.int64]


# ---------------------------------------------------------------- tables


@dataclass(frozen=True)
class Table:
    """A categorical table over `lo .. lo + len(deficit) - 1`."""

    lo: int
    deficit: npt.NDArray[np.uint8]  # 1/16-bit units below the most probable symbol

    @property
    def size(self) -> int:
        return int(self.deficit.size)

    @property
    def hi(self) -> int:
        return self.lo + self.size - 1

    def freqs(self) -> npt.NDArray[np.int64]:
        """Integer frequencies (what the coder uses); a one-symbol table gets a dummy second entry
        because constriction needs two."""
        f = tables_from_scores(-self.deficit.astype(np.int64))
        return f if f.size > 1 else np.array([f[0], 1], np.int64)

    def bits(self, symbols: npt.ArrayLike) -> float:
        """Ideal code length of `symbols` (values, not offsets) under this table."""
        f = self.freqs().astype(np.float64)
        s = np.asarray(symbols, np.int64).ravel() - self.lo
        return float(-np.log2(f[s] / f.sum()).sum())

    def symbol_bits(self) -> npt.NDArray[np.float64]:
        """Code length of every symbol in the table, in bits."""
        f = self.freqs().astype(np.float64)[: self.size]
        return -np.log2(f / self.freqs().sum())

    @classmethod
    def from_pmf(cls, pmf: npt.ArrayLike, lo: int) -> Table:
        """From probabilities (any positive scale; zeros get the floor)."""
        p = np.asarray(pmf, np.float64)
        with np.errstate(divide="ignore"):
            d = np.round(-np.log2(p / p.max()) * UNITS)
        return cls(int(lo), np.clip(np.nan_to_num(d, nan=MAX_DEFICIT, posinf=MAX_DEFICIT), 0, MAX_DEFICIT).astype(np.uint8))

    @classmethod
    def from_symbols(cls, symbols: npt.ArrayLike) -> Table:
        """The empirical distribution of `symbols` over their range."""
        s = np.asarray(symbols, np.int64).ravel()
        if s.size == 0:
            return cls(0, np.zeros(1, np.uint8))
        lo = int(s.min())
        return cls.from_pmf(np.bincount(s - lo), lo)


# ---------------------------------------------------------------- side information


class Writer:
    """Little-endian side information: integers, tables and arrays, in the order the reader reads them."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def ints(self, *values: int) -> None:
        self.parts.append(struct.pack(f"<{len(values)}q", *values))

    def table(self, t: Table) -> None:
        self.ints(t.lo, t.size)
        self.parts.append(t.deficit.tobytes())

    def array(self, a: np.ndarray) -> None:
        """An int64 array of any shape (shape first)."""
        self.ints(a.ndim, *a.shape)
        self.parts.append(np.ascontiguousarray(a, "<i8").tobytes())

    def to_bytes(self) -> bytes:
        return b"".join(self.parts)


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ContainerError("queen side information is truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def ints(self, n: int) -> tuple[int, ...]:
        return struct.unpack(f"<{n}q", self._take(8 * n))

    def one(self) -> int:
        return self.ints(1)[0]

    def table(self, max_size: int = 1 << 16) -> Table:
        lo, size = self.ints(2)
        if not 1 <= size <= max_size:
            raise ContainerError(f"queen table of {size} symbols (1..{max_size} expected)")
        return Table(lo, np.frombuffer(self._take(size), np.uint8).copy())

    def array(self, max_items: int = 1 << 24) -> I64:
        ndim = self.one()
        if not 0 <= ndim <= 4:
            raise ContainerError(f"queen array of {ndim} dimensions")
        shape = self.ints(ndim)
        n = int(np.prod(shape)) if ndim else 1
        if min(shape, default=1) < 0 or n > max_items:
            raise ContainerError(f"queen array of shape {shape}")
        return np.frombuffer(self._take(8 * n), "<i8").astype(np.int64).reshape(shape)

    def rest(self) -> bytes:
        return self._take(len(self.data) - self.pos)


def pack(side: Writer, enc: Encoder) -> bytes:
    """A packet: two streams (`pack_streams`), the side information and the range-coded words."""
    return pack_streams([side.to_bytes(), enc.to_bytes()])


def unpack(packet: bytes) -> tuple[Reader, Decoder]:
    side, words = unpack_streams(packet, 2)
    return Reader(side), Decoder(words)


# ---------------------------------------------------------------- coding


def encode_table(enc: Encoder, symbols: npt.ArrayLike, t: Table) -> None:
    s = np.asarray(symbols, np.int64).ravel()
    if s.size and (s.min() < t.lo or s.max() > t.hi):
        raise ValueError(f"symbols {s.min()}..{s.max()} outside the table {t.lo}..{t.hi}")
    if s.size:
        enc.encode(s - t.lo, t.freqs())


def decode_symbols(dec: Decoder, t: Table, count: int) -> npt.NDArray[np.int32]:
    """`count` symbols of table `t` as offsets from `t.lo` (0 .. size - 1)."""
    if count == 0:
        return np.zeros(0, np.int32)
    s = dec.decode(t.freqs(), count)
    if t.size == 1 and s.any():  # the dummy entry of a one-symbol table: only a damaged stream lands there
        raise ContainerError("queen stream decodes outside its table (damaged data)")
    return s


def decode_table(dec: Decoder, t: Table, count: int) -> I64:
    return np.add(decode_symbols(dec, t, count), t.lo, dtype=np.int64)


def to_classes(v: npt.ArrayLike) -> tuple[I64, I64, I64]:
    """`(class, raw bit count, raw bits)` of signed integers."""
    v = np.asarray(v, np.int64)
    u = np.where(v < 0, -2 * v - 1, 2 * v)  # zigzag: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ...
    e = np.where(u > 0, np.floor(np.log2(np.maximum(u, 1))).astype(np.int64), 0)
    e = e - (np.left_shift(1, e) > u) + (np.left_shift(1, e + 1) <= u)  # exact for any u < 2**62
    nraw = np.maximum(e - MANT, 0)
    small = u < (1 << MANT)
    cls = np.where(small, u, (1 << MANT) + (e - MANT) * (1 << MANT) + ((u >> nraw) - (1 << MANT)))
    return cls, np.where(small, 0, nraw), np.where(small, 0, u & ((1 << nraw) - 1))


MAX_CLASSES = 4 * 64  # class tables hold at most this many symbols (raw bits up to 62)
_CLS = np.arange(MAX_CLASSES, dtype=np.int64)
_NRAW = np.where(_CLS < (1 << MANT), 0, (_CLS - (1 << MANT)) >> MANT)  # raw bit count of each class
_TOP = np.where(_CLS < (1 << MANT), _CLS, (1 << MANT) + ((_CLS - (1 << MANT)) & ((1 << MANT) - 1)))  # its leading bits
_BASE: I64 = np.asarray(_TOP << _NRAW, np.int64)  # zigzag code of each class with its raw bits at zero
RAW_CLASS = int(np.argmax(_NRAW > 0))  # the first class with raw bits


def _unzigzag(u: I64) -> I64:
    """0, 1, 2, 3, ... -> 0, -1, 1, -2, ... in place (the keyframe decodes millions)."""
    sign = np.bitwise_and(u, 1)
    np.negative(sign, out=sign)
    u >>= 1
    u ^= sign
    return u


def _raw_pieces(live: I64, nraw: I64) -> list[tuple[int, I64, int]]:
    """`(width, value index, shift)` groups of the raw-bit pieces of the values `live` (ascending),
    which carry `nraw` > 0 raw bits each, in coding order: chunk by chunk of RAW_CHUNK bits, within
    a chunk by width 1 .. RAW_CHUNK, each group in index order."""
    out, shift = [], 0
    while live.size:
        width = np.minimum(nraw - shift, RAW_CHUNK).astype(np.uint8)
        order = live[np.argsort(width, kind="stable")]  # a radix sort: by width, each width in index order
        ends = np.cumsum(np.bincount(width, minlength=RAW_CHUNK + 1))
        out += [(k, order[ends[k - 1] : ends[k]], shift) for k in range(1, RAW_CHUNK + 1) if ends[k] > ends[k - 1]]
        more = nraw > shift + RAW_CHUNK
        live, nraw, shift = live[more], nraw[more], shift + RAW_CHUNK
    return out


def encode_wide(side: Writer, enc: Encoder, values: npt.ArrayLike) -> None:
    """Code integers of any magnitude; the class table goes to the side information."""
    cls, nraw, raw = to_classes(np.asarray(values, np.int64).ravel())
    t = Table.from_symbols(cls)
    side.table(t)
    encode_table(enc, cls, t)
    live = np.flatnonzero(nraw)
    for k, idx, shift in _raw_pieces(live, nraw[live]):
        enc.encode_uniform((raw[idx] >> shift) & ((1 << k) - 1), k)


def decode_wide(side: Reader, dec: Decoder, count: int, out: I64 | None = None) -> I64:
    """The integers of `encode_wide`, written into `out` if given (`(count,)` int64, contiguous)."""
    t = side.table(max_size=MAX_CLASSES)
    if t.lo < 0 or t.hi >= MAX_CLASSES or _NRAW[t.hi] > 60:  # classes grow with their raw bits
        raise ContainerError("queen integer class out of range (damaged data)")
    s = decode_symbols(dec, t, count)
    u = _BASE[t.lo : t.hi + 1].take(s, out=out, mode="clip")  # s < size: "clip" writes `out` unbuffered
    if _NRAW[t.hi]:
        live = np.flatnonzero(s >= RAW_CLASS - t.lo)
        for k, idx, shift in _raw_pieces(live, _NRAW[t.lo + s[live]]):
            u[idx] |= np.left_shift(dec.decode_uniform(k, idx.size), shift, dtype=np.int64)
    return _unzigzag(u)


def wide_bits(values: npt.ArrayLike) -> float:
    """Ideal bits of `encode_wide` (without its table): for rate estimates."""
    cls, nraw, _ = to_classes(np.asarray(values, np.int64).ravel())
    return Table.from_symbols(cls).bits(cls) + float(nraw.sum())
