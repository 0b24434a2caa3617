"""The queen coding core: groups of 3DGS frames <-> byte streams (no container, no CLI).

    frames of a group ──► fit (per group): one LatentCoder per attribute group ──► header bytes
           │
           ├─ keyframe (first group): every channel quantized, entropy-coded ──────► packet 0
           └─ each next frame, against the previous *decoded* frame (closed loop):
                positions: hard-concrete gate (re-fitting noise left alone) ─► mask + residuals in 1e-4 steps
                dc, rest, opacity, scale, rot: integer latents z, update z @ W ──► packet t

The decoder's state is an int64 matrix in units of GRID = 1e-4 of the raw 3DGS parameters;
keyframe values are multiples of a per-group step, updates are integers (gated position steps,
and z @ W with W in grid units). Every operation on the state is integer arithmetic, so the
encoder knows the decoder's state bit for bit (no drift), decoded frames are the same bytes on
every machine, and every table comes from integers in the stream. Memory holds one group of
frames while encoding and one frame while decoding, whatever the sequence length.

The rate-distortion trade-off is one number, `Settings.lam`: render MSE per bit per Gaussian.
Distortion is predicted from attribute errors with per-attribute render weights (WEIGHTS,
measured with codec/splatting.py on generated scenes) times each Gaussian's importance (opacity, footprint).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from nmc.codec.entropy import Encoder
from nmc.codec.errors import ContainerError, MediaError
from nmc.codec.media import GaussianLayout, Matrix

from . import gate, latent
from .latent import LatentCoder
from .symbols import Reader, Table, Writer, decode_symbols, decode_table, decode_wide, encode_table, encode_wide, pack, unpack

GRID = 1e-4  # state grid and position step (raw parameter units)
ATTRS = ("dc", "rest", "opacity", "scale", "rot")  # coded through latents; positions are gated
# Render MSE of held-out views per squared error of one raw parameter of one Gaussian, per unit
# of the Gaussian's importance (opacity, times its footprint exp(two largest log scales) for all
# but the position); fitted with codec/splatting.py on generated scenes of 4k and 20k Gaussians
# (models/queen/CARD.md), where the constants agree within a factor of 2.
WEIGHTS = {"pos": 4.8e-4, "dc": 4.6e-5, "rest": 4.6e-5, "opacity": 3.2e-6, "scale": 4.8e-5, "rot": 2.2e-4}
KEY, DELTA = 0, 1  # packet kinds
HEADER_VERSION = 1
MAX_HEADER = 1 << 24

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Settings:
    lam: float = 3e-7  # rate weight: predicted render MSE per bit per Gaussian (lower: better quality)
    latent_dims: tuple[int, ...] = (3, 4, 1, 3, 4)  # latents per Gaussian for dc, rest, opacity, scale, rot
    keyframe_groups: int = 0  # a keyframe every k groups (random access); 0: only the first group
    fit_rows: int = 20_000  # residual rows (Gaussians x frames) the decoders are fitted on
    fit_steps: int = 300  # Adam steps per latent decoder and group
    gate_steps: int = 150  # Adam steps of the position gate per frame
    seed: int = 0
    device: str = "cpu"  # where the decoders and the gate are fitted (the bytes may differ by device, never the decoding)


@dataclass
class EncodedGroup:
    header: bytes  # decoders and priors: once per group
    packets: list[bytes]  # one per frame
    meta: dict = field(default_factory=dict)  # statistics (not needed to decode)


def to_float(state: I64) -> Matrix:
    """The decoded frame of an integer state (exactly rounded: the same bytes everywhere), C-ordered:
    float64 products rounded to float32 on the way out, without a float64 copy of the whole state."""
    return np.multiply(state, GRID, out=np.empty(state.shape, np.float32), dtype=np.float64, casting="same_kind")


def add(state: I64, cols: slice, coder: LatentCoder, z: I64) -> I64:
    """Apply the update of latents z to the state's columns; rows of zeros change nothing (skipped).
    Returns the rows it changed."""
    rows = np.flatnonzero(z.any(axis=1))
    if rows.size:
        state[rows, cols] += coder.decode(z[rows])
    return rows


def render_weights(m: Matrix, layout: GaussianLayout) -> dict[str, F64]:
    """Per Gaussian, the render-MSE weight of a squared error in each attribute group, times N
    (so that mean(weight * error^2) is the predicted render MSE and compares with lam * bits)."""
    sl = layout.slices()
    a = 1 / (1 + np.exp(-m[:, sl["opacity"].start].astype(np.float64)))
    log_s = np.sort(m[:, sl["scale"]].astype(np.float64), axis=1)
    footprint = np.exp(np.minimum(log_s[:, 1] + log_s[:, 2], 20.0))
    importance = {"pos": a, "opacity": 4 * a * (1 - a) * footprint}
    return {g: WEIGHTS[g] * len(m) * importance.get(g, a * footprint) for g in ("pos", *ATTRS)}


def keyframe_steps(settings: Settings, layout: GaussianLayout, m: Matrix) -> I64:
    """Quantization step of each channel in grid units: the high-rate optimum for `lam`,
    delta^2 = 6 lam / (weight ln 2), except positions, which stay on the 1e-4 grid as in the
    residual frames: a static Gaussian then differs from its keyframe by its re-fitting jitter
    only, which the gate leaves alone, rather than by a keyframe error worth correcting later."""
    steps = np.ones(layout.channels, np.int64)
    for g, w in render_weights(m, layout).items():
        if g == "pos":
            continue
        delta = np.sqrt(6 * settings.lam / (max(float(w.mean()), 1e-30) * np.log(2)))
        steps[layout.slices()[g]] = max(1, int(np.round(delta / GRID)))
    return steps


def position_bits(q: I64) -> F64:
    """Rough bits of an open gate: the three values (about 1 + 2 log2(1 + |v|) each) and the mask."""
    return (1 + 2 * np.log2(1 + np.abs(q))).sum(1) + 2.0


class GroupEncoder:
    """Codes a sequence group by group; holds the decoder's state between groups."""

    def __init__(self, layout: GaussianLayout, settings: Settings = Settings()) -> None:
        self.layout, self.settings = layout, settings
        self.state: I64 | None = None
        self.groups = 0

    def encode_group(self, frames: Sequence[Matrix]) -> EncodedGroup:
        """Code `frames` (each `(N, C)` float32); the first group starts with a keyframe."""
        s = self.settings
        frames = [self._check(f) for f in frames]
        if not frames:
            raise ValueError("a group needs at least one frame")
        keyframe = self.state is None or (s.keyframe_groups > 0 and self.groups % s.keyframe_groups == 0)
        t0 = time.perf_counter()
        targets = frames[1:] if keyframe else frames
        refs = frames[:-1] if keyframe else [to_float(self.state), *frames[:-1]]  # type: ignore[arg-type]
        coders = self._fit(refs, targets)
        fit_s = time.perf_counter() - t0
        side = Writer()
        side.ints(HEADER_VERSION, self.layout.channels, len(frames[0]))
        for a in ATTRS:
            coders[a].write(side)
        header = zlib.compress(side.to_bytes(), 9)
        packets, opened = [], []
        if keyframe:
            packets.append(self._keyframe(frames[0]))
        for f in targets:
            packet, n_open = self._delta(f, coders)
            packets.append(packet)
            opened.append(n_open)
        self.groups += 1
        meta = {"keyframe": keyframe, "gaussians": len(frames[0]), "frames": len(frames), "header_bytes": len(header),
                "packet_bytes": [len(p) for p in packets], "positions_updated": opened,
                "fit_seconds": fit_s, "seconds": time.perf_counter() - t0}
        return EncodedGroup(header, packets, meta)

    def _check(self, m: Matrix) -> Matrix:
        m = np.asarray(m, np.float32)
        if m.ndim != 2 or m.shape[1] != self.layout.channels:
            raise MediaError(f"frame of shape {m.shape}, expected (N, {self.layout.channels})")
        if self.state is not None and len(m) != len(self.state):
            raise MediaError(f"the Gaussian count changed from {len(self.state)} to {len(m)}; queen codes a constant set")
        if not np.isfinite(m).all():
            raise MediaError("frame holds NaN or infinite values")
        return m

    def _fit(self, refs: Sequence[Matrix], targets: Sequence[Matrix]) -> dict[str, LatentCoder]:
        """One latent decoder per attribute group on (a subsample of) the group's open-loop residuals."""
        s, sl = self.settings, self.layout.slices()
        n = len(targets[0]) if targets else 0
        rng = np.random.default_rng([s.seed, self.groups])
        per_frame = min(n, max(1, s.fit_rows // max(1, len(targets))))
        idx = np.sort(rng.choice(n, per_frame, replace=False)) if n else np.zeros(0, np.int64)
        weights = [render_weights(t[idx], self.layout) for t in targets]
        blocks = []
        for k, a in enumerate(ATTRS):
            rows = [t[idx, sl[a]].astype(np.float64) - r[idx, sl[a]] for r, t in zip(refs, targets)]
            res = np.concatenate(rows) if rows else np.zeros((0, sl[a].stop - sl[a].start))
            w = np.concatenate([wt[a] for wt in weights]) if weights else np.zeros(0)
            blocks.append((res, w, s.latent_dims[k]))
        return dict(zip(ATTRS, latent.fit_group(blocks, s.lam, GRID, s.fit_steps, s.seed, s.device)))

    def _keyframe(self, m: Matrix) -> bytes:
        side, enc = Writer(), Encoder()
        side.ints(KEY, len(m))
        steps = keyframe_steps(self.settings, self.layout, m)
        state = np.zeros(m.shape, np.int64, order="F")  # columns contiguous: updates go by attribute group
        for c in range(m.shape[1]):
            v = np.round(m[:, c].astype(np.float64) / (GRID * steps[c])).astype(np.int64)
            offset = int(np.median(v)) if len(v) else 0
            side.ints(int(steps[c]), offset)
            encode_wide(side, enc, v - offset)
            state[:, c] = v * steps[c]
        self.state = state
        return pack(side, enc)

    def _delta(self, m: Matrix, coders: dict[str, LatentCoder]) -> tuple[bytes, int]:
        """A frame against the current state; updates the state exactly as the decoder will."""
        s, sl = self.settings, self.layout.slices()
        assert self.state is not None
        r = np.multiply(self.state, -GRID, dtype=np.float64)  # the decoded frame within float32 rounding
        r += m
        w = render_weights(m, self.layout)
        q = np.round(r[:, sl["pos"]] / GRID).astype(np.int64)
        floor = gate.noise_floor(r[:, sl["pos"]])
        mask = gate.fit_gate(r[:, sl["pos"]], q.astype(np.float64) * GRID, w["pos"], position_bits(q), s.lam, s.gate_steps, s.seed, s.device, floor)
        side, enc = Writer(), Encoder()
        side.ints(DELTA, len(m))
        mask_table = Table.from_symbols(np.append(mask.astype(np.int64), [0, 1]))  # both symbols codable
        side.table(mask_table)
        encode_table(enc, mask, mask_table)
        moved = q[mask]
        for c in range(3):
            encode_wide(side, enc, moved[:, c])
        self.state[mask, sl["pos"]] += moved
        for a in ATTRS:
            z = coders[a].choose(r[:, sl[a]], w[a], s.lam, GRID, device=s.device)
            for j, t in enumerate(coders[a].tables):
                encode_table(enc, z[:, j], t)
            add(self.state, sl[a], coders[a], z)
        return pack(side, enc), int(mask.sum())


class GroupDecoder:
    """Decodes groups in order; holds the state between groups (one frame of memory). Every frame
    must hold `gaussians` Gaussians (from the container header): nothing larger is allocated."""

    def __init__(self, layout: GaussianLayout, gaussians: int) -> None:
        self.layout, self.gaussians = layout, gaussians
        self.state: I64 | None = None
        self.frame: Matrix | None = None  # to_float(state), refreshed where the state changes

    def read_header(self, header: bytes) -> dict[str, LatentCoder]:
        d = zlib.decompressobj()
        raw = d.decompress(header, MAX_HEADER)
        if d.unconsumed_tail or not d.eof:
            raise ContainerError("queen group header is damaged or too large")
        side = Reader(raw)
        version, channels, _ = side.ints(3)
        if version != HEADER_VERSION or channels != self.layout.channels:
            raise ContainerError(f"queen group header version {version} for {channels} channels "
                                 f"(expected {HEADER_VERSION}, {self.layout.channels})")
        sl = self.layout.slices()
        return {a: LatentCoder.read(side, sl[a].stop - sl[a].start) for a in ATTRS}

    def decode_group(self, header: bytes, packets: Iterable[bytes]) -> Iterator[Matrix]:
        """The group's frames, one at a time."""
        coders = self.read_header(header)
        for p in packets:
            self._decode(p, coders)
            assert self.frame is not None
            yield self.frame.copy()

    def _decode(self, packet: bytes, coders: dict[str, LatentCoder]) -> None:
        sl = self.layout.slices()
        side, dec = unpack(packet)
        kind, n = side.ints(2)
        if n != self.gaussians:
            raise ContainerError(f"queen frame of {n} Gaussians, the header says {self.gaussians}")
        if kind == KEY:
            state = np.empty((n, self.layout.channels), np.int64, order="F")  # columns contiguous
            for c in range(self.layout.channels):
                step, offset = side.ints(2)
                if not 1 <= step <= 1 << 30:
                    raise ContainerError(f"queen keyframe step {step}")
                v = decode_wide(side, dec, n, out=state[:, c])
                v += offset
                v *= step
            self.state, self.frame = state, to_float(state)
            return
        if kind != DELTA or self.state is None or len(self.state) != n:
            raise ContainerError(f"queen frame of kind {kind} for {n} Gaussians does not follow its reference")
        rows = np.flatnonzero(decode_table(dec, side.table(max_size=2), n))  # the gate's mask
        pos = sl["pos"]
        for c in range(pos.start, pos.stop):
            self.state[rows, c] += decode_wide(side, dec, rows.size)
        self._refresh(rows, pos)
        for a in ATTRS:
            coder = coders[a]
            if not coder.tables:
                continue
            z = [decode_symbols(dec, t, n) for t in coder.tables]  # offsets from each table's lo
            changed = z[0] != -coder.tables[0].lo
            for zj, t in zip(z[1:], coder.tables[1:]):
                changed |= zj != -t.lo
            rows = np.flatnonzero(changed)  # rows of zeros change nothing: skipped
            if rows.size:
                self.state[rows, sl[a]] += coder.decode(np.stack([zj[rows] + t.lo for zj, t in zip(z, coder.tables)], 1))
                self._refresh(rows, sl[a])

    def _refresh(self, rows: I64, cols: slice) -> None:
        """The float frame where the state changed (the same function per element: the same bytes)."""
        assert self.state is not None and self.frame is not None
        if rows.size:
            self.frame[rows, cols] = to_float(self.state[rows, cols])
