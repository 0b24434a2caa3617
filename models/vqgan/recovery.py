"""Recovery of lost vqgan indices: a masked bidirectional transformer over index maps (MaskGIT, Chang et
al. 2022), and the three simple concealments it is measured against (the nearest received cell, the most
frequent received index, the mean of the received neighbours' codes: `fill_mean`, also what the codec fills
without a recovery model).

    index map (h, w), some cells masked ──token (the rung's row of the table) or [MASK]
        + row + column + rung embeddings──► pre-LN transformer blocks ──► logits over the rung's codes

One network serves every codebook of the weights file: each codebook size has its own rows in one
table, tied with the output (logits = output features . the rung's rows + a bias per code), and the
rung is an input. The table is either learned, a token per code, or, with `code_dim`, a learned map
(`code_map`, a small MLP) of the codebooks' fixed unit codes (`codes`, a buffer), the logits then
times a learned scale: near codes look near at every size, and a code has one free parameter of its
own (its bias). At decode the masked cells are filled iteratively, most confident first (`fill`): at
step t of T the model predicts every cell still masked and the most confident ones are kept, until
after step T none is left (MaskGIT's cosine schedule, no sampling: deterministic); a kept cell takes
the argmax, or the code nearest the probability-weighted mean of the unit codes. Maps larger than
`max_side` cells a side are done in windows of at most `max_side` with `MARGIN` cells of context
around each core, in raster order (a later window sees the earlier windows' filled cells).

With `pointer` the model has no logits over the codes: for each masked cell it scores its 8 neighbour
slots (`SLOTS`; a slot outside the map or masked gets -inf), a query projection of the cell's output
feature against a key projection of each neighbour's plus a learned bias per direction, and the fill
copies the chosen neighbour's index (`fill_pointer`): it can only pick sharp codes that are there,
which is what made copying the nearest received cell beat every learned fill of sessions 3-5.

With `continuous` the model predicts no index at all: for each masked cell a code vector (`code_delta`,
`code_dim` wide, the space out_proj and g_s of the vqgan network take) added to the mean of the cell's
received neighbours' unit codes (`continuous_codes`; the head starts at zero, so an untrained model fills
that mean), trained through the frozen decoder (train_recovery.py `--continuous`). The codec writes these
vectors into the code map before synthesis (`fill_codes`); the received cells keep their codes exactly.
Such a vector is fitted to one operating point's out_proj and g_s, which rung fine-tunes change without
changing the base network: its file binds each size to `decoder_hashes` instead of `codebook_hashes`.

Recovery changes no byte of a file: the model runs on one CPU thread (the same pixels for any thread
count on one machine) and only on files with lost packets. Its weights are a file of their own
(`FORMAT`), bound to the network of the vqgan weights by `network_hash`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from .network import Ladder, VQGANArgs

FORMAT = "nmc-vqgan-recovery-1"
MARGIN = 4  # cells of context around a window's core
SLOTS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))  # a pointer's neighbours: (dy, dx)
# The neighbours' mean weighs the four edge neighbours 1 and the diagonals DIAGONAL: at 20 % loss that decodes better
# than equal weights on dev (s256, s1024) and on 16 training photos (RECOVERY.md "Session 18").
DIAGONAL = 0.3
SLOT_WEIGHTS = tuple(DIAGONAL if dy and dx else 1.0 for dy, dx in SLOTS)
KERNEL = dict(zip(SLOTS, SLOT_WEIGHTS))  # (dy, dx) -> weight of that neighbour in a fill
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class RecoveryArgs:
    sizes: tuple[int, ...]  # codebook sizes of the vqgan weights, ascending (the codec's settings)
    dim: int = 128  # transformer width
    layers: int = 6
    heads: int = 4
    embed: int = 64  # token width, tied with the output projection
    max_side: int = 32  # cells per window side (row and column embeddings)
    code_dim: int = 0  # > 0: tokens mapped from the unit codes of this width (`codes`); 0: a learned token table
    pointer: bool = False  # the output is a choice among the 8 neighbours (`pointer_logits`), not over the codes
    continuous: bool = False  # the output is a code vector per masked cell (`code_delta`; needs code_dim), not an index


class Block(nn.Module):
    """Pre-LN transformer block: full (bidirectional) self-attention, then a 4x GELU MLP."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class IndexTransformer(nn.Module):
    """Masked index model: `[B, h, w]` indices of codebook `k` with a mask -> per-cell logits over its codes."""

    codes: Tensor  # `[sum of sizes, code_dim]` fp32 unit codes (with `code_dim`)

    def __init__(self, args: RecoveryArgs):
        super().__init__()
        a = self.args = args
        self.decoder_states: dict[int, dict[str, Tensor]] = {}  # size -> a concealing decoder's tensors (`load_recovery`)
        self.mean_sizes: set[int] = set()  # sizes filled with the neighbours' mean, through their concealing decoder
        if a.continuous and (not a.code_dim or a.pointer):
            raise ValueError("a continuous recovery model needs code inputs (code_dim > 0) and is not a pointer")
        self.offsets = [0, *np.cumsum(a.sizes).tolist()]  # codebook k's rows of the table
        if a.code_dim:  # fixed unit codes (`set_codes`), their learned map and a learned logit scale
            self.register_buffer("codes", torch.zeros(self.offsets[-1], a.code_dim))
            self.code_map = nn.Sequential(nn.Linear(a.code_dim, a.embed), nn.GELU(), nn.Linear(a.embed, a.embed))
            if not (a.pointer or a.continuous):
                self.log_scale = nn.Parameter(torch.zeros(()))  # scale 1 at the start: near-uniform logits
        else:
            self.tokens = nn.Embedding(self.offsets[-1], a.embed)
        self.mask_token = nn.Parameter(torch.zeros(a.embed))
        self.inp = nn.Linear(a.embed, a.dim)
        self.rung = nn.Embedding(len(a.sizes), a.dim)
        self.row, self.col = nn.Embedding(a.max_side, a.dim), nn.Embedding(a.max_side, a.dim)
        self.blocks = nn.ModuleList(Block(a.dim, a.heads) for _ in range(a.layers))
        self.norm = nn.LayerNorm(a.dim)
        self.out = nn.Linear(a.dim, a.embed)
        if a.pointer:  # the output: which neighbour to copy
            self.ptr_q, self.ptr_k = nn.Linear(a.embed, a.embed), nn.Linear(a.embed, a.embed)
            self.slot_bias = nn.Parameter(torch.zeros(len(SLOTS)))
        elif a.continuous:  # the output: a code vector, zero at the start (the fill is then the neighbours' mean)
            self.code_out = nn.Linear(a.embed, a.code_dim)
            nn.init.zeros_(self.code_out.weight)
            nn.init.zeros_(self.code_out.bias)
        else:  # the output: logits over the codes (the code-input model's scale is unused by a pointer)
            self.bias = nn.Parameter(torch.zeros(self.offsets[-1]))
        if not a.code_dim:
            nn.init.normal_(self.tokens.weight, std=0.02)
        for e in (self.rung, self.row, self.col):
            nn.init.normal_(e.weight, std=0.02)

    def features(self, indices: Tensor, masked: Tensor, k: int, origin: tuple[int, int] = (0, 0)) -> Tensor:
        """`[B, h, w]` indices into codebook `k` (any value where `masked`) -> output features `[B, h, w, embed]`.

        `origin`: the window's first row and column in the position tables (training draws it at random)."""
        b, h, w = indices.shape
        if h + origin[0] > self.args.max_side or w + origin[1] > self.args.max_side:
            raise ValueError(f"a window of {h}x{w} cells at {origin} exceeds {self.args.max_side} cells a side")
        tok = self.table(k)[indices.clamp(0, self.args.sizes[k] - 1)]
        tok = torch.where(masked[..., None], self.mask_token.to(tok.dtype), tok)
        rows = self.row(torch.arange(origin[0], origin[0] + h, device=indices.device))
        cols = self.col(torch.arange(origin[1], origin[1] + w, device=indices.device))
        x = self.inp(tok) + rows[:, None] + cols[None] + self.rung.weight[k]
        x = x.reshape(b, h * w, -1)
        for block in self.blocks:
            x = block(x)
        return self.out(self.norm(x)).reshape(b, h, w, -1)

    forward = features

    def table(self, k: int) -> Tensor:
        """Codebook `k`'s rows `[S_k, embed]`: the map of its unit codes (`code_dim`) or its learned tokens."""
        lo, hi = self.offsets[k], self.offsets[k + 1]
        return self.code_map(self.unit_codes(k)) if self.args.code_dim else self.tokens.weight[lo:hi]

    def logits(self, features: Tensor, k: int) -> Tensor:
        """Features `[..., embed]` -> logits `[..., S_k]` over codebook `k` (the tied rows; scaled with `code_dim`)."""
        dots = features @ self.table(k).to(features.dtype).T
        scaled = dots * self.log_scale.exp() if self.args.code_dim else dots
        return scaled + self.bias[self.offsets[k] : self.offsets[k + 1]]

    def pointer_logits(self, features: Tensor, masked: Tensor) -> Tensor:
        """Features `[B, h, w, embed]` and the mask `[B, h, w]` -> fp32 scores `[B, h, w, 8]` of each cell's
        neighbour slots (`SLOTS`): query(cell) . key(neighbour) / sqrt(embed) + the slot's bias; -inf where
        the neighbour is outside the map (window) or masked (with `pointer`)."""
        q, k = self.ptr_q(features).float(), neighbours(self.ptr_k(features).float(), 0.0)
        scores = (q[..., None, :] * k).sum(-1) / math.sqrt(q.shape[-1]) + self.slot_bias
        return scores.masked_fill(~neighbours(~masked, False), -math.inf)

    def code_delta(self, features: Tensor) -> Tensor:
        """Features `[B, h, w, embed]` -> fp32 `[B, h, w, code_dim]`: what a masked cell adds to the mean of its
        received neighbours' codes (with `continuous`; `continuous_codes`)."""
        return self.code_out(features).float()

    def unit_codes(self, k: int) -> Tensor:
        """Codebook `k`'s unit codes `[S_k, code_dim]` (with `code_dim`)."""
        return self.codes[self.offsets[k] : self.offsets[k + 1]]

    @torch.no_grad()
    def set_codes(self, codebooks: dict[int, Tensor]) -> None:
        """The unit codes `[S, code_dim]` of every size (index_maps.py's `codebook.S`: `Ladder.unit_codes(S)`)."""
        for k, size in enumerate(self.args.sizes):
            self.unit_codes(k).copy_(codebooks[size])

    def codebook_hashes(self) -> dict[int, str]:
        """`codes_hash` of each size's codes in the `codes` buffer (what the codec compares with its own codebooks)."""
        return {s: codes_hash(self.unit_codes(k)) for k, s in enumerate(self.args.sizes)}

    def concealers(self, net_args: VQGANArgs) -> dict[int, nn.Module]:
        """The concealing decoders the file holds (`train_recovery.py --tune-decoder`), built as the network's `g_s`
        (`net_args`: its base arguments), fp32, eval mode."""
        from .network import synthesis

        out: dict[int, nn.Module] = {}
        for size, state in self.decoder_states.items():
            g_s = synthesis(net_args)
            g_s.load_state_dict({k: v.float() for k, v in state.items()})
            out[size] = g_s.eval()
        return out

    def state(self) -> dict[str, Tensor]:
        """Tensors of the shipped file: fp16 weights, fp32 norms, embeddings of positions, biases and unit codes."""
        return {k: v.detach().cpu().half() if v.ndim == 2 and "norm" not in k and k != "codes" else v.detach().cpu().float()
                for k, v in self.state_dict().items()}  # fmt: skip


def network_hash(state: dict[str, Tensor]) -> str:
    """First 64 bits of the SHA-256 of a vqgan network's tensors (names and bytes, sorted): the indices a
    recovery model was trained on depend on these alone, not on the priors stored beside them."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode() + b"\0" + state[name].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def codes_hash(codes: Tensor) -> str:
    """First 64 bits of the SHA-256 of a codebook's unit codes `[S, d]`, rounded to 1e-4 (the same hash
    whether the codes were normalised on a GPU or a CPU). An index means a code only with its codebook:
    a recovery model trained on one ladder's numbering is useless, even harmful, on another's."""
    q = np.round(codes.detach().cpu().double().numpy() * 1e4).astype("<i4")
    return hashlib.sha256(q.tobytes()).hexdigest()[:16]


def codebook_hashes(net: Ladder) -> dict[int, str]:
    """`codes_hash` of every codebook of a vqgan network (what a recovery model made for it records)."""
    return {s: codes_hash(net.unit_codes(s)) for s in net.sizes}


def decoder_hashes(net: Ladder) -> dict[int, str]:
    """Per codebook size, the hash of what a continuous fill is regressed through: that operating point's codebook,
    out_proj and g_s, their exact fp32 bytes as loaded from the weights file (`network_hash`). Exact bytes, not the
    unit codes rounded as `codes_hash` does: on a GPU, normalising 1024 or more codes flips a rounding here and there,
    and a file trained there would not bind on the CPU (sessions 10 and 12 lost their s1024-s8192 models so)."""
    out = {}
    for size in net.sizes:
        vq, g_s = net.parts(size)
        tensors = {"codebook": vq.codebook} | {f"out_proj.{k}": v for k, v in vq.out_proj.state_dict().items()}
        out[size] = network_hash(tensors | {f"g_s.{k}": v for k, v in g_s.state_dict().items()})
    return out


def save_recovery(path: Path, model: IndexTransformer, network: str, report: dict, codebooks: dict[int, str] | None = None,
                  decoders: dict[int, dict[str, Tensor]] | None = None, mean_sizes: list[int] | None = None) -> None:  # fmt: skip
    """The shipped file: the model's tensors, its arguments, the vqgan network it was trained for (its base
    network's hash and `codes_hash` of each codebook of the training maps: `codebooks`, or with `code_dim`
    those of the codes it holds; a continuous model: `decoder_hashes` of the network, given as `codebooks`), how;
    a continuous model's concealing decoders (`decoders`: size -> `g_s` state) as `decoder.{size}.*` in fp16, and the sizes
    among them that fill lost cells with the received neighbours' mean instead of the model (`mean_sizes`: their
    decoder was trained on those fills)."""
    from safetensors.torch import save_file

    codebooks = model.codebook_hashes() if model.args.code_dim and not model.args.continuous else codebooks or {}
    decoders = decoders or {}
    if decoders and not model.args.continuous:
        raise ValueError("only a continuous recovery model carries concealing decoders")
    if not set(mean_sizes or ()) <= set(decoders):
        raise ValueError(f"mean sizes {mean_sizes} without a concealing decoder (it holds {sorted(decoders)})")
    meta = {"format": FORMAT, "model_args": json.dumps(asdict(model.args)), "network": network, "report": json.dumps(report),
            "codebooks": json.dumps({str(s): h for s, h in codebooks.items()}), "decoders": json.dumps(sorted(decoders)),
            "mean_sizes": json.dumps(sorted(mean_sizes or []))}  # fmt: skip
    tensors = model.state()
    for size, state in decoders.items():
        tensors.update({f"decoder.{size}.{k}": v.detach().cpu().half() for k, v in state.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


def load_recovery(path: Path) -> tuple[IndexTransformer, str, dict[int, str]]:
    """The model (fp32, eval mode), the network hash and the codebooks' hashes it was trained for (none
    in files made before they were recorded); ValueError if the file is not one."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, not {FORMAT}")
        args = json.loads(meta["model_args"])
        model = IndexTransformer(RecoveryArgs(**{**args, "sizes": tuple(args["sizes"])}))
        model.load_state_dict({k: v.float() for k, v in tensors.items() if not k.startswith("decoder.")})
        for size in json.loads(meta.get("decoders", "[]")):
            prefix = f"decoder.{int(size)}."
            model.decoder_states[int(size)] = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        model.mean_sizes = {int(s) for s in json.loads(meta.get("mean_sizes", "[]"))} & set(model.decoder_states)
        codebooks = {int(s): str(h) for s, h in json.loads(meta.get("codebooks", "{}")).items()}
    except (SafetensorError, OSError, KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        raise ValueError(f"{path}: not a vqgan recovery file ({err})") from None
    return model.eval(), str(meta["network"]), codebooks


def neighbours(t: Tensor, outside: float | bool) -> Tensor:
    """`[B, h, w, ...]` -> `[B, h, w, 8, ...]`: each cell's neighbours in `SLOTS` order, `outside` beyond the edges."""
    b, h, w = t.shape[:3]
    padded = t.new_full((b, h + 2, w + 2, *t.shape[3:]), outside)
    padded[:, 1:-1, 1:-1] = t
    return torch.stack([padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in SLOTS], dim=3)


def neighbour_sum(t: Tensor, power: int = 1) -> Tensor:
    """`[B, h, w, ...]` -> each cell's sum of its in-map neighbours' values, weighted by `SLOT_WEIGHTS` (to `power`):
    one depthwise 3 x 3 convolution, zero padded."""
    flat = t.reshape(*t.shape[:3], -1).permute(0, 3, 1, 2)  # [B, C, h, w]
    kernel = torch.tensor([[KERNEL.get((dy, dx), 0.0) ** power for dx in (-1, 0, 1)] for dy in (-1, 0, 1)], dtype=t.dtype, device=t.device)
    out = F.conv2d(flat, kernel.expand(flat.shape[1], 1, 3, 3), padding=1, groups=flat.shape[1])
    return out.permute(0, 2, 3, 1).reshape(t.shape)


def best_slots(indices: Tensor, masked: Tensor, codes: Tensor) -> Tensor:
    """The pointer's targets: `[B, h, w, 8]` bool, the received neighbours whose unit code (`codes` `[S, d]`)
    has the highest cosine with the cell's own (`indices` `[B, h, w]`, true everywhere); all of them on a tie
    (neighbours with the same index often are), none for a cell without a received neighbour."""
    valid = neighbours(~masked, False)
    cos = (codes[indices][..., None, :] * neighbours(codes[indices], 0.0)).sum(-1).masked_fill(~valid, -math.inf)
    return valid & (cos >= cos.max(-1, keepdim=True).values - 1e-6)


# ---------------------------------------------------------------- filling masked cells


def windows(n: int, side: int, margin: int = MARGIN) -> list[tuple[int, int, int, int]]:
    """Windows along an axis of `n` cells: `(start, end, core_start, core_end)`, cores tiling [0, n),
    each window its core plus up to `margin` cells each side, at most `side` cells long."""
    if n <= side:
        return [(0, n, 0, n)]
    parts = math.ceil(n / (side - 2 * margin))
    cuts = [round(i * n / parts) for i in range(parts + 1)]
    return [(max(0, a - margin), min(n, b + margin), a, b) for a, b in zip(cuts, cuts[1:])]


def window_cores(shape: tuple[int, int], side: int) -> Iterator[tuple[tuple[slice, slice], BoolArray]]:
    """The windows of a `(h, w)` map in raster order: each window's slices and its core as a mask of the window."""
    for y0, y1, cy0, cy1 in windows(shape[0], side):
        for x0, x1, cx0, cx1 in windows(shape[1], side):
            core = np.zeros((y1 - y0, x1 - x0), bool)
            core[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = True
            yield (slice(y0, y1), slice(x0, x1)), core


@torch.inference_mode()
def fill(model: IndexTransformer, grid: IntArray, masked: BoolArray, k: int, steps: int = 2, codes: Tensor | None = None) -> IntArray:
    """`grid` `(h, w)` of indices into codebook `k` with the `masked` cells predicted, most confident first.

    Each window's masked core cells take `steps` rounds (fewer when there are fewer cells): after round t
    of T, cos(pi t / 2T) of them are still masked (the highest top probabilities are kept). A kept cell
    takes the argmax, or with `codes` (codebook k's unit codes `[S_k, d]`) the code nearest the
    probability-weighted mean of the codes: the minimum-risk choice under a code distance, a near code
    when the model hesitates between near codes. Argmax and a stable sort: deterministic."""
    if model.args.pointer:
        return fill_pointer(model, grid, masked, k)
    if model.args.continuous:
        raise ValueError("a continuous recovery model fills code vectors, not indices (fill_codes)")
    out, masked = grid.copy(), masked.copy()
    dev = model.mask_token.device  # the codec: the CPU; a training run's evaluation: its GPU
    for (sy, sx), core in window_cores(grid.shape, model.args.max_side):
        todo = int((masked[sy, sx] & core).sum())
        rounds = min(steps, todo)
        for t in range(1, rounds + 1):
            m = masked[sy, sx]
            ys, xs = np.nonzero(m & core)  # row-major, as the features' flat order
            window, mask = (torch.from_numpy(np.ascontiguousarray(a))[None].to(dev) for a in (out[sy, sx], m))
            feats = model.features(window, mask, k)[0][torch.from_numpy(ys).to(dev), torch.from_numpy(xs).to(dev)]
            probs = model.logits(feats, k).float().softmax(-1)
            conf, best = probs.max(-1)
            if codes is not None:
                unit = codes.to(probs)
                best = (probs @ unit @ unit.T).argmax(-1)  # the code nearest the mean: the highest dot product
            left = math.floor(todo * math.cos(math.pi / 2 * t / rounds)) if t < rounds else 0
            keep = np.argsort(-conf.cpu().numpy(), kind="stable")[: len(ys) - left]
            out[sy.start + ys[keep], sx.start + xs[keep]] = best.cpu().numpy()[keep]
            masked[sy.start + ys[keep], sx.start + xs[keep]] = False
    return out


@torch.inference_mode()
def fill_pointer(model: IndexTransformer, grid: IntArray, masked: BoolArray, k: int) -> IntArray:
    """`fill` with a `pointer` model: in rounds, every masked core cell of a window with a known neighbour
    (received or filled in an earlier round) copies the index of the neighbour it scores highest (the first
    slot on a tie); cells without one wait for the next round. Cells of a window without a known cell left
    at the end get the nearest-cell copy (`fill_nearest`), after all windows. Deterministic."""
    out, masked = grid.copy(), masked.copy()
    dev, slots = model.mask_token.device, np.array(SLOTS)
    for (sy, sx), core in window_cores(grid.shape, model.args.max_side):
        y0, x0 = sy.start, sx.start
        while True:
            m = torch.from_numpy(np.ascontiguousarray(masked[sy, sx]))[None]
            ready = (m[0] & torch.from_numpy(core) & neighbours(~m, False)[0].any(-1)).numpy()
            if not ready.any():
                break
            window = torch.from_numpy(np.ascontiguousarray(out[sy, sx]))[None].to(dev)
            scores = model.pointer_logits(model.features(window, m.to(dev), k), m.to(dev))[0]
            ys, xs = np.nonzero(ready)
            dy, dx = slots[scores[torch.from_numpy(ys).to(dev), torch.from_numpy(xs).to(dev)].argmax(-1).cpu().numpy()].T
            out[y0 + ys, x0 + xs] = out[y0 + ys + dy, x0 + xs + dx]
            masked[y0 + ys, x0 + xs] = False
    return fill_nearest(out, masked) if masked.any() else out  # a received cell stays (its nearest is itself)


@torch.inference_mode()
def fill_codes(model: IndexTransformer, grid: IntArray, masked: BoolArray, k: int, codes: Tensor) -> npt.NDArray[np.float32]:
    """With a `continuous` model: the code map `(h, w, d)` fp32 of `grid` (indices into codebook `k`, the
    decoder's unit codes `codes` `[S_k, d]`), each received cell exactly its code, each masked cell
    `continuous_codes`' vector. One pass per window: the model sees the received cells only (the masked cells'
    contents are never read); a cell without a received neighbour starts from the nearest received cell's
    code in the whole map. Deterministic."""
    g, m = torch.from_numpy(np.where(masked, 0, grid)), torch.from_numpy(masked)
    codes = codes.float().cpu()
    out, near = codes[g].numpy().copy(), nearest_codes(g[None], m[None], codes)
    dev = model.mask_token.device
    for (sy, sx), core in window_cores(grid.shape, model.args.max_side):
        ys, xs = np.nonzero(masked[sy, sx] & core)
        if not len(ys):
            continue
        window, mask = g[sy, sx][None], m[sy, sx][None]
        delta = model.code_delta(model.features(window.to(dev), mask.to(dev), k)).cpu()
        filled = continuous_codes(delta, codes[window], mask, near[:, sy, sx])[0]
        out[sy.start + ys, sx.start + xs] = filled[ys, xs].numpy()
    return out


def fill_mean(grid: IntArray, masked: BoolArray, codes: Tensor) -> npt.NDArray[np.float32]:
    """Concealment without a model: the code map `(h, w, d)` fp32 of `grid` (indices into the unit codes `codes`
    `[S, d]`), each received cell exactly its code, each masked cell the weighted mean (`SLOT_WEIGHTS`) of the codes of
    its received 8-neighbours (those of them inside the map that are not masked); a masked cell without a received neighbour
    takes the nearest received cell's code (`fill_nearest`, which with nothing received gives index 0's).
    What an untrained continuous model fills (`continuous_codes` with a zero vector). The masked cells' contents
    are never read. Deterministic on one thread."""
    g, m = torch.from_numpy(np.where(masked, 0, grid))[None], torch.from_numpy(masked)[None]
    codes = codes.float().cpu()
    alone = m & ~neighbours(~m, False).any(-1)  # masked cells without a received neighbour: rare, and the nearest copy imports scipy
    return continuous_codes(torch.zeros(()), codes[g], m, nearest_codes(g, m, codes) if alone.any() else codes[g])[0].numpy()


def continuous_codes(delta: Tensor, own: Tensor, masked: Tensor, fallback: Tensor) -> Tensor:
    """The code map `[B, h, w, d]`: a received cell its own code `own` `[B, h, w, d]`, a masked cell the mean of
    its received neighbours' codes (weighted by `SLOT_WEIGHTS`) plus `delta` `[B, h, w, d]` (`code_delta`); a masked
    cell without a received neighbour: `fallback` (`nearest_codes`) plus `delta`. Differentiable in `delta` (training:
    `--continuous`)."""
    received = (~masked)[..., None].to(own.dtype)  # [B, h, w, 1]
    total = neighbour_sum(received)
    mean = neighbour_sum(own * received) / total.clamp(min=DIAGONAL)  # DIAGONAL: the least total of a cell with one
    base = torch.where(total > 0, mean, fallback)
    return torch.where(masked[..., None], base + delta, own)


def nearest_codes(indices: Tensor, masked: Tensor, codes: Tensor) -> Tensor:
    """`[B, h, w, d]`: each cell's code after the nearest-cell copy (`fill_nearest`) of `indices` `[B, h, w]`."""
    near = [torch.from_numpy(fill_nearest(i, mk)) for i, mk in zip(indices.cpu().numpy(), masked.cpu().numpy())]
    return codes[torch.stack(near).to(codes.device)]


def fill_nearest(grid: IntArray, masked: BoolArray) -> IntArray:
    """Baseline: each masked cell copies the nearest received cell (Euclidean in cells; scipy's ties)."""
    from scipy.ndimage import distance_transform_edt

    if masked.all():
        return fill_frequent(grid, masked)
    iy, ix = distance_transform_edt(masked, return_distances=False, return_indices=True)
    return np.asarray(grid[iy, ix], np.int64)


def fill_frequent(grid: IntArray, masked: BoolArray, fallback: int = 0) -> IntArray:
    """Baseline: every masked cell gets the most frequent received index (`fallback` when none was received)."""
    received = grid[~masked]
    mode = int(np.bincount(received).argmax()) if received.size else fallback
    return np.where(masked, mode, grid)
