"""The manifests of the data the project adds for training (data/*.json): every file traceable to a Debian package
version and a licence, none from the packages reserved for held-out evaluation, none listed twice. Nothing is
downloaded here: scripts/prepare_images.py and scripts/prepare_speech.py check each file's sha256 when they fetch it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"
# reserved for held-out evaluation: never used for training, tuning or samples (the project's rules)
RESERVED = re.compile(r"^(ktuberling-data|asterisk-core-sounds-it-.*|alsa-utils|codec2-examples|lomiri-wallpapers-16\.04|"
                      r"plasma-workspace-wallpapers|wesnoth-.*-music)$")  # fmt: skip


def entries(name: str) -> tuple[list[dict], dict[str, str]]:
    data = json.loads((DATA / name).read_text())
    return (data, {}) if isinstance(data, list) else (data["files"], data.get("suites", {}))


@pytest.mark.parametrize("name", ["images_extra.json", "images_candidates.json", "speech_added.json"])
def test_every_added_file_is_traceable_licensed_and_not_reserved(name: str) -> None:
    files, suites = entries(name)
    assert files
    for e in files:
        assert all(isinstance(e.get(k), str) and e[k] for k in ("package", "version", "member", "license")), e
        assert re.fullmatch(r"[0-9a-f]{64}", e["sha256"]), e
        assert not RESERVED.match(e["package"]), e
        assert not suites or e["suite"] in suites, e
    assert len({(e["package"], e["member"]) for e in files}) == len(files), "a file listed twice"
    if name.startswith("images"):  # (speech_added.json lists 130 extra copies of clips that hedgewars-data and
        # tuxpaint-stamps-default ship more than once; prepare_speech.distinct keeps one of each for training)
        assert len({e["sha256"] for e in files}) == len(files), "the same bytes listed twice"


def test_reserved_pattern_catches_the_reserved_packages() -> None:
    for package in ("ktuberling-data", "asterisk-core-sounds-it-wav", "alsa-utils", "wesnoth-1.16-music", "plasma-workspace-wallpapers"):
        assert RESERVED.match(package)
    assert not RESERVED.match("wesnoth-1.16-data") and not RESERVED.match("budgie-backgrounds")
