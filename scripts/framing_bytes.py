#!/usr/bin/env python3
"""What the container's framing costs: the same inputs coded by two nmc versions (docs/FORMAT.md, format 3).

    python -P scripts/framing_bytes.py encode OUT [--images DIR] [--speech DIR] [--clips 4]
    python -P scripts/framing_bytes.py compare BEFORE AFTER

`encode` codes every photo of `--images` with vqgan at each of its settings and with mcquic q1-q4,
and the first `--clips` clips of `--speech` with hificodec at each of its settings, into
OUT/<codec>/<setting>/<name>.nmc; it uses only `api.compress`, so any nmc version runs it (run it
once with each version, the same weights). `compare` reads both trees with this version's reader,
checks that every file holds the same packet payloads, and prints the mean file bytes per codec and
setting before and after, the saving per file and in percent.
"""

from __future__ import annotations

import argparse
import io
import statistics
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev"
RUNS = {"vqgan": "image", "mcquic": "image", "hificodec": "audio"}


def encode(out: Path, images: Path, speech: Path, clips: int) -> None:
    from nmc.codec import api
    from nmc.codec.registry import get_codec
    from nmc.codec.threads import torch_threads

    inputs = {"image": sorted(images.glob("*.png")), "audio": sorted(speech.glob("*.flac"))[:clips]}
    for name, kind in RUNS.items():
        codec = get_codec(name)
        for path in inputs[kind]:
            media = api.load_media(path)[1]
            for setting in codec.settings():
                dst = out / name / setting.name / (path.stem + ".nmc")
                dst.parent.mkdir(parents=True, exist_ok=True)
                with torch_threads(1):  # modest on a shared box
                    dst.write_bytes(api.compress(name, media, setting.name))
                print(f"{dst}: {dst.stat().st_size} B", flush=True)


def payloads(data: bytes) -> list[bytes | None]:
    from nmc.codec.api import header_dictionary
    from nmc.codec.container import read_header, read_packets

    fo = io.BytesIO(data)
    header = read_header(fo, header_dictionary)
    return list(read_packets(fo, header))


def compare(before: Path, after: Path) -> None:
    rows = []
    for name in RUNS:
        for setting in sorted({p.parent.name for p in (before / name).glob("*/*.nmc")}, key=lambda s: (len(s), s)):
            old_sizes, new_sizes, packets = [], [], []
            for old in sorted((before / name / setting).glob("*.nmc")):
                a, b = old.read_bytes(), (after / name / setting / old.name).read_bytes()
                new_payloads = payloads(b)
                if payloads(a) != new_payloads:
                    raise SystemExit(f"{old.name} ({name} {setting}): the payloads differ between the two versions")
                old_sizes.append(len(a))
                new_sizes.append(len(b))
                packets.append(len(new_payloads))
            old_mean, new_mean = statistics.mean(old_sizes), statistics.mean(new_sizes)
            rows.append((name, setting, len(old_sizes), statistics.mean(packets), old_mean, new_mean))
    print("| codec | setting | files | packets | bytes before | bytes after | saved per file | saved |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, setting, n, packets, old_mean, new_mean in rows:
        print(f"| {name} | {setting} | {n} | {packets:.1f} | {old_mean:.1f} | {new_mean:.1f} | {old_mean - new_mean:.1f} | {100 * (1 - new_mean / old_mean):.2f} % |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encode")
    enc.add_argument("out", type=Path)
    enc.add_argument("--images", type=Path, default=SHARED / "images")
    enc.add_argument("--speech", type=Path, default=SHARED / "speech")
    enc.add_argument("--clips", type=int, default=4)
    cmp = sub.add_parser("compare")
    cmp.add_argument("before", type=Path)
    cmp.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "encode":
        encode(args.out, args.images, args.speech, args.clips)
    else:
        compare(args.before, args.after)


if __name__ == "__main__":
    main()
