"""scripts/prepare_speech.py: the narrowband filter, the seeded caps and the committed source list
(no download: only synthetic audio and data/speech_added.json)."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("prepare_speech", ROOT / "scripts" / "prepare_speech.py")
ps = importlib.util.module_from_spec(_spec)
sys.modules["prepare_speech"] = ps   # dataclasses look their module up
_spec.loader.exec_module(ps)


def test_band_edge_tells_8k_copies_from_wideband(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    wide = (0.3 * rng.standard_normal(44_100)).astype(np.float32)
    # noise that went through an 8 kHz telephone copy, stored at 44.1 kHz like the rejected files
    narrow = soxr.resample(soxr.resample(wide, 44_100, 8_000), 8_000, 44_100).astype(np.float32)
    sf.write(tmp_path / "wide.ogg", wide, 44_100)
    sf.write(tmp_path / "narrow.ogg", narrow, 44_100)
    assert ps.band_edge(tmp_path / "wide.ogg") > 15_000
    assert 3_500 <= ps.band_edge(tmp_path / "narrow.ogg") < 5_000


def test_capped_is_seeded_and_within_the_cap(tmp_path: Path) -> None:
    clips = []
    for i in range(20):
        path = tmp_path / f"{i}.wav"
        sf.write(path, np.zeros(16_000 * (1 + i % 3), np.float32), 16_000)   # 1-3 s each
        clips.append(("src", path))
    kept = ps.capped(clips, 10.0)
    assert kept == ps.capped(clips, 10.0)
    assert 8.0 <= sum(ps.duration(p) for _, p in kept) <= 10.0
    assert kept == [c for c in clips if c in kept]   # listed order kept


def test_added_list_matches_the_sources() -> None:
    rows = json.loads((ROOT / "data" / "speech_added.json").read_text())
    by_group: dict[str, float] = {}
    for r in rows:
        src = next(s for s in ps.SOURCES if s.package == r["package"] and fnmatch.fnmatchcase(r["member"], s.pattern))
        assert src.version == r["version"] and src.license == r["license"] and src.group(r["member"]) == r["group"]
        assert len(r["sha256"]) == 64
        by_group[r["group"]] = by_group.get(r["group"], 0.0) + r["seconds"]
    assert by_group["tuxpaint_ru"] <= 12 * 60 and by_group["tuxpaint_fr"] <= 12 * 60
    # no Italian, and no Tux Paint language whose KLettres reader is a dev or held-out voice
    assert not any(g.endswith(("_it", "_nl", "_lt", "_ml", "_pt_BR")) for g in by_group)


def test_a_clip_listed_twice_trains_once() -> None:
    """hedgewars-data and tuxpaint-stamps-default ship some clips more than once (the same bytes); the training set
    keeps the first."""
    rows = [dict(sha256="a", group="x"), dict(sha256="b", group="x"), dict(sha256="a", group="y")]
    assert ps.distinct(rows) == rows[:2]
    listed = json.loads((ROOT / "data" / "speech_added.json").read_text())
    kept = ps.distinct(listed)
    assert len({r["sha256"] for r in kept}) == len(kept) == len({r["sha256"] for r in listed}) < len(listed)
