"""Codec registry: registration, lookup by name and by media kind, clear errors."""

from __future__ import annotations

import pytest

from nmc.codec import registry
from nmc.codec.errors import CodecNotFoundError


def test_toy_codecs_are_registered_under_their_header_names() -> None:
    codecs = registry.available()
    assert codecs["toy-image"].name == "toy-image" and codecs["toy-image"].media == "image"
    assert registry.get_codec("toy-audio").setting("8bit").unit == "kbps"


def test_auto_picks_highest_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    before = registry.codec_for_media("image")  # an installed codec (mcquic) may outrank the toy
    top = max(c.auto_priority for c in registry.available().values() if c.media == "image")

    @registry.register_codec("toy-image-hq")
    class Better(registry.CODECS["toy-image"]):  # type: ignore[misc,valid-type]
        auto_priority = top + 1

    try:
        assert registry.codec_for_media("image") == "toy-image-hq"
    finally:
        del registry.CODECS["toy-image-hq"]
    assert registry.codec_for_media("image") == before


def test_errors_name_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CodecNotFoundError, match="unknown codec 'nope'"):
        registry.get_codec("nope")
    registry.available()
    monkeypatch.delitem(registry.CODECS, "queen")
    with pytest.raises(CodecNotFoundError, match="no codec for gaussians"):
        registry.codec_for_media("gaussians")
    with pytest.raises(CodecNotFoundError, match="no rate setting 'x'"):
        registry.get_codec("toy-image").setting("x")
    with pytest.raises(ValueError, match="media kind"):

        @registry.register_codec("bad")
        class Bad(registry.CODECS["toy-image"]):  # type: ignore[misc,valid-type]
            media = "video"
