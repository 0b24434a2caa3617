"""Fuzz campaign (not run in CI): damaged .nmc files through `nmc decompress` and `nmc info`.

For each real codec one multi-packet file is made (speech: hificodec, 3 s of stereo in 1 s
packets; photo: mcquic and vqgan, a 96x128 RGBA crop in 64-pixel tiles; Gaussian sequence: queen, the
4-frame sample in groups of 2, i.e. 6 packets), then case i of N damages it one
of four ways, in turn: truncation, byte flips, a CRC-valid payload change (bytes, words of a
range-coded stream, streams or packets swapped) or a CRC-valid header change (a field set to an
edge value of any JSON type, removed, or nudged). Each case runs both commands in-process as
the CLI runs them (`nmc.cli.main.main`), in worker processes watched by a per-case timeout.

A case is bad when a command ends with anything but exit 0, or exit 1 with one `nmc: error:`
line (a traceback), runs past the timeout (a hang; the worker is killed and replaced), kills
its worker (a crash), or leaves a file beside the input other than a successful output.
Truncations and flips are covered by the CRCs, so a successful decode of one is also counted
(`undetected`). A codec that can recover lost packets (vqgan) also runs `nmc decompress --recover`
on every case: it must decode or fail the same clean way (`recovered` counts its decodes; a damaged
header is the only reason left to fail). Exit status 1 when any case is bad. Reproduce one case
with `--case CODEC:I`.

    python scripts/fuzz.py --cases 10000 --workers 2          # every codec, about an hour each on 2 cores
    python scripts/fuzz.py --cases 2000 --codecs vqgan        # --recover too: the installed vqgan weights (recovery model optional)
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import traceback
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from damage import coded_streams, with_header, with_payloads  # noqa: E402

KINDS = ("truncate", "flip", "payload", "header")
EDGE_VALUES: list[Any] = [None, True, False, 0, 1, -1, 2, 16, 2**31, 2**32, 2**63, 10**30, 0.5, 1e308, float("nan"), "", "x", [], {}, [4, 2]]


# ---------------------------------------------------------------- the files and their damage


def base_file(codec: str) -> bytes:
    """The undamaged file of `codec` (the same bytes in every worker: networks run on one thread)."""
    import soundfile as sf
    from PIL import Image

    from nmc.codec import api
    from nmc.codec import media as M
    from nmc.codec.registry import get_codec

    buf = io.BytesIO()
    if codec == "hificodec":
        from nmc.models.hificodec.codec import HiFiCodecCodec

        x, rate = sf.read(ROOT / "samples" / "speech_es.flac", dtype="float32")
        x = x[: 3 * rate]
        c = HiFiCodecCodec(get_codec(codec).weights_path, chunk_frames=50)
        api.compress_to_file(c, M.Audio.from_array(np.stack([x, 0.5 * x], axis=1), rate), buf, c.setting("2kbps"))
    elif codec == "queen":
        from nmc.models.queen.codec import QueenCodec
        from nmc.models.queen.core import Settings

        c = QueenCodec(group=2, core=Settings(fit_rows=3000, fit_steps=40, gate_steps=40))  # small effort: the format is the same
        api.compress_to_file(c, M.read_gaussians(ROOT / "samples" / "gaussians_queen"), buf, c.setting("q2"))
    else:
        from nmc.models.mcquic.codec import McQuicCodec
        from nmc.models.vqgan.codec import VQGANCodec

        rgb = np.asarray(Image.open(ROOT / "samples" / "photo_aqua.png").convert("RGB"))[200:296, 300:428]
        alpha = np.tile(np.linspace(0, 255, 128).astype(np.uint8), (96, 1))[:, :, None]
        c = (McQuicCodec if codec == "mcquic" else VQGANCodec)(get_codec(codec).weights_path, tile=64)
        api.compress_to_file(c, M.Image(np.ascontiguousarray(np.concatenate([rgb, alpha], axis=2))), buf, c.default())
    return buf.getvalue()


def _payload_damage(rng: np.random.Generator, data: bytes) -> bytes:
    payloads: dict[int, bytes] = {}
    with_payloads(data, lambda i, p: payloads.setdefault(i, p))
    target = int(rng.integers(len(payloads)))
    how = rng.choice(["flip", "words", "random-words", "cut", "extend", "stream", "swap"])
    if how == "swap" and len(payloads) > 1:
        other = int(rng.integers(len(payloads) - 1))
        other += other >= target
        return with_payloads(data, lambda i, p: payloads[other] if i == target else payloads[target] if i == other else p)

    def edit(p: bytes) -> bytes:
        b = bytearray(p)
        streams = coded_streams(p)
        if how in ("words", "random-words", "stream") and streams:
            start, n = streams[int(rng.integers(len(streams)))]
            if how == "stream":
                return p[:start] + rng.bytes(n) + p[start + n :]
            at = start + 4 * (0 if rng.random() < 0.3 else int(rng.integers(n // 4 - 1)))
            return p[:at] + (b"\xff" * 8 if how == "words" else rng.bytes(8)) + p[at + 8 :]
        if how == "cut":
            return p[: int(rng.integers(max(1, len(p))))]
        if how == "extend":
            return p + rng.bytes(int(rng.integers(1, 17)))
        for _ in range(int(rng.integers(1, 5))):
            b[int(rng.integers(len(b)))] ^= int(rng.integers(1, 256))
        return bytes(b)

    return with_payloads(data, lambda i, p: edit(p) if i == target and p else p)


def _nudged(rng: np.random.Generator, value: Any) -> Any:
    """An edge value, or a value close to `value` (the same type made odd, or another type)."""
    if rng.random() < 0.4 or isinstance(value, (dict, type(None))):
        return EDGE_VALUES[int(rng.integers(len(EDGE_VALUES)))]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return [value + 1, value - 1, 2 * value, value // 2, -value, value * 1000, value + 0.5, float(value), str(value)][int(rng.integers(9))]
    if isinstance(value, list) and value and not all(isinstance(v, (int, float)) for v in value):  # frame names, say
        i = int(rng.integers(len(value)))
        return [value[:-1], value + value[-1:], value[:i] + [_nudged(rng, value[i])] + value[i + 1 :]][int(rng.integers(3))]
    if isinstance(value, list):
        return [value[:-1], value + value[-1:], [v + 1 for v in value], [float(v) for v in value]][int(rng.integers(4))] if value else [1]
    if isinstance(value, str):
        return [value + "x", value[:-1], value.upper(), 1][int(rng.integers(4))]
    return None


def _header_damage(rng: np.random.Generator, data: bytes) -> bytes:
    def edit(h: dict[str, Any]) -> None:
        keys = [(h, k) for k in h] + [(h[s], k) for s in ("media", "extra", "coder") for k in h[s]]
        section, key = keys[int(rng.integers(len(keys)))]
        roll = rng.random()
        if roll < 0.1:
            del section[key]
        elif roll < 0.15:
            section["unknown"] = 1
        else:
            section[key] = _nudged(rng, section[key])

    return with_header(data, edit)


def damaged_file(base: bytes, kind: str, rng: np.random.Generator) -> bytes:
    if kind == "truncate":
        return base[: int(rng.integers(len(base)))]
    if kind == "flip":
        b = bytearray(base)
        for _ in range(int(rng.integers(1, 5))):
            b[int(rng.integers(len(b)))] ^= int(rng.integers(1, 256))
        return bytes(b)
    return _payload_damage(rng, base) if kind == "payload" else _header_damage(rng, base)


def case_file(base: bytes, codec: str, seed: int, i: int) -> tuple[str, bytes]:
    kind = KINDS[i % len(KINDS)]
    rng = np.random.default_rng([seed, sum(map(ord, codec)), i])
    return kind, damaged_file(base, kind, rng)


# ---------------------------------------------------------------- one case, in a worker


def _nmc(argv: list[str]) -> tuple[int, str, str]:
    """Run `nmc ARGV` in-process: (exit status, stderr, traceback text or '')."""
    from nmc.cli.main import main

    err, code, tb = io.StringIO(), 0, ""
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except Exception:  # noqa: BLE001 - what the fuzzer is looking for
            code, tb = -1, traceback.format_exc()
    return code, err.getvalue(), tb


def run_case(base: bytes, codec: str, seed: int, i: int, work: Path) -> dict[str, Any]:
    kind, data = case_file(base, codec, seed, i)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    src, out = work / "x.nmc", work / {"hificodec": "out.wav", "queen": "out"}.get(codec, "out.png")  # queen: a directory of frames
    src.write_bytes(data)
    from nmc.codec.registry import get_codec

    result: dict[str, Any] = {"case": f"{codec}:{i}", "kind": kind, "problems": [], "decoded": False, "recovered": False}
    runs = [["decompress", str(src), "-o", str(out)], ["info", str(src)]]
    if get_codec(codec).can_recover:
        runs.append(["decompress", str(src), "-o", str(out), "--recover"])
    for argv in runs:
        code, err, tb = _nmc(argv)
        lines = [line for line in err.splitlines() if line.strip()]
        if tb or code not in (0, 1) or (code == 1 and (len(lines) != 1 or not lines[0].startswith("nmc: error:"))):
            result["problems"].append(("traceback", tb.strip().splitlines()[-1] if tb else f"exit {code}: {err.strip()[:300]}", tb or err))
        expected = {"x.nmc"} | ({out.name} if argv[0] == "decompress" and code == 0 else set())
        left = sorted(set(os.listdir(work)) - expected)
        if left:
            result["problems"].append(("leftover", f"{argv[0]} left {left}", ""))
        if argv[0] == "decompress":
            result["recovered" if "--recover" in argv else "decoded"] = code == 0
            shutil.rmtree(out) if out.is_dir() else out.unlink(missing_ok=True)
    return result


def _worker(conn: Connection, codec: str, seed: int) -> None:
    import torch

    torch.set_num_threads(1)
    base = base_file(codec)
    work = Path(tempfile.mkdtemp(prefix="nmc-fuzz-"))
    conn.send("ready")
    try:
        while (i := conn.recv()) is not None:
            conn.send(run_case(base, codec, seed, i, work / "case"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- the campaign


class Worker:
    def __init__(self, codec: str, seed: int) -> None:
        self.conn, child = mp.Pipe()
        self.proc = mp.Process(target=_worker, args=(child, codec, seed), daemon=True)
        self.proc.start()
        if not self.conn.poll(600) or self.conn.recv() != "ready":
            raise RuntimeError(f"{codec} worker did not start")
        self.case: int | None = None
        self.since = 0.0

    def give(self, i: int) -> None:
        self.conn.send(i)
        self.case, self.since = i, time.monotonic()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.join()


def campaign(codec: str, cases: list[int], seed: int, workers: int, timeout: float, log: Any) -> list[dict[str, Any]]:
    """Run `cases` of `codec` on `workers` processes; returns one result per case."""
    pool = [Worker(codec, seed) for _ in range(min(workers, len(cases)))]
    todo, results = collections.deque(cases), []
    start, logged = time.monotonic(), 0
    while todo or any(w.case is not None for w in pool):
        for w in pool:
            if w.case is None and todo:
                w.give(todo.popleft())
        busy = [w for w in pool if w.case is not None]
        for conn in wait([w.conn for w in busy], timeout=1.0):
            w = next(w for w in busy if w.conn is conn)
            try:
                results.append(w.conn.recv())
            except EOFError:  # the worker died (segfault, out of memory)
                results.append({"case": f"{codec}:{w.case}", "kind": KINDS[w.case % 4], "problems": [("crash", f"worker died: exit {w.proc.exitcode}", "")], "decoded": False, "recovered": False})  # type: ignore[operator]
                w.stop()
                pool[pool.index(w)] = Worker(codec, seed)
                continue
            w.case = None
        for k, w in enumerate(pool):
            if w.case is not None and time.monotonic() - w.since > timeout:
                results.append({"case": f"{codec}:{w.case}", "kind": KINDS[w.case % 4], "problems": [("hang", f"over {timeout:g} s", "")], "decoded": False, "recovered": False})
                w.stop()
                pool[k] = Worker(codec, seed)
        if log and len(results) >= logged + 500:
            logged = len(results) // 500 * 500
            print(f"{codec}: {len(results)}/{len(cases)} cases, {time.monotonic() - start:.0f} s", file=log, flush=True)
    for w in pool:
        w.conn.send(None)
        w.proc.join(10)
        w.stop()
    return results


def report(codec: str, results: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    rows: dict[str, collections.Counter[str]] = {k: collections.Counter() for k in KINDS}
    first: dict[str, tuple[str, str, str]] = {}
    for r in results:
        row = rows[r["kind"]]
        row["cases"] += 1
        row["decoded"] += r["decoded"]
        row["recovered"] += r.get("recovered", False)
        row["undetected"] += r["decoded"] and r["kind"] in ("truncate", "flip")
        for what, summary, detail in r["problems"]:
            row[what] += 1
            first.setdefault(f"{what}: {summary}", (r["case"], summary, detail))
    return {"codec": codec, "seconds": round(seconds), "kinds": {k: dict(v) for k, v in rows.items()}, "problems": {k: v[0] for k, v in first.items()}, "details": first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10000, help="damaged files per codec")
    parser.add_argument("--codecs", default="hificodec,mcquic,queen")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per case (both commands) before it counts as a hang")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case", help="run one case, CODEC:I, and print its problems in full")
    parser.add_argument("--json", type=Path, help="also write the summary as JSON here")
    args = parser.parse_args()

    if args.case:
        codec, i = args.case.split(":")
        result = run_case(base_file(codec), codec, args.seed, int(i), Path(tempfile.mkdtemp(prefix="nmc-fuzz-")) / "case")
        for what, summary, detail in result["problems"]:
            print(f"{what}: {summary}\n{detail}")
        print(f"{args.case}: {result['kind']}, decoded={result['decoded']}, problems={len(result['problems'])}")
        return
    summaries, bad = [], 0
    columns = ("cases", "decoded", "recovered", "undetected", "traceback", "hang", "leftover", "crash")
    for codec in args.codecs.split(","):
        start = time.monotonic()
        results = campaign(codec, list(range(args.cases)), args.seed, args.workers, args.timeout, sys.stderr)
        s = report(codec, results, time.monotonic() - start)
        summaries.append(s)
        print(f"\n{codec} ({s['seconds']} s)\n| kind | {' | '.join(columns)} |\n|---|{'---|' * len(columns)}")
        for kind, row in s["kinds"].items():
            print(f"| {kind} | {' | '.join(str(row.get(c, 0)) for c in columns)} |")
        total = {c: sum(row.get(c, 0) for row in s["kinds"].values()) for c in columns}
        print(f"| all | {' | '.join(str(total[c]) for c in columns)} |")
        bad += sum(total[c] for c in ("undetected", "traceback", "hang", "leftover", "crash"))
        for key, (case, _, detail) in s["details"].items():
            print(f"\n{key} (first of them: --case {case})\n" + "\n".join(detail.strip().splitlines()[-6:]))
    if args.json:
        args.json.write_text(json.dumps([{k: v for k, v in s.items() if k != "details"} for s in summaries], indent=2))
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
