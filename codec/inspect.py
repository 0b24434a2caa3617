"""What `nmc info` and `nmc models` show: a file's header and packets, the installed codecs."""

from __future__ import annotations

import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .api import header_dictionary
from .container import read_header, read_packets
from .errors import MediaError
from .fields import check_media
from .media import real_rate
from .registry import available, get_codec


MAX_LISTED = 1 << 20  # headers announcing more packets are read strictly (a damaged count must not list 2^31 lost packets)


def describe(path: Path) -> dict[str, Any]:
    """Header fields, per-packet sizes and CRCs (all verified), and the real rate."""
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    with open(path, "rb") as fo:
        header = read_header(fo, header_dictionary)
        check_media(header.media)  # the rate below divides by media fields
        header_bytes = fo.tell()
        tolerant = header.packets is not None and header.packets <= MAX_LISTED  # damaged ones listed below
        packets = list(read_packets(fo, header, tolerant=tolerant))
    size = path.stat().st_size
    rate, unit = real_rate(size, header.media)
    return {
        **{k: v for k, v in asdict(header).items() if k != "version"},
        "format_version": header.version,
        "file_bytes": size,
        "header_bytes": header_bytes,
        "packet_count": len(packets),
        "damaged_packets": [i for i, p in enumerate(packets) if p is None],
        "packet_bytes": [len(p) for p in packets if p is not None],
        "packet_crc32": [f"{zlib.crc32(p):08x}" for p in packets if p is not None][:16],
        "rate": round(rate, 6),
        "unit": unit,
    }


def _size(path: Path | None) -> str:
    if path is None:
        return "-"
    return f"{path.stat().st_size / 1e6:.1f} MB" if path.exists() else "not installed"


def list_models() -> list[dict[str, Any]]:
    """Every registered codec; one whose weights are not installed lists no settings (they may come from its weights)."""
    rows = []
    for name, cls in available().items():
        codec = get_codec(name)
        rows.append(
            {
                "codec": name,
                "media": cls.media,
                "model_id": cls.model_id,
                "description": cls.description,
                "settings": [asdict(s) for s in codec.settings()] if cls.installed() else [],
                "weights_size": _size(cls.weights_path),
            }
        )
    return rows
